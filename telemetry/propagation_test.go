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

// A B3 sampling decision sent without IDs ("b3: 0", "X-B3-Sampled: 0",
// "X-B3-Flags: 1" alone) is the decision of a parent the sampler is asked
// about: with the parent-based samplers a deny records no span and an
// accept or debug records one, the trace new either way; every configured
// format tells the upstream the decision, with ferry's IDs. A sampler that
// is not parent-based decides as it does for any parent. A trace the
// caller sent with IDs, in any format, goes before a decision without.
func TestB3DecisionWithoutIDs(t *testing.T) {
	zero := 0.0
	ratio0 := Config{Sampler: SamplerParentBasedTraceIDRatio, SamplerArg: &zero}
	deny := []map[string]string{{"b3": "0"}, {"X-B3-Sampled": "0"}, {"X-B3-Sampled": "false"}, {"b3": "0", "X-B3-Sampled": "1"}}
	accept := []map[string]string{{"b3": "1"}, {"X-B3-Sampled": "1"}, {"X-B3-Sampled": "true"}}
	debug := []map[string]string{{"b3": "d"}, {"X-B3-Flags": "1"}, {"X-B3-Flags": "1", "X-B3-Sampled": "0"}}
	type want int
	const (
		wantDeny want = iota
		wantAccept
		wantDebug
	)
	for _, c := range []struct {
		name string
		cfg  Config
		hdrs []map[string]string
		want want
	}{
		{"deny, parentbased_always_on", Config{}, deny, wantDeny},
		{"accept, parentbased_traceidratio 0", ratio0, accept, wantAccept},
		{"debug, parentbased_traceidratio 0", ratio0, debug, wantDebug},
		{"deny, always_on", Config{Sampler: SamplerAlwaysOn}, deny, wantAccept},
		{"accept, always_off", Config{Sampler: SamplerAlwaysOff}, accept, wantDeny},
		// Debug the sampler overrules: ferry records nothing and must not
		// pass "debug" on, or the upstream would record a span whose
		// parent, ferry's, nobody recorded.
		{"debug, always_off", Config{Sampler: SamplerAlwaysOff}, debug, wantDeny},
		{"debug, traceidratio 0", Config{Sampler: SamplerTraceIDRatio, SamplerArg: &zero}, debug, wantDeny},
	} {
		for _, props := range []string{"b3", "b3multi", "tracecontext,baggage,b3", "b3multi,tracecontext"} {
			for _, hdr := range c.hdrs {
				cfg := c.cfg
				cfg.Propagators = strings.Split(props, ",")
				tel, rec, logs := recorded(t, cfg, env{})
				sc, up := hop(t, tel, hdr)
				what := c.name + ", " + props + ", " + formatHeader(hdr)
				spans := rec.Ended()
				if c.want == wantDeny {
					if len(spans) != 0 {
						t.Errorf("%s: %d spans recorded, want none", what, len(spans))
					}
				} else if len(spans) != 2 {
					t.Errorf("%s: %d spans recorded, want 2", what, len(spans))
				} else if p := spanByKind(t, spans, "server").Parent(); p.IsValid() {
					t.Errorf("%s: server span has parent %v, want a new trace", what, p)
				}
				if !sc.IsValid() {
					t.Fatalf("%s: request span context %v is not valid", what, sc)
				}
				if !strings.Contains(logs.String(), `"trace_id":"`+sc.TraceID().String()+`"`) {
					t.Errorf("%s: access log lacks the trace id %s: %s", what, sc.TraceID(), logs.String())
				}
				tid := sc.TraceID().String()
				if strings.Contains(props, "tracecontext") {
					wantFlags := map[want]string{wantDeny: "00", wantAccept: "01", wantDebug: "01"}[c.want]
					if got, _, flags := parseTraceparent(t, up.Get("traceparent")); got != tid || flags != wantFlags {
						t.Errorf("%s: upstream traceparent %q, want trace %s flags %s", what, up.Get("traceparent"), tid, wantFlags)
					}
				}
				if strings.Contains(props, "b3multi") {
					wantHdr := map[want][2]string{wantDeny: {"X-B3-Sampled", "0"}, wantAccept: {"X-B3-Sampled", "1"}, wantDebug: {"X-B3-Flags", "1"}}[c.want]
					if up.Get("X-B3-Traceid") != tid || up.Get(wantHdr[0]) != wantHdr[1] {
						t.Errorf("%s: upstream X-B3-TraceId %q %s %q, want %s and %s", what, up.Get("X-B3-Traceid"),
							wantHdr[0], up.Get(wantHdr[0]), tid, wantHdr[1])
					}
				} else {
					state := map[want]string{wantDeny: "0", wantAccept: "1", wantDebug: "d"}[c.want]
					if b3 := strings.Split(up.Get("b3"), "-"); len(b3) != 3 || b3[0] != tid || b3[2] != state {
						t.Errorf("%s: upstream b3 %q, want trace %s, state %s", what, up.Get("b3"), tid, state)
					}
				}
			}
		}
	}

	// IDs the caller sent, in any format, go first.
	for _, props := range []string{"tracecontext,b3", "b3,tracecontext", "b3multi,tracecontext"} {
		for _, hdr := range []map[string]string{
			{"traceparent": "00-" + callerTrace + "-" + callerSpan + "-01", "b3": "0"},
			{"traceparent": "00-" + callerTrace + "-" + callerSpan + "-01", "X-B3-Sampled": "0"},
		} {
			tel, rec, _ := recorded(t, Config{Propagators: strings.Split(props, ",")}, env{})
			sc, _ := hop(t, tel, hdr)
			if len(rec.Ended()) != 2 || sc.TraceID().String() != callerTrace {
				t.Errorf("%s, %s: %d spans in trace %s, want 2 continuing the caller's %s", props, formatHeader(hdr), len(rec.Ended()), sc.TraceID(), callerTrace)
			}
		}
	}
}

