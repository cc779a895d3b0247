package sidecar

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"path"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Plain HTTP/1.1 and HTTP/1.0 requests are served by the lane; HTTP/2,
// upgrades, Expect but 100-continue with a body, announced trailers,
// HTTP/1.0 with framing of its own or no Host, and heads it does not
// judge go to net/http, and both answer.
func TestLaneServesPlainHandsOverTheRest(t *testing.T) {
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%s %s %d", r.Method, r.Proto, n)
	}))
	_, url := outboundTo(t, "", up)
	for _, tc := range []struct {
		name   string
		raw    string
		served bool // by the lane
		want   string
	}{
		{"get", "GET /a HTTP/1.1\r\nHost: x\r\n\r\n", true, "GET HTTP/1.1 0"},
		{"post", "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", true, "POST HTTP/1.1 3"},
		{"chunked", "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", true, "POST HTTP/1.1 3"},
		{"chunked, trailer announced", "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n", false, "POST HTTP/1.1 3"},
		{"expect", "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc", true, "POST HTTP/1.1 3"},
		{"expect, no body", "GET /a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n", false, "GET HTTP/1.1 0"},
		{"expect, twice", "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\nExpect: 100-continue\r\n\r\nabc", false, "POST HTTP/1.1 3"},
		{"absolute form", "POST http://x/a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", false, "POST HTTP/1.1 3"},
		{"http/1.0", "GET /a HTTP/1.0\r\nHost: x\r\n\r\n", true, "GET HTTP/1.1 0"},
		{"http/1.0 post", "POST /a HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\nabc", true, "POST HTTP/1.1 3"},
		{"http/1.0, no host", "GET /a HTTP/1.0\r\n\r\n", false, "GET HTTP/1.1 0"},
		{"http/1.0, expect", "POST /a HTTP/1.0\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc", false, "POST HTTP/1.1 3"},
		{"http/1.0, transfer-encoding", "POST /a HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc", false, "POST HTTP/1.1 3"},
		{"bare LF", "GET /a HTTP/1.1\nHost: x\n\n", false, "GET HTTP/1.1 0"},
		{"obs-fold", "GET /a HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n 2\r\n\r\n", false, "GET HTTP/1.1 0"},
		{"bad header name", "GET /a HTTP/1.1\r\nHost: x\r\nX A: 1\r\n\r\n", false, ""},
		{"non-ASCII value", "GET /a HTTP/1.1\r\nHost: x\r\nX-A: \xff\r\n\r\n", false, "GET HTTP/1.1 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			served, handed := laneServed.Load(), laneHanded.Load()
			c := dialRaw(t, url)
			defer c.Close()
			io.WriteString(c, tc.raw)
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(c)
			res, err := http.ReadResponse(br, nil)
			for err == nil && res.StatusCode == http.StatusContinue {
				res, err = http.ReadResponse(br, nil)
			}
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			if tc.want != "" && (res.StatusCode != 200 || string(body) != tc.want) {
				t.Fatalf("got %d %q, want 200 %q", res.StatusCode, body, tc.want)
			}
			if tc.want == "" && res.StatusCode != http.StatusBadRequest {
				t.Fatalf("got %d %q, want net/http's 400", res.StatusCode, body)
			}
			if got := laneServed.Load() - served; (got == 1) != tc.served {
				t.Fatalf("lane served %d requests", got)
			}
			if got := laneHanded.Load() - handed; (got == 1) == tc.served {
				t.Fatalf("lane handed over %d connections", got)
			}
		})
	}
}

// Requests pipelined on one connection are answered in order, the
// connection kept between them; "Connection: close" ends it after its
// answer.
func TestLanePipelinedAndClose(t *testing.T) {
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s:%s", r.URL.Path, b)
	}))
	_, url := outboundTo(t, "", up)
	c := dialRaw(t, url)
	defer c.Close()
	io.WriteString(c, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"+
		"POST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"+
		"GET /3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	br := bufio.NewReader(c)
	for i, res := range readAnswers(t, c, br, "/1:", "/2:hello", "/3:") {
		if res.Close != (i == 2) {
			t.Fatalf("answer %d: Connection: close is %v", i+1, res.Close)
		}
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("connection still open after Connection: close (%v)", err)
	}
}

// A caller that goes away while the upstream has not answered yet cancels
// the upstream exchange: the lane watches a request that runs for long.
func TestLaneCallerGoneCancelsUpstream(t *testing.T) {
	// ferry's client hooks the upstream connection to the lane's
	// exchange, whose overall timeout the lane keeps too (no context
	// below the request's). Both must close it.
	for _, extra := range []string{"", "defaults: { timeouts: { overall: 1m } }"} {
		canceled := make(chan struct{})
		arrived := make(chan struct{})
		up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			close(arrived)
			<-r.Context().Done()
			close(canceled)
		}))
		_, url := outboundTo(t, extra, up)
		c := dialRaw(t, url)
		io.WriteString(c, "GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
		recv(t, arrived, 10*time.Second, "the request at the origin")
		c.Close()
		recv(t, canceled, 10*time.Second, "the origin to see the exchange canceled ("+extra+")")
	}
}

// The lane's own cancel hook: a cancel closes the hooked connection once,
// a hook set after the cancel closes it at once, and stop reports whether
// the connection was still the exchange's.
func TestLaneExchangeCancelHook(t *testing.T) {
	hooked := func() (*http.Request, context.CancelCauseFunc, *net.TCPConn, *net.TCPConn) {
		lh := laneRequest([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), nil, nil)
		if lh == nil {
			t.Fatal("the lane refused a plain head")
		}
		r, cancel := &lh.req, lh.ctx.le.cancel
		c, s := tcpPair(t)
		return r, cancel, c, s
	}
	closed := func(peer *net.TCPConn) bool {
		peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := peer.Read(make([]byte, 1))
		return err == io.EOF
	}

	r, cancel, c, s := hooked()
	h := closeOnCancel(r.Context(), c)
	if h.le == nil {
		t.Fatal("a lane request's connection was hooked with AfterFunc")
	}
	cancel(errCallerGone)
	if !closed(s) || h.stop() {
		t.Fatal("cancel did not close the hooked connection, or stop claimed it after")
	}

	r, cancel, c, s = hooked()
	h = closeOnCancel(r.Context(), c)
	if !h.stop() {
		t.Fatal("stop before any cancel reported the connection gone")
	}
	cancel(nil)
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatalf("a cancel after stop closed the connection: %v", err)
	}

	r, cancel, c, s = hooked()
	cancel(nil)
	h = closeOnCancel(r.Context(), c)
	if !closed(s) || h.stop() {
		t.Fatal("hooking after the cancel did not close the connection")
	}

	// A context below the exchange's with its own deadline ends without
	// the exchange: that takes AfterFunc.
	r, cancel, c, s = hooked()
	defer cancel(nil)
	ctx, stop := context.WithTimeout(r.Context(), time.Millisecond)
	defer stop()
	h = closeOnCancel(ctx, c)
	if h.le != nil {
		t.Fatal("a context with its own deadline was hooked to the exchange")
	}
	if !closed(s) || h.stop() {
		t.Fatal("the deadline did not close the connection")
	}
}

