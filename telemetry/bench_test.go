package telemetry

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// BenchmarkRequestSpans measures what the sidecar pays per small request
// for telemetry: StartRequest, SetRoute, StartAttempt, Inject, both Ends
// (with their metrics), with the access log off. "off" is tracing off (no-op
// tracer); "on" samples 100% and exports through the batch queue to an
// exporter that discards; "otlp-http" and "otlp-grpc" export with ferry's
// OTLP exporter to an in-process receiver that discards (its CPU counts
// too).
func BenchmarkRequestSpans(b *testing.B) {
	for _, mode := range []string{"off", "on", "otlp-http", "otlp-grpc"} {
		b.Run(mode, func(b *testing.B) {
			opts := []Option{WithEnv(env{"OTEL_TRACES_SAMPLER": "always_on"}.get)}
			cfg := Config{AccessLog: "off"}
			switch mode {
			case "on":
				opts = append(opts, WithSpanExporter(tracetest.NewNoopExporter()))
			case "otlp-http", "otlp-grpc":
				sink := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					io.Copy(io.Discard, r.Body)
					if mode == "otlp-grpc" {
						w.Header().Set("Content-Type", "application/grpc")
						w.Header().Set("Trailer", "Grpc-Status")
						w.Write([]byte{0, 0, 0, 0, 0})
						w.Header().Set("Grpc-Status", "0")
					}
				}))
				sink.Config.Protocols = new(http.Protocols)
				sink.Config.Protocols.SetHTTP1(true)
				sink.Config.Protocols.SetUnencryptedHTTP2(true)
				sink.Start()
				defer sink.Close()
				cfg.Endpoint, cfg.Protocol = sink.URL, ProtocolHTTPProtobuf
				if mode == "otlp-grpc" {
					cfg.Protocol = ProtocolGRPC
				}
			}
			tel, err := New(b.Context(), cfg, opts...)
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
			if tel.TracingEnabled() != (mode != "off") {
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

// BenchmarkOTLPEncode measures ferry's OTLP encoding of a batch of 512
// spans as ferry makes them (server and client spans of small requests);
// ns/op is per batch, ns/span per span.
func BenchmarkOTLPEncode(b *testing.B) {
	tel, rec, _ := recorded(b, Config{AccessLog: "off"}, env{})
	for range 256 {
		r := incoming("GET", "http://files/report.pdf", map[string]string{"traceparent": "00-" + callerTrace + "-" + callerSpan + "-01"})
		_, req := tel.StartRequest(r, Outbound)
		req.SetRoute("files", "files")
		att := req.StartAttempt(upstream(b, tel, r, "http://files/report.pdf"), AttemptInfo{Endpoint: "10.0.0.7:8080", Attempt: 1, BreakerState: BreakerClosed})
		att.End(Outcome{Status: 200, BytesIn: 1024})
		req.End(Outcome{Status: 200, BytesOut: 1024})
	}
	spans := rec.Ended()
	var enc otlpEncoder
	b.ReportAllocs()
	var n int
	for b.Loop() {
		n = len(enc.encode(spans, 0))
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(spans)), "ns/span")
	b.ReportMetric(float64(n)/float64(len(spans)), "bytes/span")
}

// BenchmarkOTLPEncodeEndpoints is BenchmarkOTLPEncode with the attempts
// spread over seven endpoints in turn, as a service's load balancing
// spreads them.
func BenchmarkOTLPEncodeEndpoints(b *testing.B) {
	tel, rec, _ := recorded(b, Config{AccessLog: "off"}, env{})
	for i := range 256 {
		r := incoming("GET", "http://files/report.pdf", map[string]string{"traceparent": "00-" + callerTrace + "-" + callerSpan + "-01"})
		_, req := tel.StartRequest(r, Outbound)
		req.SetRoute("files", "files")
		endpoint := "10.0.0." + strconv.Itoa(i%7) + ":8080"
		att := req.StartAttempt(upstream(b, tel, r, "http://files/report.pdf"), AttemptInfo{Endpoint: endpoint, Attempt: 1, BreakerState: BreakerClosed})
		att.End(Outcome{Status: 200, BytesIn: 1024})
		req.End(Outcome{Status: 200, BytesOut: 1024})
	}
	spans := rec.Ended()
	var enc otlpEncoder
	b.ReportAllocs()
	var n int
	for b.Loop() {
		n = len(enc.encode(spans, 0))
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(spans)), "ns/span")
	b.ReportMetric(float64(n)/float64(len(spans)), "bytes/span")
}

// BenchmarkExtractCallerContext measures reading a caller's traceparent
// and tracestate under the default propagators (tracecontext, baggage):
// "propagators" is their composite Extract and the lookup of the span
// context it put in the context; "ferry" is extractOwn.
func BenchmarkExtractCallerContext(b *testing.B) {
	tel, err := New(b.Context(), Config{AccessLog: "off"}, WithEnv(env{}.get))
	if err != nil {
		b.Fatal(err)
	}
	defer tel.Shutdown(b.Context())
	h := http.Header{"Traceparent": {"00-" + callerTrace + "-" + callerSpan + "-01"}, "Tracestate": {"congo=t61rcWkgMzE"}}
	c := headerCarrier{h}
	var sc trace.SpanContext
	b.Run("propagators", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sc = trace.SpanContextFromContext(tel.propagator.Extract(b.Context(), c))
		}
	})
	b.Run("ferry", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, sc = extractOwn(b.Context(), tel.propParts, c)
		}
	})
	if !sc.IsValid() {
		b.Fatal("nothing extracted")
	}
}
