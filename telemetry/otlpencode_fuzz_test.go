package telemetry

import (
	"bytes"
	"errors"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// validAttrs is kvs as an OTLP receiver reads them once encoded: every
// string (keys, values, in slices and maps) made valid UTF-8.
func validAttrs(kvs []attribute.KeyValue) [][2]any {
	out := fromAttributes(kvs)
	for i := range out {
		out[i][0] = validUTF8(out[i][0].(string))
		out[i][1] = validAny(out[i][1])
	}
	return out
}

func validAny(v any) any {
	switch x := v.(type) {
	case string:
		return validUTF8(x)
	case []any:
		for i := range x {
			x[i] = validAny(x[i])
		}
	case [][2]any:
		for i := range x {
			x[i][0] = validUTF8(x[i][0].(string))
			x[i][1] = validAny(x[i][1])
		}
	}
	return v
}

// decodeSpans decodes an ExportTraceServiceRequest with the official
// protos and returns its spans in order.
func decodeSpans(t *testing.T, b []byte) []*tracepb.Span {
	t.Helper()
	var req coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		t.Fatalf("the encoding does not decode with the official OTLP protos: %v", err)
	}
	var out []*tracepb.Span
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			out = append(out, ss.Spans...)
		}
	}
	return out
}

// Whatever a caller sends (method, path, Host, User-Agent, address) and
// whatever strings a span holds, the OTLP encoding decodes with the
// official protos and carries the span's name, attributes, event and
// status as the SDK reports them (strings made valid UTF-8): one bad value
// never costs the whole batch.
func FuzzOTLPEncode(f *testing.F) {
	f.Add("GET", "/files/a", "files:8080", "curl/8", "10.0.0.1:4000", "/files", "files", "10.0.0.9:80", "ok", "k", []byte{1})
	f.Add("BREW", "/caf\xe9", "h\xffst", "bot\xff/1", "[::1]:1", "", "", "", "", "", []byte(nil))
	f.Add("PATCH", strings.Repeat("/p", 100), "a", strings.Repeat("u", 130), "x", "/r", "s", "e:1", strings.Repeat("\xc3", 70), "\xe2\x82", []byte{})
	f.Add("", "", "", "", "", "", "", "", "", "", []byte(nil))

	tel, rec, _ := recorded(f, Config{AccessLog: "off"}, env{})
	var enc otlpEncoder
	f.Fuzz(func(t *testing.T, method, path, host, ua, remote, route, service, endpoint, s, key string, raw []byte) {
		rec.Reset()
		// ferry's own spans, through the helpers.
		r := &http.Request{Method: method, URL: &url.URL{Path: path}, Host: host, RemoteAddr: remote,
			Header: http.Header{"User-Agent": {ua}}, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
		_, q := tel.StartRequest(r, Inbound)
		q.SetRoute(route, service)
		out := &http.Request{Method: method, URL: &url.URL{Scheme: "http", Host: endpoint, Path: path}, Host: host, Header: http.Header{}}
		a := q.StartAttempt(out, AttemptInfo{Endpoint: endpoint, Attempt: 1})
		a.End(Outcome{Status: 503, Reason: s, Err: errors.New(s)})
		q.End(Outcome{Status: 502, Reason: s, BytesIn: int64(len(raw)), Err: errors.New(s)})

		// And a span from elsewhere with every kind of string.
		tid, sid := trace.TraceID{1}, trace.SpanID{2}
		stub := tracetest.SpanStub{
			Name:        s,
			SpanContext: trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid}),
			Attributes: []attribute.KeyValue{
				attribute.String(key, s),
				attribute.StringSlice("ss", []string{s, key, ua}),
				attribute.ByteSlice("b", raw),
				attribute.Slice("mixed", attribute.StringValue(s), attribute.MapValue(attribute.String(key, ua))),
				attribute.Map(key, attribute.String(s, key)),
			},
			Events: []sdktrace.Event{{Name: s, Attributes: []attribute.KeyValue{attribute.String(key, s)}}},
			Status: sdktrace.Status{Code: codes.Error, Description: s},
		}.Snapshot()
		spans := append(rec.Ended(), stub)

		got := decodeSpans(t, bytes.Clone(enc.encode(spans, 0)))
		if len(got) != len(spans) {
			t.Fatalf("%d spans decoded, %d encoded", len(got), len(spans))
		}
		for i, s := range spans {
			g := got[i]
			if g.Name != validUTF8(s.Name()) {
				t.Errorf("span %d: name %q, want %q", i, g.Name, validUTF8(s.Name()))
			}
			if gotA, want := fromKeyValues(g.Attributes), validAttrs(s.Attributes()); !reflect.DeepEqual(gotA, want) {
				t.Errorf("span %d attributes\n got %v\nwant %v", i, gotA, want)
			}
			if len(g.Events) != len(s.Events()) {
				t.Fatalf("span %d: %d events, want %d", i, len(g.Events), len(s.Events()))
			}
			for j, ev := range s.Events() {
				if g.Events[j].Name != validUTF8(ev.Name) ||
					!reflect.DeepEqual(fromKeyValues(g.Events[j].Attributes), validAttrs(ev.Attributes)) {
					t.Errorf("span %d event %d: %q %v, want %q %v", i, j, g.Events[j].Name,
						fromKeyValues(g.Events[j].Attributes), validUTF8(ev.Name), validAttrs(ev.Attributes))
				}
			}
			if st := s.Status(); st.Code == codes.Error && g.Status.GetMessage() != validUTF8(st.Description) {
				t.Errorf("span %d: status message %q, want %q", i, g.Status.GetMessage(), validUTF8(st.Description))
			}
		}
	})
}