// plainTarget reads what it takes exactly as url.ParseRequestURI, and
// leaves escapes and characters URL would escape to it.
func TestPlainTarget(t *testing.T) {
	for _, uri := range []string{"/", "/a/b.c", "/a?", "/a??", "/a?b?", "/a?x=1&y=%20", "/$&+,:;=@-_.~", "//x", "/a/../b", "/?", "/a?#f"} {
		var u url.URL
		if !plainTarget(uri, &u) {
			t.Errorf("%q: refused", uri)
			continue
		}
		ref, err := url.ParseRequestURI(uri)
		if err != nil || u != *ref {
			t.Errorf("%q: %#v; url.ParseRequestURI %#v (%v)", uri, u, ref, err)
		}
	}
	for _, uri := range []string{"/p%20q", "/a(b)", "/a!", "/a*", "/a'", "/a#f", "/[x]", "/a|b"} {
		var u url.URL
		if plainTarget(uri, &u) {
			t.Errorf("%q: taken; it is url.ParseRequestURI's", uri)
		}
	}
}

// A lane request's context (laneContext) behaves as the cancelable context
// it wraps: the cause of its cancellation reaches context.Cause, through
// values wrapped over it too, and contexts derived from it are that
// context's children (no goroutine of the context package per derived
// context, as a parent of an unknown type would cost).
func TestLaneContextIsItsCancelContext(t *testing.T) {
	lh := laneRequest([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), nil, nil)
	if lh == nil {
		t.Fatal("the lane refused a plain head")
	}
	r, cancel := &lh.req, lh.ctx.le.cancel
	type key struct{}
	ctx := context.WithValue(r.Context(), key{}, 1)
	if le, ok := ctx.Value(laneCancelKey{}).(*laneExchange); !ok || le != &lh.ctx.le {
		t.Fatal("the lane exchange is not found below a value")
	}
	if laneOwned(r.Context()) != &lh.ctx.le {
		t.Fatal("the lane's own context is not taken for the exchange's")
	}
	if d, stop := context.WithCancel(r.Context()); laneOwned(d) != nil || laneOwned(ctx) != nil {
		stop()
		t.Fatal("a derived context is taken for the exchange's own, which it may end before")
	} else {
		stop()
	}
	before := runtime.NumGoroutine()
	var stops []context.CancelFunc
	for range 50 {
		c, stop := context.WithTimeout(ctx, time.Hour)
		stops = append(stops, stop)
		context.AfterFunc(c, func() {})
	}
	if n := runtime.NumGoroutine() - before; n >= 25 {
		t.Fatalf("deriving 50 contexts started %d goroutines", n)
	}
	child, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	cancel(errCallerGone)
	<-child.Done()
	if !errors.Is(context.Cause(r.Context()), errCallerGone) || !errors.Is(context.Cause(child), errCallerGone) {
		t.Fatalf("causes: %v, child %v; want %v", context.Cause(r.Context()), context.Cause(child), errCallerGone)
	}
	for _, s := range stops {
		s()
	}
}

// The watch does not eat a pipelined request: a slow answer followed by a
// request sent while it runs.
func TestLaneWatchKeepsNextRequest(t *testing.T) {
	release := make(chan struct{})
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		io.WriteString(w, r.URL.Path)
	}))
	_, url := outboundTo(t, "", up)
	c := dialRaw(t, url)
	defer c.Close()
	watches := laneWatches.Load()
	io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	waitFor(t, "the lane to watch the slow request", 10*time.Second, func() bool { return laneWatches.Load() > watches })
	io.WriteString(c, "GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
	close(release)
	readAnswers(t, c, bufio.NewReader(c), "/slow", "/next")
}

// The lane's sweep lists a busy connection once however many requests it
// serves, starts the watch of a request that runs past watchDelay, and
// ends once no request is left to look at: an idle lane keeps no
// goroutine for its watches.
func TestLaneSweepListsOnceAndEnds(t *testing.T) {
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		io.WriteString(w, "ok")
	})
	l := newLane("test", h, &http.Server{}, slog.New(slog.DiscardHandler))
	first := dialServer(t, l)
	conns := []net.Conn{first}
	for range 3 {
		conns = append(conns, dialRaw(t, "http://"+first.RemoteAddr().String()))
	}
	listed := func() (n int, sweeping bool) {
		l.wlmu.Lock()
		defer l.wlmu.Unlock()
		seen := map[*laneConn]bool{}
		for _, lc := range l.watchers {
			if seen[lc] {
				t.Errorf("a connection is listed twice for the sweep")
			}
			seen[lc] = true
		}
		return len(l.watchers), l.sweeping
	}
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			br := bufio.NewReader(c)
			for range 200 {
				io.WriteString(c, "GET /quick HTTP/1.1\r\nHost: x\r\n\r\n")
				res, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Error(err)
					return
				}
				io.ReadAll(res.Body)
				listed()
			}
		}()
	}
	wg.Wait()
	if n, _ := listed(); n > len(conns) {
		t.Fatalf("%d connections listed for the sweep, %d served", n, len(conns))
	}
	watches := laneWatches.Load()
	io.WriteString(first, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	waitFor(t, "the sweep to start the slow request's watch", 10*time.Second, func() bool { return laneWatches.Load() > watches })
	close(release)
	readAnswers(t, first, bufio.NewReader(first), "ok")
	waitFor(t, "the sweep to end", 10*time.Second, func() bool {
		n, sweeping := listed()
		return n == 0 && !sweeping
	})
}

// readAnswers reads one response per wanted body from c, in order.
func readAnswers(t *testing.T, c net.Conn, br *bufio.Reader, bodies ...string) []*http.Response {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var all []*http.Response
	for _, want := range bodies {
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", want, err)
		}
		b, _ := io.ReadAll(res.Body)
		if string(b) != want {
			t.Fatalf("got %q, want %q", b, want)
		}
		all = append(all, res)
	}
	return all
}

