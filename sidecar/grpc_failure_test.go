package sidecar

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ferrymesh/ferry/internal/localnet/localnettest"
	"github.com/ferrymesh/ferry/resilience"
	"github.com/ferrymesh/ferry/telemetry"
)

// startGRPCOrigin starts a gRPC server of the interop TestService on
// loopback and returns it with its address.
func startGRPCOrigin(t *testing.T) (*grpcOrigin, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &grpcOrigin{release: make(chan struct{}, 1), firstIn: make(chan string, 1), gone: make(chan error, 1),
		arrived: make(chan struct{}, 64), proceed: make(chan struct{})}
	srv := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(srv, o)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return o, ln.Addr().String()
}

// grpcConnTo is a gRPC client connection through ferry's outbound listener
// whose calls carry authority, which picks ferry's route.
func grpcConnTo(t *testing.T, sc *Sidecar, authority string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+sc.Addr("outbound"),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority(authority))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// ferryFailure checks that a call ferry failed ended with code and with
// ferry's reason as its message: the same text as X-Ferry-Error, which
// arrives as trailer metadata of the trailers-only answer.
func ferryFailure(t *testing.T, err error, trailer metadata.MD, code codes.Code, reason func(string) bool) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != code || !reason(st.Message()) {
		t.Fatalf("status %v %q, want %v with ferry's reason (err %v)", st.Code(), st.Message(), code, err)
	}
	if got := trailer.Get("x-ferry-error"); len(got) != 1 || got[0] != st.Message() {
		t.Fatalf("x-ferry-error %q, want the status message %q (trailers %v)", got, st.Message(), trailer)
	}
}

func equals(want string) func(string) bool { return func(s string) bool { return s == want } }

