package telemetry

import (
	"net/http"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

// hop sends one request with hdr through tel as the sidecar does (server
// span, one attempt, Inject) and returns the request's span context and
// the upstream's headers.
func hop(t *testing.T, tel *Telemetry, hdr map[string]string) (trace.SpanContext, http.Header) {
	t.Helper()
	r := incoming("GET", "http://files/x", hdr)
	_, req := tel.StartRequest(r, Outbound)
	out := upstream(t, tel, r, "http://files/x")
	att := req.StartAttempt(out, AttemptInfo{Endpoint: "10.0.0.7:8080", Attempt: 1})
	att.Inject(out.Header)
	att.End(Outcome{Status: 200})
	req.End(Outcome{Status: 200})
	return req.Span().SpanContext(), out.Header
}

// A traceparent is continued only when it follows the W3C Trace Context
// rules: for version 00 exactly 55 characters of lower-case hex with
// trace-id and parent-id not all zeros; version ff never; a later version
// at least 55 characters, its flags at the end or followed by a dash. An
// invalid one starts a new trace, and its tracestate is not read ("if the
// vendor failed to parse traceparent, it MUST NOT attempt to parse
// tracestate"): the upstream gets none.
func TestTraceparentRules(t *testing.T) {
	const (
		tid   = callerTrace
		pid   = callerSpan
		state = "congo=t61rcWkgMzE"
	)
	zeros := func(n int) string { return strings.Repeat("0", n) }
	for _, c := range []struct {
		traceparent string
		valid       bool
	}{
		{"00-" + tid + "-" + pid + "-01", true},
		{"00-" + tid + "-" + pid + "-03", true},
		{"01-" + tid + "-" + pid + "-01", true},
		{"01-" + tid + "-" + pid + "-01-", true},
		{"01-" + tid + "-" + pid + "-01-what-the-future-will-be-like", true},
		{"fe-" + tid + "-" + pid + "-01-x", true},

		// Version 00 is 55 characters, no more.
		{"00-" + tid + "-" + pid + "-01-", false},
		{"00-" + tid + "-" + pid + "-01-00", false},
		{"00-" + tid + "-" + pid + "-01x", false},
		{"00-" + tid + "-" + pid + "-01 -", false},
		// Lower-case hex only.
		{"00-" + strings.ToUpper(tid) + "-" + pid + "-01", false},
		{"00-" + tid + "-" + strings.ToUpper(pid) + "-01", false},
		{"0A-" + tid + "-" + pid + "-01", false},
		{"00-" + tid[:31] + "g-" + pid + "-01", false},
		// Flags beyond sampled and random: reserved in version 00, and
		// the OpenTelemetry propagator refuses them.
		{"00-" + tid + "-" + pid + "-05", false},
		// All-zero IDs.
		{"00-" + zeros(32) + "-" + pid + "-01", false},
		{"00-" + tid + "-" + zeros(16) + "-01", false},
		// Version ff.
		{"ff-" + tid + "-" + pid + "-01", false},
		// Later versions: at least 55 characters, a dash or the end after
		// the flags.
		{"01-" + tid + "-" + pid + "-1", false},
		{"01-" + tid + "-" + pid + "-01x", false},
		{"01-" + tid + "-" + pid, false},
		// Malformed.
		{"0-" + tid + "-" + pid + "-01", false},
		{"00-" + tid + "-" + pid, false},
		{"00-" + tid + pid + "-01", false},
		{"00_" + tid + "-" + pid + "-01", false},
	} {
		tel, rec, _ := recorded(t, Config{}, env{})
		sc, up := hop(t, tel, map[string]string{"traceparent": c.traceparent, "tracestate": state})
		server := spanByKind(t, rec.Ended(), "server")
		upTrace, _, flags := parseTraceparent(t, up.Get("traceparent"))
		if c.valid {
			if server.Parent().TraceID().String() != tid || server.Parent().SpanID().String() != pid {
				t.Errorf("%q: server span's parent %v, want the caller's span %s in trace %s", c.traceparent, server.Parent(), pid, tid)
			}
			if upTrace != tid || flags != c.traceparent[53:55] || up.Get("tracestate") != state {
				t.Errorf("%q: upstream got traceparent %q, tracestate %q; want trace %s flags %s, tracestate %q",
					c.traceparent, up.Get("traceparent"), up.Get("tracestate"), tid, c.traceparent[53:55], state)
			}
			continue
		}
		if server.Parent().IsValid() || sc.TraceID().String() == tid {
			t.Errorf("%q: server span continues %v (parent %v), want a new trace", c.traceparent, sc.TraceID(), server.Parent())
		}
		if upTrace != sc.TraceID().String() {
			t.Errorf("%q: upstream traceparent %q, want the new trace %s", c.traceparent, up.Get("traceparent"), sc.TraceID())
		}
		if v, ok := up["Tracestate"]; ok {
			t.Errorf("%q: upstream got tracestate %q with an invalid traceparent, want none", c.traceparent, v)
		}
	}
}
