package telemetry

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// BenchmarkRequestSpans measures what the sidecar pays per small request
// for telemetry: StartRequest, SetRoute, StartAttempt, Inject, both Ends
// (with their metrics), with the access log off. "off" is tracing off (no-op
// tracer); "on" samples 100% and exports through the batch queue to an
// exporter that discards.
func BenchmarkRequestSpans(b *testing.B) {
	for _, mode := range []string{"off", "on"} {
		b.Run(mode, func(b *testing.B) {
			opts := []Option{WithEnv(env{"OTEL_TRACES_SAMPLER": "always_on"}.get)}
			if mode == "on" {
				opts = append(opts, WithSpanExporter(tracetest.NewNoopExporter()))
			}
			tel, err := New(b.Context(), Config{AccessLog: "off"}, opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer tel.Shutdown(b.Context())
			in := httptest.NewRequest("GET", "http://files/report.pdf", nil)
			in.Header.Set("traceparent", "00-"+callerTrace+"-"+callerSpan+"-01")
			out, _ := http.NewRequest("GET", "http://files/report.pdf", nil)
			info := AttemptInfo{Endpoint: "10.0.0.7:8080", Attempt: 1, BreakerState: BreakerClosed}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				out.Header.Del("traceparent")
				_, req := tel.StartRequest(in, Outbound)
				req.SetRoute("files", "files")
				att := req.StartAttempt(out, info)
				att.Inject(out.Header)
				att.End(Outcome{Status: 200, BytesIn: 512})
				req.End(Outcome{Status: 200, BytesOut: 512})
			}
			b.StopTimer()
			if tel.TracingEnabled() != (mode == "on") {
				b.Fatalf("tracing enabled = %v in mode %s", tel.TracingEnabled(), mode)
			}
			if tel.queue != nil {
				b.ReportMetric(float64(tel.queue.Dropped())/float64(b.N), "dropped/op")
			}
		})
	}
}

// BenchmarkSpanPair isolates the tracer: a server span and its client child,
// started and ended, without metrics or propagation. With tracing off this
// is the no-op tracer.
func BenchmarkSpanPair(b *testing.B) {
	for _, mode := range []string{"off", "on"} {
		b.Run(mode, func(b *testing.B) {
			opts := []Option{WithEnv(env{"OTEL_TRACES_SAMPLER": "always_on"}.get)}
			if mode == "on" {
				opts = append(opts, WithSpanExporter(tracetest.NewNoopExporter()))
			}
			tel, err := New(b.Context(), Config{AccessLog: "off"}, opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer tel.Shutdown(b.Context())
			ctx := b.Context()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				sctx, server := tel.tracer.Start(ctx, "GET files", serverKind)
				_, client := tel.tracer.Start(sctx, "GET", clientKind)
				client.End()
				server.End()
			}
		})
	}
}
