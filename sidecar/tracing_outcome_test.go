package sidecar

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/ferrymesh/ferry/internal/localnet/localnettest"
	"github.com/ferrymesh/ferry/internal/syncbuf"
	"github.com/ferrymesh/ferry/resilience"
	"github.com/ferrymesh/ferry/telemetry"
)

// backoffConfig is a ferry whose one service has three dead endpoints and
// a retry policy that waits far longer than any test between attempts;
// extra goes under the service.
func backoffConfig(t *testing.T, extra string) string {
	return fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: s } ] }
services:
  s:
    endpoints: [%s, %s, %s]
    retry: { max_retries: 2, base_interval: 1h, max_interval: 1h }
    %s
`, deadAddr(t), deadAddr(t), deadAddr(t), extra)
}

// deadAddr is a loopback address that refuses connections for the
// test's life; each call's is distinct.
func deadAddr(t *testing.T) string {
	t.Helper()
	return localnettest.RefusedAddr(t)
}

// accessLines parses the access log's JSON lines.
func accessLines(t *testing.T, logs *syncbuf.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("access log line %q: %v", l, err)
		}
		if m["msg"] == "request" {
			out = append(out, m)
		}
	}
	return out
}

// An exchange that ends while ferry waits out a retry's backoff (here the
// overall timeout) is reported as what ended it, not as the failure that
// asked for the retry: the caller gets 504 timeout, and so do the access
// log and the server span.
func TestOutcomeOverallTimeoutDuringRetryBackoff(t *testing.T) {
	sc, rec, logs := tracedFerry(t, backoffConfig(t, "timeouts: { overall: 300ms, connect: 100ms, response_header: 100ms }"))
	res, body := get(t, h1Client(), "http://"+sc.Addr("outbound")+"/", "")
	if res.StatusCode != 504 {
		t.Errorf("caller got %d %q, want 504 (the overall timeout ended the exchange during the backoff)", res.StatusCode, body)
	}
	expectOutcome(t, rec, logs, 504, telemetry.ReasonTimeout)
}

// A caller that goes away while ferry waits out a retry's backoff is
// reported as client_canceled (499), not as the failure that asked for
// the retry.
func TestOutcomeCallerGoneDuringRetryBackoff(t *testing.T) {
	sc, rec, logs := tracedFerry(t, backoffConfig(t, ""))
	c, err := net.Dial("tcp", sc.Addr("outbound"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: s\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	// The first attempt fails at once and ferry waits for the retry.
	waitFor(t, "the first attempt's client span", 5*time.Second, func() bool { return len(spansOfKind(rec.Ended(), trace.SpanKindClient)) == 1 })
	c.Close()
	expectOutcome(t, rec, logs, 499, telemetry.ReasonClientCanceled)
}

// expectOutcome waits for the one server span and access log line of an
// exchange and checks they report status and reason.
func expectOutcome(t *testing.T, rec *tracetest.SpanRecorder, logs *syncbuf.Buffer, status int, reason string) {
	t.Helper()
	waitFor(t, "the server span", 5*time.Second, func() bool { return len(spansOfKind(rec.Ended(), trace.SpanKindServer)) == 1 })
	server := spansOfKind(rec.Ended(), trace.SpanKindServer)[0]
	if got := attr(server, telemetry.AttrReason).AsString(); got != reason {
		t.Errorf("server span reason %q, want %q", got, reason)
	}
	waitFor(t, "the access log line", 5*time.Second, func() bool { return len(accessLines(t, logs)) == 1 })
	l := accessLines(t, logs)[0]
	if l["status"] != float64(status) || l["reason"] != reason {
		t.Errorf("access log status %v reason %v, want %d %s", l["status"], l["reason"], status, reason)
	}
}

// tracedChat is a traced ferry whose one route leads to a WebSocket origin.
func tracedChat(t *testing.T) (*wsOrigin, *Sidecar, *tracetest.SpanRecorder, *syncbuf.Buffer) {
	t.Helper()
	o := startWSOrigin(t)
	sc, rec, logs := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: chat } ] }
services: { chat: { endpoints: [%s] } }
`, o.addr))
	return o, sc, rec, logs
}

