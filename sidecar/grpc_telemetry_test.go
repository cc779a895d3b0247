package sidecar

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ferrymesh/ferry/telemetry"
)

// The gRPC status attributes ferry's spans carry.
const (
	attrGRPCStatus    = attribute.Key("rpc.grpc.status_code")
	attrRPCStatus     = attribute.Key("rpc.response.status_code")
	attrRPCSystemName = attribute.Key("rpc.system.name")
)

// A gRPC call's outcome is its grpc-status, not its HTTP status (always
// 200): the server span, each attempt's client span and the access log
// carry the status the caller got, from the upstream's trailers, the head
// of a trailers-only answer, or ferry's own failure answer. The span
// status follows gRPC's semantic conventions: a client span is an error
// for any status but OK, a server span only for the codes that say the
// server failed (UNAVAILABLE, not NOT_FOUND). Before, every one of these
// calls looked like a 200 success.
func TestGRPCStatusInTelemetry(t *testing.T) {
	_, echo := startGRPCOrigin(t)
	web := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "plain") }))
	sc, rec, logs := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound:
  listen: 127.0.0.1:0
  routes:
    - { host: echo, service: echo }
    - { host: web, service: web }
services:
  echo: { endpoints: [%s], retry: { max_retries: 0 } }
  web: { endpoints: [%s] }
