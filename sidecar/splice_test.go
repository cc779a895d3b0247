package sidecar

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/ferrymesh/ferry/internal/payload"
)

// A large Content-Length download from a plain HTTP/1.1 upstream to a plain
// HTTP/1.1 caller moves kernel to kernel; the bytes and digest are intact.
func TestZeroCopyPathTaken(t *testing.T) {
	up := origin(t, payload.Handler(0))
	_, url := outboundTo(t, "", up)
	c := h1Client()
	const size = 8 << 20
	for i := range 3 { // the second and third reuse the pooled connection
		before := spliced.Load()
		downloadThrough(t, c, url, size)
		// ferry counts a segment once its move returned, a moment after
		// the caller may have read the last byte.
		waitFor(t, fmt.Sprintf("download %d to be counted as moved kernel to kernel", i), 5*time.Second, func() bool {
			return spliced.Load()-before >= size-64<<10
		})
	}
}

// Everything else takes the pooled-buffer path: small bodies, bodies of
// unknown length, HTTP/2 callers, uploads.
func TestZeroCopyPathNotTakenElsewhere(t *testing.T) {
	up := origin(t, payload.Handler(0))
	_, url := outboundTo(t, "", up)
	for _, tc := range []struct {
		name   string
		client *http.Client
		path   string
	}{
		{"small", h1Client(), "/f?size=1000"},
		{"chunked", h1Client(), fmt.Sprintf("/f?size=%d&chunked=1", 4<<20)},
		{"h2c caller", h2cClient(), fmt.Sprintf("/f?size=%d", 4<<20)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := spliced.Load()
			res, err := tc.client.Get(url + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			sink := payload.NewSink()
			io.Copy(sink, res.Body)
			res.Body.Close()
			if res.StatusCode != 200 || sink.N() == 0 {
				t.Fatalf("status %d, %d bytes", res.StatusCode, sink.N())
			}
			if got := spliced.Load() - before; got != 0 {
				t.Fatalf("%d bytes went kernel to kernel", got)
			}
			if sink.Digest() != digestOf(sink.N()) {
				t.Fatal("digest mismatch")
			}
		})
	}
}

// An upstream whose response header never ends is cut at 1 MiB: 502, not
// unbounded memory.
func TestZeroCopyClientBoundsResponseHeader(t *testing.T) {
	addr, _ := rawOrigin(t, "HTTP/1.1 200 OK\r\nX-Big: "+strings.Repeat("a", 2<<20)+"\r\n\r\n")
	_, url := outboundTo(t, "defaults: { retry: { max_retries: 0 } }", addr)
	res, body := get(t, h1Client(), url+"/", "")
	if res.StatusCode != http.StatusBadGateway {
		t.Fatalf("got %d %q", res.StatusCode, body)
	}
}

// An upstream that closes idle keep-alive connections sooner than ferry
// would: the next requests must not land on the dead pooled connections
// (every answer 200), and ferry must not keep them half-closed.
func TestZeroCopyPoolSurvivesUpstreamIdleClose(t *testing.T) {
	var open atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		IdleTimeout: 100 * time.Millisecond,
		Handler:     payload.Handler(100_000),
		ConnState: func(c net.Conn, s http.ConnState) {
			switch s {
			case http.StateNew:
				open.Add(1)
			case http.StateClosed, http.StateHijacked:
				open.Add(-1)
			}
		},
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	sc, url := outboundTo(t, "defaults: { retry: { max_retries: 0 } }", ln.Addr().String())
	c := h1Client()
	for round := range 3 {
		var wg sync.WaitGroup
		codes := make(chan int, 8)
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := c.Get(url + "/")
				if err != nil {
					codes <- 0
					return
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				codes <- res.StatusCode
			}()
		}
		wg.Wait()
		close(codes)
		for code := range codes {
			if code != 200 {
				t.Fatalf("round %d: got %d after the upstream closed idle connections", round, code)
			}
		}
		c.CloseIdleConnections()
		waitFor(t, "the upstream to close its idle connections", 10*time.Second, func() bool { return open.Load() == 0 })
	}
	// The sweep drops what the upstream closed while ferry was quiet.
	waitFor(t, "ferry to drop the closed pooled connections", 3*poolSweepInterval, func() bool {
		f := sc.state.Load().upstreams["svc"].h1.(*fastH1)
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.idle) == 0
	})
}