// A WebSocket tunnel is reported with the bytes it carried each way: the
// access log, the server span and the client span count them as they do a
// body's, and the spans end when the tunnel does.
func TestTunnelTelemetryCountsBytes(t *testing.T) {
	_, sc, rec, logs := tracedChat(t)
	c, res := dialWS(t, sc.Addr("outbound"), "/chat", "early\n")
	checkUpgraded(t, res)
	c.expect("hello from origin\n")
	c.expect("echo:early\n")
	c.send("ping\n")
	c.expect("echo:ping\n")
	if n := len(rec.Ended()); n != 0 {
		t.Fatalf("%d spans ended while the tunnel was open", n)
	}
	c.send("bye\n")
	c.expectClosed()
	c.conn.Close() // the caller ends its side too: the tunnel is over
	up := int64(len("early\n") + len("ping\n") + len("bye\n"))
	down := int64(len("hello from origin\n") + len("echo:early\n") + len("echo:ping\n"))
	waitFor(t, "both spans", 5*time.Second, func() bool { return len(rec.Ended()) == 2 })
	server := spansOfKind(rec.Ended(), trace.SpanKindServer)[0]
	client := spansOfKind(rec.Ended(), trace.SpanKindClient)[0]
	if in, out := attr(server, telemetry.AttrBytesIn).AsInt64(), attr(server, telemetry.AttrBytesOut).AsInt64(); in != up || out != down {
		t.Errorf("server span bytes in %d out %d, want %d %d", in, out, up, down)
	}
	if in, out := attr(client, telemetry.AttrBytesIn).AsInt64(), attr(client, telemetry.AttrBytesOut).AsInt64(); in != down || out != up {
		t.Errorf("client span bytes in %d out %d, want %d %d", in, out, down, up)
	}
	waitFor(t, "the access log line", 5*time.Second, func() bool { return len(accessLines(t, logs)) == 1 })
	l := accessLines(t, logs)[0]
	if l["status"] != float64(101) || l["bytes_in"] != float64(up) || l["bytes_out"] != float64(down) {
		t.Errorf("access log status %v bytes_in %v bytes_out %v, want 101 %d %d", l["status"], l["bytes_in"], l["bytes_out"], up, down)
	}
}

// An upstream that switches to another protocol than the caller asked for
// failed the attempt: its client span is an error (bad_response), as is
// the server span of the 502 the caller gets.
func TestTunnelMismatchAttemptIsError(t *testing.T) {
	_, sc, rec, _ := tracedChat(t)
	_, res := dialWS(t, sc.Addr("outbound"), "/chat?answer=h2c", "")
	if res.StatusCode != 502 {
		t.Fatalf("status %d, want 502", res.StatusCode)
	}
	waitFor(t, "both spans", 5*time.Second, func() bool { return len(rec.Ended()) == 2 })
	server := spansOfKind(rec.Ended(), trace.SpanKindServer)[0]
	client := spansOfKind(rec.Ended(), trace.SpanKindClient)[0]
	if server.Status().Code != codes.Error || attr(server, telemetry.AttrReason).AsString() != telemetry.ReasonBadResponse {
		t.Errorf("server span status %v reason %q, want an error, %s", server.Status(), attr(server, telemetry.AttrReason).AsString(), telemetry.ReasonBadResponse)
	}
	if client.Status().Code != codes.Error || attr(client, telemetry.AttrReason).AsString() != telemetry.ReasonBadResponse {
		t.Errorf("client span status %v reason %q, want an error, %s", client.Status(), attr(client, telemetry.AttrReason).AsString(), telemetry.ReasonBadResponse)
	}
}

// A retry the exchange's end cuts short during its backoff is not made, so
// it is not reported as made: no ferry.retry event without the client span
// of its attempt, and no ferry_retries_total.
func TestRetryNotMadeIsNotCounted(t *testing.T) {
	sc, rec, _ := tracedFerry(t, backoffConfig(t, "timeouts: { overall: 300ms, connect: 100ms, response_header: 100ms }"))
	get(t, h1Client(), "http://"+sc.Addr("outbound")+"/", "")
	waitFor(t, "the server span", 5*time.Second, func() bool { return len(spansOfKind(rec.Ended(), trace.SpanKindServer)) == 1 })
	server := spansOfKind(rec.Ended(), trace.SpanKindServer)[0]
	retries := 0
	for _, e := range server.Events() {
		if e.Name == telemetry.EventRetry {
			retries++
		}
	}
	if clients := len(spansOfKind(rec.Ended(), trace.SpanKindClient)); clients != 1+retries {
		t.Errorf("%d client spans and %d retry events: a retry event without its attempt", clients, retries)
	}
	_, body := get(t, h1Client(), "http://"+sc.Addr("admin")+"/metrics", "")
	if l := grepLines(body, "ferry_retries_total{"); l != "" && retries == 0 {
		t.Errorf("a retry counted that was never made:\n%s", l)
	}
}