`, echo, web))
	echoClient := testgrpc.NewTestServiceClient(grpcConnTo(t, sc, "echo"))
	nowhere := testgrpc.NewTestServiceClient(grpcConnTo(t, sc, "nowhere"))

	for i, tc := range []struct {
		name      string
		call      func(t *testing.T) error
		code      codes.Code
		codeName  string
		attempt   bool // an attempt was made: a client span
		serverErr bool // the server span's status is Error
	}{
		{"ok", func(t *testing.T) error {
			_, err := echoClient.UnaryCall(callCtx(t), &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("hi")}})
			return err
		}, codes.OK, "OK", true, false},
		{"not found, trailers-only", func(t *testing.T) error {
			_, err := echoClient.UnaryCall(callCtx(t), &testgrpc.SimpleRequest{ResponseStatus: &testgrpc.EchoStatus{Code: int32(codes.NotFound), Message: "no such thing"}})
			return err
		}, codes.NotFound, "NOT_FOUND", true, false},
		{"unavailable in trailers after messages", func(t *testing.T) error {
			stream, err := echoClient.StreamingOutputCall(callCtx(t), &testgrpc.StreamingOutputCallRequest{
				ResponseParameters: []*testgrpc.ResponseParameters{{Size: 10}},
				ResponseStatus:     &testgrpc.EchoStatus{Code: int32(codes.Unavailable), Message: "going away"},
			})
			if err != nil {
				return err
			}
			if _, err := stream.Recv(); err != nil {
				t.Fatalf("first message: %v", err)
			}
			_, err = stream.Recv()
			return err
		}, codes.Unavailable, "UNAVAILABLE", true, true},
		{"ferry's own failure: no route", func(t *testing.T) error {
			_, err := nowhere.UnaryCall(callCtx(t), &testgrpc.SimpleRequest{})
			return err
		}, codes.Unimplemented, "UNIMPLEMENTED", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(rec.Ended())
			if err := tc.call(t); status.Code(err) != tc.code {
				t.Fatalf("call ended %v, want %v", err, tc.code)
			}
			want := 1
			if tc.attempt {
				want = 2
			}
			waitFor(t, "the call's spans", 5*time.Second, func() bool { return len(rec.Ended()) == before+want })
			waitFor(t, "the call's access log line", 5*time.Second, func() bool { return len(accessLines(t, logs)) == i+1 })
			spans := rec.Ended()[before:]
			server := spansOfKind(spans, trace.SpanKindServer)
			if len(server) != 1 {
				t.Fatalf("%d server spans, want 1", len(server))
			}
			checkGRPCSpan(t, "server", server[0], tc.code, tc.codeName, tc.serverErr)
			if tc.attempt {
				client := spansOfKind(spans, trace.SpanKindClient)
				if len(client) != 1 {
					t.Fatalf("%d client spans, want 1", len(client))
				}
				checkGRPCSpan(t, "client", client[0], tc.code, tc.codeName, tc.code != codes.OK)
			}
			l := accessLines(t, logs)[i]
			if g, ok := l["grpc_status"]; !ok || g != float64(tc.code) {
				t.Errorf("access log grpc_status %v (present: %v), want %d; line %v", g, ok, tc.code, l)
			}
			if l["status"] == float64(http.StatusOK) && tc.code != codes.OK && !tc.attempt {
				t.Errorf("access log status 200 for ferry's own failure")
			}
		})
	}

	t.Run("plain HTTP has none", func(t *testing.T) {
		before := len(rec.Ended())
		req, _ := http.NewRequest(http.MethodGet, "http://"+sc.Addr("outbound")+"/", nil)
		req.Host = "web"
		res, err := h1Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		waitFor(t, "the request's spans", 5*time.Second, func() bool { return len(rec.Ended()) == before+2 })
		waitFor(t, "its access log line", 5*time.Second, func() bool { return len(accessLines(t, logs)) == 5 })
		for _, s := range rec.Ended()[before:] {
			for _, k := range []attribute.Key{attrGRPCStatus, attrRPCStatus, attrRPCSystemName} {
				if v := attr(s, k); v.Type() != attribute.INVALID {
					t.Errorf("%v span of a plain request has %s %v", s.SpanKind(), k, v.Emit())
				}
			}
		}
		if g, ok := accessLines(t, logs)[4]["grpc_status"]; ok {
			t.Errorf("access log line of a plain request has grpc_status %v", g)
		}
	})
}

// checkGRPCSpan checks a span's gRPC status attributes and its status.
func checkGRPCSpan(t *testing.T, kind string, s sdktrace.ReadOnlySpan, code codes.Code, name string, isErr bool) {
	t.Helper()
	if v := attr(s, attrGRPCStatus); v.Type() != attribute.INT64 || v.AsInt64() != int64(code) {
		t.Errorf("%s span %s = %v, want %d", kind, attrGRPCStatus, v.Emit(), code)
	}
	if v := attr(s, attrRPCStatus); v.AsString() != name {
		t.Errorf("%s span %s = %q, want %q", kind, attrRPCStatus, v.Emit(), name)
	}
	if v := attr(s, attrRPCSystemName); v.AsString() != "grpc" {
		t.Errorf("%s span %s = %q, want grpc", kind, attrRPCSystemName, v.Emit())
	}
	if v := attr(s, semconv.HTTPResponseStatusCodeKey); kind == "client" && v.AsInt64() != http.StatusOK {
		t.Errorf("%s span HTTP status %v, want 200", kind, v.Emit())
	}
	got := s.Status().Code == otelcodes.Error
	if got != isErr {
		t.Errorf("%s span status %v %q, want error: %v", kind, s.Status().Code, s.Status().Description, isErr)
	}
	if isErr && attr(s, telemetry.AttrReason).AsString() == "" {
		if et := attr(s, semconv.ErrorTypeKey).AsString(); et != name {
			t.Errorf("%s span error.type %q, want %q", kind, et, name)
		}
	}
}

// An upstream (or a load balancer before it) that answers a gRPC call
// plainly, with no grpc-status: the caller's gRPC library makes a status
// of the HTTP one (gRPC's HTTP to gRPC mapping), and ferry's spans and
// access log record that status, the one grpc-go reports here. Before,
// they had none, and a call refused UNAVAILABLE was missing from every
// view by gRPC status.
func TestGRPCPlainAnswerStatusInTelemetry(t *testing.T) {
	plain := h2cOrigin(t, nil, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		switch r.Header.Get("Answer") {
		case "grpc-without-status":
			w.Header().Set("Content-Type", "application/grpc")
			w.WriteHeader(http.StatusOK)
		case "grpc-message-without-status":
			w.Header().Set("Content-Type", "application/grpc")
			w.Write([]byte{0, 0, 0, 0, 0}) // an empty message, then no trailers
		case "html":
			w.Header().Set("Content-Type", "text/html")
			io.WriteString(w, "<p>hello</p>")
		default:
			code, _ := strconv.Atoi(r.Header.Get("Answer"))
			http.Error(w, "no", code)
		}
	}))
	sc, rec, logs := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound:
  listen: 127.0.0.1:0
  routes:
    - { host: plain, service: plain }
services:
  plain: { endpoints: [%s], retry: { max_retries: 0 }, breaker: { consecutive_failures: 0 } }
`, plain))
	client := testgrpc.NewTestServiceClient(grpcConnTo(t, sc, "plain"))
	for i, tc := range []struct {
		answer     string
		code       codes.Code
		httpStatus int
		serverErr  bool // the server span's status is Error (see TestGRPCStatusInTelemetry)
	}{
		{"503", codes.Unavailable, 503, true},
		{"429", codes.Unavailable, 429, true},
		{"404", codes.Unimplemented, 404, true},
		{"401", codes.Unauthenticated, 401, false},
		{"500", codes.Unknown, 500, true},
		{"html", codes.Unknown, 200, true},
		{"grpc-without-status", codes.Unknown, 200, true},
		{"grpc-message-without-status", codes.Internal, 200, true},
	} {
		t.Run(tc.answer, func(t *testing.T) {
			before := len(rec.Ended())
			ctx := metadata.AppendToOutgoingContext(callCtx(t), "answer", tc.answer)
			if _, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{}); status.Code(err) != tc.code {
				t.Fatalf("grpc-go got %v, want %v", err, tc.code)
			}
			waitFor(t, "the call's spans", 5*time.Second, func() bool { return len(rec.Ended()) == before+2 })
			waitFor(t, "the call's access log line", 5*time.Second, func() bool { return len(accessLines(t, logs)) == i+1 })
			for _, s := range rec.Ended()[before:] {
				if v := attr(s, attrGRPCStatus); v.Type() != attribute.INT64 || v.AsInt64() != int64(tc.code) {
					t.Errorf("%v span %s = %v, want %d", s.SpanKind(), attrGRPCStatus, v.Emit(), tc.code)
				}
				if v := attr(s, semconv.HTTPResponseStatusCodeKey); v.AsInt64() != int64(tc.httpStatus) {
					t.Errorf("%v span HTTP status %v, want the upstream's %d", s.SpanKind(), v.Emit(), tc.httpStatus)
				}
				isErr := s.SpanKind() == trace.SpanKindClient || tc.serverErr
				if got := s.Status().Code == otelcodes.Error; got != isErr {
					t.Errorf("%v span status %v, want error: %v", s.SpanKind(), s.Status().Code, isErr)
				}
			}
			l := accessLines(t, logs)[i]
			if g, ok := l["grpc_status"]; !ok || g != float64(tc.code) {
				t.Errorf("access log grpc_status %v (present: %v), want %d; line %v", g, ok, tc.code, l)
			}
			if l["status"] != float64(tc.httpStatus) {
				t.Errorf("access log status %v, want the upstream's %d", l["status"], tc.httpStatus)
			}
		})
	}
}