// Callers that stop reading downloads from an HTTP/2 upstream: ferry holds
// at most the bounded flow-control window per stream, not net/http's 4 MiB
// default (8 stalled streams would otherwise pin 32 MiB).
func TestH2CUpstreamBackpressureBounded(t *testing.T) {
	skipHeavy(t)
	up := origin(t, payload.Handler(0))
	sc := startFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: svc } ] }
services: { svc: { endpoints: [%s], protocol: h2c } }
`, up))
	m := watchMemory()
	var conns []net.Conn
	for range 8 {
		c := dialRaw(t, "http://"+sc.Addr("outbound"))
		fmt.Fprintf(c, "GET /f?size=%d&chunked=1 HTTP/1.1\r\nHost: svc\r\n\r\n", 64<<20)
		conns = append(conns, c) // never read: the caller stalls
	}
	// Let the upstream fill every window it is allowed to: the heap stops
	// growing once flow control holds it back.
	var last uint64
	stable := 0
	waitFor(t, "memory to settle under flow control", 20*time.Second, func() bool {
		runtime.GC()
		h, _ := readMem()
		if h > last+64<<10 || h+64<<10 < last {
			last, stable = h, 0
			return false
		}
		stable++
		return stable >= 5
	})
	close(m.stop)
	<-m.done
	growth := int64(m.peakHeap) - int64(m.baseHeap)
	t.Logf("8 stalled h2c-upstream downloads: peak heap growth %.2f MiB", float64(growth)/float64(mib))
	if growth > 12*mib {
		t.Fatalf("heap grew %.1f MiB for 8 stalled streams: flow control does not bound them", float64(growth)/float64(mib))
	}
	for _, c := range conns {
		c.Close()
	}
}

// alive tells an open idle connection from one the peer closed or wrote to.
func TestPooledConnAlive(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peers := make(chan net.Conn, 3)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			peers <- c
		}
	}()
	f := &fastH1{dial: (&net.Dialer{}).DialContext}
	conn := func() (*h1Conn, net.Conn) {
		c, _, err := f.get(context.Background(), ln.Addr().String(), true, poolIdleTimeout, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.tc.Close() })
		return c, recv(t, peers, 5*time.Second, "accept")
	}
	idle, p1 := conn()
	defer p1.Close()
	if !idle.alive() {
		t.Fatal("an open idle connection reported dead")
	}
	closed, p2 := conn()
	p2.Close()
	waitFor(t, "the close to be seen", 5*time.Second, func() bool { return !closed.alive() })
	stray, p3 := conn()
	defer p3.Close()
	p3.Write([]byte("HTTP/1.1 200 OK\r\n"))
	waitFor(t, "stray bytes to be seen", 5*time.Second, func() bool { return !stray.alive() })
}

// appendRequestURI appends what url.URL.RequestURI returns.
func TestAppendRequestURIAsRequestURI(t *testing.T) {
	for _, raw := range []string{"/", "/a/b?x=1&y=2", "/a%2Fb/c?q", "/sp%20ace", "/caf%C3%A9?z=%20", "/?", "/p?", "*", "/a;b,c", "/x?a=b?c"} {
		u, err := url.ParseRequestURI(raw)
		if err != nil {
			t.Fatal(err)
		}
		out := &url.URL{Scheme: "http", Host: "h", Path: u.Path, RawPath: u.RawPath, RawQuery: u.RawQuery, ForceQuery: u.ForceQuery}
		for _, v := range []*url.URL{out, u, {Path: ""}, {Opaque: "//h/p", Scheme: "http"}} {
			if got := string(appendRequestURI([]byte("x"), v)); got != "x"+v.RequestURI() {
				t.Errorf("%q: appended %q, RequestURI is %q", raw, got[1:], v.RequestURI())
			}
		}
	}
}

// copyHeader shares value slices, capped: appending to the copy never
// changes the source.
func TestCopyHeaderSharesCapped(t *testing.T) {
	src := http.Header{"A": make([]string, 1, 4), "B": {"1", "2"}}
	src["A"][0] = "a"
	dst := http.Header{"B": {"0"}}
	copyHeader(dst, src)
	dst["A"] = append(dst["A"], "more")
	if got := src["A"]; len(got) != 1 || got[:2][1] == "more" {
		t.Fatalf("appending to the copy changed the source: %q", got[:cap(got)])
	}
	if got := dst["B"]; len(got) != 3 || got[0] != "0" || got[2] != "2" {
		t.Fatalf("B = %q; want the prior value then the source's", got)
	}
}

// checkFieldsAsCame writes a head from its lines as ferry sends it to an
// HTTP/1.1 caller and holds it to what the upstream sent, read by
// net/http: the same status and header, hop-by-hop fields excepted, and a
// Date when the upstream sent none.
func checkFieldsAsCame(t *testing.T, msg []byte, code int, f *rawFields, ref *http.Response) {
	t.Helper()
	var out bytes.Buffer
	w := &connWriter{bw: bufio.NewWriter(&out), keepAlive: true}
	if !w.writeFields(code, f) {
		t.Fatalf("%q: lines not written", msg)
	}
	w.flush()
	got, err := http.ReadResponse(bufio.NewReader(&out), nil)
	if err != nil {
		t.Fatalf("%q: written as %q, which net/http refuses: %v", msg, out.String(), err)
	}
	want := ref.Header.Clone()
	removeHopHeaders(want, false)
	if want.Get("Date") == "" {
		want["Date"] = got.Header["Date"]
	}
	if got.StatusCode != code || got.ContentLength != ref.ContentLength || got.Close || !reflect.DeepEqual(got.Header, want) {
		t.Fatalf("%q written as %q: status %d length %d close %v header %v; want %d %d false %v",
			msg, out.String(), got.StatusCode, got.ContentLength, got.Close, got.Header, code, ref.ContentLength, want)
	}
}

// parseLength reads a Content-Length as strconv.ParseUint(v, 10, 63) does:
// the same value, and a refusal of everything it refuses (signs, spaces,
// other characters, values past an int64), at every length up to and past
// the largest.
func TestParseLength(t *testing.T) {
	cases := []string{"", "0", "00", "7", "1024", "+2", "-0", " 1", "1 ", "1_000", "0x10", "12a", "9",
		"9223372036854775807", "09223372036854775807", "9223372036854775808", "9223372036854775817",
		"18446744073709551615", "18446744073709551616", "99999999999999999999", "1" + strings.Repeat("0", 18), "1" + strings.Repeat("0", 19)}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		b := make([]byte, rng.IntN(22))
		for i := range b {
			if rng.IntN(40) == 0 {
				b[i] = byte(rng.IntN(256))
			} else {
				b[i] = '0' + byte(rng.IntN(10))
			}
		}
		cases = append(cases, string(b))
	}
	for _, v := range cases {
		want, err := strconv.ParseUint(v, 10, 63)
		got, ok := parseLength(v)
		if ok != (err == nil) || (ok && got != int64(want)) {
			t.Fatalf("parseLength(%q) = %d, %v; strconv: %d, %v", v, got, ok, want, err)
		}
	}
}

// Every response head parseResponse accepts reads as net/http reads it:
// status, header, framing, and the body to its end.
func FuzzResponseHead(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
		"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nX-A: 1\r\nx-a: 2\r\n\r\n",
		"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabcdef",
		"HTTP/1.1 503\r\nContent-Length: 2\r\nRetry-After: 1\r\n\r\nno",
		"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
		"HTTP/1.1 200 OK\r\nContent-Length: 007\r\nConnection: keep-alive, close\r\n\r\n1234567",
		"HTTP/1.1 301 Moved\r\nLocation: /x\r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.1 200 OK\r\nDate: Sun, 29 Nov 2026 18:00:00 GMT\r\nContent-Length:  2 \r\nX-B:\t b \r\n\r\nok",
		"HTTP/1.1 200 OK\r\nContent-Type: Text/Event-Stream; charset=utf-8\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n2\r\nok\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n3;ext=1\r\nabc\r\nA\r\n0123456789\r\n0\r\nX-Sum: 7\r\nx-sum: 8\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabc\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: 1\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n2\r\nok\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nPragma: no-cache\r\nContent-Length: 2\r\n\r\nok",
	} {
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, msg []byte, head bool) {
		method := http.MethodGet
		if head {
			method = http.MethodHead
		}
		req := &http.Request{Method: method}
		// parseResponse reads from the buffer only: fill it as the
		// client's reader has it before parsing.
		br := bufio.NewReaderSize(bytes.NewReader(msg), 1<<16)
		br.Peek(1)
		pr, fields := parseResponse(br, req)
		if pr == nil {
			return
		}
		mine := &pr.res
		refReader := bufio.NewReaderSize(bytes.NewReader(msg), 1<<16)
		ref, err := http.ReadResponse(refReader, req)
		if err != nil {
			t.Fatalf("accepted %q; net/http refuses it: %v", msg, err)
		}
		header := mine.Header
		if fields.lines != "" {
			if header != nil {
				t.Fatalf("%q: both a header map and its lines", msg)
			}
			header = fields.header()
		}
		// Compared as the caller gets them: net/http's reader drops a
		// Connection field that says close, and ferry's client then the
		// fields it named (settle); hop-by-hop fields go from both.
		facts := scanHead(msg)
		facts.settle(ref)
		header = header.Clone()
		removeHopHeaders(header, false)
		refHeader := ref.Header.Clone()
		removeHopHeaders(refHeader, false)
		if header.Get("Cache-Control") == "" && header.Get("Pragma") == "no-cache" {
			// net/http's reader adds a Cache-Control for an HTTP/1.0
			// Pragma (fixPragmaCacheControl); ferry passes the head on
			// as the upstream gave it.
			delete(refHeader, "Cache-Control")
		}
		if mine.Status != ref.Status || mine.StatusCode != ref.StatusCode || mine.Proto != ref.Proto ||
			mine.ContentLength != ref.ContentLength || mine.Close != ref.Close ||
			!reflect.DeepEqual(mine.TransferEncoding, ref.TransferEncoding) ||
			len(ref.Trailer) != 0 || !reflect.DeepEqual(header, refHeader) {
			t.Fatalf("%q read differently:\nmine     %q cl=%d close=%v %v\nnet/http %q cl=%d close=%v te=%v %v",
				msg, mine.Status, mine.ContentLength, mine.Close, header,
				ref.Status, ref.ContentLength, ref.Close, ref.TransferEncoding, ref.Header)
		}
		if fields.lines != "" {
			checkFieldsAsCame(t, msg, mine.StatusCode, &fields, ref)
		}
		mb, merr := io.ReadAll(mine.Body)
		rb, rerr := io.ReadAll(ref.Body)
		if !bytes.Equal(mb, rb) || (merr == nil) != (rerr == nil) {
			t.Fatalf("%q: body %q (%v), net/http %q (%v)", msg, mb, merr, rb, rerr)
		}
		if merr == nil && !reflect.DeepEqual(mine.Trailer, ref.Trailer) {
			t.Fatalf("%q: trailer %v, net/http %v", msg, mine.Trailer, ref.Trailer)
		}
		// What follows the body is the next response's, or stray: both
		// readers must stop at the same byte.
		if merr == nil {
			mineRest, _ := io.ReadAll(br)
			refRest, _ := io.ReadAll(refReader)
			if !bytes.Equal(mineRest, refRest) {
				t.Fatalf("%q: %q left after the body, net/http %q", msg, mineRest, refRest)
			}
		}
	})
}

// A plain upstream response reaches an HTTP/1.1 caller as it came (field
// names in the upstream's case, repeated fields in their order, a Date
// added when none came) and an HTTP/2 caller with the same fields.
func TestPlainResponseHeadAsItCame(t *testing.T) {
	const response = "HTTP/1.1 200 OK\r\nx-lower: 1\r\nSet-Cookie: a=1\r\nX-Spaced:  v \r\nSet-Cookie: b=2\r\nContent-Length: 2\r\n\r\nok"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					if _, err := http.ReadRequest(br); err != nil {
						return
					}
					io.WriteString(c, response)
				}
			}()
		}
	}()
	sc := startFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: svc } ] }
services: { svc: { endpoints: [%s], protocol: http1 } }
`, ln.Addr().String()))
	url := "http://" + sc.Addr("outbound")

	c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	var raw bytes.Buffer
	res, err := http.ReadResponse(bufio.NewReader(io.TeeReader(c, &raw)), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	head, _, _ := strings.Cut(raw.String(), "\r\n\r\n")
	if !strings.Contains(head, "\r\nx-lower: 1\r\nSet-Cookie: a=1\r\nX-Spaced:  v \r\nSet-Cookie: b=2\r\nContent-Length: 2\r\n") ||
		res.Header.Get("Date") == "" || string(body) != "ok" {
		t.Fatalf("HTTP/1.1 caller got %q then %q; want the upstream's fields as they came, a Date, ok", head, body)
	}

	res2, err := h2cClient().Get(url + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(res2.Body)
	res2.Body.Close()
	if res2.Header.Get("X-Lower") != "1" || !reflect.DeepEqual(res2.Header["Set-Cookie"], []string{"a=1", "b=2"}) ||
		res2.Header.Get("X-Spaced") != "v" || string(body) != "ok" {
		t.Fatalf("HTTP/2 caller got %v then %q", res2.Header, body)
	}
}

// RFC 9112 section 6.3: a response with an invalid Content-Length is an
// unrecoverable framing error; a proxy answers 502. "-0" is not 1*DIGIT
// (net/http refuses it), so ferry must not relay it as it came.
func TestSignedContentLengthRefused(t *testing.T) {
	const msg = "HTTP/1.1 200 OK\r\nContent-Length: -0\r\n\r\n"
	br := bufio.NewReader(strings.NewReader(msg))
	br.Peek(1)
	if res, f := parseResponse(br, &http.Request{Method: http.MethodGet}); res != nil {
		_, refErr := http.ReadResponse(bufio.NewReader(strings.NewReader(msg)), nil)
		t.Errorf("parseResponse accepted %q (length %d, lines %q); net/http: %v", msg, res.res.ContentLength, f.lines, refErr)
	}

	up := startRawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			io.WriteString(c, msg)
		}
	})
	_, url := outboundTo(t, "", up.addr())
	c := dialRaw(t, url)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	var raw bytes.Buffer
	res, err := http.ReadResponse(bufio.NewReader(io.TeeReader(c, &raw)), nil)
	if err != nil {
		t.Fatalf("the caller cannot read ferry's answer: %v (raw %q)", err, raw.String())
	}
	res.Body.Close()
	if res.StatusCode != http.StatusBadGateway {
		t.Fatalf("status %d, want 502 for an invalid upstream Content-Length", res.StatusCode)
	}
}