// A WebSocket tunnel that the drain's grace end cuts is reported as that:
// the access log line, ferry_requests_total and both spans carry the
// grace_ended reason (the 101 stays the status sent), as an exchange cut
// mid-body does, never as a tunnel that ended cleanly.
func TestTunnelCutByDrainIsGraceEnded(t *testing.T) {
	_, sc, rec, logs := tracedChat(t)
	c, res := dialWS(t, sc.Addr("outbound"), "/chat", "")
	checkUpgraded(t, res)
	c.expect("hello from origin\n")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := sc.Shutdown(ctx); err == nil {
		t.Fatal("shutdown reported a clean drain although a tunnel outlived the grace period")
	}
	c.expectClosed()
	waitFor(t, "both spans", 5*time.Second, func() bool { return len(rec.Ended()) == 2 })
	for _, s := range rec.Ended() {
		if got := attr(s, telemetry.AttrReason).AsString(); got != telemetry.ReasonGraceEnded || s.Status().Code != codes.Error {
			t.Errorf("%s span: reason %q status %v, want %s and an error", s.SpanKind(), got, s.Status(), telemetry.ReasonGraceEnded)
		}
	}
	waitFor(t, "the access log line", 5*time.Second, func() bool { return len(accessLines(t, logs)) == 1 })
	if l := accessLines(t, logs)[0]; l["status"] != float64(101) || l["reason"] != telemetry.ReasonGraceEnded || l["level"] != "WARN" {
		t.Errorf("access log status %v reason %q level %v, want 101 %s WARN", l["status"], l["reason"], l["level"], telemetry.ReasonGraceEnded)
	}
	rr := httptest.NewRecorder()
	sc.tel.MetricsHandler().ServeHTTP(rr, httptest.NewRequest("GET", "/metrics", nil))
	if want := `reason="` + telemetry.ReasonGraceEnded + `",service="chat",status_class="1xx"`; !strings.Contains(rr.Body.String(), want) {
		t.Errorf("ferry_requests_total has no %s series:\n%s", want, grepLines(rr.Body.String(), "ferry_requests_total"))
	}
}

// A caller that goes away in the middle of a large Content-Length download,
// which ferry moves upstream socket to caller socket (spliceBody.spliceTo),
// went away: the access log and the server span say client_canceled, and
// the endpoint's breaker hears nothing against it, on the HTTP/1.1 lane and
// on net/http's hand-over path alike. The upstream's body did not break.
func TestCallerGoneMidSplicedDownloadIsClientCanceled(t *testing.T) {
	const size = 64 << 20
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(size))
		buf := make([]byte, 64<<10)
		for n := 0; n < size; n += len(buf) {
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
	}))
	sc, rec, logs := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: s } ] }
