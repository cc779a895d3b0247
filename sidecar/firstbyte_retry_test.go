package sidecar

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/ferrymesh/ferry/telemetry"
)

// headThenClose is an HTTP/1.1 upstream that answers every request with a
// Content-Length head and closes its connection before the first body
// byte; it counts the requests it saw.
func headThenClose(t *testing.T) (*rawServer, *atomic.Int64) {
	hits := new(atomic.Int64)
	s := startRawServer(t, func(c net.Conn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		hits.Add(1)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
	})
	return s, hits
}

// An upstream whose body breaks before its first byte has sent nothing of
// the response to the caller: a GET is retried on the other endpoint like
// an attempt that broke before its head, and the caller gets that
// endpoint's whole answer. The broken attempt is a failure of its endpoint
// and a client span with reason body_broken; the retry is one span event
// and one ferry_retries_total{reason="body_broken"}; the access log and
// server span show the answer the caller got.
func TestBodyBrokenBeforeFirstByteRetried(t *testing.T) {
	good := newFlaky(t, "good")
	h1bad, h1hits := headThenClose(t)
	// An h2c upstream resets the stream after the head instead.
	h2bad, h2hits := h2HeadThen(t, func(*http.Request) { panic(http.ErrAbortHandler) })
	for _, tc := range []struct {
		name string
		bad  string
		hits *atomic.Int64
		c    *http.Client
		head string // sent raw when set, else a GET through c
	}{
		{name: "lane", bad: h1bad.addr(), hits: h1hits, head: "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"},
		{name: "net/http", bad: h1bad.addr(), hits: h1hits, head: "GET /a HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n 2\r\n\r\n"}, // obs-fold: handed over
		{name: "h2c", bad: h2bad, hits: h2hits, c: h2cClient()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc, rec, logs := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: svc } ] }
services:
  svc:
    endpoints: [%s, %s]
    balancer: round_robin
    outlier: { consecutive_5xx: 0 }
    retry: { base_interval: 1ms, max_interval: 2ms }
