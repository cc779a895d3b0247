package telemetry

import (
	"strings"
	"testing"
)

// A header value that percent-decodes to a control character (a line
// break, NUL) can never be sent: net/http refuses the request, and every
// export would fail (retried as a connection failure until its timeout).
// It is an error at start-up naming the variable and the header, never
// showing the value (a token).
func TestOTLPHeaderValueThatCannotBeSentIsRejected(t *testing.T) {
	for _, v := range []string{"Bearer%20s3cret%0Ainjected: 1", "s3cret%00", "s3%0Dcret"} {
		for _, k := range []string{"OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"} {
			_, err := resolveOTLP(env{k: "Authorization=" + v}.get, nil)
			if err == nil {
				t.Errorf("%s=Authorization=%s accepted", k, v)
				continue
			}
			if msg := err.Error(); !strings.HasPrefix(msg, k+":") || !strings.Contains(msg, "Authorization") ||
				strings.Contains(msg, "s3cret") {
				t.Errorf("%s=Authorization=%s: error %q", k, v, msg)
			}
		}
	}
	// Tabs and inner spaces are fine in a header value.
	o, err := resolveOTLP(env{"OTEL_EXPORTER_OTLP_HEADERS": "a=x%09y%20z"}.get, nil)
	if err != nil || o.headers.Get("A") != "x\ty z" {
		t.Errorf("%v %q", err, o.headers.Get("A"))
	}
}