// A drain closes idle lane connections at once, lets a request in progress
// finish with "Connection: close", and refuses new connections.
func TestLaneDrain(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 1)
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			arrived <- struct{}{}
			<-release
		}
		io.WriteString(w, "ok")
	}))
	sc, url := outboundTo(t, "shutdown: { grace: 20s }", up)
	idle := dialRaw(t, url)
	defer idle.Close()
	io.WriteString(idle, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
	ibr := bufio.NewReader(idle)
	if res, err := http.ReadResponse(ibr, nil); err != nil {
		t.Fatal(err)
	} else {
		io.ReadAll(res.Body)
	}
	busy := dialRaw(t, url)
	defer busy.Close()
	io.WriteString(busy, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	recv(t, arrived, 10*time.Second, "the slow request at the origin")
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		drained <- sc.Shutdown(ctx)
	}()
	idle.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := ibr.ReadByte(); err == nil {
		t.Fatal("the idle connection got bytes; want it closed")
	}
	waitFor(t, "the listener to close", 5*time.Second, func() bool {
		return !listening(t, strings.TrimPrefix(url, "http://"))
	})
	close(release)
	busy.SetReadDeadline(time.Now().Add(10 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(busy), nil)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(res.Body)
	if res.StatusCode != 200 || !res.Close {
		t.Fatalf("in-flight request: %d, close %v; want 200 with Connection: close", res.StatusCode, res.Close)
	}
	if err := recv(t, drained, 20*time.Second, "the drain"); err != nil {
		t.Fatal(err)
	}
}

// parseHead takes only the plainest heads.
func TestLaneParseHead(t *testing.T) {
	for _, tc := range []struct {
		head string
		ok   bool
	}{
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true},
		{"GET /p?q=1 HTTP/1.1\r\nHost: a:80\r\nX-A: b c\r\n\r\n", true},
		{"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", true},
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n", true},
		{"GET / HTTP/1.1\r\n\r\n", false},                       // no Host
		{"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", false}, // two
		{"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", false},          // odd host
		{"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", false},    // absolute-form
		{"GET * HTTP/1.1\r\nHost: a\r\n\r\n", false},            // asterisk
		{"get / HTTP/1.1\r\nHost: a\r\n\r\n", false},            // lower-case method
		{"GET / HTTP/1.0\r\nHost: a\r\n\r\n", true},
		{"GET / HTTP/1.2\r\nHost: a\r\n\r\n", false}, // version
		{"GET / HTTP/1.0\r\n\r\n", false},            // no Host
		{"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", false},
		{"POST / HTTP/1.0\r\nHost: a\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n", false},
		{"PRI * HTTP/2.0\r\n\r\n", false},                                     // h2 preface
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 01\r\n\r\n", false},   // leading zero
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n", false},   // sign
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\n", false}, // list
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", false},
		{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", true},
		{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n", true},
		{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", false},
		{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", false},
		{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", false},
		{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", false},
		{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", false},
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", false},
		{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n", false},
		{"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n", false},
		{"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n\r\n", false},
		{"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n", false}, // no body
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n", true},
		{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nExpect: 100-Continue\r\n\r\n", true},
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nExpect: 100-continue, x\r\n\r\n", false},
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nExpect: 100-continue\r\nExpect: 100-continue\r\n\r\n", false},
		{"GET / HTTP/1.1\r\nHost: a\r\nX A: b\r\n\r\n", false},     // space in name
		{"GET / HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n", false},    // space before colon
		{"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x00\r\n\r\n", false}, // NUL
		{"GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n", false},           // DEL in target
		{"GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n", false},        // empty name
		{"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", false},
	} {
		r := parseHead([]byte(tc.head), context.Background(), new(laneHead))
		if (r != nil) != tc.ok {
			t.Errorf("%q: parsed %v, want %v", tc.head, r != nil, tc.ok)
		}
	}
	r := parseHead([]byte("POST /p%20q?x=1 HTTP/1.1\r\nHost: a\r\ncontent-length: 4\r\nx-multi: 1\r\nX-Multi: 2\r\nConnection: close\r\n\r\n"), context.Background(), new(laneHead))
	if r == nil || r.URL.Path != "/p q" || r.URL.RawQuery != "x=1" || r.ContentLength != 4 || !r.Close ||
		r.Host != "a" || strings.Join(r.Header["X-Multi"], ",") != "1,2" || r.Header.Get("Content-Length") != "4" {
		t.Fatalf("parsed %+v", r)
	}
	r = parseHead([]byte("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"), context.Background(), new(laneHead))
	if r == nil || r.ContentLength != -1 || len(r.TransferEncoding) != 1 || r.TransferEncoding[0] != "chunked" || r.Header["Transfer-Encoding"] != nil {
		t.Fatalf("parsed %+v", r)
	}
}

// Whatever head the lane's parser accepts, net/http's parser accepts too
// and reads the same request: the lane never serves a request net/http
// would have refused or read differently.
func FuzzLaneHead(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /p?q=1 HTTP/1.1\r\nHost: a:80\r\nContent-Length: 10\r\nX-A: b\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: [::1]\r\nConnection: close\r\nx-y: 1\r\nX-Y: 2\r\n\r\n",
		"GET /%zz HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\n\r\n",
		"DELETE /a/../b HTTP/1.1\r\nHost: a..b\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nPragma: no-cache\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nPragma: no-cache\r\nCache-Control: max-age=0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:  Chunked \r\nContent-Length: 3\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
		"GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
		"GET / HTTP/1.0\r\nHost: a\r\nConnection: Keep-Alive\r\nConnection: close\r\n\r\n",
		"POST / HTTP/1.0\r\nHost: a\r\nContent-Length: 3\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, head []byte) {
		i := bytes.Index(head, []byte("\r\n\r\n"))
		if i < 0 {
			return
		}
		head = head[:i+4]
		mine := parseHead(head, context.Background(), new(laneHead))
		if bareLF(head) {
			// readHead leaves these to parseHead, which must refuse
			// them: the lane hands them over to net/http.
			if mine != nil {
				t.Fatalf("the lane accepted %q, which has a bare LF or a lone CR", head)
			}
			return
		}
		if mine == nil {
			return
		}
		ref, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
		if err != nil {
			t.Fatalf("the lane accepted %q; net/http refuses it: %v", head, err)
		}
		if mine.Method != ref.Method || *mine.URL != *ref.URL || mine.RequestURI != ref.RequestURI ||
			mine.Proto != ref.Proto || mine.ProtoMajor != ref.ProtoMajor || mine.ProtoMinor != ref.ProtoMinor ||
			mine.Host != ref.Host || mine.ContentLength != ref.ContentLength || mine.Close != ref.Close ||
			!reflect.DeepEqual(mine.Header, ref.Header) || !reflect.DeepEqual(mine.TransferEncoding, ref.TransferEncoding) {
			t.Fatalf("%q read differently:\nlane     %s %s host=%q cl=%d te=%q close=%v %v\nnet/http %s %s host=%q cl=%d te=%q close=%v %v",
				head, mine.Method, mine.URL, mine.Host, mine.ContentLength, mine.TransferEncoding, mine.Close, mine.Header,
				ref.Method, ref.URL, ref.Host, ref.ContentLength, ref.TransferEncoding, ref.Close, ref.Header)
		}
	})
}

// A whole response goes out as soon as its last byte is written, not when
// the handler returns: the caller does not wait for ferry's bookkeeping
// after the answer (span, metrics, access log).
func TestLaneSendsWholeResponseBeforeHandlerReturns(t *testing.T) {
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/body":
			w.Header().Set("Content-Length", "5")
			io.WriteString(w, "hello")
		case "/empty":
			w.Header().Set("Content-Length", "0")
			w.WriteHeader(http.StatusOK)
		case "/nocontent":
			w.WriteHeader(http.StatusNoContent)
		case "/head":
			w.Header().Set("Content-Length", "5")
			w.WriteHeader(http.StatusOK)
		}
		<-release
	})
	c := dialLane(t, h, &http.Server{})
	br := bufio.NewReader(c)
	for _, tc := range []struct{ method, path, body string }{
		{"GET", "/body", "hello"}, {"GET", "/empty", ""}, {"GET", "/nocontent", ""}, {"HEAD", "/head", ""},
	} {
		fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: x\r\n\r\n", tc.method, tc.path)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		res, err := http.ReadResponse(br, &http.Request{Method: tc.method})
		if err != nil {
			t.Fatalf("%s: no whole response while the handler runs: %v", tc.path, err)
		}
		b, err := io.ReadAll(res.Body)
		if err != nil || string(b) != tc.body {
			t.Fatalf("%s: body %q, %v; want %q", tc.path, b, err, tc.body)
		}
		release <- struct{}{}
	}
}

// The idle timeout counts from the end of the last request, although the
// lane keeps an earlier read deadline instead of moving it per request: a
// connection used again within the timeout stays open past the first
// request's deadline, and closes no sooner than the timeout after the last
// request.
func TestLaneIdleTimeoutFromLastRequest(t *testing.T) {
	const idle = time.Second
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	c := dialLane(t, h, &http.Server{IdleTimeout: idle, ReadHeaderTimeout: idle})
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	ask := func() time.Time {
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		readAnswers(t, c, br, "ok")
		return time.Now()
	}
	ask()
	time.Sleep(idle * 6 / 10) // the time that passes is what is tested
	ask()
	time.Sleep(idle * 6 / 10) // past the first wait's deadline
	last := ask()
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("idle connection: %v; want it closed", err)
	}
	if waited := time.Since(last); waited < idle-idle/10 {
		t.Fatalf("closed %v after the last request; the idle timeout is %v", waited, idle)
	}
}

// dialLane serves h with a lane (timeouts and limits from srv) on a
// loopback port and returns a connection to it; both end with the test.
func dialLane(t *testing.T, h http.Handler, srv *http.Server) net.Conn {
	t.Helper()
	return dialServer(t, newLane("test", h, srv, slog.New(slog.DiscardHandler)))
}

// dialServer serves with s (a lane or an http.Server) on a loopback port
// and returns a connection to it; both end with the test.
func dialServer(t *testing.T, s interface {
	Serve(net.Listener) error
	Close() error
}) net.Conn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// RFC 9112 section 6.3: a request with an invalid Content-Length is a
// framing error (400). "-0" is not 1*DIGIT; net/http answers 400, the
// lane must not serve it as an empty body.
func TestLaneSignedContentLength(t *testing.T) {
	hit := make(chan struct{}, 1)
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hit <- struct{}{}
	}))
	_, url := outboundTo(t, "", up)
	c := dialRaw(t, url)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -0\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusBadRequest {
		t.Fatalf("status %d for Content-Length -0, want 400 (relayed upstream: %v)", res.StatusCode, len(hit) > 0)
	}
}

