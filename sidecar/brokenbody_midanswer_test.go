package sidecar

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/resilience"
	"github.com/ferrymesh/ferry/telemetry"
)

// midAnswerFerry is a ferry with two HTTP/1.1 services whose breakers open
// at one failure: echo (fullDuplexEcho), and head, whose answer's head
// (with a Content-Length) comes once the request body's first 5 bytes are
// in and its body only once the whole request body is; gotHead receives
// when ferry has that head. settled checks, after a caller's body broke
// (what), that the service's endpoint counted no failure and that the
// next access log line says client_canceled.
func midAnswerFerry(t *testing.T, what string) (sc *Sidecar, gotHead chan struct{}, settled func(t *testing.T, service string)) {
	t.Helper()
	headFirst := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		rc.EnableFullDuplex()
		io.ReadFull(r.Body, make([]byte, 5))
		w.Header().Set("Content-Length", "2")
		w.WriteHeader(http.StatusOK)
		rc.Flush()
		if _, err := io.Copy(io.Discard, r.Body); err == nil {
			io.WriteString(w, "ok")
		}
	}))
	sc, _, logs := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound:
  listen: 127.0.0.1:0
  routes:
    - { host: echo, service: echo }
    - { host: head, service: head }
services:
  echo: { endpoints: [%s], protocol: http1, breaker: { consecutive_failures: 1 }, retry: { max_retries: 0 } }
  head: { endpoints: [%s], protocol: http1, breaker: { consecutive_failures: 1 }, retry: { max_retries: 0 } }
`, fullDuplexEcho(t), headFirst))
	// ferry has the head service's answer head once its round trip
	// returned.
	gotHead = make(chan struct{}, 1)
	for _, up := range sc.allUpstreams() {
		if up.name == "head" {
			up.h1 = headSignal{up.h1, gotHead}
		}
	}
	lines := 0
	settled = func(t *testing.T, service string) {
		t.Helper()
		if ep := endpointSettled(t, sc, service); ep.Breaker != resilience.BreakerClosed || ep.Failures != 0 {
			t.Errorf("endpoint breaker %v with %d failures after %s, want closed with none", ep.Breaker, ep.Failures, what)
		}
		lines++
		waitFor(t, "the access log line", 5*time.Second, func() bool { return len(accessLines(t, logs)) == lines })
		if l := accessLines(t, logs)[lines-1]; l["reason"] != telemetry.ReasonClientCanceled {
			t.Errorf("access log reason %v (status %v), want %s: %s", l["reason"], l["status"], telemetry.ReasonClientCanceled, what)
		}
	}
	return sc, gotHead, settled
}

// wantCallersBody400 reads, on c, the 400 a caller whose body broke gets
// before any of the answer went out.
func wantCallersBody400(t *testing.T, c net.Conn) {
	t.Helper()
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusBadRequest || !strings.HasPrefix(res.Header.Get("X-Ferry-Error"), "reading request body: ") {
		t.Errorf("answer %d %q (X-Ferry-Error %q), want a 400 for the caller's body", res.StatusCode, b, res.Header.Get("X-Ferry-Error"))
	}
}

// A caller's chunked request body that breaks (a malformed chunk) while
// the upstream's answer is already coming (a full-duplex HTTP/1.1
// exchange) is the caller's doing, as it is before the answer (a 400):
// the upstream's breaker does not count it, and the access log says
// client_canceled, not body_broken. The caller sees its answer broken,
// never whole.
func TestCallerBodyBrokenMidAnswerIsTheCallers(t *testing.T) {
	leakCheck(t)
	sc, gotHead, settled := midAnswerFerry(t, "the caller's body broke")
	const head = "POST / HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
	const bad = "zz\r\nbroken\r\n" // no chunk size: the caller's body breaks
	t.Run("answer begun", func(t *testing.T) {
		c := dialRaw(t, "http://"+sc.Addr("outbound"))
		fmt.Fprintf(c, head, "echo")
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 5)
		if _, err := io.ReadFull(res.Body, got); err != nil || string(got) != "hello" {
			t.Fatalf("echo %q, err %v", got, err)
		}
		io.WriteString(c, bad)
		if rest, err := io.ReadAll(res.Body); err == nil {
			t.Errorf("the answer ended whole after %q, want it broken", rest)
		}
		settled(t, "echo")
	})

	t.Run("head before its body", func(t *testing.T) {
		// Nothing of the answer went out (ferry holds a Content-Length
		// head until its body begins): the caller gets the 400 it gets
		// before the answer.
		c := dialRaw(t, "http://"+sc.Addr("outbound"))
		fmt.Fprintf(c, head, "head")
		recv(t, gotHead, 5*time.Second, "ferry to have the upstream's head")
		io.WriteString(c, bad)
		wantCallersBody400(t, c)
		settled(t, "head")
	})
}

// The converse: an upstream that breaks mid-answer while the caller's
// chunked body is still open is the upstream's doing (body_broken, a
// breaker failure), although the Read of the caller's body that was in
// progress fails too once the transport closes it.
func TestUpstreamBrokenMidAnswerStaysTheUpstreams(t *testing.T) {
	leakCheck(t)
	up := startRawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.ReadFull(br, make([]byte, len("5\r\nhello\r\n")))
		io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
		c.(*net.TCPConn).SetLinger(0)
		c.Close() // a reset mid-answer
	})
	sc, _, logs := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: svc } ] }
services:
  svc: { endpoints: [%s], protocol: http1, breaker: { consecutive_failures: 1 }, retry: { max_retries: 0 } }
`, up.addr()))
	c := dialRaw(t, "http://"+sc.Addr("outbound"))
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if rest, err := io.ReadAll(res.Body); err == nil {
		t.Errorf("the answer ended whole after %q, want it broken", rest)
	}
	if ep := endpointSettled(t, sc, "svc"); ep.Failures != 1 {
		t.Errorf("endpoint breaker %v with %d failures after it broke mid-answer, want 1", ep.Breaker, ep.Failures)
	}
	waitFor(t, "the access log line", 5*time.Second, func() bool { return len(accessLines(t, logs)) == 1 })
	if l := accessLines(t, logs)[0]; l["reason"] != telemetry.ReasonBodyBroken {
		t.Errorf("access log reason %v (status %v), want %s: the upstream broke", l["reason"], l["status"], telemetry.ReasonBodyBroken)
	}
}

// headSignal is an upstream's transport that signals each response head
// it returns.
type headSignal struct {
	http.RoundTripper
	got chan<- struct{}
}

func (h headSignal) RoundTrip(r *http.Request) (*http.Response, error) {
	res, err := h.RoundTripper.RoundTrip(r)
	if err == nil {
		h.got <- struct{}{}
	}
	return res, err
}
