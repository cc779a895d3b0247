package telemetry

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// extractionCases are caller's headers for comparing ferry's extraction
// with the propagators': valid and invalid traceparents (every position of
// two valid ones, version 00 and 01, replaced by characters a parser may
// get wrong), later versions, lengths around 55, fields sent on several
// lines, tracestates and baggage valid or not.
func extractionCases() []http.Header {
	const tid, pid = callerTrace, callerSpan
	v00 := "00-" + tid + "-" + pid + "-01"
	v01 := "01-" + tid + "-" + pid + "-01"
	zeros := func(n int) string { return strings.Repeat("0", n) }
	tps := []string{
		"", "-", "00", v00[:54], v00[:len(v00)-1] + "-",
		v00, v01, v00 + "-", v00 + "-00", v00 + " ", " " + v00, v01 + "-", v01 + "-x", v01 + "x", v01 + "-what-the-future-will-be-like",
		"00-" + tid + "-" + pid + "-00", "00-" + tid + "-" + pid + "-02", "00-" + tid + "-" + pid + "-03",
		"00-" + tid + "-" + pid + "-04", "00-" + tid + "-" + pid + "-05", "00-" + tid + "-" + pid + "-08",
		"00-" + tid + "-" + pid + "-ff", "01-" + tid + "-" + pid + "-ff", "fe-" + tid + "-" + pid + "-07-x",
		"ff-" + tid + "-" + pid + "-01", "ff-" + tid + "-" + pid + "-01-x", "0A-" + tid + "-" + pid + "-01", "0a-" + tid + "-" + pid + "-01",
		"00-" + strings.ToUpper(tid) + "-" + pid + "-01", "00-" + tid + "-" + strings.ToUpper("a"+pid[1:]) + "-01", "00-" + tid + "-" + pid + "-0A",
		"00-" + zeros(32) + "-" + pid + "-01", "00-" + tid + "-" + zeros(16) + "-01", "00-" + zeros(32) + "-" + zeros(16) + "-00",
		"0-" + tid + "-" + pid + "-01", "000-" + tid + "-" + pid + "-01", "00-" + tid + pid + "-01", "00_" + tid + "-" + pid + "-01",
		"00-" + tid + "-" + pid, "00-" + tid[:31] + "-" + pid + "-01", "00-" + tid + "0-" + pid + "-01", "00--" + tid + "-" + pid + "-01",
	}
	for _, base := range []string{v00, v01 + "-ab"} {
		for i := range base {
			for _, ch := range []byte{'0', 'f', 'F', 'g', '-', ' ', ',', 0x80} {
				if base[i] != ch {
					tps = append(tps, base[:i]+string(ch)+base[i+1:])
				}
			}
		}
	}
	var out []http.Header
	for _, tp := range tps {
		out = append(out, http.Header{"Traceparent": {tp}})
		out = append(out, http.Header{"Traceparent": {tp}, "Tracestate": {"congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"}})
	}
	many := make([]string, 33)
	for i := range many {
		many[i] = fmt.Sprintf("k%d=v", i)
	}
	for _, ts := range [][]string{{"congo=t61rcWkgMzE"}, {"congo=t61rcWkgMzE", "rojo=00f067aa0ba902b7"}, {"not a tracestate"},
		{""}, {strings.Join(many, ",")}, {strings.Join(many[:32], ",")}, {"a=1,a=2"}, {"congo=t61rcWkgMzE", "bad"}} {
		for _, tp := range []string{v00, v01 + "-x", "00-" + tid + "-" + pid + "-05"} {
			out = append(out, http.Header{"Traceparent": {tp}, "Tracestate": ts})
		}
		out = append(out, http.Header{"Tracestate": ts})
	}
	for _, tp := range [][]string{{v00, v00}, {v01, v01}, {v01 + "-", v01}, {v00, ""}, {"", v00}} {
		out = append(out, http.Header{"Traceparent": tp})
	}
	for _, bag := range [][]string{{"k=v"}, {"k=v", "l=w;p"}, {"not baggage"}, {"k=v,k=w"}, {""}} {
		out = append(out, http.Header{"Baggage": bag}, http.Header{"Baggage": bag, "Traceparent": {v00}, "Tracestate": {"congo=t61rcWkgMzE"}})
	}
	return out
}

// bagOf is ctx's baggage, its members in order.
func bagOf(ctx context.Context) string {
	var ms []string
	for _, m := range baggage.FromContext(ctx).Members() {
		ms = append(ms, m.String())
	}
	slices.Sort(ms)
	return strings.Join(ms, ",")
}