// A caller leaving during a later request of a connection (after quick
// ones, which leave the connection listed for the lane's sweep) still
// cancels the upstream.
func TestLaneCallerGoneOnReusedConnection(t *testing.T) {
	canceled := make(chan struct{})
	arrived := make(chan struct{})
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/quick" {
			w.Write([]byte("ok"))
			return
		}
		close(arrived)
		<-r.Context().Done()
		close(canceled)
	}))
	_, url := outboundTo(t, "", up)
	c := dialRaw(t, url)
	br := bufio.NewReader(c)
	for range 3 {
		io.WriteString(c, "GET /quick HTTP/1.1\r\nHost: x\r\n\r\n")
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(res.Body)
	}
	io.WriteString(c, "GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
	recv(t, arrived, 10*time.Second, "the request at the origin")
	c.Close()
	recv(t, canceled, 10*time.Second, "the origin to see the exchange canceled")
}

// An upstream that answers before the caller's body came: the lane ends
// the connection while a transport given up may still read the body
// through the connection's reader, which must then not serve another
// connection (under -race this test saw that reader reset and reused).
func TestLaneReaderNotReusedWhileBodyRead(t *testing.T) {
	up := earlyAnswerServer(t, "", func(br *bufio.Reader) { io.Copy(io.Discard, br) })
	_, url := outboundTo(t, "defaults: { retry: { max_retries: 0 } }", up.addr())
	for range 30 {
		a := dialRaw(t, url)
		fmt.Fprintf(a, "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n0123456789", 50000)
		if got := answerBody(t, a); got != "early" {
			t.Fatalf("got %q", got)
		}
		var others []net.Conn
		for range 8 {
			b := dialRaw(t, url)
			io.WriteString(b, "GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
			others = append(others, b)
			a.Write([]byte(strings.Repeat("z", 512)))
		}
		for _, b := range others {
			if got := answerBody(t, b); got != "ok" {
				t.Fatalf("a GET on another connection got %q", got)
			}
			b.Close()
		}
		a.Close()
	}
}

// answerBody reads one response from c and returns its body.
func answerBody(t *testing.T, c net.Conn) string {
	t.Helper()
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return string(b)
}

// laneExchangeRaw writes raw to a fresh lane serving h, then reads every byte
// until the lane closes the connection or 2 s pass with the connection
// open; it returns what was read and whether the connection was closed.
func laneExchangeRaw(t *testing.T, h http.Handler, raw string) (string, bool) {
	t.Helper()
	c := dialLane(t, h, &http.Server{})
	io.WriteString(c, raw)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	b, err := io.ReadAll(c)
	closed := err == nil
	return string(b), closed
}

// A handler that writes past its declared Content-Length: net/http sends
// only the declared bytes and then closes the connection (written !=
// contentLength makes shouldReuseConnection false). The lane must not keep
// serving requests on it.
func TestLaneOverlongBodyClosesConnection(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "5")
		io.WriteString(w, "helloEXTRA")
	})
	got, closed := laneExchangeRaw(t, h, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
	if strings.Contains(got, "EXTRA") {
		t.Fatalf("bytes past Content-Length sent: %q", got)
	}
	if n := strings.Count(got, "HTTP/1.1 200"); n != 1 || !closed {
		t.Fatalf("after a body longer than its Content-Length: %d responses, connection closed=%v; want 1 and closed (as net/http)\n%q", n, closed, got)
	}
}

// A handler that sets Content-Length: 10 and returns without writing:
// net/http sends the head with Content-Length: 10 and closes, so the caller
// sees a body cut short. The lane must not pass it off as a complete empty
// response.
func TestLaneDeclaredLengthUnwrittenIsNotComplete(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "10")
	})
	got, closed := laneExchangeRaw(t, h, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(strings.NewReader(got)), nil)
	if err != nil {
		return // no answer, or a broken one: not passed off as whole
	}
	_, err = io.ReadAll(res.Body)
	if err == nil {
		t.Fatalf("handler declared 10 bytes and wrote none; caller got a clean complete response (Content-Length %d, closed=%v):\n%q", res.ContentLength, closed, got)
	}
}

// Trailers announced in a "Trailer" header and set under their own name
// after the body (the net/http way, used by gRPC servers) are sent after the
// last chunk by net/http.
func TestLaneAnnouncedTrailers(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "Grpc-Status")
		w.WriteHeader(200)
		io.WriteString(w, "data")
		w.(http.Flusher).Flush()
		w.Header().Set("Grpc-Status", "0")
	})
	got, _ := laneExchangeRaw(t, h, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(strings.NewReader(got)), nil)
	if err != nil {
		t.Fatalf("%v: %q", err, got)
	}
	io.ReadAll(res.Body)
	if res.Trailer.Get("Grpc-Status") != "0" {
		t.Fatalf("announced trailer Grpc-Status missing: trailer %v\n%q", res.Trailer, got)
	}
}

// canonicalKey is what scanFields makes of a field name of token
// characters: the name itself when scanName finds it canonical, else its
// canonicalForm.
func canonicalKey(name string) string {
	if end, canonical := scanName(name); end == len(name) && canonical {
		return name
	}
	return canonicalForm(name)
}

// canonicalKey gives every name of token characters the form textproto
// gives it: here every name of up to four characters over an alphabet of
// both cases, a digit, '-' and '_', and the lower-case common names.
func TestCanonicalKey(t *testing.T) {
	const alphabet = "aZ-0_k"
	names := []string{"content-type", "x-forwarded-for", "te", "CONTENT-TYPE", "Content-type", "X-FORWARDED-FOR"}
	var grow func(prefix string)
	grow = func(prefix string) {
		if prefix != "" {
			names = append(names, prefix)
		}
		if len(prefix) == 4 {
			return
		}
		for i := 0; i < len(alphabet); i++ {
			grow(prefix + alphabet[i:i+1])
		}
	}
	grow("")
	for _, n := range names {
		if got, want := canonicalKey(n), textproto.CanonicalMIMEHeaderKey(n); got != want {
			t.Fatalf("canonicalKey(%q) = %q, textproto says %q", n, got, want)
		}
	}
}

// bareLF agrees with its definition, checked byte by byte, on every string
// of up to eight bytes of CR, LF and one other byte.
func TestBareLF(t *testing.T) {
	ref := func(b []byte) bool {
		for i, c := range b {
			if c == '\n' && (i == 0 || b[i-1] != '\r') || c == '\r' && i+1 < len(b) && b[i+1] != '\n' {
				return true
			}
		}
		return false
	}
	var grow func(b []byte)
	grow = func(b []byte) {
		if got, want := bareLF(b), ref(b); got != want {
			t.Fatalf("bareLF(%q) = %v, want %v", b, got, want)
		}
		if len(b) == 8 {
			return
		}
		for _, c := range []byte("\r\na") {
			grow(append(b, c))
		}
	}
	grow(nil)
}

