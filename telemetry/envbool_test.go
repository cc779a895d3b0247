package telemetry

import (
	"strings"
	"testing"
)

// The specification's booleans: only a case-insensitive "true" is true (an
// implementation MUST NOT take other values as true), so OTEL_SDK_DISABLED=1
// must not turn tracing off, and "tRuE" is as good as "true".
func TestEnvBooleansAreTheSpecifications(t *testing.T) {
	on := env{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}
	for _, v := range []string{"true", "TRUE", "tRuE"} {
		e := env{"OTEL_SDK_DISABLED": v, "OTEL_EXPORTER_OTLP_INSECURE": v}
		for k, x := range on {
			e[k] = x
		}
		s, err := resolve(Config{}, e.get)
		if err != nil {
			t.Fatalf("OTEL_SDK_DISABLED=%s: %v", v, err)
		}
		if s.tracing {
			t.Errorf("OTEL_SDK_DISABLED=%s left tracing on", v)
		}
	}
	for _, v := range []string{"false", "FALSE", "False"} {
		e := env{"OTEL_SDK_DISABLED": v}
		for k, x := range on {
			e[k] = x
		}
		s, err := resolve(Config{}, e.get)
		if err != nil || !s.tracing {
			t.Errorf("OTEL_SDK_DISABLED=%s: tracing %v, error %v", v, s.tracing, err)
		}
	}
	for _, v := range []string{"1", "t", "T", "yes"} {
		e := env{"OTEL_SDK_DISABLED": v}
		for k, x := range on {
			e[k] = x
		}
		s, err := resolve(Config{}, e.get)
		if err == nil && !s.tracing {
			t.Errorf("OTEL_SDK_DISABLED=%s turned tracing off: only \"true\" may", v)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "OTEL_SDK_DISABLED:") {
			t.Errorf("OTEL_SDK_DISABLED=%s: error %v does not name the variable", v, err)
		}
	}
}
