package sidecar

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/ferrymesh/ferry/internal/syncbuf"
	"github.com/ferrymesh/ferry/telemetry"
)

// hopRecorder is an upstream that records, per request path, the
// propagation headers of every request it got.
type hopRecorder struct {
	mu      sync.Mutex
	seen    map[string][]http.Header
	handler http.Handler
}

func (h *hopRecorder) got(path string) []http.Header {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.seen[path]
}

// newHopRecorder starts an upstream that records every request's header
// under its path, then calls answer (with the number of requests to that
// path so far) or answers "ok". Its handler may serve more origins.
func newHopRecorder(t *testing.T, answer func(w http.ResponseWriter, r *http.Request, n int)) (*hopRecorder, string) {
	h := &hopRecorder{seen: map[string][]http.Header{}}
	h.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.seen[r.URL.Path] = append(h.seen[r.URL.Path], r.Header.Clone())
		n := len(h.seen[r.URL.Path])
		h.mu.Unlock()
		io.Copy(io.Discard, r.Body)
		if answer != nil {
			answer(w, r, n)
			return
		}
		io.WriteString(w, "ok")
	})
	return h, origin(t, h.handler)
}

// serverSpansOf lists the server spans of requests to path.
func serverSpansOf(rec *tracetest.SpanRecorder, path string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range spansOfKind(rec.Ended(), trace.SpanKindServer) {
		if attr(s, "url.path").AsString() == path {
			out = append(out, s)
		}
	}
	return out
}

// childrenOf lists the client spans whose parent is sc.
func childrenOf(rec *tracetest.SpanRecorder, sc trace.SpanContext) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range spansOfKind(rec.Ended(), trace.SpanKindClient) {
		if s.Parent().SpanID() == sc.SpanID() && s.Parent().TraceID() == sc.TraceID() {
			out = append(out, s)
		}
	}
	return out
}

// checkHop checks the spans of the exchange of path and what its
// upstream got: one server span whose parent is the caller's span
// wantParent ("traceid-spanid"; "" for a new trace), attempts client spans
// under it, and as many upstream requests, the nth carrying one
// traceparent naming attempt n's client span (never the server span or
// the caller's), sampled as the server span is, and tracestate wantState.
func checkHop(t *testing.T, rec *tracetest.SpanRecorder, hops *hopRecorder, path, wantParent string, attempts int, wantState string) {
	t.Helper()
	var server sdktrace.ReadOnlySpan
	// The server span ends after its attempts' client spans.
	waitFor(t, "the server span of "+path, 5*time.Second, func() bool {
		s := serverSpansOf(rec, path)
		if len(s) == 0 {
			return false
		}
		server = s[0]
		return true
	})
	if n := len(serverSpansOf(rec, path)); n != 1 {
		t.Errorf("%s: %d server spans, want 1", path, n)
	}
	p := server.Parent()
	if wantParent == "" {
		if p.IsValid() {
			t.Errorf("%s: server span's parent %s-%s, want a new trace", path, p.TraceID(), p.SpanID())
		}
	} else if got := p.TraceID().String() + "-" + p.SpanID().String(); got != wantParent || server.SpanContext().TraceID() != p.TraceID() || !p.IsRemote() {
		t.Errorf("%s: server span's parent %s (remote %v), want %s", path, got, p.IsRemote(), wantParent)
	}
	clients := childrenOf(rec, server.SpanContext())
	if len(clients) != attempts {
		t.Errorf("%s: %d client spans under the server span, want %d", path, len(clients), attempts)
	}
	ups := hops.got(path)
	if len(ups) != attempts {
		t.Errorf("%s: upstream got %d requests, want %d", path, len(ups), attempts)
	}
	flags := "00"
	if server.SpanContext().IsSampled() {
		flags = "01"
	}
	for i, h := range ups {
		tp := h.Values("Traceparent")
		if len(tp) != 1 {
			t.Errorf("%s: attempt %d sent traceparent %q", path, i+1, tp)
			continue
		}
		found := false
		for _, c := range clients {
			if tp[0] == "00-"+server.SpanContext().TraceID().String()+"-"+c.SpanContext().SpanID().String()+"-"+flags {
				found = true
				if a := attr(c, telemetry.AttrAttempt).AsInt64(); a != int64(i+1) {
					t.Errorf("%s: upstream request %d names the client span of attempt %d", path, i+1, a)
				}
			}
		}
		if !found {
			t.Errorf("%s: attempt %d sent traceparent %q, naming none of the client spans", path, i+1, tp[0])
		}
		if ts := strings.Join(h.Values("Tracestate"), ","); ts != wantState {
			t.Errorf("%s: attempt %d sent tracestate %q, want %q", path, i+1, ts, wantState)
		}
	}
}