services: { s: { endpoints: [%s], breaker: { consecutive_failures: 1, failure_statuses: [503] } } }
`, up))
	heads := []string{
		"GET /big HTTP/1.1\r\nHost: s\r\n\r\n",                         // the lane
		"GET /big HTTP/1.1\r\nHost: s\r\nExpect: 100-continue\r\n\r\n", // handed over to net/http
	}
	const rounds = 3
	for i := range rounds * len(heads) {
		c, err := net.Dial("tcp", sc.Addr("outbound"))
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, heads[i%len(heads)])
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != 200 {
			t.Fatalf("request %d: status %d, want 200 (the breaker opened?)", i, res.StatusCode)
		}
		if _, err := io.CopyN(io.Discard, res.Body, 1<<20); err != nil {
			t.Fatal(err)
		}
		c.Close() // with the rest unread: a reset
		waitFor(t, "the access log line", 5*time.Second, func() bool { return len(accessLines(t, logs)) == i+1 })
	}
	for i, l := range accessLines(t, logs) {
		if l["reason"] != telemetry.ReasonClientCanceled {
			t.Errorf("request %d (%s): access log reason %v, want %s", i, []string{"lane", "net/http"}[i%2], l["reason"], telemetry.ReasonClientCanceled)
		}
	}
	waitFor(t, "the server spans", 5*time.Second, func() bool {
		return len(spansOfKind(rec.Ended(), trace.SpanKindServer)) == rounds*len(heads)
	})
	for _, s := range spansOfKind(rec.Ended(), trace.SpanKindServer) {
		if got := attr(s, telemetry.AttrReason).AsString(); got != telemetry.ReasonClientCanceled {
			t.Errorf("server span reason %q, want %s", got, telemetry.ReasonClientCanceled)
		}
	}
	rr := httptest.NewRecorder()
	sc.tel.MetricsHandler().ServeHTTP(rr, httptest.NewRequest("GET", "/metrics", nil))
	if body := rr.Body.String(); strings.Contains(body, `ferry_breaker_transitions_total{service="s",to="open"}`) {
		t.Errorf("callers hanging up opened the endpoint's breaker:\n%s", grepLines(body, "ferry_breaker"))
	}
}

// An upstream that stalls in the middle of a Content-Length body ferry
// moves socket to socket is the endpoint's failure (body_idle ran out on
// it: a timeout, counted by its breaker), not a caller that went away:
// the caller was reading all along.
func TestUpstreamStalledMidSplicedDownloadIsItsFailure(t *testing.T) {
	stalled := make(chan struct{}, 8)
	up := startRawServer(t, func(c net.Conn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 67108864\r\n\r\n")
		c.Write(make([]byte, 1<<20))
		stalled <- struct{}{}
		io.Copy(io.Discard, c) // until ferry gives up on it
	})
	sc, _, logs := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: s } ] }
services: { s: { endpoints: [%s], timeouts: { body_idle: 300ms }, breaker: { consecutive_failures: 2, failure_statuses: [503] } } }
`, up.addr()))
	heads := []string{
		"GET /big HTTP/1.1\r\nHost: s\r\n\r\n",                         // the lane
		"GET /big HTTP/1.1\r\nHost: s\r\nExpect: 100-continue\r\n\r\n", // handed over to net/http
	}
	for i, head := range heads {
		c, err := net.Dial("tcp", sc.Addr("outbound"))
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, head)
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		recv(t, stalled, 5*time.Second, "the upstream to stall")
		n, err := io.Copy(io.Discard, res.Body)
		c.Close()
		if err == nil || n != 1<<20 {
			t.Fatalf("request %d: read %d bytes, err %v: want the 1 MiB sent, then a broken body", i, n, err)
		}
		waitFor(t, "the access log line", 5*time.Second, func() bool { return len(accessLines(t, logs)) == i+1 })
	}
	for i, l := range accessLines(t, logs) {
		if l["reason"] != telemetry.ReasonTimeout {
			t.Errorf("request %d: access log reason %v, want %s", i, l["reason"], telemetry.ReasonTimeout)
		}
	}
	rr := httptest.NewRecorder()
	sc.tel.MetricsHandler().ServeHTTP(rr, httptest.NewRequest("GET", "/metrics", nil))
	if body := rr.Body.String(); !strings.Contains(body, `ferry_breaker_transitions_total{service="s",to="open"}`) {
		t.Errorf("two stalls did not open the endpoint's breaker (consecutive_failures: 2):\n%s", grepLines(body, "ferry_breaker"))
	}
}