// A caller's B3 trace without a sampling state ("b3: {trace}-{span}", or
// X-B3-TraceId and X-B3-SpanId alone) defers the decision to ferry: its
// sampler decides as for a new trace (the parent-based samplers by their
// root sampler), the spans continue the caller's trace under its span, and
// the upstream is told ferry's decision, never the deferral: left to
// decide, it could record a span whose parent ferry did not record. The
// same for a caller's debug flag that ferry's span continues.
func TestB3DeferredIsFerrysDecision(t *testing.T) {
	zero := 0.0
	deferred := []map[string]string{
		{"b3": callerTrace + "-" + callerSpan},
		{"X-B3-Traceid": callerTrace, "X-B3-Spanid": callerSpan},
		{"b3": callerTrace[16:] + "-" + callerSpan}, // a 64-bit trace ID
		// A single header the propagator refuses, beside multiple ones
		// that defer; and an X-B3-Flags that is not debug (no decision).
		{"b3": "zz-yy", "X-B3-Traceid": callerTrace, "X-B3-Spanid": callerSpan},
		{"X-B3-Traceid": callerTrace, "X-B3-Spanid": callerSpan, "X-B3-Flags": "0"},
	}
	for _, c := range []struct {
		name   string
		cfg    Config
		record bool
	}{
		{"parentbased_always_on", Config{}, true},
		{"always_off", Config{Sampler: SamplerAlwaysOff}, false},
		{"parentbased_traceidratio 0", Config{Sampler: SamplerParentBasedTraceIDRatio, SamplerArg: &zero}, false},
	} {
		for _, props := range []string{"b3", "b3multi", "tracecontext,b3"} {
			for _, hdr := range deferred {
				cfg := c.cfg
				cfg.Propagators = strings.Split(props, ",")
				tel, rec, _ := recorded(t, cfg, env{})
				sc, up := hop(t, tel, hdr)
				what := c.name + ", " + props + ", " + formatHeader(hdr)
				wantTrace := callerTrace
				if len(strings.Split(hdr["b3"], "-")[0]) == 16 {
					wantTrace = "0000000000000000" + callerTrace[16:]
				}
				if sc.TraceID().String() != wantTrace {
					t.Errorf("%s: trace %s, want the caller's %s", what, sc.TraceID(), wantTrace)
				}
				spans := rec.Ended()
				state := "0"
				if c.record {
					state = "1"
					if len(spans) != 2 {
						t.Fatalf("%s: %d spans recorded, want 2", what, len(spans))
					}
					if p := spanByKind(t, spans, "server").Parent(); p.SpanID().String() != callerSpan || !p.IsRemote() {
						t.Errorf("%s: server span's parent %v, want the caller's span %s", what, p, callerSpan)
					}
				} else if len(spans) != 0 {
					t.Errorf("%s: %d spans recorded, want none", what, len(spans))
				}
				if strings.Contains(props, "b3multi") {
					if up.Get("X-B3-Sampled") != state || up.Get("X-B3-Flags") != "" {
						t.Errorf("%s: upstream X-B3-Sampled %q X-B3-Flags %q, want %s and none", what, up.Get("X-B3-Sampled"), up.Get("X-B3-Flags"), state)
					}
				} else if b3 := strings.Split(up.Get("b3"), "-"); len(b3) != 3 || b3[0] != sc.TraceID().String() || b3[2] != state {
					t.Errorf("%s: upstream b3 %q, want trace %s, state %s", what, up.Get("b3"), sc.TraceID(), state)
				}
			}
		}
	}

	// A caller's debug flag with IDs: passed on only when ferry records.
	for _, hdr := range []map[string]string{
		{"b3": callerTrace + "-" + callerSpan + "-d"},
		{"X-B3-Traceid": callerTrace, "X-B3-Spanid": callerSpan, "X-B3-Flags": "1"},
	} {
		for _, c := range []struct {
			cfg  Config
			want string
		}{{Config{}, "d"}, {Config{Sampler: SamplerAlwaysOff}, "0"}} {
			cfg := c.cfg
			cfg.Propagators = []string{"b3"}
			tel, _, _ := recorded(t, cfg, env{})
			_, up := hop(t, tel, hdr)
			if b3 := strings.Split(up.Get("b3"), "-"); len(b3) != 3 || b3[2] != c.want {
				t.Errorf("%q sampler, %s: upstream b3 %q, want state %s", cfg.Sampler, formatHeader(hdr), up.Get("b3"), c.want)
			}
		}
	}
}

func formatHeader(h map[string]string) string {
	var parts []string
	for k, v := range h {
		parts = append(parts, k+": "+v)
	}
	return strings.Join(parts, ", ")
}
