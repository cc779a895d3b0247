package sidecar

import (
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// A gRPC-Web call's spans and access log line carry the gRPC status its
// caller got, as a gRPC call's do (rpc.grpc.status_code, grpc_status):
// from the upstream's trailer frame or trailers-only head; UNKNOWN for an
// answer that ended with none; the status gRPC-Web clients make of a plain
// 503; ferry's own failure's code. An answer whose status ferry could not
// read (a compressed trailer frame) has none, not a made-up one. Over
// HTTP/1.1, h2c, and a Content-Length answer on ferry's own client.
// Before, a gRPC-Web call's spans and line had no gRPC status at all.
func TestGRPCWebStatusInTelemetry(t *testing.T) {
	msg := grpcWebFrame(0, []byte("hello"))
	var answer atomic.Pointer[webAnswer]
	web := grpcWebAnswering(t, &answer)
	plain := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
	}))
	sc, rec, logs := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound:
  listen: 127.0.0.1:0
  routes:
    - { host: web, service: web }
    - { host: plain, service: plain }
services:
  web: { endpoints: [%s], retry: { max_retries: 0 }, breaker: { consecutive_failures: 0 } }
  plain: { endpoints: [%s], retry: { max_retries: 0 }, breaker: { consecutive_failures: 0 } }
`, web, plain))
	base := "http://" + sc.Addr("outbound")
	lines := 0
	for _, cl := range webCallers {
		for _, tc := range []struct {
			name, host, ct string
			answer         webAnswer
			code           int // -1: no status recorded
			attempt        bool
		}{
			{"OK in the trailer frame", "web", "application/grpc-web+proto", webAnswer{frames: [][]byte{msg, trailerFrame("grpc-status: 0")}}, 0, true},
			{"UNAVAILABLE in the trailer frame, -text", "web", "application/grpc-web-text", webAnswer{frames: [][]byte{msg, trailerFrame("grpc-status: 14")}}, grpcUnavailable, true},
			{"NOT_FOUND trailers-only", "web", "application/grpc-web", webAnswer{head: "5"}, 5, true},
			{"no status", "web", "application/grpc-web", webAnswer{frames: [][]byte{msg}}, grpcUnknown, true},
			{"compressed trailer frame", "web", "application/grpc-web", webAnswer{frames: [][]byte{msg, grpcWebFrame(0x81, []byte("x"))}}, -1, true},
			{"plain 503", "plain", "application/grpc-web", webAnswer{}, grpcUnavailable, true},
			{"ferry's own failure: no route", "nowhere", "application/grpc-web", webAnswer{}, grpcUnimplemented, false},
		} {
			t.Run(cl.name+"/"+tc.name, func(t *testing.T) {
				a := tc.answer
				a.length = cl.length
				answer.Store(&a)
				before := len(rec.Ended())
				c := cl.c()
				defer c.CloseIdleConnections()
				grpcWebCall(t, c, base, tc.host, tc.ct, cl.body)
				want := 1
				if tc.attempt {
					want = 2
				}
				lines++
				waitFor(t, "the call's spans", 5*time.Second, func() bool { return len(rec.Ended()) == before+want })
				waitFor(t, "the call's access log line", 5*time.Second, func() bool { return len(accessLines(t, logs)) == lines })
				spans := rec.Ended()[before:]
				if n := len(spansOfKind(spans, trace.SpanKindServer)); n != 1 {
					t.Fatalf("%d server spans, want 1", n)
				}
				for _, s := range spans {
					v := attr(s, attrGRPCStatus)
					if tc.code < 0 {
						if v.Type() != attribute.INVALID {
							t.Errorf("%v span %s = %v, want none", s.SpanKind(), attrGRPCStatus, v.Emit())
						}
						continue
					}
					if v.Type() != attribute.INT64 || v.AsInt64() != int64(tc.code) {
						t.Errorf("%v span %s = %v, want %d", s.SpanKind(), attrGRPCStatus, v.Emit(), tc.code)
					}
					if v := attr(s, attrRPCSystemName); v.AsString() != "grpc" {
						t.Errorf("%v span %s = %q, want grpc", s.SpanKind(), attrRPCSystemName, v.Emit())
					}
					if v := attr(s, semconv.HTTPResponseStatusCodeKey); s.SpanKind() == trace.SpanKindClient && tc.host == "web" && v.AsInt64() != http.StatusOK {
						t.Errorf("client span HTTP status %v, want the upstream's 200", v.Emit())
					}
				}
				l := accessLines(t, logs)[lines-1]
				g, ok := l["grpc_status"]
				switch {
				case tc.code < 0 && ok:
					t.Errorf("access log grpc_status %v, want none; line %v", g, l)
				case tc.code >= 0 && (!ok || g != float64(tc.code)):
					t.Errorf("access log grpc_status %v (present: %v), want %d; line %v", g, ok, tc.code, l)
				}
			})
		}
	}
}