// ferry extracts tracecontext and baggage itself (extractOwn): the caller's
// span context it keeps out of the context is the one the configured
// propagators put in it, and the baggage the same, for every header of
// extractionCases and every list of propagators that are tracecontext and
// baggage alone. Against the OpenTelemetry TraceContext propagator
// itself, the one difference is ferry's own rule, a version 00
// traceparent of more than 55 characters (traceContext).
func TestTraceContextOfMatchesPropagator(t *testing.T) {
	sdk := propagation.TraceContext{}
	cases := extractionCases()
	for _, props := range []string{"tracecontext", "tracecontext,baggage", "baggage,tracecontext", "baggage", "tracecontext,tracecontext,baggage"} {
		tel, err := New(t.Context(), Config{AccessLog: "off"}, WithEnv(env{"OTEL_PROPAGATORS": props}.get))
		if err != nil {
			t.Fatal(err)
		}
		defer tel.Shutdown(t.Context())
		if !tel.ownExtract {
			t.Fatalf("%s: ferry does not extract it itself", props)
		}
		mismatches := 0
		for _, h := range cases {
			c := headerCarrier{h}
			want := tel.propagator.Extract(context.Background(), c)
			ctx, got := extractOwn(context.Background(), tel.propParts, c)
			wsc := trace.SpanContextFromContext(want)
			if !got.Equal(wsc) || got.IsValid() != wsc.IsValid() || trace.SpanContextFromContext(ctx).IsValid() ||
				bagOf(ctx) != bagOf(want) {
				mismatches++
				t.Errorf("%s, %q: ferry extracts %v (in its context %v) baggage %q; the propagators %v baggage %q", props, h,
					got, trace.SpanContextFromContext(ctx), bagOf(ctx), wsc, bagOf(want))
			}
			if !strings.Contains(props, "tracecontext") {
				continue
			}
			plain := trace.SpanContextFromContext(sdk.Extract(context.Background(), c))
			tp := c.Get("traceparent")
			if ferrys := strings.HasPrefix(tp, "00") && len(tp) > traceparentLen; ferrys && got.IsValid() || !ferrys && !plain.Equal(got) {
				mismatches++
				t.Errorf("%s, %q: ferry extracts %v, the OpenTelemetry propagator %v", props, h, got, plain)
			}
		}
		if mismatches > 0 {
			t.Errorf("%s: %d mismatches of %d cases", props, mismatches, len(cases))
		}
	}
	for _, props := range []string{"b3", "tracecontext,b3", "b3multi,baggage", "none"} {
		tel, err := New(t.Context(), Config{AccessLog: "off"}, WithEnv(env{"OTEL_PROPAGATORS": props}.get))
		if err != nil {
			t.Fatal(err)
		}
		defer tel.Shutdown(t.Context())
		if tel.ownExtract {
			t.Errorf("%s: ferry extracts it itself", props)
		}
	}
}

// With ferry's extraction, a request's server span has the parent and
// decision it has with the propagators': with the known samplers, which
// decide from the parent's span context, and with a sampler ferry does
// not know, which reads its parent from the context it is given
// (parentbased_traceidratio at 0 records only a sampled parent's child).
func TestOwnExtractionStartsTheSameSpans(t *testing.T) {
	cases := extractionCases()
	for _, e := range []env{{}, {"OTEL_TRACES_SAMPLER": "always_on"},
		{"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"}} {
		tel, rec, _ := recorded(t, Config{AccessLog: "off"}, e)
		if !tel.ownExtract {
			t.Fatalf("%v: ferry does not extract the default propagators itself", e)
		}
		mismatches := 0
		for _, h := range cases {
			r := incoming("GET", "http://files/x", nil)
			for k, v := range h {
				r.Header[k] = v
			}
			want := trace.SpanContextFromContext(tel.propagator.Extract(r.Context(), headerCarrier{r.Header}))
			ctx, q := tel.StartRequest(r, Outbound)
			q.End(Outcome{Status: 200})
			sc := trace.SpanContextFromContext(ctx)
			wantSampled := e["OTEL_TRACES_SAMPLER"] == "always_on" || want.IsSampled() ||
				(!want.IsValid() && e["OTEL_TRACES_SAMPLER"] == "")
			var parent trace.SpanContext
			if ended := rec.Ended(); len(ended) > 0 {
				parent = ended[len(ended)-1].Parent()
				rec.Reset()
			}
			ok := sc.IsSampled() == wantSampled && sc.TraceState().String() == want.TraceState().String()
			if want.IsValid() {
				ok = ok && sc.TraceID() == want.TraceID()
			}
			if sc.IsSampled() {
				ok = ok && parent.Equal(want)
			}
			if !ok {
				mismatches++
				t.Errorf("%v, %q: server span %v under %v; the caller's span context %v", e, h, sc, parent, want)
			}
		}
		if mismatches > 0 {
			t.Errorf("%v: %d mismatches of %d cases", e, mismatches, len(cases))
		}
	}
}

// FuzzOwnExtraction compares ferry's extraction of a caller's traceparent,
// tracestate and baggage with what the default propagators (tracecontext
// and baggage) extract, for any values: the caller's span context and the
// baggage must be the same.
func FuzzOwnExtraction(f *testing.F) {
	f.Add("00-"+callerTrace+"-"+callerSpan+"-01", "congo=t61rcWkgMzE", "k=v")
	f.Add("01-"+callerTrace+"-"+callerSpan+"-03-future", "a=1,b=2", "")
	f.Add("ff-"+callerTrace+"-"+callerSpan+"-01", "not a tracestate", "k=v;p")
	tel, err := New(f.Context(), Config{AccessLog: "off"}, WithEnv(env{}.get))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { tel.Shutdown(context.Background()) })
	if !tel.ownExtract {
		f.Fatal("ferry does not extract the default propagators itself")
	}
	f.Fuzz(func(t *testing.T, tp, ts, bag string) {
		h := http.Header{}
		for k, v := range map[string]string{"Traceparent": tp, "Tracestate": ts, "Baggage": bag} {
			if v != "" {
				h[k] = []string{v}
			}
		}
		c := headerCarrier{h}
		want := tel.propagator.Extract(context.Background(), c)
		ctx, got := extractOwn(context.Background(), tel.propParts, c)
		wsc := trace.SpanContextFromContext(want)
		if !got.Equal(wsc) || got.IsValid() != wsc.IsValid() || bagOf(ctx) != bagOf(want) {
			t.Errorf("%q: ferry extracts %v baggage %q; the propagators %v baggage %q", h, got, bagOf(ctx), wsc, bagOf(want))
		}
	})
}