// Odd heads never take the as-came path: parseResponse leaves them to
// net/http (nil).
func TestParseResponseLeavesOddHeads(t *testing.T) {
	for _, msg := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\ncontent-length: 3\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: a\r\n b\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\nX-A: a\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 204 No Content\r\nContent-Length: 2\r\n\r\n",
		"HTTP/1.1 304 Not Modified\r\nContent-Length: 2\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX A: b\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok",
	} {
		br := bufio.NewReader(strings.NewReader(msg))
		br.Peek(1)
		if res, f := parseResponse(br, &http.Request{Method: http.MethodGet}); res != nil {
			t.Errorf("accepted %q (lines %q)", msg, f.lines)
		}
	}
	for _, msg := range []string{
		"HTTP/1.1 200 OK\r\nKeep-Alive: x\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nproxy-connection: x\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nte: x\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nUPGRADE: x\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nConnection: X-A\r\nX-A: 1\r\nContent-Length: 2\r\n\r\nok",
	} {
		br := bufio.NewReader(strings.NewReader(msg))
		br.Peek(1)
		if _, f := parseResponse(br, &http.Request{Method: http.MethodGet}); f.lines != "" {
			t.Errorf("hop-by-hop head %q goes as it came", msg)
		}
	}
	br := bufio.NewReader(strings.NewReader("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	br.Peek(1)
	if res, _ := parseResponse(br, &http.Request{Method: http.MethodHead}); res != nil {
		t.Error("HEAD response parsed as plain")
	}
}

// Bytes an upstream sends past a response's Content-Length are not the
// answer to the next request on that pooled connection (net/http closes
// such a connection: "Unsolicited response received on idle HTTP channel"),
// whether the body came through the buffer or socket to socket.
func TestStrayBytesNotNextResponse(t *testing.T) {
	for _, size := range []int{2, 3 * spliceMin} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			first := strings.Repeat("o", size)
			var n atomic.Int64
			up := startRawServer(t, func(c net.Conn) {
				br := bufio.NewReader(c)
				for {
					if _, err := http.ReadRequest(br); err != nil {
						return
					}
					if n.Add(1) == 1 {
						io.WriteString(c, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%sHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray", size, first))
					} else {
						io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood")
					}
				}
			})
			_, url := outboundTo(t, "", up.addr())
			c := dialRaw(t, url)
			br := bufio.NewReader(c)
			before := spliced.Load()
			var bodies []string
			for range 2 {
				io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
				res, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(res.Body)
				bodies = append(bodies, string(b))
			}
			if bodies[0] != first || bodies[1] != "good" {
				t.Fatalf("bodies of %d and %d bytes (second %.10q); want %d and \"good\": the bytes the upstream sent past the first response must not answer the next request", len(bodies[0]), len(bodies[1]), bodies[1], size)
			}
			if size > spliceMin && spliced.Load() == before {
				t.Fatal("the large body did not go socket to socket")
			}
		})
	}
}