// retriedHops starts a traced ferry whose service has three endpoints in
// front of one hopRecorder, which answers a path's first two requests
// 503 and the third "ok": a bodiless request is tried three times.
func retriedHops(t *testing.T) (*hopRecorder, *Sidecar, *tracetest.SpanRecorder) {
	t.Helper()
	hops, up := newHopRecorder(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n < 3 {
			w.WriteHeader(503)
			return
		}
		io.WriteString(w, "ok")
	})
	up2 := origin(t, hops.handler)
	up3 := origin(t, hops.handler)
	sc, rec, _ := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: s } ] }
services:
  s:
    endpoints: [%s, %s, %s]
    breaker: { consecutive_failures: 1000 }
    outlier: { consecutive_5xx: 1000 }
    retry: { max_retries: 2, base_interval: 1ms, max_interval: 1ms, budget: { min_per_second: 1000 } }
`, up, up2, up3))
	return hops, sc, rec
}

// Each attempt of a retried exchange is a client span of its own under the
// server span, and the upstream request of each names that attempt's
// span, with the caller's tracestate, over the lane (whose first attempt
// takes the caller's header as its own) and h2c alike. A request with a
// body read by its first attempt is not retried: one attempt.
func TestTracingRetriesNameEachAttempt(t *testing.T) {
	hops, sc, rec := retriedHops(t)
	tid, sid := randomIDs()
	for _, cl := range []struct {
		name string
		c    *http.Client
	}{{"h1", h1For(t)}, {"h2c", h2cFor(t)}} {
		for _, body := range []string{"", "payload"} {
			t.Run(cl.name+body, func(t *testing.T) {
				path := "/retry/" + cl.name + body
				var rd io.Reader
				if body != "" {
					rd = strings.NewReader(body)
				}
				req, _ := http.NewRequest("PUT", "http://"+sc.Addr("outbound")+path, rd)
				req.Header.Set("Traceparent", "00-"+tid+"-"+sid+"-01")
				req.Header.Set("Tracestate", "x=y")
				res, err := cl.c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				attempts := 3
				if body != "" {
					attempts = 1
				}
				checkHop(t, rec, hops, path, tid+"-"+sid, attempts, "x=y")
			})
		}
	}
}

// Requests pipelined on one HTTP/1.1 connection, served by the lane or
// handed to net/http (chunked) in turn, each continue their own caller's
// trace, or start a new one when they carry none: nothing of one
// request's context is left to the next.
func TestTracingPipelinedRequestsKeepTheirParents(t *testing.T) {
	hops, up := newHopRecorder(t, nil)
	sc, rec, _ := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: s } ] }
services: { s: { endpoints: [%s] } }
`, up))
	c := dialRaw(t, "http://"+sc.Addr("outbound"))
	defer c.Close()
	var raw strings.Builder
	var want []string
	for i := range 6 {
		tid, sid := randomIDs()
		switch i % 3 {
		case 0:
			fmt.Fprintf(&raw, "GET /p%d HTTP/1.1\r\nHost: x\r\nTraceparent: 00-%s-%s-01\r\nTracestate: n=%d\r\n\r\n", i, tid, sid, i)
			want = append(want, tid+"-"+sid)
		case 1:
			fmt.Fprintf(&raw, "GET /p%d HTTP/1.1\r\nHost: x\r\n\r\n", i)
			want = append(want, "")
		case 2:
			fmt.Fprintf(&raw, "POST /p%d HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTraceparent: 00-%s-%s-01\r\nTracestate: n=%d\r\n\r\n3\r\nabc\r\n0\r\n\r\n", i, tid, sid, i)
			want = append(want, tid+"-"+sid)
		}
	}
	io.WriteString(c, raw.String())
	br := bufio.NewReader(c)
	for range 6 {
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
	}
	for i, w := range want {
		state := ""
		if w != "" {
			state = fmt.Sprintf("n=%d", i)
		}
		checkHop(t, rec, hops, fmt.Sprintf("/p%d", i), w, 1, state)
	}
}