// The longest timeouts a config can give (durations up to the largest
// time.Duration, as "2562047h47m16.854775807s") wait as long as that, as
// net/http's do: the lane's wait for a request, on the monotonic clock,
// must not overflow into a deadline already past.
func TestLaneLongestTimeoutsWait(t *testing.T) {
	longest := time.Duration(math.MaxInt64)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	c := dialLane(t, h, &http.Server{ReadHeaderTimeout: longest, IdleTimeout: longest})
	br := bufio.NewReader(c)
	for i := range 2 {
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d with read_header_timeout and idle_timeout %v: %v", i+1, longest, err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || string(b) != "ok" {
			t.Fatalf("request %d: %d %q", i+1, res.StatusCode, b)
		}
	}
}

// A kept connection serves its next request in the last one's laneHead
// when nothing else can reach it: after a request with a body only when
// ferry's client sent the body from the lane's buffer (see
// TestUnbufferedUploadStreams for one it did not), never after an
// exchange whose upstream request went to a transport of net/http's. Each
// request sees only its own fields.
func TestLaneReusesHeadOnlyWhenNothingKeepsIt(t *testing.T) {
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s?%s a=%q b=%q body=%s", r.URL.Path, r.URL.RawQuery, r.Header.Values("X-A"), r.Header.Values("X-B"), b)
	}))
	exchanges := []struct{ raw, want string }{
		{"GET /1?q=1 HTTP/1.1\r\nHost: x\r\nX-A: one\r\nX-B: b1\r\n\r\n", `/1?q=1 a=["one"] b=["b1"] body=`},
		{"GET /2 HTTP/1.1\r\nHost: x\r\nX-A: two\r\n\r\n", `/2? a=["two"] b=[] body=`},
		{"POST /3 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", `/3? a=[] b=[] body=abc`},
		{"GET /4 HTTP/1.1\r\nHost: x\r\nX-B: b4\r\n\r\n", `/4? a=[] b=["b4"] body=`},
		{"GET /5 HTTP/1.1\r\nHost: x\r\n\r\n", `/5? a=[] b=[] body=`},
	}
	run := func(t *testing.T, url string) int64 {
		c := dialRaw(t, url)
		defer c.Close()
		br := bufio.NewReader(c)
		reused := laneReused.Load()
		for _, x := range exchanges {
			io.WriteString(c, x.raw)
			readAnswers(t, c, br, x.want)
		}
		return laneReused.Load() - reused
	}
	t.Run("http1 upstream", func(t *testing.T) {
		_, url := outboundTo(t, "", up)
		// 2 in 1's, 3 in 2's, 4 in 3's (whose body went from the lane's
		// buffer), 5 in 4's.
		if got := run(t, url); got != 4 {
			t.Fatalf("%d requests served in their connection's last laneHead, want 4", got)
		}
	})
	t.Run("h2c upstream", func(t *testing.T) {
		_, url := ferryWithProtocol(t, ProtocolH2C, up)
		if got := run(t, url); got != 0 {
			t.Fatalf("%d requests served in the laneHead of one whose request went to net/http's transport", got)
		}
	})
}

// A laneHead served again retires its last exchange's cancel function:
// called late (as a timer or watch that took it before the exchange ended
// may), it does nothing: it neither cancels the new exchange's context nor
// closes its connection, and the new request keeps nothing of the old.
func TestLaneHeadReuseRetiresOldCancel(t *testing.T) {
	lh := laneRequest([]byte("GET /old?q=1 HTTP/1.1\r\nHost: a\r\nX-Old: 1\r\n\r\n"), nil, nil)
	if lh == nil {
		t.Fatal("the lane refused a plain head")
	}
	oldCancel := lh.ctx.le.cancel
	lh2 := laneRequest([]byte("GET /new HTTP/1.1\r\nHost: b\r\n\r\n"), nil, lh)
	if lh2 != lh {
		t.Fatal("the spare laneHead was not used")
	}
	defer lh2.ctx.le.cancel(nil)
	if r := &lh2.req; r.Host != "b" || r.URL.Path != "/new" || r.URL.RawQuery != "" || r.Header.Get("X-Old") != "" || len(r.Header) != 0 {
		t.Fatalf("the new request kept the old one's fields: host %q url %v header %v", r.Host, r.URL, r.Header)
	}
	c, s := tcpPair(t)
	lh2.ctx.le.hooked.Store(c)
	oldCancel(errCallerGone)
	if err := lh2.req.Context().Err(); err != nil {
		t.Fatalf("the old cancel ended the new exchange's context: %v", err)
	}
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatalf("the old cancel closed the new exchange's connection: %v", err)
	}
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := s.Read(make([]byte, 1)); err != nil {
		t.Fatalf("the new exchange's connection broke: %v", err)
	}
	lh2.ctx.le.cancel(errCallerGone)
	if _, err := s.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("the new exchange's own cancel did not close its connection: %v", err)
	}
}

// A cancel function of an ended exchange that a timer or Close calls late,
// while the laneHead is made ready for the next request, reaches nothing
// of the next exchange (the race detector sees a late fire overlap the
// reset of the exchange when the generation moves after it).
func TestLaneHeadReuseWhileOldCancelRuns(t *testing.T) {
	lh := laneRequest([]byte("GET /a HTTP/1.1\r\nHost: a\r\n\r\n"), nil, nil)
	for range 50 {
		old := lh.ctx.le.cancel
		old(nil) // the exchange ends (serveOne's deferred cancel)
		var stop atomic.Bool
		started, done := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(done)
			close(started)
			for !stop.Load() {
				old(errBodyIdle)
			}
		}()
		<-started
		lh2 := laneRequest([]byte("GET /b HTTP/1.1\r\nHost: b\r\n\r\n"), nil, lh)
		stop.Store(true)
		<-done
		if lh2 != lh {
			t.Fatal("the spare laneHead was not used")
		}
		if err := lh2.req.Context().Err(); err != nil {
			t.Fatalf("a late cancel ended the new exchange: %v", err)
		}
	}
	lh.ctx.le.cancel(nil)
}

// A context derived from a lane request's (a per-try timeout's) may be
// cancelled on its own goroutine after the exchange ended, and then looks
// up its parent (context.parentCancelCtx: Done and Value) while the
// laneHead already serves the next request. The look-up must not race with
// the reuse, and the late cancel must leave the new request's context be.
// The goroutine makes the same look-up first through context.Cause, which
// no lock orders with the reuse, so the race detector reports a racy
// laneContext every time (the cancel's own look-up is ordered by the
// parent's lock on most runs).
func TestLaneHeadReuseWhileDerivedContextCancels(t *testing.T) {
	type key struct{}
	for range 20 {
		lh := laneRequest([]byte("GET /old HTTP/1.1\r\nHost: a\r\n\r\n"), nil, nil)
		if lh == nil {
			t.Fatal("the lane refused a plain head")
		}
		span := context.WithValue(lh.req.Context(), key{}, 1)
		child, cancelChild := context.WithCancelCause(span)
		start, done := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(done)
			<-start
			_ = context.Cause(span)
			cancelChild(errPerTryTimeout)
		}()
		close(start)
		lh.ctx.le.cancel(nil) // the exchange ends
		lh2 := laneRequest([]byte("GET /new HTTP/1.1\r\nHost: b\r\n\r\n"), nil, lh)
		if lh2 != lh {
			t.Fatal("the spare laneHead was not used")
		}
		recv(t, done, 5*time.Second, "the late cancel")
		if err := lh2.req.Context().Err(); err != nil {
			t.Fatalf("the late cancel ended the new request's context: %v", err)
		}
		if child.Err() == nil {
			t.Fatal("the derived context was not cancelled")
		}
		lh2.ctx.le.cancel(nil)
	}
}