// Bytes an upstream sends after its response has gone back to the pool (a
// body to a HEAD request, more than the Content-Length it declared) are
// not the answer to the next request on that connection either, whatever
// that request is (a DELETE is not replayable, an upload goes socket to
// socket), however soon after the last one it comes.
func TestLateStrayBytesNotNextResponse(t *testing.T) {
	cases := []struct{ name, first, answer, next string }{
		{"head-chunked", "HEAD", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "GET / HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"overrun", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "GET / HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"overrun-delete", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "DELETE / HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"overrun-upload", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
			"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + strings.Repeat("u", 100000)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			answered, strayOut := make(chan struct{}), make(chan struct{})
			var n atomic.Int64
			up := startRawServer(t, func(c net.Conn) {
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					if n.Add(1) > 1 {
						io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood")
						continue
					}
					io.WriteString(c, tc.answer)
					// The stray bytes come once ferry passed the answer on
					// (and pooled the connection).
					select {
					case <-answered:
					case <-time.After(10 * time.Second):
						return
					}
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray")
					close(strayOut)
				}
			})
			_, url := outboundTo(t, "", up.addr())
			c := dialRaw(t, url)
			br := bufio.NewReader(c)
			io.WriteString(c, tc.first+" / HTTP/1.1\r\nHost: x\r\n\r\n")
			res, err := http.ReadResponse(br, &http.Request{Method: tc.first})
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			close(answered)
			recv(t, strayOut, 10*time.Second, "the stray bytes sent")
			io.WriteString(c, tc.next)
			res, err = http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(res.Body)
			if res.StatusCode != http.StatusOK || string(b) != "good" {
				t.Fatalf("second answer %d %q (%s); want 200 \"good\": bytes the upstream sent after the first response must not answer the next request", res.StatusCode, b, res.Header.Get("X-Ferry-Error"))
			}
		})
	}
}