// A request the lane hands to net/http (chunked upload, Expect, HTTP/1.0,
// bare LF, a value that is not ASCII) continues the caller's trace as a
// lane request does; a traceparent sent twice in different cases is two
// lines of one field: a new trace.
func TestTracingHandedOverRequestsContinueTheTrace(t *testing.T) {
	hops, up := newHopRecorder(t, nil)
	sc, rec, _ := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: s } ] }
services: { s: { endpoints: [%s] } }
`, up))
	for _, tc := range []struct{ name, raw string }{
		{"chunked", "POST /chunked HTTP/1.1\r\nHost: x\r\nTraceparent: %s\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"},
		{"expect", "POST /expect HTTP/1.1\r\nHost: x\r\nTraceparent: %s\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc"},
		{"http10", "GET /http10 HTTP/1.0\r\nHost: x\r\nTraceparent: %s\r\n\r\n"},
		{"barelf", "GET /barelf HTTP/1.1\nHost: x\nTraceparent: %s\n\n"},
		{"nonascii", "GET /nonascii HTTP/1.1\r\nHost: x\r\nTraceparent: %s\r\nX-A: \xff\r\n\r\n"},
		{"lane", "GET /lane HTTP/1.1\r\nHost: x\r\nTraceparent: %s\r\n\r\n"},
		{"lane-lower", "GET /lane-lower HTTP/1.1\r\nHost: x\r\ntraceparent: %s\r\n\r\n"},
		{"lane-two", "GET /lane-two HTTP/1.1\r\nHost: x\r\ntraceparent: %s\r\nTRACEPARENT: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tid, sid := randomIDs()
			c := dialRaw(t, "http://"+sc.Addr("outbound"))
			defer c.Close()
			fmt.Fprintf(c, tc.raw, "00-"+tid+"-"+sid+"-01")
			br := bufio.NewReader(c)
			res, err := http.ReadResponse(br, nil)
			for err == nil && res.StatusCode == 100 {
				res, err = http.ReadResponse(br, nil)
			}
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			want := tid + "-" + sid
			if tc.name == "lane-two" {
				want = ""
			}
			checkHop(t, rec, hops, "/"+tc.name, want, 1, "")
		})
	}
}

// Concurrent streams of one h2c connection, half with a traceparent and
// half without, each get the parent their own header names.
func TestTracingConcurrentH2CStreamsKeepTheirParents(t *testing.T) {
	release := make(chan struct{})
	hops, up := newHopRecorder(t, func(w http.ResponseWriter, r *http.Request, n int) {
		<-release
		io.WriteString(w, "ok")
	})
	sc, rec, _ := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: s } ] }
services: { s: { endpoints: [%s] } }
`, up))
	c := h2cFor(t)
	const n = 20
	want := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		var h http.Header
		if i%2 == 0 {
			tid, sid := randomIDs()
			want[i] = tid + "-" + sid
			h = http.Header{"Traceparent": {"00-" + tid + "-" + sid + "-01"}}
		} else {
			h = http.Header{}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("GET", fmt.Sprintf("http://%s/s%d", sc.Addr("outbound"), i), nil)
			req.Header = h
			res, err := c.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}()
	}
	waitFor(t, "all streams upstream", 10*time.Second, func() bool {
		hops.mu.Lock()
		defer hops.mu.Unlock()
		return len(hops.seen) == n
	})
	close(release)
	wg.Wait()
	for i := range n {
		checkHop(t, rec, hops, fmt.Sprintf("/s%d", i), want[i], 1, "")
	}
}