`, tc.bad, good.addr))
			url := "http://" + sc.Addr("outbound")
			if tc.c != nil {
				t.Cleanup(tc.c.CloseIdleConnections)
			}
			start := tc.hits.Load()
			var requests int
			// Round robin: within two requests one goes to the bad
			// endpoint first.
			for requests = 1; tc.hits.Load() == start; requests++ {
				if requests > 2 {
					t.Fatal("the bad endpoint was never tried; the test proves nothing")
				}
				if code, body := wholeAnswer(t, tc.c, url, tc.head); code != http.StatusOK || body != "good" {
					t.Fatalf("request %d: got %d %q, want the other endpoint's whole answer", requests, code, body)
				}
			}
			requests--
			if n := tc.hits.Load() - start; n != 1 {
				t.Fatalf("the bad endpoint saw %d requests, want 1", n)
			}
			for _, ep := range upstreamStatus(t, sc, "svc").Endpoints {
				if ep.Addr == tc.bad && ep.Failures != 1 {
					t.Errorf("bad endpoint: %d failures recorded, want 1", ep.Failures)
				}
			}
			waitFor(t, "every server span", 5*time.Second, func() bool {
				return len(spansOfKind(rec.Ended(), trace.SpanKindServer)) == requests
			})
			retries, broken := 0, 0
			for _, s := range spansOfKind(rec.Ended(), trace.SpanKindServer) {
				if st := attr(s, telemetry.AttrReason).AsString(); st != "" {
					t.Errorf("server span reason %q, want none", st)
				}
				for _, e := range s.Events() {
					if e.Name == telemetry.EventRetry {
						retries++
					}
				}
			}
			for _, s := range spansOfKind(rec.Ended(), trace.SpanKindClient) {
				if attr(s, telemetry.AttrReason).AsString() == telemetry.ReasonBodyBroken {
					broken++
				}
			}
			if retries != 1 || broken != 1 {
				t.Errorf("%d retry events and %d client spans with reason body_broken, want 1 and 1", retries, broken)
			}
			_, metrics := get(t, h1Client(), "http://"+sc.Addr("admin")+"/metrics", "")
			if l := grepLines(metrics, "ferry_retries_total{"); l != `ferry_retries_total{reason="body_broken",service="svc"} 1` {
				t.Errorf("retries counted:\n%s", l)
			}
			waitFor(t, "every access log line", 5*time.Second, func() bool { return len(accessLines(t, logs)) == requests })
			for _, l := range accessLines(t, logs) {
				if l["status"] != float64(200) || l["reason"] != "" {
					t.Errorf("access log status %v reason %q, want 200 and none", l["status"], l["reason"])
				}
			}
		})
	}
}

// A request the policy does not retry still gets the whole 502 when the
// body breaks before its first byte: a POST (not in retry.methods), and a
// GET with max_retries 0. The other endpoint never sees it.
func TestBodyBrokenBeforeFirstByteNotRetryableIs502(t *testing.T) {
	bad, hits := headThenClose(t)
	for _, tc := range []struct{ name, method, retry string }{
		{"post", "POST", "{ base_interval: 1ms, max_interval: 2ms }"},
		{"max_retries 0", "GET", "{ max_retries: 0 }"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			good := newFlaky(t, "good")
			_, url := outboundTo(t, fmt.Sprintf("defaults: { balancer: round_robin, retry: %s }", tc.retry), bad.addr(), good.addr)
			start := hits.Load()
			for i := 0; hits.Load() == start; i++ {
				if i == 2 {
					t.Fatal("the bad endpoint was never tried; the test proves nothing")
				}
				before := good.hits.Load()
				c := dialRaw(t, url)
				io.WriteString(c, tc.method+" /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
				res, body := readWholeAnswer(t, c)
				c.Close()
				if hits.Load() == start {
					if res.StatusCode != http.StatusOK {
						t.Fatalf("from the good endpoint: %d %q", res.StatusCode, body)
					}
					continue
				}
				if res.StatusCode != http.StatusBadGateway || !strings.Contains(res.Header.Get("X-Ferry-Error"), "first byte") {
					t.Fatalf("got %d %q (X-Ferry-Error %q), want a whole 502 naming the body's first byte", res.StatusCode, body, res.Header.Get("X-Ferry-Error"))
				}
				if good.hits.Load() != before {
					t.Fatal("a request the policy does not retry was retried")
				}
			}
		})
	}
}

// A 103 Early Hints already relayed from the attempt whose body broke does
// not prevent the retry: the caller gets that interim response, then the
// other endpoint's whole answer.
func TestBodyBrokenBeforeFirstByteRetriedAfter1xx(t *testing.T) {
	var hits atomic.Int64
	bad := startRawServer(t, func(c net.Conn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		hits.Add(1)
		io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
	})
	good := newFlaky(t, "good")
	_, url := outboundTo(t, "defaults: { balancer: round_robin, retry: { base_interval: 1ms, max_interval: 2ms } }", bad.addr(), good.addr)
	for i := 0; hits.Load() == 0; i++ {
		if i == 2 {
			t.Fatal("the bad endpoint was never tried; the test proves nothing")
		}
		c := dialRaw(t, url)
		io.WriteString(c, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
		br := bufio.NewReader(c)
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode == http.StatusEarlyHints {
			if hits.Load() == 0 {
				t.Fatal("a 103 from the good endpoint")
			}
			if res, err = http.ReadResponse(br, nil); err != nil {
				t.Fatal(err)
			}
		} else if hits.Load() != 0 {
			t.Fatalf("got %d first, want the bad endpoint's 103 relayed", res.StatusCode)
		}
		body, err := io.ReadAll(res.Body)
		if err != nil || res.StatusCode != http.StatusOK || string(body) != "good" {
			t.Fatalf("got %d %q, %v; want the other endpoint's whole answer", res.StatusCode, body, err)
		}
	}
}

// An upstream that sends a Content-Length head and then nothing has its
// attempt cut by timeouts.body_idle before any of the response went out:
// like an attempt that timed out before its head, a GET is retried on the
// other endpoint, and the caller gets that endpoint's whole answer (a 504
// only when the policy does not retry, TestFirstByteTimeoutIsA504). On the
// lane, on a connection net/http serves, and over h2c.
func TestBodyIdleBeforeFirstByteRetried(t *testing.T) {
	stall, hits := headOnly(t)
	// An h2c caller, and so an h2c upstream (protocol auto).
	h2stall, h2hits := h2HeadThen(t, func(r *http.Request) { <-r.Context().Done() })
	good := newFlaky(t, "good")
	for _, tc := range []struct {
		name, head, stall string
		hits              *atomic.Int64
		c                 *http.Client
	}{
		{"lane", "GET /a HTTP/1.1\r\nHost: x\r\n\r\n", stall.addr(), hits, nil},
		{"net/http", "GET /a HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n 2\r\n\r\n", stall.addr(), hits, nil}, // obs-fold: handed over
		{"h2c", "", h2stall, h2hits, h2cClient()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.c != nil {
				t.Cleanup(tc.c.CloseIdleConnections)
			}
			sc, url := outboundTo(t, "defaults: { balancer: round_robin, retry: { base_interval: 1ms, max_interval: 2ms }, timeouts: { body_idle: 200ms } }", tc.stall, good.addr)
			start := tc.hits.Load()
			// Round robin: within two requests one goes to the stalling
			// endpoint first.
			for i := 0; tc.hits.Load() == start; i++ {
				if i == 2 {
					t.Fatal("the stalling endpoint was never tried; the test proves nothing")
				}
				if code, body := wholeAnswer(t, tc.c, url, tc.head); code != http.StatusOK || body != "good" {
					t.Fatalf("request %d: got %d %q, want the other endpoint's whole answer", i+1, code, body)
				}
			}
			for _, ep := range upstreamStatus(t, sc, "svc").Endpoints {
				if ep.Addr == tc.stall && ep.Failures != 1 {
					t.Errorf("stalling endpoint: %d failures recorded, want 1", ep.Failures)
				}
			}
			rec := httptest.NewRecorder()
			sc.tel.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
			if l := grepLines(rec.Body.String(), "ferry_retries_total{"); l != `ferry_retries_total{reason="timeout",service="svc"} 1` {
				t.Errorf("retries counted:\n%s", l)
			}
		})
	}
}

// wholeAnswer asks url+"/a" through c, or sends head on a connection of its
// own when c is nil (the connection stays open: the exchange ends
// unhurried), and returns the answer, failing the test unless it came
// whole.
func wholeAnswer(t *testing.T, c *http.Client, url, head string) (int, string) {
	t.Helper()
	if c == nil {
		conn := dialRaw(t, url)
		io.WriteString(conn, head)
		res, b := readWholeAnswer(t, conn)
		return res.StatusCode, string(b)
	}
	res, err := c.Get(url + "/a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatalf("answer %d cut short: %v", res.StatusCode, err)
	}
	return res.StatusCode, string(b)
}

// h2HeadThen is an upstream (h2c to an h2c caller) that answers with a
// Content-Length head, flushed, then does then instead of the body; it
// counts the requests it saw.
func h2HeadThen(t *testing.T, then func(r *http.Request)) (string, *atomic.Int64) {
	hits := new(atomic.Int64)
	addr := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		then(r)
	}))
	return addr, hits
}

// TestBodyIdleFirstByteRetryWaitsForHead: the attempt body_idle cut while
// its body's first byte was awaited is retried as one that timed out
// before its head, and the retry's head is the response header timeout's
// to wait for, as the first attempt's was: body_idle, which had already
// begun guarding the response, must not end the whole exchange while the
// next endpoint thinks.
func TestBodyIdleFirstByteRetryWaitsForHead(t *testing.T) {
	const bodyIdle = 100 * time.Millisecond
	stall, hits := headOnly(t)
	// The other endpoint thinks longer than body_idle before its head (a
	// slow upstream, not a synchronisation: any delay past body_idle shows
	// it).
	thinker := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(3 * bodyIdle)
		io.WriteString(w, "good")
	}))
	_, url := outboundTo(t, fmt.Sprintf("defaults: { balancer: round_robin, retry: { base_interval: 1ms, max_interval: 2ms }, timeouts: { body_idle: %v } }", bodyIdle), stall.addr(), thinker)
	goodWhileStalled(t, url, hits)
}

// headOnly is an HTTP/1.1 upstream that answers with a Content-Length head
// and no body until ferry gives up; it counts the requests it saw.
func headOnly(t *testing.T) (*rawServer, *atomic.Int64) {
	hits := new(atomic.Int64)
	return startRawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		hits.Add(1)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
		io.Copy(io.Discard, br) // until ferry gives up
	}), hits
}

// TestBodyIdleFirstByteRetryBackoff: the backoff before that retry is not
// body_idle's either: the exchange waits it out with nothing to move, as
// it does before any retry. (The backoff is random up to max_interval,
// which is 100 times body_idle here: one that ends the exchange shows in
// nearly every run.)
func TestBodyIdleFirstByteRetryBackoff(t *testing.T) {
	stall, hits := headOnly(t)
	good := newFlaky(t, "good")
	_, url := outboundTo(t, "defaults: { balancer: round_robin, retry: { base_interval: 2s, max_interval: 2s }, timeouts: { body_idle: 20ms } }", stall.addr(), good.addr)
	goodWhileStalled(t, url, hits)
}

// goodWhileStalled asks url on the lane (round robin: within two requests
// one goes to the stalling endpoint, which hits counts, first) and fails
// the test unless each gets the other endpoint's whole answer, "good".
func goodWhileStalled(t *testing.T, url string, hits *atomic.Int64) {
	t.Helper()
	for i := 0; hits.Load() == 0; i++ {
		if i == 2 {
			t.Fatal("the stalling endpoint was never tried; the test proves nothing")
		}
		conn := dialRaw(t, url)
		io.WriteString(conn, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
		res, b := readWholeAnswer(t, conn)
		if res.StatusCode != http.StatusOK || string(b) != "good" {
			t.Fatalf("request %d: got %d %q, want the other endpoint's answer", i+1, res.StatusCode, b)
		}
	}
}