// A grpc-status written with a sign or leading zeros ("+14", "014") is
// what grpc-go's client reads with strconv.ParseInt: 14, UNAVAILABLE. So
// do ferry's spans, access log and breaker, in a trailers-only answer and
// in trailers after a message. Before, ferry read these as no status: its
// spans and access log said UNKNOWN (INTERNAL after a message) while the
// caller got UNAVAILABLE, and the endpoint's breaker counted no failure.
func TestGRPCStatusWithSignOrZerosReadAsGRPCGoReadsIt(t *testing.T) {
	up := h2cOrigin(t, nil, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/grpc")
		if r.Header.Get("Shape") == "trailers-only" {
			w.Header().Set("Grpc-Status", r.Header.Get("Status"))
			w.WriteHeader(http.StatusOK)
			return
		}
		w.Header().Set("Trailer", "Grpc-Status")
		w.Write(grpcFrame(t, &testgrpc.SimpleResponse{}))
		w.Header().Set("Grpc-Status", r.Header.Get("Status"))
	}))
	sc, rec, logs := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound:
  listen: 127.0.0.1:0
  routes:
    - { host: up, service: up }
services:
  up: { endpoints: [%s], retry: { max_retries: 0 }, breaker: { consecutive_failures: 1000 }, outlier: { consecutive_5xx: 0 } }
`, up))
	client := testgrpc.NewTestServiceClient(grpcConnTo(t, sc, "up"))
	i := 0
	for _, shape := range []string{"trailers-only", "after a message"} {
		for _, value := range []string{"014", "+14", "00014"} {
			t.Run(shape+" "+value, func(t *testing.T) {
				before := len(rec.Ended())
				failures := upstreamStatus(t, sc, "up").Endpoints[0].Failures
				ctx := metadata.AppendToOutgoingContext(callCtx(t), "shape", shape, "status", value)
				if _, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{}); status.Code(err) != codes.Unavailable {
					t.Fatalf("grpc-go got %v, want Unavailable", err)
				}
				i++
				waitFor(t, "the call's spans", 5*time.Second, func() bool { return len(rec.Ended()) == before+2 })
				waitFor(t, "the call's access log line", 5*time.Second, func() bool { return len(accessLines(t, logs)) == i })
				for _, s := range rec.Ended()[before:] {
					if v := attr(s, attrGRPCStatus); v.Type() != attribute.INT64 || v.AsInt64() != int64(codes.Unavailable) {
						t.Errorf("%v span %s = %v, want 14", s.SpanKind(), attrGRPCStatus, v.Emit())
					}
				}
				if g := accessLines(t, logs)[i-1]["grpc_status"]; g != float64(codes.Unavailable) {
					t.Errorf("access log grpc_status %v, want 14", g)
				}
				if got := upstreamStatus(t, sc, "up").Endpoints[0].Failures; got != failures+1 {
					t.Errorf("endpoint failures %d after the call, want %d: UNAVAILABLE counts as a 503", got, failures+1)
				}
			})
		}
	}
}