// A WebSocket upgrade and a gRPC call continue the caller's trace; the
// upstream gets the attempt's traceparent (and the caller's tracestate).
func TestTracingUpgradeAndGRPCContinueTheTrace(t *testing.T) {
	hops, up := newHopRecorder(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if r.Header.Get("Upgrade") != "" {
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nhi\n")
			brw.Flush()
			brw.ReadString('\n')
			return
		}
		if r.Header.Get("Content-Type") == "application/grpc" {
			w.Header().Set("Content-Type", "application/grpc")
			w.Header().Set("Trailer", "Grpc-Status")
			w.Write([]byte{0, 0, 0, 0, 0})
			w.Header().Set("Grpc-Status", "0")
			return
		}
		io.WriteString(w, "ok")
	})
	sc, rec, _ := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: s } ] }
services: { s: { endpoints: [%s] } }
`, up))
	t.Run("websocket", func(t *testing.T) {
		tid, sid := randomIDs()
		c := dialRaw(t, "http://"+sc.Addr("outbound"))
		fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nTraceparent: 00-%s-%s-01\r\nTracestate: w=1\r\n\r\n", tid, sid)
		br := bufio.NewReader(c)
		res, err := http.ReadResponse(br, nil)
		if err != nil || res.StatusCode != 101 {
			t.Fatal(res, err)
		}
		br.ReadString('\n')
		io.WriteString(c, "bye\n")
		c.Close()
		checkHop(t, rec, hops, "/ws", tid+"-"+sid, 1, "w=1")
	})
	t.Run("grpc", func(t *testing.T) {
		tid, sid := randomIDs()
		req, _ := http.NewRequest("POST", "http://"+sc.Addr("outbound")+"/pkg.Svc/Call", strings.NewReader("\x00\x00\x00\x00\x00"))
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("Te", "trailers")
		req.Header.Set("Traceparent", "00-"+tid+"-"+sid+"-01")
		res, err := h2cFor(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		checkHop(t, rec, hops, "/pkg.Svc/Call", tid+"-"+sid, 1, "")
	})
}

// Every exchange ferry fails or retries has one server span under the
// caller's span and one client span per attempt made: a per-try timeout
// retried, a response timeout, a body cut before its first byte retried,
// a body over the limit and a missing route (no attempt), a breaker that
// opens and then refuses (no attempt).
func TestTracingOneSpanPerExchangeAndAttemptOnFailures(t *testing.T) {
	hold := make(chan struct{})
	t.Cleanup(func() { close(hold) })
	hops, good := newHopRecorder(t, func(w http.ResponseWriter, r *http.Request, n int) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/slow") && n == 1:
			select {
			case <-hold:
			case <-r.Context().Done():
			}
		case strings.HasPrefix(r.URL.Path, "/hang"):
			select {
			case <-hold:
			case <-r.Context().Done():
			}
		case strings.HasPrefix(r.URL.Path, "/cut") && n == 1:
			conn, brw, _ := http.NewResponseController(w).Hijack()
			brw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
			brw.Flush()
			conn.Close()
		case strings.HasPrefix(r.URL.Path, "/bad"):
			w.WriteHeader(503)
		default:
			io.WriteString(w, "ok")
		}
	})
	good2 := origin(t, hops.handler)
	sc, rec, _ := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
limits: { max_request_body_bytes: 10 }
outbound:
  listen: 127.0.0.1:0
  routes:
    - { host: pertry, service: pertry }
    - { host: timeout, service: timeout }
    - { host: cut, service: cut }
    - { host: brk, service: brk }
    - { host: s, service: s }
services:
  s: { endpoints: [%[1]s] }
  pertry:
    endpoints: [%[1]s, %[2]s]
    balancer: round_robin
    timeouts: { per_try: 200ms }
    retry: { max_retries: 1, base_interval: 1ms, max_interval: 1ms, budget: { min_per_second: 1000 } }
  timeout: { endpoints: [%[1]s], timeouts: { response_header: 150ms } }
  cut:
    endpoints: [%[1]s, %[2]s]
    retry: { max_retries: 1, base_interval: 1ms, max_interval: 1ms, budget: { min_per_second: 1000 } }
  brk:
    endpoints: [%[1]s]
    breaker: { consecutive_failures: 1 }
    outlier: { consecutive_5xx: 0 }
    retry: { max_retries: 0 }
`, good, good2))
	do := func(t *testing.T, host, method, path, body string) (string, int) {
		tid, sid := randomIDs()
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, _ := http.NewRequest(method, "http://"+sc.Addr("outbound")+path, rd)
		req.Host = host
		req.Header.Set("Traceparent", "00-"+tid+"-"+sid+"-01")
		res, err := h1For(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return tid + "-" + sid, res.StatusCode
	}
	for _, c := range []struct {
		name, host, method, path, body string
		status, attempts               int
	}{
		{"per-try timeout retried", "pertry", "GET", "/slow", "", 200, 2},
		{"response timeout", "timeout", "GET", "/hang", "", 504, 1},
		{"cut before the body retried", "cut", "GET", "/cut", "", 200, 2},
		{"body too large", "s", "POST", "/big", strings.Repeat("x", 11), 413, 0},
		{"no route", "nowhere", "GET", "/none", "", 404, 0},
		{"breaker opens", "brk", "GET", "/bad1", "", 503, 1},
		{"breaker refuses", "brk", "GET", "/bad2", "", 503, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			parent, status := do(t, c.host, c.method, c.path, c.body)
			if status != c.status {
				t.Fatalf("status %d, want %d", status, c.status)
			}
			checkHop(t, rec, hops, c.path, parent, c.attempts, "")
		})
	}
}