// FuzzWriteHead: the head ferry's own HTTP/1.1 client writes for a request
// read from a caller (as the proxy builds the upstream request from it)
// reads back with net/http's parser as the same request: method, target,
// Host, framing and every header field, nothing more.
func FuzzWriteHead(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /p%2Fq?x=1 HTTP/1.1\r\nHost: a:80\r\nContent-Length: 10\r\nX-A: b\r\nx-a: c\r\n\r\n",
		"GET /p? HTTP/1.1\r\nHost: [::1]\r\nConnection: close\r\nX-Y:  1 \t\r\n\r\n",
		"PUT /caf%C3%A9 HTTP/1.0\r\nX: \xe9\r\n\r\n",
		"GET http://other/abs?q HTTP/1.1\r\nHost: a\r\nPragma: no-cache\r\n\r\n",
		"DELETE * HTTP/1.1\r\nHost: a\r\nTrailer: X\r\nX-Long: a\r\n  folded\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, head []byte) {
		r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
		if err != nil || r.ContentLength < 0 || r.Method == http.MethodConnect {
			return // ferry's client never sends these: bodies of unknown length take net/http's
		}
		if !httpguts.ValidHostHeader(r.Host) {
			return // net/http's server answers 400 before any handler runs
		}
		out := &http.Request{Method: r.Method, Host: r.Host, Header: r.Header.Clone(), ContentLength: r.ContentLength,
			URL: &url.URL{Scheme: "http", Host: "up:80", Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery, ForceQuery: r.URL.ForceQuery}}
		var b bytes.Buffer
		bw := bufio.NewWriter(&b)
		if err := writeHead(bw, out, forwarded{}); err != nil {
			t.Fatal(err)
		}
		bw.Flush()
		got, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(b.Bytes())))
		if err != nil {
			t.Fatalf("%q written as %q, which net/http refuses: %v", head, b.Bytes(), err)
		}
		wantHost := r.Host
		if wantHost == "" {
			wantHost = out.URL.Host
		}
		want := out.Header.Clone()
		for k := range want {
			if headOwned(k) {
				delete(want, k)
			}
		}
		wantLength := r.ContentLength
		if wantLength > 0 || r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch {
			want["Content-Length"] = []string{strconv.FormatInt(wantLength, 10)}
		}
		for k, vv := range want {
			for i, v := range vv {
				vv[i] = strings.TrimSpace(strings.NewReplacer("\r\n", " ", "\r", " ", "\n", " ").Replace(v))
			}
			want[k] = vv
		}
		if got.Method != r.Method || got.RequestURI != out.URL.RequestURI() || got.Host != wantHost ||
			got.ContentLength != wantLength || len(got.TransferEncoding) != 0 || !reflect.DeepEqual(got.Header, want) {
			t.Fatalf("%q written as %q reads back as %s %s host=%q cl=%d te=%v %v; want %s %s host=%q cl=%d %v",
				head, b.Bytes(), got.Method, got.RequestURI, got.Host, got.ContentLength, got.TransferEncoding, got.Header,
				r.Method, out.URL.RequestURI(), wantHost, wantLength, want)
		}
	})
}

