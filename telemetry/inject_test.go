package telemetry

import (
	"context"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/trace"
)

// injectByPropagator is what Attempt.Inject wrote before it ran the
// propagators' parts itself (injectParts): the composite propagator's
// Inject into a carrier of h under the attempt's context, B3's sampling
// state settled, the caller's other formats dropped.
func injectByPropagator(a *Attempt, h http.Header) {
	t := a.q.t
	t.propagator.Inject(a.Context(), headerCarrier{h})
	if t.readsB3 {
		settleB3(h, trace.SpanContextFromContext(a.Context()).IsSampled())
	}
	if d := a.q.dropOthers; d != 0 {
		for i := range t.others {
			if d&(1<<i) != 0 {
				for _, k := range t.others[i].drop {
					delete(h, k)
				}
			}
		}
	}
}

// TestInjectMatchesPropagators: for every list of propagators, sampler,
// caller's headers (trace contexts of every format, sampled or not, with
// the random flag, a tracestate, baggage) and baggage in the request's
// context, each attempt's Inject writes the header the propagators write
// for it, field for field and value for value.
func TestInjectMatchesPropagators(t *testing.T) {
	const tid, sid = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	headers := []map[string]string{
		nil,
		{"traceparent": "00-" + tid + "-" + sid + "-01"},
		{"traceparent": "00-" + tid + "-" + sid + "-00"},
		{"traceparent": "00-" + tid + "-" + sid + "-03"},
		{"traceparent": "00-" + tid + "-" + sid + "-02"},
		{"traceparent": "00-" + tid + "-" + sid + "-01", "tracestate": "vendor=abc,other=x"},
		{"baggage": "user=alice,team=core;p=1"},
		{"traceparent": "00-" + tid + "-" + sid + "-00", "tracestate": "k=v", "baggage": "user=bob"},
		{"b3": tid + "-" + sid + "-1"},
		{"b3": tid + "-" + sid + "-d", "baggage": "a=b"},
		{"b3": tid + "-" + sid},
		{"b3": "0"},
		{"X-B3-TraceId": tid, "X-B3-SpanId": sid, "X-B3-Sampled": "1"},
		{"X-B3-TraceId": tid, "X-B3-SpanId": sid, "X-B3-Flags": "1"},
		{"traceparent": "00-" + tid + "-" + sid + "-01", "b3": tid + "-" + sid + "-1"},
	}
	bag, err := baggage.Parse("inproc=1,tenant=t%201")
	if err != nil {
		t.Fatal(err)
	}
	for _, props := range [][]string{
		{"tracecontext", "baggage"}, {"tracecontext"}, {"baggage"}, {"b3"}, {"b3multi"},
		{"baggage", "tracecontext"}, {"tracecontext", "b3", "baggage"}, {"b3multi", "tracecontext"}, {"none"},
	} {
		for _, sampler := range []string{"always_on", "always_off", "parentbased_always_on", "parentbased_always_off"} {
			tel, _, _ := recorded(t, Config{AccessLog: "off", Propagators: props}, env{"OTEL_TRACES_SAMPLER": sampler})
			for _, hdr := range headers {
				for _, inproc := range []bool{false, true} {
					name := strings.Join(props, ",") + "/" + sampler + "/" + strings.Join(slices.Sorted(maps.Keys(hdr)), "+")
					r := incoming("GET", "http://files/report.pdf", hdr)
					if inproc {
						name += "/in-process baggage"
						r = r.WithContext(baggage.ContextWithBaggage(context.Background(), bag))
					}
					_, req := tel.StartRequest(r, Outbound)
					req.SetRoute("files", "files")
					for n := 1; n <= 2; n++ {
						out := upstream(t, tel, r, "http://files/report.pdf")
						att := req.StartAttempt(out, AttemptInfo{Endpoint: "10.0.0.7:8080", Attempt: n})
						got, want := out.Header.Clone(), out.Header.Clone()
						att.Inject(got)
						injectByPropagator(att, want)
						sortBaggage(got)
						sortBaggage(want)
						if !reflect.DeepEqual(got, want) {
							t.Errorf("%s, attempt %d: Inject wrote\n%v\nthe propagators\n%v", name, n, got, want)
						}
						if len(props) == 2 && props[0] == "tracecontext" && hdr != nil && hdr["traceparent"] != "" && got.Get("Traceparent") == "" {
							t.Errorf("%s: no traceparent written", name)
						}
						// InjectHead writes the same, the traceparent
						// apart when it goes alone.
						head := out.Header.Clone()
						var tp Traceparent
						if att.InjectHead(head, &tp) {
							if _, ok := head["Traceparent"]; ok {
								t.Errorf("%s, attempt %d: InjectHead wrote a traceparent into the header too", name, n)
							}
							if got.Get("Tracestate") != "" {
								t.Errorf("%s, attempt %d: InjectHead kept the traceparent apart from a tracestate", name, n)
							}
							head["Traceparent"] = []string{string(tp[:])}
						} else if slices.Contains(props, "tracecontext") && got.Get("Traceparent") != "" && got.Get("Tracestate") == "" {
							t.Errorf("%s, attempt %d: InjectHead put a lone traceparent into the header", name, n)
						}
						sortBaggage(head)
						if !reflect.DeepEqual(head, want) {
							t.Errorf("%s, attempt %d: InjectHead wrote\n%v\nthe propagators\n%v", name, n, head, want)
						}
						att.End(Outcome{Status: 200})
					}
					req.End(Outcome{Status: 200})
				}
			}
		}
	}
}

// sortBaggage sorts the members of h's baggage, which the propagator
// writes in the order of a map's iteration.
func sortBaggage(h http.Header) {
	for i, v := range h["Baggage"] {
		m := strings.Split(v, ",")
		slices.Sort(m)
		h["Baggage"][i] = strings.Join(m, ",")
	}
}
