package telemetry

import (
	"net/http"
	"reflect"
	"testing"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// With tracing off, a request and its attempts carry what the OpenTelemetry
// no-op tracer would give them (the caller's span context as it arrived, or
// none), and the upstream gets the caller's propagation headers as they
// came: none replaced, none added (B3 would add "do not sample").
func TestTracingOffAsNoopTracer(t *testing.T) {
	for _, propagators := range []string{"tracecontext,baggage", "b3multi", "tracecontext,b3"} {
		tel, err := New(t.Context(), Config{AccessLog: "off"}, WithEnv(env{"OTEL_PROPAGATORS": propagators}.get))
		if err != nil {
			t.Fatal(err)
		}
		defer tel.Shutdown(t.Context())
		if tel.TracingEnabled() {
			t.Fatal("tracing on without an exporter")
		}
		tracer := noop.NewTracerProvider().Tracer(instrumentationName)
		for _, hdr := range []map[string]string{
			nil,
			{"Traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "Tracestate": "a=1,b=2", "Baggage": "k=v"},
			{"Traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"},
			{"X-B3-Traceid": "463ac35c9f6413ad48485a3953bb6124", "X-B3-Spanid": "a2fb4a1d1a96d312", "X-B3-Sampled": "1"},
			{"B3": "463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-0"},
			{"Traceparent": "garbage"},
		} {
			r := incoming(http.MethodGet, "http://svc/x", hdr)
			ctx, q := tel.StartRequest(r, Listener("outbound"))
			extracted := tel.propagator.Extract(r.Context(), headerCarrier{r.Header})
			wantCtx, wantSpan := tracer.Start(extracted, r.Method)
			if got, want := trace.SpanContextFromContext(ctx), trace.SpanContextFromContext(wantCtx); !got.Equal(want) {
				t.Errorf("%s %v: request context has %v, the no-op tracer %v", propagators, hdr, got, want)
			}
			if !q.Span().SpanContext().Equal(wantSpan.SpanContext()) || q.Span().IsRecording() {
				t.Errorf("%s %v: request span %v, the no-op tracer's %v", propagators, hdr, q.Span().SpanContext(), wantSpan.SpanContext())
			}
			if h := tel.PropagationHeaders(); h != nil {
				t.Errorf("%s: tracing off lists propagation headers %v to replace", propagators, h)
			}
			out := upstream(t, tel, r, "http://10.0.0.1:8080/x")
			a := q.StartAttempt(out, AttemptInfo{Endpoint: "10.0.0.1:8080", Attempt: 1})
			a.Inject(out.Header)
			if !reflect.DeepEqual(out.Header, r.Header) {
				t.Errorf("%s %v: upstream header %v, want the caller's %v as it came", propagators, hdr, out.Header, r.Header)
			}
			a.End(Outcome{Status: 200})
			q.End(Outcome{Status: 200})
		}
	}
}