// A gRPC caller of a call ferry fails gets the failure as gRPC says:
// a trailers-only answer whose grpc-status is the code the gRPC spec's
// HTTP mapping gives ferry's status (RESOURCE_EXHAUSTED for a body over
// the limit), and whose grpc-message is ferry's reason. Before, grpc-go
// read ferry's text/plain answer as "unexpected HTTP status code
// received from server", and the reason was lost.
func TestGRPCFailureCarriesReason(t *testing.T) {
	leakCheck(t)
	_, echo := startGRPCOrigin(t)
	_, slowAddr := startGRPCOrigin(t) // its "barrier" calls wait for ever
	busy, busyAddr := startGRPCOrigin(t)
	dead, tripped := localnettest.RefusedAddr(t), localnettest.RefusedAddr(t)
	sc := startFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound:
  listen: 127.0.0.1:0
  routes:
    - { host: echo, service: echo }
    - { host: empty, service: empty }
    - { host: dead, service: dead }
    - { host: slow, service: slow }
    - { host: busy, service: busy }
    - { host: tripped, service: tripped }
services:
  echo: { endpoints: [%s] }
  empty: { endpoints: [] }
  dead: { endpoints: [%s], retry: { max_retries: 0 } }
  slow: { endpoints: [%s], retry: { max_retries: 0 }, timeouts: { response_header: 300ms } }
  busy: { endpoints: [%s], max_in_flight: 1 }
  tripped: { endpoints: [%s], retry: { max_retries: 0 }, breaker: { consecutive_failures: 1, open_duration: 1h } }
limits: { max_request_body_bytes: 4096 }
`, echo, dead, slowAddr, busyAddr, tripped))
	unary := func(t *testing.T, authority string, req *testgrpc.SimpleRequest) (error, metadata.MD) {
		t.Helper()
		var trailer metadata.MD
		_, err := testgrpc.NewTestServiceClient(grpcConnTo(t, sc, authority)).UnaryCall(callCtx(t), req, grpc.Trailer(&trailer))
		return err, trailer
	}

	t.Run("no route", func(t *testing.T) {
		err, tr := unary(t, "nowhere", &testgrpc.SimpleRequest{})
		ferryFailure(t, err, tr, codes.Unimplemented, equals(`no route for host "nowhere" path "/grpc.testing.TestService/UnaryCall"`))
	})
	t.Run("no endpoints", func(t *testing.T) {
		err, tr := unary(t, "empty", &testgrpc.SimpleRequest{})
		ferryFailure(t, err, tr, codes.Unavailable, equals("service empty has no healthy endpoints"))
	})
	t.Run("connection refused", func(t *testing.T) {
		err, tr := unary(t, "dead", &testgrpc.SimpleRequest{})
		ferryFailure(t, err, tr, codes.Unavailable, func(s string) bool {
			return strings.HasPrefix(s, "upstream dead: connect to "+dead+" failed: ") && strings.Contains(s, "connection refused")
		})
	})
	t.Run("response_header timeout", func(t *testing.T) {
		err, tr := unary(t, "slow", &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("barrier")}})
		// The upstream has the call: a retry policy must not send it
		// again as it would on UNAVAILABLE.
		ferryFailure(t, err, tr, codes.DeadlineExceeded, equals("upstream slow ("+slowAddr+"): no response headers within timeouts.response_header"))
	})
	t.Run("max_in_flight", func(t *testing.T) {
		held := make(chan error, 1)
		go func() {
			_, err := testgrpc.NewTestServiceClient(grpcConnTo(t, sc, "busy")).UnaryCall(callCtx(t), &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("barrier")}})
			held <- err
		}()
		recv(t, busy.arrived, 5*time.Second, "the first call to hold busy's one slot")
		err, tr := unary(t, "busy", &testgrpc.SimpleRequest{})
		ferryFailure(t, err, tr, codes.Unavailable, equals("busy: "+resilience.ErrOverloaded.Error()+" (max_in_flight 1)"))
		close(busy.proceed)
		if err := recv(t, held, 5*time.Second, "the first call to end"); err != nil {
			t.Fatalf("the call that held the slot: %v", err)
		}
	})
	t.Run("breaker open", func(t *testing.T) {
		err, _ := unary(t, "tripped", &testgrpc.SimpleRequest{})
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("first call: %v, want Unavailable (connection refused)", err)
		}
		waitFor(t, "tripped's breaker to open", 5*time.Second, func() bool {
			eps := upstreamStatus(t, sc, "tripped").Endpoints
			return len(eps) == 1 && eps[0].Breaker == resilience.BreakerOpen
		})
		err, tr := unary(t, "tripped", &testgrpc.SimpleRequest{})
		ferryFailure(t, err, tr, codes.Unavailable, func(s string) bool {
			return strings.HasPrefix(s, "tripped: ") && strings.Contains(s, "circuit breaker open")
		})
	})
	t.Run("body too large", func(t *testing.T) {
		err, tr := unary(t, "echo", &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: bytes.Repeat([]byte("x"), 8192)}})
		ferryFailure(t, err, tr, codes.ResourceExhausted, equals(errBodyTooLarge.Error()))
	})
	t.Run("reason beyond ASCII", func(t *testing.T) {
		// The path is in the reason: grpc-message carries it percent-encoded
		// (a UTF-8 é, a literal %), and the client decodes it back.
		var trailer metadata.MD
		err := grpcConnTo(t, sc, "nowhere").Invoke(callCtx(t), "/caf%C3%A9.Svc/100%25", &testgrpc.Empty{}, &testgrpc.Empty{}, grpc.Trailer(&trailer))
		st, _ := status.FromError(err)
		if want := `no route for host "nowhere" path "/café.Svc/100%"`; st.Code() != codes.Unimplemented || st.Message() != want {
			t.Fatalf("status %v %q, want Unimplemented %q (err %v)", st.Code(), st.Message(), want, err)
		}
	})
	t.Run("working call", func(t *testing.T) {
		res, err := testgrpc.NewTestServiceClient(grpcConnTo(t, sc, "echo")).UnaryCall(callCtx(t), &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("hi")}})
		if err != nil || string(res.GetPayload().GetBody()) != "echo:hi" {
			t.Fatalf("call through ferry: %v %q", err, res.GetPayload().GetBody())
		}
	})
}

// h2Answer is the head of one answer read off an HTTP/2 connection.
type h2Answer struct {
	fields    map[string][]string
	endStream bool // the head ended the stream: no body
}

// h2Post sends one POST with a 5-byte body (an empty gRPC message) over
// HTTP/2 with prior knowledge, with the fields given beside the pseudo
// ones, and returns the answer's head.
func h2Post(t *testing.T, addr, authority, path string, fields ...[2]string) h2Answer {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, http2.ClientPreface)
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.WriteSettings()
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range append([][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", authority}, {":path", path}, {"te", "trailers"}}, fields...) {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	if err := fr.WriteData(1, true, make([]byte, 5)); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the answer: %v", err)
		}
		if ackControl(fr, f) {
			continue
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			if f.StreamID != 1 {
				continue
			}
			a := h2Answer{fields: map[string][]string{}, endStream: f.StreamEnded()}
			for _, hf := range f.Fields {
				a.fields[hf.Name] = append(a.fields[hf.Name], hf.Value)
			}
			return a
		case *http2.RSTStreamFrame:
			t.Fatalf("stream reset (%v) before any answer", f.ErrCode)
		case *http2.GoAwayFrame:
			t.Fatalf("GOAWAY (%v) before any answer", f.ErrCode)
		}
	}
}

// The gRPC answer is a trailers-only response, one HEADERS frame that ends
// the stream: :status 200, content-type application/grpc, grpc-status,
// grpc-message percent-encoded as the gRPC spec requires (bytes outside
// printable ASCII and '%'), X-Ferry-Error kept. Content-Type is matched
// without regard to case (media types are case-insensitive, RFC 9110
// 8.3.1). A gRPC-Web call gets its own trailers-only answer, of its own
// Content-Type (grpcweb_test.go); other types get the plain answer.
func TestGRPCFailureIsTrailersOnly(t *testing.T) {
	webCT := func(ct string) string { // a gRPC-Web call's answer is of its type
		if web, _ := grpcWebType([]string{ct}); web {
			return ct
		}
		return ""
	}
	sc := startFerry(t, `
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { host: files, service: files } ] }
services: { files: { endpoints: [127.0.0.1:9] } }
`)
	const path = "/caf%C3%A9.Svc/100%25"
	reason := `no route for host "nowhere" path "/café.Svc/100%"`
	for _, tc := range []struct {
		ct   string
		grpc bool
	}{
		{"application/grpc", true},
		{"application/grpc+proto", true},
		{"application/grpc;charset=utf-8", true},
		{"Application/GRPC+json", true},
		{"application/grpc-web", true},
		{"application/grpc-web+proto", true},
		{"application/grpcx", false},
		{"application/json", false},
		{"", false},
	} {
		t.Run(tc.ct, func(t *testing.T) {
			var fields [][2]string
			if tc.ct != "" {
				fields = append(fields, [2]string{"content-type", tc.ct})
			}
			a := h2Post(t, sc.Addr("outbound"), "nowhere", path, fields...)
			if got := a.fields["x-ferry-error"]; len(got) != 1 || got[0] != reason {
				t.Errorf("x-ferry-error %q, want %q", got, reason)
			}
			if !tc.grpc {
				if st := a.fields[":status"]; len(st) != 1 || st[0] != "404" || a.fields["grpc-status"] != nil || a.endStream {
					t.Fatalf("answer %v (ends stream: %v), want the plain 404 with a body", a.fields, a.endStream)
				}
				return
			}
			want := map[string]string{
				":status":      "200",
				"content-type": cmp.Or(webCT(tc.ct), "application/grpc"),
				"grpc-status":  "12", // UNIMPLEMENTED, as the spec maps 404
				"grpc-message": `no route for host "nowhere" path "/caf%C3%A9.Svc/100%25"`,
			}
			for k, v := range want {
				if got := a.fields[k]; len(got) != 1 || got[0] != v {
					t.Errorf("%s %q, want %q", k, got, v)
				}
			}
			if !a.endStream {
				t.Error("the HEADERS frame does not end the stream: not a trailers-only answer")
			}
			if cl := a.fields["content-length"]; cl != nil {
				t.Errorf("content-length %q in a trailers-only answer", cl)
			}
		})
	}
}

// gRPC needs HTTP/2: a request over HTTP/1.1 that says application/grpc
// gets ferry's plain answer (a 200 would read as success to a client that
// does not look for grpc-status).
func TestGRPCLookingHTTP1GetsPlainFailure(t *testing.T) {
	sc := startFerry(t, `
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { host: files, service: files } ] }
services: { files: { endpoints: [127.0.0.1:9] } }
`)
	req, _ := http.NewRequest(http.MethodPost, "http://"+sc.Addr("outbound")+"/pkg.Svc/Method", strings.NewReader("\x00\x00\x00\x00\x00"))
	req.Host = "nowhere"
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("TE", "trailers")
	res, err := h1Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/plain") ||
		res.Header.Get("Grpc-Status") != "" || !strings.Contains(string(body), `no route for host "nowhere"`) {
		t.Fatalf("HTTP/1.1 answer %d %v %q, want ferry's plain 404", res.StatusCode, res.Header, body)
	}
}

// The access log, the server span and ferry_requests_total report a gRPC
// call ferry failed by ferry's failure status and reason (502 dial_failed,
// 404 no_route), as for any caller, not by the 200 the gRPC answer
// carries.
func TestGRPCFailureTelemetry(t *testing.T) {
	for _, tc := range []struct {
		authority, service string
		status             int
		reason             string
		code               codes.Code
	}{
		{"dead", "dead", 502, telemetry.ReasonDialFailed, codes.Unavailable},
		{"nowhere", "", 404, telemetry.ReasonNoRoute, codes.Unimplemented},
	} {
		t.Run(tc.reason, func(t *testing.T) {
			dead := localnettest.RefusedAddr(t)
			sc, rec, logs := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { host: dead, service: dead } ] }
services: { dead: { endpoints: [%s], retry: { max_retries: 0 } } }
`, dead))
			var trailer metadata.MD
			_, err := testgrpc.NewTestServiceClient(grpcConnTo(t, sc, tc.authority)).UnaryCall(callCtx(t), &testgrpc.SimpleRequest{}, grpc.Trailer(&trailer))
			ferryFailure(t, err, trailer, tc.code, func(s string) bool { return s != "" })
			expectOutcome(t, rec, logs, tc.status, tc.reason)
			server := spansOfKind(rec.Ended(), trace.SpanKindServer)[0]
			if got := attr(server, semconv.HTTPResponseStatusCodeKey).AsInt64(); got != int64(tc.status) {
				t.Errorf("server span %s %d, want %d", semconv.HTTPResponseStatusCodeKey, got, tc.status)
			}
			endpoint := ""
			if tc.service != "" {
				endpoint = dead
			}
			series := fmt.Sprintf(`ferry_requests_total{endpoint=%q,listener="outbound",reason=%q,service=%q,status_class="%dxx"} 1`, endpoint, tc.reason, tc.service, tc.status/100)
			if m := metricsText(sc); !strings.Contains(m, series) {
				t.Errorf("no %s in\n%s", series, grep(m, "ferry_requests_total"))
			}
		})
	}
}

