package telemetry

import (
	"context"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// TestOTLPEncodingIsCanonical holds the encoder to the bytes the protobuf
// library writes for the same message (every length in its shortest
// form, fields in number order): batches of ferry's spans of every size
// around the length bytes' boundaries (a span body under 128 bytes, one
// over 16 KiB, a batch over 2 MiB), spans of every field and several
// resources and scopes, with and without gRPC's prefix. How the encoder
// places the lengths may change; the bytes it sends may not.
func TestOTLPEncodingIsCanonical(t *testing.T) {
	tel, rec, _ := recorded(t, Config{AccessLog: "off"}, env{})
	request := func(path, ua string) {
		r := incoming("GET", "http://files"+path, map[string]string{"traceparent": "00-" + callerTrace + "-" + callerSpan + "-01", "User-Agent": ua})
		_, req := tel.StartRequest(r, Outbound)
		req.SetRoute("files", "files")
		att := req.StartAttempt(upstream(t, tel, r, "http://files"+path), AttemptInfo{Endpoint: "10.0.0.7:8080", Attempt: 1, BreakerState: BreakerClosed})
		att.End(Outcome{Status: 200, BytesIn: 1024})
		req.End(Outcome{Status: 200, BytesOut: 1024})
	}
	request("/report.pdf", "ferry-test/1")
	request("/"+strings.Repeat("p", 20000), strings.Repeat("u", 300)) // spans over 16 KiB
	_, tiny := tel.tracer.Start(context.Background(), "x")            // a span under 128 bytes
	tiny.End()
	for range 4000 {
		request("/report.pdf", "ferry-test/1")
	}
	ferry := rec.Ended()

	batches := map[string][]sdktrace.ReadOnlySpan{
		"one span":             ferry[:1],
		"two spans":            ferry[:2],
		"long spans":           ferry[2:4],
		"tiny span":            ferry[4:5],
		"mixed":                ferry[:6],
		"512 spans":            ferry[5 : 5+512],
		"over 2 MiB":           ferry,
		"every field":          recordSpans(t),
		"every field and more": append(append([]sdktrace.ReadOnlySpan(nil), recordSpans(t)...), ferry[:8]...),
	}
	var enc otlpEncoder
	for name, spans := range batches {
		for _, prefix := range []int{0, grpcPrefixLen} {
			b := enc.encode(spans, prefix)
			if len(b) < prefix || string(b[:prefix]) != string(make([]byte, prefix)) {
				t.Fatalf("%s, prefix %d: the prefix is not %d zero bytes", name, prefix, prefix)
			}
			var req coltracepb.ExportTraceServiceRequest
			if err := proto.Unmarshal(b[prefix:], &req); err != nil {
				t.Fatalf("%s, prefix %d: decode: %v", name, prefix, err)
			}
			n := 0
			for _, rs := range req.ResourceSpans {
				for _, ss := range rs.ScopeSpans {
					n += len(ss.Spans)
				}
			}
			if n != len(spans) {
				t.Fatalf("%s, prefix %d: %d spans decoded, want %d", name, prefix, n, len(spans))
			}
			want, err := proto.MarshalOptions{Deterministic: true}.Marshal(&req)
			if err != nil {
				t.Fatal(err)
			}
			if string(b[prefix:]) != string(want) {
				t.Errorf("%s, prefix %d: %d bytes differ from the protobuf library's %d", name, prefix, len(b)-prefix, len(want))
			}
		}
	}
}
