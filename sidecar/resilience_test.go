package sidecar

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/internal/localnet/localnettest"
	"github.com/ferrymesh/ferry/resilience"
	"github.com/ferrymesh/ferry/telemetry"
)

// These tests drive breakers, ejection, retries and the retry budget
// through the real proxy, with loopback origins that fail on command and a
// manual clock moved by the test.

// flaky is an origin that answers its name, or fails with the status set
// in fail (0 = healthy), and counts the requests it saw.
type flaky struct {
	name string
	fail atomic.Int32
	hits atomic.Int64
	addr string
}

func newFlaky(t *testing.T, name string) *flaky {
	f := &flaky{name: name}
	f.addr = origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.hits.Add(1)
		io.Copy(io.Discard, r.Body)
		if code := f.fail.Load(); code != 0 {
			http.Error(w, f.name+" failing", int(code))
			return
		}
		io.WriteString(w, f.name)
	}))
	return f
}

func resilientFerry(t *testing.T, clock resilience.Clock, service string, endpoints ...string) (*Sidecar, string) {
	t.Helper()
	cfg, err := ParseConfig([]byte(fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound:
  listen: 127.0.0.1:0
  routes: [ { service: svc } ]
services:
  svc:
    endpoints: [%s]
%s
`, strings.Join(endpoints, ", "), service)))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Telemetry.AccessLog = "off"
	sc, err := New(cfg, Options{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	if err := sc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sc.Shutdown(context.Background()) })
	return sc, "http://" + sc.Addr("outbound") + "/"
}

func call(t *testing.T, c *http.Client, method, url string, body io.Reader) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, body)
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, strings.TrimSpace(string(b))
}

func breakerOf(t *testing.T, sc *Sidecar, addr string) resilience.BreakerState {
	t.Helper()
	for _, ep := range upstreamStatus(t, sc, "svc").Endpoints {
		if ep.Addr == addr {
			return ep.Breaker
		}
	}
	t.Fatalf("no endpoint %s in /upstreams", addr)
	return 0
}

// waitBreaker waits for an endpoint's breaker to reach a state: the
// outcome of an attempt is recorded just after its last byte went to the
// caller, so a caller can be a moment ahead of the breaker.
func waitBreaker(t *testing.T, sc *Sidecar, addr string, want resilience.BreakerState) {
	t.Helper()
	waitFor(t, fmt.Sprintf("breaker of %s to be %v", addr, want), 5*time.Second, func() bool { return breakerOf(t, sc, addr) == want })
}

func TestBreakerOpensSkipsHalfOpensAndCloses(t *testing.T) {
	clock := resilience.NewManualClock(time.Unix(1_000_000, 0))
	good, bad := newFlaky(t, "good"), newFlaky(t, "bad")
	bad.fail.Store(503)
	sc, url := resilientFerry(t, clock, `
    balancer: round_robin
    breaker: { consecutive_failures: 3, open_duration: 30s }
    outlier: { consecutive_5xx: 0 }
    retry: { max_retries: 0 }`, good.addr, bad.addr)
	c := h1Client()
	for bad.hits.Load() < 3 {
		call(t, c, "GET", url, nil)
	}
	waitBreaker(t, sc, bad.addr, resilience.BreakerOpen)
	// Open: skipped, every request goes to the good endpoint.
	before := bad.hits.Load()
	for range 20 {
		if code, body := call(t, c, "GET", url, nil); code != 200 || body != "good" {
			t.Fatalf("with bad's breaker open: %d %q", code, body)
		}
	}
	if bad.hits.Load() != before {
		t.Fatal("an open breaker let requests through")
	}
	// After the open period one probe goes through; it succeeds and the
	// breaker closes, so both endpoints serve again.
	bad.fail.Store(0)
	clock.Advance(30 * time.Second)
	seen := map[string]int{}
	for range 10 {
		_, body := call(t, c, "GET", url, nil)
		seen[body]++
	}
	waitBreaker(t, sc, bad.addr, resilience.BreakerClosed)
	if seen["bad"] == 0 || seen["good"] == 0 {
		t.Fatalf("after recovery: %v", seen)
	}
}

func TestHalfOpenProbeFailureReopens(t *testing.T) {
	clock := resilience.NewManualClock(time.Unix(1_000_000, 0))
	bad := newFlaky(t, "bad")
	bad.fail.Store(502)
	sc, url := resilientFerry(t, clock, `
    breaker: { consecutive_failures: 2, open_duration: 10s }
    outlier: { consecutive_5xx: 0 }
    retry: { max_retries: 0 }`, bad.addr)
	c := h1Client()
	call(t, c, "GET", url, nil)
	call(t, c, "GET", url, nil)
	waitBreaker(t, sc, bad.addr, resilience.BreakerOpen)
	// Every endpoint open: 503 at once with the reason, no upstream attempt.
	hits := bad.hits.Load()
	code, body := call(t, c, "GET", url, nil)
	if code != 503 || !strings.Contains(body, "circuit breaker open") || bad.hits.Load() != hits {
		t.Fatalf("all open: %d %q (upstream hits %d -> %d)", code, body, hits, bad.hits.Load())
	}
	clock.Advance(10 * time.Second)
	if code, _ := call(t, c, "GET", url, nil); code != 502 || bad.hits.Load() != hits+1 {
		t.Fatalf("probe: %d, hits %d", code, bad.hits.Load())
	}
	waitBreaker(t, sc, bad.addr, resilience.BreakerOpen)
}

// A body that breaks mid-stream is a failure for the breaker.
func TestBrokenBodyCountsAsFailure(t *testing.T) {
	clock := resilience.NewManualClock(time.Unix(1_000_000, 0))
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		w.Write([]byte("partial"))
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}))
	sc, url := resilientFerry(t, clock, `
    breaker: { consecutive_failures: 2 }
    outlier: { consecutive_5xx: 0 }`, up)
	c := h1Client()
	for range 2 {
		res, err := c.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadAll(res.Body); err == nil {
			t.Fatal("broken body read cleanly")
		}
		res.Body.Close()
	}
	waitBreaker(t, sc, up, resilience.BreakerOpen)
}

// Outlier ejection takes a failing endpoint out, but never the last one.
func TestEjectionNeverRemovesTheLastEndpoint(t *testing.T) {
	clock := resilience.NewManualClock(time.Unix(1_000_000, 0))
	a, b := newFlaky(t, "a"), newFlaky(t, "b")
	a.fail.Store(500)
	b.fail.Store(500)
	sc, url := resilientFerry(t, clock, `
    balancer: round_robin
    breaker: { consecutive_failures: 0 }
    outlier: { consecutive_5xx: 2, max_ejection_percent: 100 }
    retry: { max_retries: 0 }`, a.addr, b.addr)
	c := h1Client()
	for range 20 {
		if code, _ := call(t, c, "GET", url, nil); code != 500 {
			t.Fatalf("got %d: a service must never be ejected whole", code)
		}
	}
	ejected := func() int {
		n := 0
		for _, ep := range upstreamStatus(t, sc, "svc").Endpoints {
			if !ep.EjectedUntil.IsZero() {
				n++
			}
		}
		return n
	}
	waitFor(t, "one endpoint ejected", 5*time.Second, func() bool { return ejected() == 1 })
	for range 10 {
		if code, _ := call(t, c, "GET", url, nil); code != 500 {
			t.Fatalf("got %d: a service must never be ejected whole", code)
		}
	}
	if n := ejected(); n != 1 {
		t.Fatalf("%d of 2 endpoints ejected, want exactly 1", n)
	}
}

// A connect failure is retried on another endpoint, whatever the method:
// no byte reached the upstream.
func TestConnectFailureRetriedElsewhere(t *testing.T) {
	dead := localnettest.RefusedAddr(t)
	good := newFlaky(t, "good")
	_, url := resilientFerry(t, nil, `
    balancer: round_robin
    retry: { base_interval: 1ms, max_interval: 2ms }`, dead, good.addr)
	c := h1Client()
	for i := range 10 {
		if code, body := call(t, c, "POST", url, strings.NewReader("payload")); code != 200 || body != "good" {
			t.Fatalf("request %d: %d %q", i, code, body)
		}
	}
	if good.hits.Load() != 10 {
		t.Fatalf("good saw %d requests, want 10", good.hits.Load())
	}
}

// A 503 from one endpoint is retried on another for an idempotent method;
// the caller never sees it.
func TestRetryableStatusRetriedElsewhere(t *testing.T) {
	good, bad := newFlaky(t, "good"), newFlaky(t, "bad")
	bad.fail.Store(503)
	_, url := resilientFerry(t, nil, `
    balancer: round_robin
    breaker: { consecutive_failures: 0 }
    outlier: { consecutive_5xx: 0 }
    retry: { base_interval: 1ms, max_interval: 2ms }`, good.addr, bad.addr)
	c := h1Client()
	for range 10 {
		if code, body := call(t, c, "GET", url, nil); code != 200 || body != "good" {
			t.Fatalf("got %d %q", code, body)
		}
	}
	if bad.hits.Load() == 0 {
		t.Fatal("the failing endpoint was never tried; the test proves nothing")
	}
}

// A retried request goes out as the first attempt did: the caller's
// X-Forwarded-For with the caller appended once, hop-by-hop fields gone
// (a field the caller names in Connection too, X-Forwarded-For among
// them: only ferry's own goes, on both attempts), the caller's trace
// context (tracing off) passed on.
func TestRetrySendsTheSameHeader(t *testing.T) {
	tp := "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	for _, tc := range []struct {
		name string
		sent map[string]string
		want retrySeen
	}{
		{"hop", map[string]string{"X-Forwarded-For": "203.0.113.9", "Connection": "X-Hop", "X-Hop": "1", "Traceparent": tp},
			retrySeen{"203.0.113.9, 127.0.0.1", "", tp}},
		{"forwarded-for named in Connection", map[string]string{"X-Forwarded-For": "203.0.113.9", "Connection": "X-Forwarded-For"},
			retrySeen{"127.0.0.1", "", ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i, s := range retriedHeaders(t, tc.sent) {
				if s != tc.want {
					t.Errorf("attempt %d sent %+v, want %+v", i+1, s, tc.want)
				}
			}
		})
	}
}

// retrySeen is what an attempt sent of the fields TestRetrySendsTheSameHeader looks at.
type retrySeen struct{ xff, hop, tp string }

// retriedHeaders sends one request with the fields sent through ferry to
// two endpoints, the first answering 503, and returns what each attempt
// carried.
func retriedHeaders(t *testing.T, sent map[string]string) [2]retrySeen {
	got := make(chan retrySeen, 4)
	var n atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- retrySeen{strings.Join(r.Header.Values("X-Forwarded-For"), "|"), r.Header.Get("X-Hop"), r.Header.Get("Traceparent")}
		if n.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	a, b := origin(t, h), origin(t, h)
	_, url := resilientFerry(t, nil, `
    breaker: { consecutive_failures: 0 }
    outlier: { consecutive_5xx: 0 }
    retry: { base_interval: 1ms, max_interval: 2ms }`, a, b)
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for k, v := range sent {
		req.Header.Set(k, v)
	}
	res, err := h1Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200 from the retry", res.StatusCode)
	}
	var seen [2]retrySeen
	for i := range seen {
		seen[i] = recv(t, got, 5*time.Second, "an attempt")
	}
	return seen
}

// A POST whose body was partly sent is never retried: ferry holds no copy
// to send again.
func TestPartlySentBodyNeverRetried(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	read := make(chan struct{}, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				br := bufio.NewReader(c)
				for l, err := br.ReadString('\n'); err == nil && l != "\r\n"; l, err = br.ReadString('\n') {
				}
				io.ReadFull(br, make([]byte, 10)) // some of the body...
				read <- struct{}{}
				c.(*net.TCPConn).SetLinger(0)
				c.Close() // ...then a reset
			}(c)
		}
	}()
	other := newFlaky(t, "other")
	_, url := resilientFerry(t, nil, `
    balancer: round_robin
    retry: { max_retries: 5, methods: [POST], base_interval: 1ms, max_interval: 2ms }`, ln.Addr().String(), other.addr)
	c := h1Client()
	for range 6 {
		pr, pw := io.Pipe()
		go func() {
			pw.Write(make([]byte, 64))
			pw.Write(make([]byte, 64))
			pw.Close()
		}()
		req, _ := http.NewRequest("POST", url, pr)
		req.ContentLength = 128
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
	if len(read) == 0 {
		t.Fatal("the resetting origin was never reached; the test proves nothing")
	}
	// Each request that reached the resetting origin failed there; none of
	// them was replayed to the healthy one. 6 requests round-robin: the
	// healthy one saw only its own share.
	if got, reset := other.hits.Load(), int64(len(read)); got+reset != 6 {
		t.Fatalf("healthy origin saw %d, resetting origin %d: a partly sent body was retried", got, reset)
	}
}

// Under a full outage the budget keeps retries to a fraction of the load
// instead of multiplying it.
func TestRetryBudgetCapsRetriesUnderOutage(t *testing.T) {
	clock := resilience.NewManualClock(time.Unix(1_000_000, 0))
	a, b, c3 := newFlaky(t, "a"), newFlaky(t, "b"), newFlaky(t, "c")
	for _, f := range []*flaky{a, b, c3} {
		f.fail.Store(503)
	}
	_, url := resilientFerry(t, clock, `
    breaker: { consecutive_failures: 0 }
    outlier: { consecutive_5xx: 0 }
    retry: { max_retries: 2, base_interval: 1ms, max_interval: 1ms, budget: { ratio: 0.2, min_per_second: 5 } }`, a.addr, b.addr, c3.addr)
	c := h1Client()
	const n = 200
	for range n {
		if code, _ := call(t, c, "GET", url, nil); code != 503 {
			t.Fatalf("got %d", code)
		}
	}
	total := a.hits.Load() + b.hits.Load() + c3.hits.Load()
	retries := total - n
	// 20% of 200 plus the per-second floor (the clock does not move).
	if retries > n/5+5 {
		t.Fatalf("%d retries for %d requests: the budget allows %d", retries, n, n/5+5)
	}
	if retries == 0 {
		t.Fatal("no retries at all: the test proves nothing")
	}
	t.Logf("%d requests under a full outage made %d upstream attempts (%d retries; without a budget: %d)", n, total, retries, 3*n)
}

func TestPerTryTimeoutIs504AndRetried(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	slow := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	good := newFlaky(t, "good")
	_, url := resilientFerry(t, nil, `
    balancer: round_robin
    timeouts: { per_try: 100ms }
    retry: { base_interval: 1ms, max_interval: 2ms }`, slow, good.addr)
	c := h1Client()
	for range 4 {
		if code, body := call(t, c, "GET", url, nil); code != 200 || body != "good" {
			t.Fatalf("got %d %q", code, body)
		}
	}
	_, url1 := resilientFerry(t, nil, `
    timeouts: { per_try: 100ms }`, slow)
	if code, body := call(t, c, "GET", url1, nil); code != 504 || !strings.Contains(body, "timeouts.per_try") {
		t.Fatalf("single slow endpoint: %d %q", code, body)
	}
}

// A request on a pooled connection that the upstream keeps without an
// answer ends at whichever of timeouts.per_try and
// timeouts.response_header comes first, with that timeout's 504, and is
// sent once: a timeout is no close of an idle connection, which a
// bodiless request on a new connection would be retried for.
func TestPerTryAndHeaderTimeoutOnPooledConnection(t *testing.T) {
	for _, tc := range []struct{ timeouts, want string }{
		{"{ per_try: 150ms }", "timeouts.per_try"},
		{"{ per_try: 150ms, response_header: 1h }", "timeouts.per_try"},
		{"{ per_try: 1h, response_header: 150ms }", "timeouts.response_header"},
		{"{ response_header: 150ms }", "timeouts.response_header"},
	} {
		t.Run(tc.timeouts, func(t *testing.T) {
			release := make(chan struct{})
			defer close(release)
			var slow atomic.Int32
			up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/slow" {
					slow.Add(1)
					<-release
				}
				io.WriteString(w, "fast")
			}))
			_, url := resilientFerry(t, nil, "    timeouts: "+tc.timeouts, up)
			c := h1Client()
			defer c.CloseIdleConnections()
			if code, body := call(t, c, "GET", url+"fast", nil); code != 200 || body != "fast" {
				t.Fatalf("got %d %q", code, body)
			}
			if code, body := call(t, c, "GET", url+"slow", nil); code != http.StatusGatewayTimeout || !strings.Contains(body, tc.want) {
				t.Fatalf("got %d %q, want 504 naming %s", code, body, tc.want)
			}
			if n := slow.Load(); n != 1 {
				t.Fatalf("the upstream got the request %d times, want once", n)
			}
			// The connection the timeout cut is not pooled again.
			if code, body := call(t, c, "GET", url+"fast", nil); code != 200 || body != "fast" {
				t.Fatalf("after the timeout: %d %q", code, body)
			}
		})
	}
}

// ferry's client ends a dial at the attempt's per-try deadline, and says
// so; a dial the request's own end cut is no per-try timeout.
func TestZeroCopyDialEndsAtPerTry(t *testing.T) {
	f := &fastH1{dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		<-ctx.Done()
		return nil, &dialError{addr: addr, err: ctx.Err()}
	}}
	_, _, err := f.get(context.Background(), "192.0.2.1:80", true, poolIdleTimeout, 0, monoAdd(monoNow(), 20*time.Millisecond))
	if !errors.Is(err, errPerTryTimeout) || !errors.As(err, new(*dialError)) {
		t.Fatalf("dial cut by the per-try deadline: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, err = f.get(ctx, "192.0.2.1:80", true, poolIdleTimeout, 0, monoAdd(monoNow(), time.Hour))
	if err == nil || errors.Is(err, errPerTryTimeout) {
		t.Fatalf("dial of a request that ended: %v", err)
	}
}

func TestMaxInFlightSheds(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 2)
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-release
	}))
	_, url := resilientFerry(t, nil, `
    max_in_flight: 2`, up)
	c := h1Client()
	done := make(chan int, 2)
	for range 2 {
		go func() {
			code, _ := call(t, c, "GET", url, nil)
			done <- code
		}()
	}
	recv(t, started, 5*time.Second, "first request at origin")
	recv(t, started, 5*time.Second, "second request at origin")
	code, body := call(t, c, "GET", url, nil)
	close(release)
	if code != 503 || !strings.Contains(strings.ToLower(body), "in flight") {
		t.Fatalf("third request: %d %q, want 503 shed at once", code, body)
	}
	recv(t, done, 5*time.Second, "first")
	recv(t, done, 5*time.Second, "second")
}

// An endpoint that answers 503 before the caller's body came: the retry
// must not happen while the first attempt's transport waits for that body
// (it would take bytes the retry then misses). The caller gets the 503, or
// a retry that carried the whole body; never a broken or hung exchange.
func TestRetryWhileFirstAttemptWaitsForBody(t *testing.T) {
	aHead := make(chan struct{}, 8)
	a := startRawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")
		aHead <- struct{}{}
		io.Copy(io.Discard, br)
	})
	bHead := make(chan struct{}, 8)
	b := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bHead <- struct{}{}
		n, err := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%d %v", n, err)
	}))
	_, url := resilientFerry(t, nil, `
    balancer: round_robin
    breaker: { consecutive_failures: 0 }
    outlier: { consecutive_5xx: 0 }
    retry: { max_retries: 1, methods: [POST], on_statuses: [503], base_interval: 1ms, max_interval: 1ms }`, a.addr(), b)
	url = strings.TrimSuffix(url, "/")
	body := strings.Repeat("0123456789", 100)
	firstOnA := 0
	for i := 0; i < 4; i++ {
		conn := dialRaw(t, url)
		br := bufio.NewReader(conn)
		fmt.Fprintf(conn, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", len(body))
		resc := make(chan *http.Response, 1)
		errc := make(chan error, 1)
		go func() {
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				errc <- err
				return
			}
			resc <- res
		}()
		select {
		case <-bHead:
		case <-aHead:
			firstOnA++
			// A answered before the body came: wait for ferry's answer or
			// a retry on B before sending it.
			select {
			case res := <-resc:
				resc <- res
			case <-bHead:
			case err := <-errc:
				t.Fatal(err)
			case <-time.After(10 * time.Second):
				t.Fatal("neither an answer nor a retry")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no upstream saw the request")
		}
		io.WriteString(conn, body)
		var res *http.Response
		select {
		case res = <-resc:
		case err := <-errc:
			t.Fatalf("request %d: %v", i, err)
		case <-time.After(10 * time.Second):
			t.Fatalf("request %d: no answer", i)
		}
		got, _ := io.ReadAll(res.Body)
		res.Body.Close()
		conn.Close()
		want := fmt.Sprintf("%d <nil>", len(body))
		if !(res.StatusCode == http.StatusServiceUnavailable && string(got) == "busy") && !(res.StatusCode == http.StatusOK && string(got) == want) {
			t.Fatalf("request %d: %d %q (%s); want A's 503 or B's 200 %q", i, res.StatusCode, got, res.Header.Get("X-Ferry-Error"), want)
		}
	}
	if firstOnA == 0 {
		t.Fatal("round robin never tried A first")
	}
}

// A snapshot published a moment ago may not have reached the balancer
// yet (its upstream's follow runs on its own goroutine): a request that
// finds the balancer empty while the snapshot has endpoints syncs it and
// is served, instead of answering 503 "no endpoints".
func TestPickSyncsAPublishedSnapshot(t *testing.T) {
	addr := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	cfg, err := ParseConfig([]byte("outbound: { listen: 127.0.0.1:0, routes: [ { service: svc } ] }\nservices: { svc: { endpoints: [" + addr + "] } }\n"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := buildState(cfg, nil, nil, nil, nil) // not run: nothing follows the services
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	up := st.upstreams["svc"]
	// The balancer as it is between a publish and its sync: the endpoints
	// it had are gone, the service's new snapshot has some.
	up.res.Update(nil)
	snap := *up.svc.Snapshot()
	up.svc.Publish(&snap)
	tel, err := telemetry.New(context.Background(), telemetry.Config{AccessLog: "off"})
	if err != nil {
		t.Fatal(err)
	}
	p := newProxy("outbound", st.outbound, slog.New(slog.NewTextHandler(io.Discard, nil)), newTunnelSet(), tel)
	rec := httptest.NewRecorder()
	p.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://svc/", nil))
	if rec.Code != http.StatusOK || rec.Body.String() != "ok" {
		t.Fatalf("%d %q; want the endpoint of the published snapshot to answer", rec.Code, rec.Body.String())
	}
}

// A retry that cannot happen (no other endpoint to try) must not spend the
// retry budget: a single failing endpoint made no retry at all, yet the
// budget says it paid for some, and those tokens are gone for requests
// that could retry.
func TestUnavailableRetryDoesNotSpendBudget(t *testing.T) {
	clock := resilience.NewManualClock(time.Unix(1_000_000, 0))
	a := newFlaky(t, "a")
	a.fail.Store(503)
	sc, url := resilientFerry(t, clock, `
    breaker: { consecutive_failures: 0 }
    outlier: { consecutive_5xx: 0 }
    retry: { max_retries: 2, base_interval: 1ms, max_interval: 1ms, budget: { ratio: 0.2, min_per_second: 5 } }`, a.addr)
	c := h1Client()
	for range 10 {
		if code, _ := call(t, c, "GET", url, nil); code != 503 {
			t.Fatalf("got %d", code)
		}
	}
	if h := a.hits.Load(); h != 10 {
		t.Fatalf("%d upstream attempts for 10 requests", h)
	}
	for _, up := range sc.allUpstreams() {
		if req, ret := up.res.Budget().Counts(); ret != 0 {
			t.Fatalf("service %s: budget counts %d requests and %d retries, but no retry was made", up.name, req, ret)
		}
	}
}

// A retry the exchange never made (the caller went away during its
// backoff) gives its token back, like any other retry that did not happen:
// callers that give up during an outage must not spend the budget that
// retries of other requests need.
func TestRetryAbandonedInBackoffRefundsBudget(t *testing.T) {
	clock := resilience.NewManualClock(time.Unix(1_000_000, 0))
	good, bad := newFlaky(t, "good"), newFlaky(t, "bad")
	bad.fail.Store(503)
	// round_robin's first pick is the second endpoint: bad. The backoff
	// is drawn from [0, 1h]: the caller leaves long before it ends.
	sc, url := resilientFerry(t, clock, `
    balancer: round_robin
    breaker: { consecutive_failures: 0 }
    outlier: { consecutive_5xx: 0 }
    retry: { base_interval: 1h, max_interval: 1h }`, good.addr, bad.addr)
	up := sc.allUpstreams()[0]
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	errc := make(chan error, 1)
	go func() {
		res, err := h1Client().Do(req)
		if err == nil {
			res.Body.Close()
		}
		errc <- err
	}()
	waitFor(t, "the retry to be paid for", 5*time.Second, func() bool {
		_, ret := up.res.Budget().Counts()
		return ret == 1
	})
	cancel()
	if err := recv(t, errc, 5*time.Second, "the canceled call"); err == nil {
		t.Fatal("the call succeeded")
	}
	waitFor(t, "the token of the retry not made to come back", 5*time.Second, func() bool {
		_, ret := up.res.Budget().Counts()
		return ret == 0 && up.res.InFlight() == 0
	})
	if h := good.hits.Load(); h != 0 {
		t.Fatalf("good saw %d requests", h)
	}
}
