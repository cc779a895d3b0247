package sidecar

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/ferrymesh/ferry/resilience"
	"github.com/ferrymesh/ferry/telemetry"
)

// fullDuplexEcho is an upstream that sends its answer's head at once and
// then echoes each piece of the request body as it comes, flushed.
func fullDuplexEcho(t *testing.T) string {
	return origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		rc.EnableFullDuplex()
		w.WriteHeader(http.StatusOK)
		rc.Flush()
		buf := make([]byte, 4096)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				w.Write(buf[:n])
				rc.Flush()
			}
			if err != nil {
				return
			}
		}
	}))
}

// endpointSettled waits until the only endpoint of service has no attempt
// in flight (its outcome recorded) and returns its state.
func endpointSettled(t *testing.T, sc *Sidecar, service string) resilience.EndpointStatus {
	t.Helper()
	var ep resilience.EndpointStatus
	waitFor(t, "the attempt's outcome on "+service, 5*time.Second, func() bool {
		ep = upstreamStatus(t, sc, service).Endpoints[0]
		return ep.InFlight == 0
	})
	return ep
}

// A request body that passes limits.max_request_body_bytes once the
// upstream's answer has begun (a bidirectional gRPC call, a full-duplex
// HTTP/1.1 exchange) is the caller's doing, as it is before the answer
// (a 413): the upstream's breaker does not count it, the telemetry does
// not blame the upstream's body, and a gRPC caller gets
// RESOURCE_EXHAUSTED with the limit as its message. Before, the cut was
// recorded as the upstream's body broken (body_broken, a breaker
// failure: one caller sending too much opened a healthy endpoint's
// breaker for every caller), and a gRPC caller got UNAVAILABLE, "upstream
// ... broke mid-body ...: request body exceeds limits.max_request_body_bytes",
// a code clients commonly retry.
func TestBodyOverLimitMidAnswerIsTheCallers(t *testing.T) {
	leakCheck(t)
	_, grpcAddr := startGRPCOrigin(t)
	echo := fullDuplexEcho(t)
	// An answer whose head (with a Content-Length) comes at once, its
	// body only once the request's body is in.
	headFirst := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		rc.EnableFullDuplex()
		w.Header().Set("Content-Length", "2")
		w.WriteHeader(http.StatusOK)
		rc.Flush()
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	}))
	sc, _, logs := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound:
  listen: 127.0.0.1:0
  routes:
    - { host: grpc, service: grpc }
    - { host: echo, service: echo }
    - { host: head, service: head }
services:
  grpc: { endpoints: [%s], protocol: h2c, breaker: { consecutive_failures: 1 }, retry: { max_retries: 0 } }
  echo: { endpoints: [%s], protocol: http1, breaker: { consecutive_failures: 1 }, retry: { max_retries: 0 } }
  head: { endpoints: [%s], protocol: http1, breaker: { consecutive_failures: 1 }, retry: { max_retries: 0 } }
limits: { max_request_body_bytes: 65536 }
`, grpcAddr, echo, headFirst))

	t.Run("grpc", func(t *testing.T) {
		client := testgrpc.NewTestServiceClient(grpcConnTo(t, sc, "grpc"))
		stream, err := client.FullDuplexCall(callCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		// Messages of 16 KiB, each answered before the next goes: the
		// fourth passes the 64 KiB limit.
		var end error
		answered := 0
		for i := 0; i < 10 && end == nil; i++ {
			if end = stream.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: fill('m', 16<<10)}}); end != nil {
				break
			}
			if _, end = stream.Recv(); end == nil {
				answered++
			}
		}
		if errors.Is(end, io.EOF) {
			_, end = stream.Recv() // the send side learnt of the end: the status
		}
		if answered != 3 {
			t.Errorf("%d messages answered before the limit, want 3", answered)
		}
		if ep := endpointSettled(t, sc, "grpc"); ep.Breaker != resilience.BreakerClosed || ep.Failures != 0 {
			t.Errorf("endpoint breaker %v with %d failures after the caller's body passed the limit, want closed with none", ep.Breaker, ep.Failures)
		}
		if _, err := client.UnaryCall(callCtx(t), &testgrpc.SimpleRequest{}); err != nil {
			t.Errorf("a call after it: %v", err)
		}
		ferryFailure(t, end, stream.Trailer(), codes.ResourceExhausted, func(s string) bool {
			return strings.Contains(s, errBodyTooLarge.Error()) && !strings.Contains(s, "broke")
		})
	})

	t.Run("http1", func(t *testing.T) {
		pr, pw := io.Pipe()
		req, _ := http.NewRequest(http.MethodPost, "http://"+sc.Addr("outbound")+"/", pr)
		req.Host = "echo"
		res, err := h1Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		chunk := bytes.Repeat([]byte{'c'}, 16<<10)
		var end error
		echoed := 0
		for i := 0; i < 10 && end == nil; i++ {
			go pw.Write(chunk)
			var n int
			n, end = io.ReadFull(res.Body, make([]byte, len(chunk)))
			echoed += n
		}
		pw.CloseWithError(errors.New("test done"))
		if end == nil || errors.Is(end, io.EOF) {
			t.Fatalf("the echo ended %v after %d bytes, want a broken answer", end, echoed)
		}
		if ep := endpointSettled(t, sc, "echo"); ep.Breaker != resilience.BreakerClosed || ep.Failures != 0 {
			t.Errorf("endpoint breaker %v with %d failures after the caller's body passed the limit, want closed with none", ep.Breaker, ep.Failures)
		}
	})

	t.Run("head before its body", func(t *testing.T) {
		// Nothing of the answer went out: the caller gets the 413.
		req, _ := http.NewRequest(http.MethodPost, "http://"+sc.Addr("outbound")+"/", io.MultiReader(bytes.NewReader(make([]byte, 100<<10))))
		req.Host = "head"
		res, err := h1Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusRequestEntityTooLarge || res.Header.Get("X-Ferry-Error") != errBodyTooLarge.Error() {
			t.Errorf("answer %d %q (X-Ferry-Error %q), want a 413 for the body limit", res.StatusCode, b, res.Header.Get("X-Ferry-Error"))
		}
		if ep := endpointSettled(t, sc, "head"); ep.Breaker != resilience.BreakerClosed || ep.Failures != 0 {
			t.Errorf("endpoint breaker %v with %d failures after the caller's body passed the limit, want closed with none", ep.Breaker, ep.Failures)
		}
	})

	// The gRPC call, the call after it and the two HTTP/1.1 exchanges.
	waitFor(t, "the access log lines", 5*time.Second, func() bool { return len(accessLines(t, logs)) == 4 })
	for _, l := range accessLines(t, logs) {
		if l["reason"] == telemetry.ReasonBodyBroken {
			t.Errorf("access log line %v blames the upstream's body", l)
		}
	}
}