// With tracing off, requests pipelined on one lane connection each log
// their own caller's trace and span IDs, and none when they sent none:
// the lane's telemetry record, reused per request, keeps nothing of the
// one before.
func TestTracingOffPipelinedAccessLogIDs(t *testing.T) {
	_, up := newHopRecorder(t, nil)
	logs := &syncbuf.Buffer{}
	tel, err := telemetry.New(t.Context(), telemetry.Config{}, telemetry.WithEnv(func(string) string { return "" }), telemetry.WithAccessLogWriter(logs))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tel.Shutdown(context.Background()) })
	sc := startSidecar(t, mustParse(t, fmt.Sprintf("admin: { listen: 127.0.0.1:0 }\noutbound: { listen: 127.0.0.1:0, routes: [ { service: s } ] }\nservices: { s: { endpoints: [%s] } }\n", up)), Options{Telemetry: tel})
	c := dialRaw(t, "http://"+sc.Addr("outbound"))
	var raw strings.Builder
	var want []string
	for i := range 6 {
		tid, sid := randomIDs()
		if i%2 == 0 {
			fmt.Fprintf(&raw, "GET /p%d HTTP/1.1\r\nHost: x\r\nTraceparent: 00-%s-%s-01\r\n\r\n", i, tid, sid)
			want = append(want, fmt.Sprintf(`"trace_id":"%s","span_id":"%s"`, tid, sid))
		} else {
			fmt.Fprintf(&raw, "GET /p%d HTTP/1.1\r\nHost: x\r\n\r\n", i)
			want = append(want, "")
		}
	}
	io.WriteString(c, raw.String())
	br := bufio.NewReader(c)
	for range 6 {
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
	}
	waitFor(t, "log lines", 5*time.Second, func() bool { return strings.Count(logs.String(), "\n") >= 6 })
	for i, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if want[i] == "" {
			want[i] = `"trace_id":"","span_id":""`
		}
		if !strings.Contains(l, want[i]) || !strings.Contains(l, `"route":"*"`) {
			t.Errorf("access log line %d lacks %s: %s", i, want[i], l)
		}
	}
}