// A tunnel whose caller's connection was taken just as the drain ended
// (tunnelSet.closeAll ran between the hijack and the tunnel's tracking, the
// hook standing in for the end of Shutdown) is refused: the caller is told
// so with a 503, and the access log, the server span and
// ferry_requests_total report that 503 as grace_ended, not a status 0 with
// no reason.
func TestTunnelRefusedAtDrainEndIsReported(t *testing.T) {
	o, sc, rec, logs := tracedChat(t)
	testHookTunnelHijacked = func() { sc.tunnels.closeAll() }
	t.Cleanup(func() { testHookTunnelHijacked = nil })
	c, err := net.Dial("tcp", sc.Addr("outbound"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /chat HTTP/1.1\r\nHost: chat.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Key: "+wsKey+"\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(c)
	if res, err := http.ReadResponse(br, nil); err != nil {
		t.Errorf("the caller got no answer: %v", err)
	} else {
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusServiceUnavailable || !res.Close {
			t.Errorf("the caller got %d (close %v) %q, want 503 with Connection: close", res.StatusCode, res.Close, body)
		}
		if _, err := br.ReadByte(); err != io.EOF {
			t.Errorf("after the 503: %v, want the connection closed", err)
		}
	}
	if e := recv(t, o.events, 5*time.Second, "the upstream's end"); e != "eof" {
		t.Errorf("upstream: %s, want eof (ferry closed its side)", e)
	}
	expectOutcome(t, rec, logs, http.StatusServiceUnavailable, telemetry.ReasonGraceEnded)
	if want := `reason="` + telemetry.ReasonGraceEnded + `",service="chat",status_class="5xx"`; !strings.Contains(metricsText(sc), want) {
		t.Errorf("ferry_requests_total has no %s series:\n%s", want, grepLines(metricsText(sc), "ferry_requests_total"))
	}
}

// An upload ferry would move socket to socket, whose connection is taken
// once the drain is over (tunnelSet.closeAll ran), is refused with the same
// 503 and reported as grace_ended, as a tunnel refused then is.
func TestTakeOverRefusedAtDrainEndIsReported(t *testing.T) {
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.Copy(io.Discard, r.Body) }))
	sc, rec, logs := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: s } ] }
services: { s: { endpoints: [%s] } }
`, up))
	sc.tunnels.closeAll()
	// An absolute-form target: the lane hands it to net/http, whose
	// connection ferry takes.
	head := fmt.Sprintf("POST http://s/up HTTP/1.1\r\nHost: s\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n", uploadSpliceMin)
	if got := rawExchange(t, sc.Addr("outbound"), head, 1); got[0] != http.StatusServiceUnavailable {
		t.Errorf("status %d, want 503", got[0])
	}
	expectOutcome(t, rec, logs, http.StatusServiceUnavailable, telemetry.ReasonGraceEnded)
}

// A body refused over limits.max_request_body_bytes is reported with the
// bytes ferry passed on upstream before it crossed the limit, never the
// bytes of the read that crossed it: the access log's bytes_in, the server
// span's ferry.bytes_in, the client span's ferry.bytes_out and
// ferry_body_bytes_total agree, within the limit.
func TestBodyOverLimitCountsBytesPassedOn(t *testing.T) {
	got, started := make(chan int64, 1), make(chan struct{}, 1)
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		n, _ := io.Copy(io.Discard, r.Body)
		got <- n
	}))
	for _, atHand := range []bool{false, true} {
		t.Run(fmt.Sprintf("at hand=%v", atHand), func(t *testing.T) {
			sc, rec, logs := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: s } ] }
services: { s: { endpoints: [%s] } }
limits: { max_request_body_bytes: 1000 }
`, up))
			c := dialRaw(t, "http://"+sc.Addr("outbound"))
			head := "POST /up HTTP/1.1\r\nHost: s\r\nTransfer-Encoding: chunked\r\n\r\n"
			if !atHand {
				// The start goes upstream before the rest comes.
				io.WriteString(c, head+"1f4\r\n"+strings.Repeat("x", 500)+"\r\n")
				recv(t, started, 5*time.Second, "the upstream to have the request")
				head = ""
			}
			io.WriteString(c, head+"bb8\r\n"+strings.Repeat("x", 3000)+"\r\n0\r\n\r\n")
			if res := readRawResponse(t, c); res.StatusCode != http.StatusRequestEntityTooLarge {
				t.Fatalf("status %d, want 413", res.StatusCode)
			}
			waitFor(t, "both spans", 5*time.Second, func() bool { return len(rec.Ended()) == 2 })
			waitFor(t, "the access log line", 5*time.Second, func() bool { return len(accessLines(t, logs)) == 1 })
			in := accessLines(t, logs)[0]["bytes_in"].(float64)
			server := spansOfKind(rec.Ended(), trace.SpanKindServer)[0]
			client := spansOfKind(rec.Ended(), trace.SpanKindClient)[0]
			if in > 1000 {
				t.Errorf("access log bytes_in %v: more than the 1000 bytes ferry may pass on", in)
			}
			if s, c := attr(server, telemetry.AttrBytesIn).AsInt64(), attr(client, telemetry.AttrBytesOut).AsInt64(); s != int64(in) || c != int64(in) {
				t.Errorf("server span bytes_in %d, client span bytes_out %d, access log bytes_in %v: want all the same", s, c, in)
			}
			series := `ferry_body_bytes_total{direction="in",listener="outbound",service="s"} `
			if body := metricsText(sc); in > 0 && !strings.Contains(body, series+strconv.Itoa(int(in))+"\n") || in == 0 && strings.Contains(body, series) {
				t.Errorf("ferry_body_bytes_total, want %v in:\n%s", in, grepLines(body, "ferry_body_bytes_total"))
			}
			if atHand {
				// Nothing went: ferry had the whole body, too large,
				// before the head would have gone.
				if in != 0 {
					t.Errorf("access log bytes_in %v, want 0", in)
				}
				select {
				case <-started:
					t.Error("the upstream was called")
				default:
				}
				return
			}
			if n := recv(t, got, 5*time.Second, "the upstream's read"); float64(n) > in || n < 500 {
				t.Errorf("the upstream read %d bytes, want the 500 sent before the limit passed, no more than the %v reported", n, in)
			}
		})
	}
}