// writeHead builds the head in the writer's free space: a head larger
// than that space, and one written behind bytes already buffered, go out
// whole and in order all the same.
func TestWriteHeadBeyondTheBuffer(t *testing.T) {
	long := strings.Repeat("v", 10<<10)
	for _, size := range []int{16, 4096, 64 << 10} {
		for _, before := range []string{"", "prior bytes|"} {
			var b bytes.Buffer
			bw := bufio.NewWriterSize(&b, size)
			bw.WriteString(before)
			out := &http.Request{Method: "POST", Host: "h", ContentLength: 3, Header: http.Header{"X-Long": {long}},
				URL: &url.URL{Scheme: "http", Host: "up:80", Path: "/p", RawQuery: "q=1"}}
			if err := writeHead(bw, out, forwarded{}); err != nil {
				t.Fatal(err)
			}
			bw.Flush()
			want := before + "POST /p?q=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nX-Long: " + long + "\r\n\r\n"
			if b.String() != want {
				t.Fatalf("buffer %d, %q before: wrote %d bytes %.80q..., want %d bytes", size, before, b.Len(), b.String(), len(want))
			}
		}
	}
}

// appendStatus writes the status line net/http writes: three digits and
// the status text, or "status code N" for a code without one; a code of
// another length keeps its digits.
func TestAppendStatus(t *testing.T) {
	for code := 100; code <= 999; code++ {
		line := string(appendStatus([]byte("x"), code))
		res, err := http.ReadResponse(bufio.NewReader(strings.NewReader(line[1:]+"Content-Length: 0\r\n\r\n")), nil)
		if err != nil {
			t.Fatalf("%d: %q: %v", code, line, err)
		}
		text := http.StatusText(code)
		if text == "" {
			text = "status code " + strconv.Itoa(code)
		}
		if line[0] != 'x' || res.StatusCode != code || res.Status != strconv.Itoa(code)+" "+text {
			t.Fatalf("%d written as %q: read as %d %q", code, line, res.StatusCode, res.Status)
		}
	}
	for code, want := range map[int]string{42: "HTTP/1.1 42 status code 42\r\n", 1000: "HTTP/1.1 1000 status code 1000\r\n"} {
		if got := string(appendStatus(nil, code)); got != want {
			t.Fatalf("%d: %q, want %q", code, got, want)
		}
	}
}

// writeFields adds no more than headSlack bytes to the header lines it is
// given, for any status it may write, with Connection: close and a Date of
// its own: respond counts on that to know the head goes into the caller's
// writer without a write to the socket (relay's seen).
func TestWriteFieldsWithinHeadSlack(t *testing.T) {
	f := rawFields{lines: "Content-Length: 1\r\n\r\n", length: 1}
	most := 0
	for code := 200; code <= 999; code++ {
		var out bytes.Buffer
		w := &connWriter{bw: bufio.NewWriterSize(&out, 4<<10)}
		fc := f
		if !w.writeFields(code, &fc) {
			continue // 204 and 304 are never written so
		}
		w.bw.Flush()
		if extra := out.Len() - len(f.lines); extra > most {
			most = extra
		}
	}
	if most > headSlack || most == 0 {
		t.Fatalf("writeFields adds up to %d bytes to the lines; headSlack is %d", most, headSlack)
	}
	t.Logf("writeFields adds up to %d bytes (headSlack %d)", most, headSlack)
}
