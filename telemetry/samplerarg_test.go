package telemetry

import (
	"math"
	"strings"
	"testing"
)

// A sampler ratio that is not a number is not a ratio in [0, 1]: NaN used
// to pass the range check and reach TraceIDRatioBased, which sampled every
// trace.
func TestSamplerArgNaNIsRejected(t *testing.T) {
	for _, v := range []string{"NaN", "nan"} {
		_, err := resolve(Config{}, env{"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": v}.get)
		if err == nil || !strings.HasPrefix(err.Error(), "OTEL_TRACES_SAMPLER_ARG:") {
			t.Errorf("OTEL_TRACES_SAMPLER_ARG=%s: error %v", v, err)
		}
	}
	nan := math.NaN()
	_, err := resolve(Config{Sampler: "traceidratio", SamplerArg: &nan}, env{}.get)
	if err == nil || !strings.HasPrefix(err.Error(), "telemetry.sampler_arg:") {
		t.Errorf("sampler_arg NaN: error %v", err)
	}
}