// A lane request's context makes the context package's cancelable one
// only when asked for its Done channel or a child, and behaves the same
// either way: cancelled before or after that, its Err, Done and cause, its
// children's and the close of its exchange's connection are as a
// context.WithCancelCause's would be.
func TestLaneContextCancelsBeforeOrAfterMade(t *testing.T) {
	type key struct{}
	for _, tc := range []struct {
		name      string
		askFirst  bool // derive a child before the cancel
		cause     error
		wantCause error
	}{
		{"cancelled before asked", false, errCallerGone, errCallerGone},
		{"asked, then cancelled", true, errCallerGone, errCallerGone},
		{"cancelled without a cause", false, nil, context.Canceled},
		{"asked, cancelled without a cause", true, nil, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lh := laneRequest([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), nil, nil)
			if lh == nil {
				t.Fatal("the lane refused a plain head")
			}
			ctx := lh.req.Context()
			made := laneMade.Load()
			if ctx.Err() != nil || context.Cause(ctx) != nil || ctx.Value(key{}) != nil {
				t.Fatalf("a new request's context: err %v, cause %v, value %v", ctx.Err(), context.Cause(ctx), ctx.Value(key{}))
			}
			if _, ok := ctx.Deadline(); ok {
				t.Fatal("a lane request's context has a deadline")
			}
			if laneMade.Load() != made {
				t.Fatal("Err, Cause or Value made the inner context")
			}
			c, s := tcpPair(t)
			lh.ctx.le.hooked.Store(c)
			var early context.Context
			if tc.askFirst {
				var stop context.CancelFunc
				early, stop = context.WithTimeout(context.WithValue(ctx, key{}, 1), time.Hour)
				defer stop()
				if laneMade.Load() != made+1 {
					t.Fatal("deriving a child did not make the inner context")
				}
				if early.Err() != nil {
					t.Fatalf("a child of a live context ended: %v", early.Err())
				}
			}
			lh.ctx.le.cancel(tc.cause)
			if !tc.askFirst && laneMade.Load() != made {
				t.Fatal("the cancel made the inner context")
			}
			lh.ctx.le.cancel(errPerTryTimeout) // the first cause stays
			if ctx.Err() != context.Canceled {
				t.Fatalf("err %v after the cancel", ctx.Err())
			}
			if got := context.Cause(ctx); got != tc.wantCause {
				t.Fatalf("cause %v, want %v", got, tc.wantCause)
			}
			recv(t, ctx.Done(), 5*time.Second, "the context's end")
			late, stop := context.WithTimeout(ctx, time.Hour)
			defer stop()
			for _, child := range []context.Context{early, late} {
				if child == nil {
					continue
				}
				recv(t, child.Done(), 5*time.Second, "the child's end")
				if got := context.Cause(child); got != tc.wantCause {
					t.Fatalf("the child's cause is %v, want %v", got, tc.wantCause)
				}
			}
			s.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := s.Read(make([]byte, 1)); err != io.EOF {
				t.Fatalf("the cancel did not close the exchange's connection: %v", err)
			}
		})
	}
}

// Plain requests relayed by ferry's own client on a pooled connection never
// make their context's inner one (an allocation and a cancellation per
// request; the first request's dial does); a request that goes to
// net/http's transport, which waits on the context's Done, does.
func TestLanePlainRequestsMakeNoContext(t *testing.T) {
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.URL.Path)
	}))
	run := func(t *testing.T, url string) int64 {
		c := dialRaw(t, url)
		defer c.Close()
		br := bufio.NewReader(c)
		io.WriteString(c, "GET /dial HTTP/1.1\r\nHost: x\r\n\r\n")
		readAnswers(t, c, br, "/dial")
		made := laneMade.Load()
		for _, p := range []string{"/a", "/b", "/c"} {
			io.WriteString(c, "GET "+p+" HTTP/1.1\r\nHost: x\r\n\r\n")
			readAnswers(t, c, br, p)
		}
		return laneMade.Load() - made
	}
	t.Run("http1 upstream", func(t *testing.T) {
		_, url := outboundTo(t, "", up)
		if got := run(t, url); got != 0 {
			t.Fatalf("%d of 3 plain requests made their context's inner one", got)
		}
	})
	t.Run("http1 upstream, per-try timeout", func(t *testing.T) {
		_, url := outboundTo(t, "defaults: { timeouts: { per_try: 1m } }", up)
		if got := run(t, url); got != 0 {
			t.Fatalf("%d of 3 plain requests under a per-try timeout made their context's inner one", got)
		}
	})
	t.Run("http1 upstream, overall timeout", func(t *testing.T) {
		_, url := outboundTo(t, "defaults: { timeouts: { overall: 1m } }", up)
		if got := run(t, url); got != 0 {
			t.Fatalf("%d of 3 plain requests under an overall timeout made their context's inner one", got)
		}
	})
	t.Run("h2c upstream", func(t *testing.T) {
		_, url := ferryWithProtocol(t, ProtocolH2C, up)
		if got := run(t, url); got != 3 {
			t.Fatalf("%d of 3 requests to net/http's transport made their context's inner one, want 3", got)
		}
	})
}

// The lane ends each exchange of a connection at its own overall deadline,
// on one timer per connection: an exchange with a long deadline after one
// with a short deadline runs on past the short one, and an exchange that
// hangs is cut at its own deadline, counted from its own start.
func TestLaneOverallTimeoutPerExchange(t *testing.T) {
	var t0 time.Time
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch path.Base(r.URL.Path) {
		case "slow":
			// Answer well past the first exchange's deadline (t0+300ms).
			select {
			case <-time.After(time.Until(t0.Add(600 * time.Millisecond))):
			case <-r.Context().Done():
				return
			}
		case "hang":
			<-r.Context().Done()
			return
		}
		io.WriteString(w, path.Base(r.URL.Path))
	}))
	sc := startFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound:
  listen: 127.0.0.1:0
  routes:
    - { path_prefix: /short, service: short }
    - { path_prefix: /, service: long }
services:
  short: { endpoints: [%[1]s], retry: { max_retries: 0 }, timeouts: { overall: 300ms, connect: 100ms, response_header: 1s } }
  long: { endpoints: [%[1]s], timeouts: { overall: 1m } }
