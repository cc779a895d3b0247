package sidecar

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// The lane reads what it serves, and answers what it hands over, as
// net/http's server does for the same bytes: "Pragma: no-cache" also reads
// as "Cache-Control: no-cache"; up to 4 CR or LF bytes after a POST are
// skipped before the next request line; a head the caller cuts short with
// its end gets a 400.
func TestLaneReadsAsNetHTTP(t *testing.T) {
	for _, tc := range []struct {
		name      string
		raw       string
		halfClose bool
	}{
		{"pragma", "GET / HTTP/1.1\r\nHost: x\r\nPragma: no-cache\r\nConnection: close\r\n\r\n", false},
		{"crlf after post", "POST /1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\r\nGET /2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", false},
		{"head cut short", "GET / HTTP/1.1\r\nHost: x\r\n", true},
	} {
		t.Run(tc.name, func(t *testing.T) { sameAsNetHTTP(t, tc.name, []string{tc.raw}, tc.halfClose) })
	}
}

// The lane must read every request exactly as net/http's server would.
// These helpers send the same bytes to a plain http.Server and to a lane
// (same timeouts, limits and protocols) and compare what the handler saw
// and what the caller got back.

type laneSeen struct {
	Method, URI, Proto, Host string
	Header                   http.Header
	Body                     string
	CL                       int64
	Close                    bool
}

func (s laneSeen) String() string {
	return fmt.Sprintf("%s %s %s host=%q cl=%d close=%v body=%q hdr=%v", s.Method, s.URI, s.Proto, s.Host, s.CL, s.Close, s.Body, s.Header)
}

type laneResult struct {
	seen     []laneSeen
	statuses []int
}

// netHTTPServer returns an http.Server configured as ferry's newServer does.
func netHTTPServer(h http.Handler, readHeader time.Duration, maxHeader int) *http.Server {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return &http.Server{Handler: h, Protocols: p, ReadHeaderTimeout: readHeader, IdleTimeout: time.Minute, MaxHeaderBytes: maxHeader}
}

// dialServed serves h on a new loopback listener, through a lane in front
// of srv (lane true) or srv alone, and returns a connection to it; all of
// it ends with the test.
func dialServed(t *testing.T, lane bool, h http.Handler, srv *http.Server) net.Conn {
	t.Helper()
	if lane {
		return dialLane(t, h, srv)
	}
	return dialServer(t, srv)
}

// serveBoth serves one connection with the lane (lane true) or a plain
// http.Server, writes the chunks in order (each its own write), optionally
// half-closes, and reads every response until the server closes.
func serveBoth(t *testing.T, lane bool, chunks []string, halfClose bool) laneResult {
	t.Helper()
	var mu sync.Mutex
	var seen []laneSeen
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		hdr := r.Header.Clone()
		mu.Lock()
		seen = append(seen, laneSeen{r.Method, r.RequestURI, r.Proto, r.Host, hdr, string(b), r.ContentLength, r.Close})
		mu.Unlock()
		w.Header().Set("Content-Length", "2")
		io.WriteString(w, "ok")
	})
	c := dialServed(t, lane, h, netHTTPServer(h, 5*time.Second, 64<<10))
	c.SetDeadline(time.Now().Add(5 * time.Second))
	go func() {
		for _, s := range chunks {
			if _, err := io.WriteString(c, s); err != nil {
				return
			}
		}
		if halfClose {
			c.(*net.TCPConn).CloseWrite()
		}
	}()
	all, _ := io.ReadAll(c)
	var res laneResult
	br := bufio.NewReader(strings.NewReader(string(all)))
	for {
		r, err := http.ReadResponse(br, nil)
		if err != nil {
			break
		}
		io.ReadAll(r.Body)
		res.statuses = append(res.statuses, r.StatusCode)
	}
	mu.Lock()
	res.seen = seen
	mu.Unlock()
	return res
}

func sameAsNetHTTP(t *testing.T, name string, chunks []string, halfClose bool) {
	t.Helper()
	want := serveBoth(t, false, chunks, halfClose)
	got := serveBoth(t, true, chunks, halfClose)
	if !reflect.DeepEqual(want.statuses, got.statuses) || !reflect.DeepEqual(want.seen, got.seen) {
		t.Errorf("%s: %q\nnet/http: statuses %v, handler saw %v\nlane:     statuses %v, handler saw %v",
			name, strings.Join(chunks, ""), want.statuses, want.seen, got.statuses, got.seen)
	}
}

