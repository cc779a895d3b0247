package telemetry

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/trace"
)

// StartRequest skips extraction when a header holds none of the
// propagators' fields (carriesFields). That is only right if no propagator
// ferry offers reads anything else: here each extracts nothing from a
// header full of other fields, including the prefixed baggage forms other
// propagators use, and does from its own fields.
func TestExtractNeedsFields(t *testing.T) {
	others := map[string]string{
		"Ot-Baggage-K": "v", "Uberctx-K": "v", "Uber-Trace-Id": "4bf92f3577b34da6:00f067aa0ba902b7:0:1",
		"X-Amzn-Trace-Id":   "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
		"Ot-Tracer-Traceid": "4bf92f3577b34da6", "Ot-Tracer-Spanid": "00f067aa0ba902b7", "Ot-Tracer-Sampled": "true",
		"Grpc-Trace-Bin": "AAAL", "X-Cloud-Trace-Context": "105445aa7843bc8bf206b12000100000/1;o=1",
	}
	single := map[string]string{"B3": "463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-1"}
	multi := map[string]string{"X-B3-Traceid": "463ac35c9f6413ad48485a3953bb6124", "X-B3-Spanid": "a2fb4a1d1a96d312", "X-B3-Sampled": "1"}
	own := map[string][]map[string]string{
		"tracecontext": {{"Traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}},
		"baggage":      {{"Baggage": "k=v"}},
		// B3 reads both forms whichever it writes: its Fields() name
		// only the one it writes.
		"b3":      {single, multi},
		"b3multi": {multi, single},
	}
	for name, forms := range own {
		tel, err := New(t.Context(), Config{AccessLog: "off"}, WithEnv(env{"OTEL_PROPAGATORS": name}.get))
		if err != nil {
			t.Fatal(err)
		}
		defer tel.Shutdown(t.Context())
		r := incoming(http.MethodGet, "http://svc/x", others)
		if tel.carriesFields(r.Header) {
			t.Fatalf("%s: fields found in %v", name, r.Header)
		}
		ctx := tel.propagator.Extract(r.Context(), headerCarrier{r.Header})
		if trace.SpanContextFromContext(ctx).IsValid() || baggage.FromContext(ctx).Len() != 0 {
			t.Fatalf("%s extracted %v and baggage %q from other fields", name, trace.SpanContextFromContext(ctx), baggage.FromContext(ctx).String())
		}
		for _, fields := range forms {
			r = incoming(http.MethodGet, "http://svc/x", fields)
			if !tel.carriesFields(r.Header) {
				t.Fatalf("%s: its own fields %v not found", name, r.Header)
			}
			ctx, q := tel.StartRequest(r, Listener("outbound"))
			if !trace.SpanContextFromContext(ctx).IsValid() && baggage.FromContext(ctx).Len() == 0 {
				t.Fatalf("%s: nothing extracted from its own fields %v", name, fields)
			}
			q.End(Outcome{Status: 200})
		}
	}
}

// StartRequest's context adds values to the request's, never a deadline
// or a cancellation of its own, tracing on or off, with a caller's trace
// context or without: the sidecar's lane takes it for its exchange's own
// context on that promise.
func TestStartRequestAddsValuesOnly(t *testing.T) {
	errCause := errors.New("the cause")
	for _, tracing := range []bool{false, true} {
		cfg, e := Config{AccessLog: "off"}, env{}
		var tel *Telemetry
		if tracing {
			tel, _, _ = recorded(t, cfg, e)
		} else {
			var err error
			if tel, err = New(t.Context(), cfg, WithEnv(e.get)); err != nil {
				t.Fatal(err)
			}
			defer tel.Shutdown(t.Context())
		}
		for _, hdr := range []map[string]string{nil, {"Traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}} {
			parent, cancel := context.WithCancelCause(context.Background())
			r := incoming(http.MethodGet, "http://svc/x", hdr).WithContext(parent)
			ctx, q := tel.StartRequest(r, Listener("outbound"))
			if _, ok := ctx.Deadline(); ok || ctx.Done() != parent.Done() {
				t.Fatalf("tracing %v, header %v: the context has a deadline or a done channel of its own", tracing, hdr)
			}
			cancel(errCause)
			if !errors.Is(context.Cause(ctx), errCause) {
				t.Fatalf("tracing %v, header %v: cause %v", tracing, hdr, context.Cause(ctx))
			}
			q.End(Outcome{Status: 200})
		}
	}
}