`, up))
	c := dialRaw(t, "http://"+sc.Addr("outbound"))
	defer c.Close()
	br := bufio.NewReader(c)
	t0 = time.Now()
	io.WriteString(c, "GET /short/quick HTTP/1.1\r\nHost: x\r\n\r\n")
	readAnswers(t, c, br, "quick")
	io.WriteString(c, "GET /long/slow HTTP/1.1\r\nHost: x\r\n\r\n")
	readAnswers(t, c, br, "slow")
	if d := time.Since(t0); d < 600*time.Millisecond {
		t.Fatalf("the slow answer came %v after the first request", d)
	}
	t2 := time.Now()
	io.WriteString(c, "GET /short/hang HTTP/1.1\r\nHost: x\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	if d := time.Since(t2); res.StatusCode != http.StatusGatewayTimeout || !strings.Contains(string(body), "overall timeout") || d < 300*time.Millisecond {
		t.Fatalf("a hung exchange got %d %q after %v; want 504 for its overall timeout, at 300ms", res.StatusCode, body, d)
	}
}

// A lane exchange's first response read by ferry's client lives in the
// exchange; a second one (a retry's) gets its own.
func TestLaneExchangeHoldsItsFirstResponse(t *testing.T) {
	lh := laneRequest([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), nil, nil)
	if lh == nil {
		t.Fatal("the lane refused a plain head")
	}
	defer lh.ctx.le.cancel(nil)
	out := lh.req.WithContext(context.WithValue(lh.req.Context(), struct{}{}, 1))
	answer := "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
	br := bufio.NewReader(strings.NewReader(answer + answer))
	br.Peek(len(answer) * 2)
	first, _ := parseResponse(br, out)
	if first != &lh.ctx.le.res {
		t.Fatal("the first response was not the exchange's own")
	}
	if b, err := io.ReadAll(first.res.Body); err != nil || string(b) != "hi" {
		t.Fatalf("first body %q, %v", b, err)
	}
	second, _ := parseResponse(br, out)
	if second == nil || second == first {
		t.Fatalf("the second response is %p, the first %p", second, first)
	}
	if b, err := io.ReadAll(second.res.Body); err != nil || string(b) != "hi" || first.res.StatusCode != 200 {
		t.Fatalf("second body %q, %v; first status %d", b, err, first.res.StatusCode)
	}
}

// earlyAnswerServer is an upstream that answers a GET "ok" on a kept
// connection and any other request "early" (with the extra header lines
// given) before reading its body; then, when after is not nil, lets after
// read on, and ends the connection.
func earlyAnswerServer(t *testing.T, extra string, after func(br *bufio.Reader)) *rawServer {
	return startRawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if req.Method == http.MethodGet {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				continue
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"+extra+"\r\nearly")
			if after != nil {
				after(br)
			}
			return
		}
	})
}

// TestFramingScanFaultyFraming feeds framingScan heads whole and byte by
// byte: a block naming Content-Length and Transfer-Encoding, or whose
// first line ends in HTTP/1.0 and names Transfer-Encoding, is faulty
// framing (RFC 9112 section 6.1); other blocks are not.
func TestFramingScanFaultyFraming(t *testing.T) {
	for _, tc := range []struct {
		raw    string
		faulty bool
	}{
		{"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", true},
		{"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", true},
		{"POST / HTTP/1.0\nHost: a\ntransfer-encoding: gzip\n\n", true},
		{"GET / HTTP/1.1\r\n\r\nPOST /x HTTP/1.0\r\nTRANSFER-ENCODING: chunked\r\n\r\n", true},
		{"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", false},
		{"POST / HTTP/1.0\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc", false},
		{"POST /HTTP/1.0 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", false},
		{"POST / HTTP/1.0\r\nHost: a\r\n\r\nTransfer-Encoding: chunked\r\n\r\n", false}, // after the block's end
		{"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.0\r\n\r\nPOST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", false},
	} {
		var whole, bytewise framingScan
		whole.feed([]byte(tc.raw))
		for i := range len(tc.raw) {
			bytewise.feed([]byte{tc.raw[i]})
		}
		if got := whole.faulty.Load(); got != tc.faulty {
			t.Errorf("%q: faulty %v, want %v", tc.raw, got, tc.faulty)
		}
		if got := bytewise.faulty.Load(); got != tc.faulty {
			t.Errorf("%q byte by byte: faulty %v, want %v", tc.raw, got, tc.faulty)
		}
	}
}

// scanByteByByte is framingScan's feed as it was first written, one byte
// at a time: TestFramingScanSkipsToLineEnds holds the line-at-a-time feed
// to it.
func scanByteByByte(s *framingScan, p []byte) {
	for _, c := range p {
		if c != '\n' {
			s.end[s.n%len(s.end)] = c
			if s.n < len(s.start) {
				if 'A' <= c && c <= 'Z' {
					c += 'a' - 'A'
				}
				s.start[s.n] = c
			}
			s.n++
			continue
		}
		s.lineEnd()
	}
}

// The scan that looks only at each line's first and last bytes ends every
// feed, of any pieces of any bytes, where the byte-by-byte scan ends: the
// same flags, line length and verdict.
func TestFramingScanSkipsToLineEnds(t *testing.T) {
	parts := []string{"\r\n", "\n", "\r", "\r\n\r\n", "POST / HTTP/1.0", "GET /x HTTP/1.1", " HTTP/1.0",
		"Content-Length: 3", "content-LENGTH:", "Transfer-Encoding: chunked", "TRANSFER-ENCODING:", "Host: a",
		"abc", strings.Repeat("z", 40), "HTTP/1.0\r", "Transfer-Encoding", ":"}
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 3000 {
		var b strings.Builder
		for range 1 + rng.IntN(24) {
			b.WriteString(parts[rng.IntN(len(parts))])
		}
		raw := []byte(b.String())
		var fast, slow framingScan
		for len(raw) > 0 {
			n := 1 + rng.IntN(len(raw))
			fast.feed(raw[:n])
			scanByteByByte(&slow, raw[:n])
			raw = raw[n:]
			if fast.n != slow.n || fast.cl != slow.cl || fast.te != slow.te || fast.http10 != slow.http10 ||
				fast.inBlock != slow.inBlock || fast.faulty.Load() != slow.faulty.Load() ||
				string(fast.start[:min(fast.n, len(fast.start))]) != string(slow.start[:min(slow.n, len(slow.start))]) {
				t.Fatalf("round %d, input %q: the scans part after %d more bytes", round, b.String(), n)
			}
		}
	}
}

// BenchmarkFramingScanBody is the scan of a handed-over connection's body
// bytes: a chunked upload of 32 KiB chunks.
func BenchmarkFramingScanBody(b *testing.B) {
	chunk := []byte("8000\r\n" + strings.Repeat("x", 32<<10) + "\r\n")
	var s framingScan
	b.SetBytes(int64(len(chunk)))
	for b.Loop() {
		s.feed(chunk)
	}
}

// A request parsed into a laneHead that served one before allocates
// nothing but the string of its head: the request, its URL and its header
// are the laneHead's, and its context was set once, in the blank request
// each one starts from.
func TestParseHeadInPlace(t *testing.T) {
	head := []byte("GET /a/b?q=1 HTTP/1.1\r\nHost: svc\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n")
	ctx := context.WithValue(context.Background(), laneCancelKey{}, 1)
	lh := new(laneHead)
	r := parseHead(head, ctx, lh)
	if r == nil {
		t.Fatal("head refused")
	}
	lh.hdr = r.Header
	allocs := testing.AllocsPerRun(200, func() {
		r = parseHead(head, ctx, lh)
	})
	if r == nil || r != &lh.req {
		t.Fatalf("parsed into %p, want the laneHead's request %p", r, &lh.req)
	}
	if r.Context() != ctx || r.Method != "GET" || r.URL.Path != "/a/b" || r.URL.RawQuery != "q=1" || r.Host != "svc" || r.RequestURI != "/a/b?q=1" || r.ProtoMinor != 1 || r.Header.Get("Accept") != "*/*" {
		t.Fatalf("request %+v with context %v", r, r.Context())
	}
	if allocs > 1 {
		t.Fatalf("%.1f allocations per request parsed in place, want 1 (the head's string)", allocs)
	}
}

// scanName agrees, on every string of up to four bytes over an alphabet of
// both cases, digits, '-', '_', ':', a space and a byte above ASCII, with
// its definition checked byte by byte: the token characters it starts
// with, and whether they are in canonical form.
func TestScanName(t *testing.T) {
	const alphabet = "aZ-0_: \x80k"
	ref := func(s string) (int, bool) {
		end := 0
		for end < len(s) && tokenChars[s[end]] {
			end++
		}
		upper := true
		for i := 0; i < end; i++ {
			c := s[i]
			if upper && 'a' <= c && c <= 'z' || !upper && 'A' <= c && c <= 'Z' {
				return end, false
			}
			upper = c == '-'
		}
		return end, true
	}
	var grow func(prefix string)
	grow = func(prefix string) {
		gotEnd, gotCanon := scanName(prefix)
		if wantEnd, wantCanon := ref(prefix); gotEnd != wantEnd || gotCanon != wantCanon {
			t.Fatalf("scanName(%q) = %d, %v; want %d, %v", prefix, gotEnd, gotCanon, wantEnd, wantCanon)
		}
		if len(prefix) == 4 {
			return
		}
		for i := 0; i < len(alphabet); i++ {
			grow(prefix + alphabet[i:i+1])
		}
	}
	grow("")
}

// Every name commonName takes for canonical is made of token characters
// and is what textproto makes of it, in whatever case it came: scanFields
// skips scanName for these.
func TestCommonNames(t *testing.T) {
	names := []string{"Host", "User-Agent", "Accept", "Accept-Encoding", "Accept-Language", "Authorization", "Cache-Control",
		"Connection", "Content-Encoding", "Content-Length", "Content-Type", "Cookie", "Date", "Etag", "Expires",
		"Last-Modified", "Location", "Origin", "Referer", "Server", "Set-Cookie", "Traceparent", "Tracestate",
		"Vary", "X-Forwarded-For", "X-Request-Id"}
	for _, n := range names {
		if !commonName(n) {
			t.Errorf("commonName(%q) false", n)
		}
		if end, canonical := scanName(n); end != len(n) || !canonical || textproto.CanonicalMIMEHeaderKey(n) != n {
			t.Errorf("%q is not a canonical name of token characters", n)
		}
		for _, other := range []string{strings.ToLower(n), strings.ToUpper(n), n + " ", n[:len(n)-1]} {
			if commonName(other) {
				t.Errorf("commonName(%q) true", other)
			}
		}
	}
	h := parseFields("content-length: 1\r\nContent-Length : 2\r\nETag: x\r\n\r\n", nil, nil, func(string, string) (bool, bool) { return true, true })
	if h != nil {
		t.Fatalf("a space before the colon parsed: %v", h)
	}
	h = parseFields("content-length: 1\r\nETag: x\r\nDate: d\r\n\r\n", nil, nil, func(string, string) (bool, bool) { return true, true })
	if len(h) != 3 || h["Content-Length"][0] != "1" || h["Etag"][0] != "x" || h["Date"][0] != "d" {
		t.Fatalf("fields %v", h)
	}
}

// parseHead refuses every head with an LF not after a CR or a CR not
// before an LF ahead of its end (readHead does not look for them): here
// each of a few heads with a CR or an LF put in at every position, put in
// place of the byte there, and with the byte there taken out.
func TestParseHeadRefusesBareLF(t *testing.T) {
	for _, base := range []string{
		"GET /a?b=c HTTP/1.1\r\nHost: a:80\r\nUser-Agent: x y\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nx-y:z\r\n\r\n",
		"PRI * HTTP/2.0\r\nHost: h\r\n\r\n",
	} {
		var heads []string
		for p := 0; p <= len(base); p++ {
			for _, c := range []string{"\r", "\n"} {
				heads = append(heads, base[:p]+c+base[p:])
				if p < len(base) {
					heads = append(heads, base[:p]+c+base[p+1:])
				}
			}
			if p < len(base) {
				heads = append(heads, base[:p]+base[p+1:])
			}
		}
		for _, s := range heads {
			h := []byte(s)
			i := bytes.Index(h, []byte("\r\n\r\n"))
			if i < 0 {
				continue
			}
			head := h[:i+4]
			if bareLF(head) && parseHead(head, context.Background(), new(laneHead)) != nil {
				t.Errorf("parseHead accepted %q", head)
			}
		}
	}
}

// isTimeoutErr tells a read past its deadline, as a TCP conn returns it
// and wrapped, from a reset, an end of file and other errors.
func TestIsTimeoutErr(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Unix(1, 0))
	_, deadline := c.Read(make([]byte, 1))
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{deadline, true},
		{fmt.Errorf("watch: %w", deadline), true},
		{&net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}, true},
		{&net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}, false},
		{&net.OpError{Op: "read", Net: "tcp", Err: &net.DNSError{IsTimeout: true}}, true},
		{io.EOF, false},
		{errCallerGone, false},
		{os.ErrDeadlineExceeded, true},
	} {
		if got := isTimeoutErr(tc.err); got != tc.want {
			t.Errorf("isTimeoutErr(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// An HTTP/1.0 caller is served by the lane as net/http's server serves
// one: its connection kept only when it asked ("Connection: keep-alive")
// and the answer's end is known, said so in the answer; an answer of no
// Content-Length (the upstream's was chunked) goes as it is, not chunked,
// trailers dropped, and ends with the connection.
func TestLaneHTTP10(t *testing.T) {
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/chunked":
			w.Header().Set("Trailer", "X-T")
			io.WriteString(w, "ab")
			w.(http.Flusher).Flush()
			io.WriteString(w, "cd")
			w.Header().Set("X-T", "t")
		default:
			w.Header().Set("Content-Length", strconv.Itoa(len(r.URL.Path)+len(b)))
			io.WriteString(w, r.URL.Path+string(b))
		}
	}))
	_, url := outboundTo(t, "", up)
	served, handed := laneServed.Load(), laneHanded.Load()

	c := dialRaw(t, url)
	defer c.Close()
	ka := "Host: x\r\nConnection: keep-alive\r\n"
	io.WriteString(c, "GET /1 HTTP/1.0\r\n"+ka+"\r\n"+
		"POST /2 HTTP/1.0\r\n"+ka+"Content-Length: 3\r\n\r\nabc"+
		"HEAD /3 HTTP/1.0\r\n"+ka+"\r\n"+
		"GET /chunked HTTP/1.0\r\n"+ka+"\r\n")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	for _, want := range []struct{ method, body string }{{"GET", "/1"}, {"POST", "/2abc"}, {"HEAD", ""}} {
		res, err := http.ReadResponse(br, &http.Request{Method: want.method})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		if string(b) != want.body || res.Header.Get("Connection") != "keep-alive" || res.Close {
			t.Fatalf("%s: %q, Connection %q; want %q, kept", want.method, b, res.Header.Get("Connection"), want.body)
		}
	}
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("the close-delimited answer ended with %v, not the connection's clean end", err)
	}
	head, body, _ := strings.Cut(string(rest), "\r\n\r\n")
	if !strings.HasPrefix(head, "HTTP/1.1 200 OK\r\n") || body != "abcd" ||
		strings.Contains(strings.ToLower(head), "transfer-encoding") || strings.Contains(head, "Content-Length") ||
		!strings.Contains(head, "Connection: close") {
		t.Fatalf("an answer of no length to an HTTP/1.0 caller: %q; want the body as it is, then the end", rest)
	}

	// Without keep-alive the connection ends after the answer.
	c2 := dialRaw(t, url)
	defer c2.Close()
	io.WriteString(c2, "GET /4 HTTP/1.0\r\nHost: x\r\n\r\n")
	c2.SetReadDeadline(time.Now().Add(10 * time.Second))
	all, err := io.ReadAll(c2)
	if err != nil || !strings.HasSuffix(string(all), "\r\n\r\n/4") || !strings.Contains(string(all), "Connection: close\r\n") {
		t.Fatalf("got %q (%v); want the answer saying Connection: close, then the end", all, err)
	}
	if got := laneServed.Load() - served; got != 5 {
		t.Fatalf("the lane served %d requests, want 5", got)
	}
	if got := laneHanded.Load() - handed; got != 0 {
		t.Fatalf("the lane handed %d connections over, want none", got)
	}
}