// A WebSocket upgrade that is a half-open breaker's probe settles the
// breaker at the upstream's 101, and its server span shows that
// transition (half_open to closed) as a plain request's does.
func TestTunnelProbeShowsBreakerTransition(t *testing.T) {
	o := startWSOrigin(t)
	sc, rec, _ := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: chat } ] }
services: { chat: { endpoints: [%s], breaker: { consecutive_failures: 1, failure_statuses: [400], open_duration: 50ms }, outlier: { consecutive_5xx: 0 }, retry: { max_retries: 0 } } }
`, o.addr))
	// A plain GET: the origin's 400 opens the breaker.
	if r, _ := get(t, h1Client(), "http://"+sc.Addr("outbound")+"/chat", ""); r.StatusCode != http.StatusBadRequest {
		t.Fatalf("plain GET: %d, want the origin's 400", r.StatusCode)
	}
	// The GET's outcome is recorded after its answer went out: an upgrade
	// sent before the breaker opened would not be its probe.
	// (open_duration is 50ms: it may be half-open by the time it is seen.)
	waitFor(t, "the breaker past closed", 5*time.Second, func() bool {
		for _, ep := range upstreamStatus(t, sc, "chat").Endpoints {
			if ep.Addr == o.addr {
				return ep.Breaker != resilience.BreakerClosed
			}
		}
		return false
	})
	var c *wsClient
	waitFor(t, "an upgrade past the open breaker", 5*time.Second, func() bool {
		ws, res := dialWS(t, sc.Addr("outbound"), "/chat", "")
		if res.StatusCode == http.StatusSwitchingProtocols {
			c = ws
			return true
		}
		ws.conn.Close()
		return false
	})
	c.expect("hello from origin\n")
	c.send("bye\n")
	c.expectClosed()
	c.conn.Close()
	var tunnel sdktrace.ReadOnlySpan
	waitFor(t, "the tunnel's server span", 5*time.Second, func() bool {
		for _, s := range spansOfKind(rec.Ended(), trace.SpanKindServer) {
			if attr(s, semconv.HTTPResponseStatusCodeKey).AsInt64() == http.StatusSwitchingProtocols {
				tunnel = s
				return true
			}
		}
		return false
	})
	var transitions []string
	for _, e := range tunnel.Events() {
		if e.Name == telemetry.EventBreakerTransition {
			transitions = append(transitions, fmt.Sprint(e.Attributes))
		}
	}
	if len(transitions) != 1 || !strings.Contains(transitions[0], "half_open") || !strings.Contains(transitions[0], "closed") {
		t.Fatalf("the probe's server span has breaker transitions %v, want half_open to closed", transitions)
	}
}
