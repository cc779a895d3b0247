package sidecar

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/ferrymesh/ferry/resilience"
)

// grpcBreakerFerry starts gRPC origins and a ferry with them as the
// endpoints of service svc, with the given resilience settings (the
// clock stands still, so an open breaker stays open), and returns a
// client through ferry and the first origin's address.
func grpcBreakerFerry(t *testing.T, settings string, origins int) (testgrpc.TestServiceClient, *Sidecar, string) {
	t.Helper()
	addrs := make([]string, origins)
	for i := range addrs {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := grpc.NewServer()
		testgrpc.RegisterTestServiceServer(srv, &grpcOrigin{})
		go srv.Serve(ln)
		t.Cleanup(srv.Stop)
		addrs[i] = ln.Addr().String()
	}
	clock := resilience.NewManualClock(time.Unix(1_000_000, 0))
	sc, _ := resilientFerry(t, clock, settings, addrs...)
	conn, err := grpc.NewClient("passthrough:///"+sc.Addr("outbound"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return testgrpc.NewTestServiceClient(conn), sc, addrs[0]
}

// unaryEndingWith makes a unary call the origin ends with code (a
// trailers-only response: no message, the status in the head).
func unaryEndingWith(t *testing.T, c testgrpc.TestServiceClient, code codes.Code) {
	t.Helper()
	_, err := c.UnaryCall(callCtx(t), &testgrpc.SimpleRequest{ResponseStatus: &testgrpc.EchoStatus{Code: int32(code), Message: "as asked"}})
	if got := status.Code(err); got != code {
		t.Fatalf("call ended %v (%v), want %v from the origin", got, err, code)
	}
}

// streamEndingWith makes a server-streaming call whose two messages come
// before the origin ends it with code in the trailers.
func streamEndingWith(t *testing.T, c testgrpc.TestServiceClient, code codes.Code) {
	t.Helper()
	stream, err := c.StreamingOutputCall(callCtx(t), &testgrpc.StreamingOutputCallRequest{
		ResponseParameters: []*testgrpc.ResponseParameters{{Size: 10}, {Size: 10}},
		ResponseStatus:     &testgrpc.EchoStatus{Code: int32(code), Message: "as asked"},
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if _, err := stream.Recv(); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	if _, err := stream.Recv(); status.Code(err) != code {
		t.Fatalf("stream ended %v (%v), want %v from the origin", status.Code(err), err, code)
	}
}

const grpcBreakerSettings = `
    breaker: { consecutive_failures: 3, open_duration: 30s }
    outlier: { consecutive_5xx: 0 }
    retry: { max_retries: 0 }`

// A gRPC server that cannot serve answers HTTP 200 with grpc-status 14
// UNAVAILABLE, in the head of a trailers-only response or in the trailers
// after messages: the breaker counts it as it counts a 503.
func TestGRPCUnavailableOpensBreaker(t *testing.T) {
	for _, tc := range []struct {
		name string
		call func(*testing.T, testgrpc.TestServiceClient, codes.Code)
	}{
		{"trailers-only", unaryEndingWith},
		{"after messages", streamEndingWith},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, sc, addr := grpcBreakerFerry(t, grpcBreakerSettings, 1)
			for range 3 {
				tc.call(t, c, codes.Unavailable)
			}
			waitBreaker(t, sc, addr, resilience.BreakerOpen)
			_, err := c.UnaryCall(callCtx(t), &testgrpc.SimpleRequest{})
			if st, _ := status.FromError(err); st.Code() != codes.Unavailable {
				t.Fatalf("with the breaker open: %v, want Unavailable from ferry's 503", err)
			}
		})
	}
}

// Statuses that say the call, not the server, was at fault leave the
// breaker closed: the caller's arguments, its own deadline (grpc-timeout)
// or its cancellation.
func TestGRPCCallerStatusesKeepBreakerClosed(t *testing.T) {
	c, sc, addr := grpcBreakerFerry(t, grpcBreakerSettings, 1)
	for _, code := range []codes.Code{codes.InvalidArgument, codes.NotFound, codes.DeadlineExceeded, codes.Canceled, codes.FailedPrecondition, codes.ResourceExhausted} {
		for range 3 {
			unaryEndingWith(t, c, code)
			streamEndingWith(t, c, code)
		}
	}
	if got := breakerOf(t, sc, addr); got != resilience.BreakerClosed {
		t.Fatalf("breaker %v after calls that failed by the caller's doing", got)
	}
	unaryEndingWith(t, c, codes.OK)
}

// Outlier ejection counts UNKNOWN, INTERNAL and DATA_LOSS as it counts a
// 500: of two endpoints that end every call so, one is ejected.
func TestGRPCServerErrorsEject(t *testing.T) {
	for _, code := range []codes.Code{codes.Internal, codes.Unknown, codes.DataLoss} {
		t.Run(code.String(), func(t *testing.T) {
			c, sc, _ := grpcBreakerFerry(t, `
    balancer: round_robin
    breaker: { consecutive_failures: 0 }
    outlier: { consecutive_5xx: 3, max_ejection_percent: 50 }
    retry: { max_retries: 0 }`, 2)
			for range 6 {
				unaryEndingWith(t, c, code)
			}
			waitFor(t, "an endpoint ejected", 5*time.Second, func() bool {
				for _, ep := range upstreamStatus(t, sc, "svc").Endpoints {
					if !ep.EjectedUntil.IsZero() {
						return true
					}
				}
				return false
			})
		})
	}
}

func TestGRPCHealthStatus(t *testing.T) {
	for _, tc := range []struct {
		ct, head, trailer string
		proto, status     int
		want              int
	}{
		{"application/grpc", "", "14", 2, 200, 503},
		{"application/grpc", "14", "", 2, 200, 503}, // trailers-only
		{"application/grpc+proto", "", "13", 2, 200, 500},
		{"application/grpc;charset=utf-8", "", "2", 2, 200, 500},
		{"application/grpc", "", "15", 2, 200, 500},
		{"application/grpc", "", "0", 2, 200, 0},
		{"application/grpc", "", "4", 2, 200, 0},     // DEADLINE_EXCEEDED: the caller's deadline
		{"application/grpc", "", "12", 2, 200, 0},    // UNIMPLEMENTED: the call's method
		{"application/grpc", "", "", 2, 200, 500},    // no status at all: UNKNOWN
		{"application/grpc", "", "014", 2, 200, 503}, // read as grpc-go reads it
		{"application/grpc", "", "+14", 2, 200, 503},
		{"application/grpc", "", "five", 2, 200, 500}, // UNKNOWN to a grpc-go client
		{"application/grpc-web", "", "14", 2, 200, 0},
		{"application/grpcx", "", "14", 2, 200, 0},
		{"text/plain", "", "14", 2, 200, 0},
		{"application/grpc", "", "14", 1, 200, 0},
		{"application/grpc", "", "14", 2, 204, 0},
	} {
		res := &http.Response{ProtoMajor: tc.proto, StatusCode: tc.status, Header: http.Header{"Content-Type": {tc.ct}}, Trailer: http.Header{}}
		if tc.head != "" {
			res.Header.Set("Grpc-Status", tc.head)
		}
		if tc.trailer != "" {
			res.Trailer.Set("Grpc-Status", tc.trailer)
		}
		if got := grpcHealthStatus(res, 0); got != tc.want {
			t.Errorf("%s HTTP/%d %d, head %q, trailer %q: %d, want %d", tc.ct, tc.proto, tc.status, tc.head, tc.trailer, got, tc.want)
		}
	}
}

// grpcStatus reads the status a gRPC response ended with, in its trailers
// or a trailers-only head, as grpc-go's client reads it (its
// http2Client.operateHeaders): a decimal number strconv.ParseInt takes
// with 32 bits, sign and leading zeros included, as a uint32; a value it
// refuses is UNKNOWN; of several fields, the last. (Before, "014", "+5"
// and the malformed values were read as no status at all.)
func TestGRPCStatusRead(t *testing.T) {
	for _, tc := range []struct {
		ct, head, trailer string
		proto             int
		want              int
		ok                bool
	}{
		{"application/grpc", "", "014", 2, 14, true},
		{"application/grpc", "", "+14", 2, 14, true},
		{"application/grpc", "+14", "", 2, 14, true}, // trailers-only
		{"application/grpc", "", "-0", 2, 0, true},
		{"application/grpc", "", "-1", 2, 4294967295, true},
		{"application/grpc", "", "00000000000000000000014", 2, 14, true},
		{"application/grpc", "", "2147483648", 2, grpcUnknown, true},
		{"application/grpc", "", "5 ", 2, grpcUnknown, true},
		{"application/grpc", "", "five", 2, grpcUnknown, true},
		{"application/grpc", "", "1_4", 2, grpcUnknown, true},
		{"application/grpc", "", "0x0e", 2, grpcUnknown, true},
		{"application/grpc", "", "0", 2, 0, true},
		{"application/grpc", "", "5", 2, 5, true},
		{"application/grpc", "14", "", 2, 14, true}, // trailers-only
		{"application/grpc", "7", "5", 2, 5, true},  // the trailers' own
		{"application/grpc+proto", "", "16", 2, 16, true},
		{"application/grpc", "", "99", 2, 99, true}, // beyond the codes gRPC defines
		{"application/grpc", "", "2147483647", 2, 2147483647, true},
		{"application/grpc", "", "", 2, 0, false},
		{"application/grpc-web", "", "5", 2, 0, false},
		{"text/plain", "", "5", 2, 0, false},
		{"application/grpc", "", "5", 1, 0, false},
	} {
		res := &http.Response{ProtoMajor: tc.proto, StatusCode: 200, Header: http.Header{"Content-Type": {tc.ct}}, Trailer: http.Header{}}
		if tc.head != "" {
			res.Header.Set("Grpc-Status", tc.head)
		}
		if tc.trailer != "" {
			res.Trailer.Set("Grpc-Status", tc.trailer)
		}
		if got, ok := grpcStatus(res); got != tc.want || ok != tc.ok {
			t.Errorf("%s HTTP/%d, head %q, trailer %q: %d %v, want %d %v", tc.ct, tc.proto, tc.head, tc.trailer, got, ok, tc.want, tc.ok)
		}
	}
	// Several fields: the last one, as grpc-go takes it, unless one of
	// them is malformed (grpc-go ends the call UNKNOWN at the first).
	for _, tc := range []struct {
		vals []string
		want int
	}{
		{[]string{"0", "14"}, 14},
		{[]string{"14", "0"}, 0},
		{[]string{"five", "14"}, grpcUnknown},
		{[]string{"", "14"}, grpcUnknown},
		{[]string{"14", "x"}, grpcUnknown},
	} {
		res := &http.Response{ProtoMajor: 2, StatusCode: 200, Header: http.Header{"Content-Type": {"application/grpc"}}, Trailer: http.Header{"Grpc-Status": tc.vals}}
		if got, ok := grpcStatus(res); got != tc.want || !ok {
			t.Errorf("trailer grpc-status %q: %d %v, want %d true", tc.vals, got, ok, tc.want)
		}
	}
	// A malformed status after messages is UNKNOWN too (grpc-go's),
	// not the INTERNAL of an answer that ended without trailers.
	res := &http.Response{ProtoMajor: 2, StatusCode: 200, Header: http.Header{"Content-Type": {"application/grpc"}}, Trailer: http.Header{"Grpc-Status": {"five"}}}
	if got := grpcCallerStatus(res, 5); got != grpcUnknown {
		t.Errorf("malformed grpc-status after a message: caller status %d, want UNKNOWN", got)
	}
}

// What a gRPC caller makes of an upstream's answer: its grpc-status, or
// the HTTP status mapped as gRPC clients map it; for an answer left
// unread, only what its head says.
func TestGRPCCallerStatus(t *testing.T) {
	for _, tc := range []struct {
		status      int
		ct, head    string
		trailer     string
		want        int
		headWant    int
		headKnowsIt bool
	}{
		{200, "application/grpc", "", "0", 0, 0, false}, // the status comes in the trailers
		{200, "application/grpc", "", "5", 5, 0, false},
		{200, "application/grpc", "14", "", 14, 14, true}, // trailers-only
		{200, "application/grpc", "", "", grpcUnknown, 0, false},
		{200, "application/grpc", "", "five", grpcUnknown, 0, false},
		{200, "text/html", "", "", grpcUnknown, grpcUnknown, true},
		{503, "application/grpc", "14", "", grpcUnavailable, grpcUnavailable, true}, // HTTP's status rules
		{503, "text/plain", "", "", grpcUnavailable, grpcUnavailable, true},
		{502, "text/plain", "", "", grpcUnavailable, grpcUnavailable, true},
		{504, "text/plain", "", "", grpcUnavailable, grpcUnavailable, true}, // not ferry's own 504
		{429, "text/plain", "", "", grpcUnavailable, grpcUnavailable, true},
		{400, "text/plain", "", "", grpcInternal, grpcInternal, true},
		{401, "text/plain", "", "", grpcUnauthenticated, grpcUnauthenticated, true},
		{403, "text/plain", "", "", grpcPermissionDenied, grpcPermissionDenied, true},
		{404, "text/plain", "", "", grpcUnimplemented, grpcUnimplemented, true},
		{413, "text/plain", "", "", grpcUnknown, grpcUnknown, true}, // not ferry's own 413
		{500, "text/plain", "", "", grpcUnknown, grpcUnknown, true},
	} {
		res := &http.Response{ProtoMajor: 2, StatusCode: tc.status, Header: http.Header{"Content-Type": {tc.ct}}, Trailer: http.Header{}}
		if tc.head != "" {
			res.Header.Set("Grpc-Status", tc.head)
		}
		if tc.trailer != "" {
			res.Trailer.Set("Grpc-Status", tc.trailer)
		}
		if got := grpcCallerStatus(res, 0); got != tc.want {
			t.Errorf("%d %s, head %q, trailer %q: %d, want %d", tc.status, tc.ct, tc.head, tc.trailer, got, tc.want)
		}
		if tc.status == 200 && tc.trailer == "" && tc.head == "" {
			// Messages came, then the stream ended without trailers.
			want := tc.want
			if tc.ct == "application/grpc" {
				want = grpcInternal
			}
			if got := grpcCallerStatus(res, 5); got != want {
				t.Errorf("%s after a message, no status: %d, want %d", tc.ct, got, want)
			}
		}
		res.Trailer = http.Header{} // unread
		if got, ok := grpcHeadStatus(res); got != tc.headWant || ok != tc.headKnowsIt {
			t.Errorf("%d %s, head %q, unread: %d %v, want %d %v", tc.status, tc.ct, tc.head, got, ok, tc.headWant, tc.headKnowsIt)
		}
	}
}

// A gRPC answer that ends without a grpc-status (a 200 with no trailers
// after its message, or trailers-only without one) is what gRPC clients
// make of it, INTERNAL or UNKNOWN, which the breaker counts as a 500:
// three open a breaker whose failure_statuses list 500, and outlier
// ejection ejects the endpoint. Before, each counted as its 200.
func TestGRPCMissingStatusIsAFailure(t *testing.T) {
	for _, tc := range []struct {
		name    string
		message bool
	}{{"no trailers after a message", true}, {"trailers-only without status", false}} {
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/grpc")
			w.WriteHeader(http.StatusOK)
			if tc.message {
				w.Write(grpcWebFrame(0, []byte("hello"))) // gRPC's framing too
			}
		})
		// post makes one gRPC call through ferry and reads its answer.
		post := func(t *testing.T, c *http.Client, sc *Sidecar) *http.Response {
			t.Helper()
			req, _ := http.NewRequest(http.MethodPost, "http://"+sc.Addr("outbound")+"/grpc.testing.TestService/UnaryCall", bytes.NewReader(grpcWebFrame(0, nil)))
			req.Header.Set("Content-Type", "application/grpc")
			req.Header.Set("TE", "trailers")
			res, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			return res
		}
		t.Run(tc.name+"/breaker", func(t *testing.T) {
			addr := h2cOrigin(t, nil, nil, h)
			sc, _ := resilientFerry(t, resilience.NewManualClock(time.Unix(1_000_000, 0)), grpcStatus500Settings, addr)
			c := h2cClient()
			defer c.CloseIdleConnections()
			for range 3 {
				if res := post(t, c, sc); res.StatusCode != 200 || res.Trailer.Get("Grpc-Status") != "" || res.Header.Get("Grpc-Status") != "" {
					t.Fatalf("relayed %d, head %v, trailers %v: want the upstream's 200 without a status", res.StatusCode, res.Header, res.Trailer)
				}
			}
			if f := judged(t, sc, addr, 3); f != 3 {
				t.Fatalf("%d of 3 answers without a status counted as failures", f)
			}
			waitBreaker(t, sc, addr, resilience.BreakerOpen)
		})
		t.Run(tc.name+"/outlier", func(t *testing.T) {
			bad := h2cOrigin(t, nil, nil, h)
			good := h2cOrigin(t, nil, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Type", "application/grpc")
				w.Header().Set("Grpc-Status", "0")
			}))
			sc, _ := resilientFerry(t, resilience.NewManualClock(time.Unix(1_000_000, 0)), `
    balancer: round_robin
    breaker: { consecutive_failures: 0 }
    outlier: { consecutive_5xx: 3, max_ejection_percent: 50 }
    retry: { max_retries: 0 }`, bad, good)
			c := h2cClient()
			defer c.CloseIdleConnections()
			for range 6 {
				post(t, c, sc)
			}
			waitFor(t, "the endpoint without statuses ejected", 5*time.Second, func() bool {
				for _, ep := range upstreamStatus(t, sc, "svc").Endpoints {
					if ep.Addr == bad && !ep.EjectedUntil.IsZero() {
						return true
					}
				}
				return false
			})
		})
	}
}