// grep keeps the lines of text that contain s.
func grep(text, s string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestGRPCCode(t *testing.T) {
	for status, want := range map[int]codes.Code{
		400: codes.Internal,
		401: codes.Unauthenticated,
		403: codes.PermissionDenied,
		404: codes.Unimplemented,
		405: codes.Unknown,
		413: codes.ResourceExhausted, // gRPC's own code for a message over a limit
		429: codes.Unavailable,
		500: codes.Unknown,
		502: codes.Unavailable,
		503: codes.Unavailable,
		504: codes.DeadlineExceeded, // a timeout of ferry's: the upstream may have run the call
		505: codes.Unknown,
	} {
		if got := grpcCode(failure{status: status}); got != int(want) {
			t.Errorf("grpcCode(%d) = %d, want %d (%v)", status, got, want, want)
		}
	}
	// A connect that timed out sent nothing: a retry is safe.
	if got := grpcCode(failure{status: http.StatusGatewayTimeout, unsent: true}); got != int(codes.Unavailable) {
		t.Errorf("grpcCode of a connect timeout = %d, want UNAVAILABLE", got)
	}
}

func TestGRPCPercentEncode(t *testing.T) {
	for in, want := range map[string]string{
		"upstream a (127.0.0.1:9): timed out": "upstream a (127.0.0.1:9): timed out",
		"100% ~ !$&'()*+,;=":                  "100%25 ~ !$&'()*+,;=",
		"café ✓":                              "caf%C3%A9 %E2%9C%93",
		"a\nb\tc\x7f\x00":                     "a%0Ab%09c%7F%00",
		"%%":                                  "%25%25",
	} {
		if got := grpcPercentEncode(in); got != want {
			t.Errorf("grpcPercentEncode(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestGRPCReasonCapped(t *testing.T) {
	short := strings.Repeat("a", grpcReasonMax)
	if got := grpcReason(short); got != short {
		t.Errorf("a reason of %d bytes was cut to %d", len(short), len(got))
	}
	// A 2-byte é straddles the cut: it goes whole, and the cut stays
	// valid UTF-8.
	long := strings.Repeat("a", grpcReasonMax-4) + strings.Repeat("é", 10)
	got := grpcReason(long)
	if len(got) > grpcReasonMax || !strings.HasSuffix(got, "...") || !utf8.ValidString(got) || !strings.HasPrefix(long, strings.TrimSuffix(got, "...")) {
		t.Errorf("grpcReason cut %d bytes to %q (%d bytes), want at most %d, valid UTF-8, ending ...", len(long), got[len(got)-12:], len(got), grpcReasonMax)
	}
}

// A reason quoting a long path is cut in the gRPC answer: the client still
// gets it, and the head stays well under the 8 KiB gRPC lets clients
// refuse.
func TestGRPCFailureLongReason(t *testing.T) {
	sc := startFerry(t, `
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { host: files, service: files } ] }
services: { files: { endpoints: [127.0.0.1:9] } }
`)
	path := "/" + strings.Repeat("é", 4000)
	a := h2Post(t, sc.Addr("outbound"), "nowhere", path, [2]string{"content-type", "application/grpc"})
	msg, ferr := a.fields["grpc-message"], a.fields["x-ferry-error"]
	if len(msg) != 1 || len(ferr) != 1 || a.fields["grpc-status"][0] != "12" {
		t.Fatalf("answer %v", a.fields)
	}
	if size := len(msg[0]) + len(ferr[0]); size > 4*grpcReasonMax || !strings.HasSuffix(ferr[0], "...") || !strings.HasPrefix(ferr[0], `no route for host "nowhere" path "/éé`) {
		t.Fatalf("grpc-message %d bytes and x-ferry-error %d bytes (%q...)", len(msg[0]), len(ferr[0]), ferr[0][:40])
	}
}

// Of ferry's timeouts only a connect that timed out is marked unsent, the
// one a gRPC caller gets as UNAVAILABLE: nothing reached the upstream.
func TestGRPCCodeOfTimeouts(t *testing.T) {
	ctx := context.Background()
	connect := &dialError{addr: "192.0.2.1:80", err: &net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}}
	if f, _ := classify(ctx, "svc", "192.0.2.1:80", connect); f.status != http.StatusGatewayTimeout || !f.unsent || grpcCode(f) != int(codes.Unavailable) {
		t.Errorf("connect timeout: %+v, gRPC code %d; want an unsent 504, UNAVAILABLE", f, grpcCode(f))
	}
	read := &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
	if f, _ := classify(ctx, "svc", "192.0.2.1:80", read); f.status != http.StatusGatewayTimeout || f.unsent || grpcCode(f) != int(codes.DeadlineExceeded) {
		t.Errorf("response timeout: %+v, gRPC code %d; want a 504 sent, DEADLINE_EXCEEDED", f, grpcCode(f))
	}
}