// read_header_timeout does not start again when the lane hands a half-read
// head over (net/http's server sets a fresh deadline for the head it goes
// on reading): a slow caller that spends most of the timeout in the lane
// and then sends a byte that makes the lane hand over (a bare LF here)
// must not get nearly twice the timeout. A plain http.Server closes the
// connection read_header_timeout after it was accepted.
func TestLaneHandOverKeepsHeaderTimeout(t *testing.T) {
	const rht = 600 * time.Millisecond
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	for _, lane := range []bool{false, true} {
		c := dialServed(t, lane, h, netHTTPServer(h, rht, 64<<10))
		start := time.Now()
		io.WriteString(c, "GET / HTTP/1.1\r\n")
		time.Sleep(rht * 2 / 3)        // the time that passes is what is tested
		io.WriteString(c, "Host: x\n") // bare LF: the lane hands over
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.ReadAll(c)
		if took := time.Since(start); took > rht+rht/3 {
			t.Errorf("lane=%v: a head still unfinished was allowed %v; read_header_timeout is %v", lane, took.Round(time.Millisecond), rht)
		}
	}
}

// A request framed by both Content-Length and Transfer-Encoding that
// net/http reads on a connection handed over for an earlier request must
// still end the connection (RFC 9112 section 6.1): ferry closes it after
// that request's answer, or earlier, after the answer to a request whose
// read brought it in. Never is anything read on after it.
func TestBothFramingsOnLaterHandedOverRequest(t *testing.T) {
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.Copy(io.Discard, r.Body) }))
	_, url := outboundTo(t, "", up)
	c := dialRaw(t, url)
	const h = "Host: svc.example\r\n"
	io.WriteString(c, "POST /1 HTTP/1.1\r\n"+h+"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"+
		"POST /2 HTTP/1.1\r\n"+h+"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"+
		"GET /3 HTTP/1.1\r\n"+h+"\r\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	n := 0
	for ; ; n++ {
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			if isTimeout(err) {
				t.Fatalf("the connection stayed open after %d answers; a request framed both ways came before /3", n)
			}
			break
		}
		io.ReadAll(res.Body)
		if res.StatusCode != http.StatusOK || n >= 2 {
			t.Fatalf("answer %d: %d; /3, after the request framed both ways, must never be served", n+1, res.StatusCode)
		}
	}
	if n == 0 {
		t.Fatal("no answer at all; /1 is a plain chunked request")
	}
}

// A head larger than the lane's 8 KiB buffer (within max_header_bytes)
// whose Content-Length and Transfer-Encoding come after its first 8 KiB:
// net/http serves it chunked, and the connection closes after the answer.
func TestBothFramingsBeyondLaneBuffer(t *testing.T) {
	const h = "Host: svc.example\r\n"
	runHostile(t, hostileCase{
		name: "cl-te-after-9k",
		raw: "POST /p HTTP/1.1\r\n" + h + "X-Pad: " + strings.Repeat("a", 9000) + "\r\n" +
			"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		want: []int{200}, closed: true,
		up: []upReq{{method: "POST", uri: "/p", host: "svc.example"}},
	}, "outbound")
}

// The same for a head handed over as soon as a bare LF is seen, before
// the rest of it (with Content-Length and Transfer-Encoding) arrived.
func TestBothFramingsAfterEarlyHandOver(t *testing.T) {
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.Copy(io.Discard, r.Body) }))
	_, url := outboundTo(t, "", up)
	c := dialRaw(t, url)
	before := laneHanded.Load()
	io.WriteString(c, "POST /p HTTP/1.1\nHost: svc.example\n")
	waitFor(t, "the lane to hand the connection over", 5*time.Second, func() bool { return laneHanded.Load() > before })
	io.WriteString(c, "Content-Length: 6\nTransfer-Encoding: chunked\n\n0\r\n\r\n")
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(res.Body)
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := br.ReadByte(); err == nil || isTimeout(err) {
		t.Fatalf("status %d, Connection: close %v; connection still open (%v) after a request framed by both Content-Length and Transfer-Encoding", res.StatusCode, res.Close, err)
	}
}
