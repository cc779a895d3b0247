package sidecar

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/internal/syncbuf"
)

// cutFerry is a traced ferry whose outbound listener leads to addr over
// HTTP/1.1, breakers and outlier ejection off.
func cutFerry(t *testing.T, addr string) (*Sidecar, *syncbuf.Buffer) {
	t.Helper()
	return cutFerryWith(t, addr, ProtocolHTTP1)
}

// cutFerryWith is cutFerry speaking protocol to the upstream.
func cutFerryWith(t *testing.T, addr, protocol string) (*Sidecar, *syncbuf.Buffer) {
	t.Helper()
	sc, _, logs := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: svc } ] }
services:
  svc: { endpoints: [%q], protocol: %s }
%s`, addr, protocol, settingsYAML("")))
	return sc, logs
}

// nthAccessLine waits for the n-th access log line and returns it.
func nthAccessLine(t *testing.T, logs *syncbuf.Buffer, n int) map[string]any {
	t.Helper()
	waitFor(t, fmt.Sprintf("access log line %d", n), 5*time.Second, func() bool { return len(accessLines(t, logs)) >= n })
	return accessLines(t, logs)[n-1]
}

// A response the upstream breaks off anywhere (in its head, in a
// chunk-size line, in a chunk, before or in the trailers, one byte short
// of its Content-Length, after an interim answer), ended by a FIN or a
// reset, reaches no caller as a whole answer and is not logged as one:
// whatever the caller speaks and whichever of ferry's clients (its own
// for a bodiless request, net/http's for one with a body) read it.
func TestResponseCutAnywhereNeverWhole(t *testing.T) {
	leakCheck(t)
	big := strings.Repeat("b", 200000)
	cases := []struct {
		name, resp string
		head       bool // the caller asks HEAD
		whole      string
	}{
		{name: "in-status-line", resp: "HTTP/1.1 20"},
		{name: "in-head", resp: "HTTP/1.1 200 OK\r\nContent-Len"},
		{name: "head-without-end", resp: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n"},
		{name: "right-after-head", resp: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"},
		{name: "length-1-short", resp: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n123456789"},
		{name: "big-length-1-short", resp: "HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n" + big[1:]},
		{name: "big-length-half", resp: "HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n" + big[100000:]},
		{name: "chunked-right-after-head", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"},
		{name: "chunked-mid-size-line", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1"},
		{name: "chunked-size-without-crlf", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n5"},
		{name: "chunked-mid-chunk", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"},
		{name: "chunked-chunk-without-crlf", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello"},
		{name: "chunked-before-last", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"},
		{name: "chunked-in-last-chunk", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0"},
		{name: "chunked-after-last-chunk", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"},
		{name: "chunked-in-trailer", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n5\r\nhello\r\n0\r\nX-T: a"},
		{name: "chunked-after-trailer", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n5\r\nhello\r\n0\r\nX-T: a\r\n"},
		{name: "chunked-big-mid-chunk", resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n30d40\r\n" + big[1000:]},
		{name: "interim-then-cut-head", resp: "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Len"},
		{name: "interim-then-cut-body", resp: "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345"},
		{name: "interim-then-cut-chunk", resp: "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"},
		// Controls: whole answers stay whole (the upstream says it closes:
		// a pooled connection it closed unannounced may fail the next
		// request, honestly, with a 502).
		{name: "whole-length", resp: "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello", whole: "hello"},
		{name: "whole-chunked", resp: "HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", whole: "hello"},
		{name: "whole-head", resp: "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 10\r\n\r\n", head: true, whole: ""},
	}
	callers := []string{"lane-get", "lane-post", "lane-post-chunked", "nethttp-post-chunked", "http1.0-get", "h2c-get", "h2c-post"}
	for _, tc := range cases {
		for _, kill := range []string{"fin", "rst"} {
			if kill == "rst" && (tc.whole != "" || tc.head) {
				continue // a reset may discard a whole answer ferry did not read yet
			}
			t.Run(tc.name+"/"+kill, func(t *testing.T) {
				o := startRawServer(t, func(c net.Conn) {
					if readWholeRequest(bufio.NewReader(c)) != nil {
						return
					}
					io.WriteString(c, tc.resp)
					if kill == "rst" {
						reset(c)
					}
				})
				sc, logs := cutFerry(t, o.addr())
				base := "http://" + sc.Addr("outbound")
				logged := 0
				for _, caller := range callers {
					if tc.head && strings.Contains(caller, "post") {
						continue
					}
					body, err := cutCaller(t, base, caller, tc.head)
					logged++
					l := nthAccessLine(t, logs, logged)
					switch {
					case tc.whole != "" || tc.head:
						// (Its log line is not checked: a caller that
						// hangs up as soon as it has read the whole answer
						// may be logged client_canceled.)
						if err != nil || body != tc.whole {
							t.Errorf("%s: whole answer read as %q, %v", caller, body, err)
						}
					case err == nil:
						t.Errorf("%s: a cut answer read whole: %q", caller, body)
					}
					if tc.whole == "" && !tc.head && l["reason"] == "" {
						t.Errorf("%s: a cut answer logged as %v with no reason", caller, l["status"])
					}
					t.Logf("%s: %q %v; logged %v %v", caller, body, err, l["status"], l["reason"])
				}
			})
		}
	}
}

// errNot200 is a caller's whole answer of another status than 200: ferry
// answered a failure itself, which is no cut answer passed off as whole.
var errNot200 = errors.New("not 200")

// cutCaller makes one request to base as caller says and reads its
// answer: the body of a 200 and the error that ended it.
func cutCaller(t *testing.T, base, caller string, head bool) (string, error) {
	t.Helper()
	if strings.HasPrefix(caller, "h2c") {
		method, body := http.MethodGet, io.Reader(nil)
		if head {
			method = http.MethodHead
		}
		if caller == "h2c-post" {
			method, body = http.MethodPost, strings.NewReader("abc")
		}
		req, _ := http.NewRequest(method, base+"/x", body)
		res, err := h2cFor(t).Do(req)
		if err != nil {
			return "", err
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		if err == nil && res.StatusCode != 200 {
			err = fmt.Errorf("%w: %d %q", errNot200, res.StatusCode, b)
		}
		if err != nil && res.StatusCode == 200 && !strings.Contains(err.Error(), "stream error") {
			t.Errorf("%s: a broken body ended with %v; want a reset stream", caller, err)
		}
		return string(b), err
	}
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	method := "GET"
	if head {
		method = "HEAD"
	}
	var req string
	switch caller {
	case "lane-get":
		req = method + " /x HTTP/1.1\r\nHost: svc\r\n\r\n"
	case "http1.0-get":
		req = method + " /x HTTP/1.0\r\nHost: svc\r\n\r\n"
	case "lane-post":
		req = "POST /x HTTP/1.1\r\nHost: svc\r\nContent-Length: 3\r\n\r\nabc"
	case "lane-post-chunked":
		req = "POST /x HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
	case "nethttp-post-chunked":
		// An announced trailer: the lane hands the connection over.
		req = "POST /x HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n3\r\nabc\r\n0\r\nX-T: a\r\n\r\n"
	}
	io.WriteString(c, req)
	br := bufio.NewReader(c)
	r, _ := http.NewRequest(method, base, nil)
	var res *http.Response
	for {
		res, err = http.ReadResponse(br, r)
		if err != nil {
			return "", err
		}
		if res.StatusCode >= 200 {
			break
		}
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err == nil && res.StatusCode != 200 {
		err = fmt.Errorf("%w: %d %q", errNot200, res.StatusCode, b)
	}
	return string(b), err
}

// An upload the caller breaks off anywhere in its body (one byte short of
// its Content-Length, in a chunk-size line, in a chunk, before or in the
// last chunk or the trailers), by a FIN or a reset, on every path (the
// lane, net/http's server, the spliced take-over of a large upload, one
// that expected 100-continue, an HTTP/1.0 one) never reaches the upstream
// as a whole body, over HTTP/1.1 or h2c, and is not logged as a success.
func TestUploadCutAnywhereNeverWhole(t *testing.T) {
	leakCheck(t)
	u := func(n int) string { return strings.Repeat("u", n) }
	chunk := "3e8\r\n" + u(1000) + "\r\n"
	const post = "POST /x HTTP/1.1\r\nHost: svc\r\n"
	const chunked = post + "Transfer-Encoding: chunked\r\n\r\n"
	cases := []struct {
		name   string
		head   string // the request's head
		sent   string // the part of the body sent before the cut
		expect bool   // wait for 100 Continue before the body
		// held: net/http's server holds what was sent (a chunk not yet
		// whole, a last chunk whose trailers did not end) until more
		// comes, so the upstream may see none of it before the cut.
		held bool
	}{
		{name: "length-half", head: post + "Content-Length: 1000\r\n\r\n", sent: u(500)},
		{name: "length-1-short", head: post + "Content-Length: 1000\r\n\r\n", sent: u(999)},
		{name: "big-length-half", head: post + "Content-Length: 200000\r\n\r\n", sent: u(100000)},
		{name: "big-length-1-short", head: post + "Content-Length: 200000\r\n\r\n", sent: u(199999)},
		{name: "chunked-mid-size-line", head: chunked, sent: chunk + "3"},
		{name: "chunked-mid-chunk", head: chunked, sent: "3e8\r\n" + u(500), held: true},
		{name: "chunked-chunk-without-crlf", head: chunked, sent: "3e8\r\n" + u(1000)},
		{name: "chunked-before-last", head: chunked, sent: chunk},
		{name: "chunked-in-last", head: chunked, sent: chunk + "0"},
		{name: "chunked-after-last", head: chunked, sent: chunk + "0\r\n", held: true},
		{name: "chunked-in-trailer", head: chunked, sent: chunk + "0\r\nX-T: a", held: true},
		{name: "chunked-after-trailer", head: chunked, sent: chunk + "0\r\nX-T: a\r\n", held: true},
		// An announced trailer: the lane hands these to net/http's server.
		{name: "nethttp-chunked-before-last", head: post + "Transfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n", sent: chunk},
		{name: "nethttp-chunked-in-trailer", head: post + "Transfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n", sent: chunk + "0\r\nX-T: a", held: true},
		{name: "expect-length-1-short", head: post + "Expect: 100-continue\r\nContent-Length: 1000\r\n\r\n", sent: u(999), expect: true},
		{name: "expect-big-length-1-short", head: post + "Expect: 100-continue\r\nContent-Length: 2097152\r\n\r\n", sent: u(2097151), expect: true},
		{name: "http1.0-length-1-short", head: "POST /x HTTP/1.0\r\nHost: svc\r\nContent-Length: 1000\r\n\r\n", sent: u(999)},
	}
	type seen struct {
		n   int
		err error
	}
	for _, proto := range []string{ProtocolHTTP1, ProtocolH2C} {
		for _, tc := range cases {
			for _, kill := range []string{"fin", "rst"} {
				t.Run(proto+"/"+tc.name+"/"+kill, func(t *testing.T) {
					got := make(chan struct{}, 1)
					result := make(chan seen, 1)
					addr := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
						var one [1]byte
						if _, err := io.ReadFull(r.Body, one[:]); err != nil {
							result <- seen{0, err}
							return
						}
						got <- struct{}{}
						n, err := io.Copy(io.Discard, r.Body)
						result <- seen{int(n) + 1, err}
					}))
					sc, logs := cutFerryWith(t, addr, proto)
					c, err := net.Dial("tcp", sc.Addr("outbound"))
					if err != nil {
						t.Fatal(err)
					}
					defer c.Close()
					c.SetDeadline(time.Now().Add(10 * time.Second))
					io.WriteString(c, tc.head)
					if tc.expect {
						br := bufio.NewReader(c)
						res, err := http.ReadResponse(br, nil)
						if err != nil || res.StatusCode != 100 {
							t.Fatalf("before the body: %v %v; want 100 Continue", res, err)
						}
					}
					go io.WriteString(c, tc.sent)
					if !tc.held {
						recv(t, got, 5*time.Second, "the upstream to read the body's first byte")
					}
					if kill == "rst" {
						waitSent(t, c)
						reset(c)
					} else {
						c.Close()
					}
					s := recv(t, result, 5*time.Second, "the upstream's read of the body to end")
					if s.err == nil {
						t.Errorf("the upstream read a whole body of %d bytes from an upload cut after %d", s.n, len(tc.sent))
					}
					l := nthAccessLine(t, logs, 1)
					if l["reason"] == "" {
						t.Errorf("a cut upload logged as %v with no reason", l["status"])
					}
					t.Logf("upstream read %d bytes, then %v; logged %v %v", s.n, s.err, l["status"], l["reason"])
				})
			}
		}
	}
}

// waitSent waits until the kernel sent everything written to c (its send
// queue is empty), so a reset that follows discards nothing of it.
func waitSent(t *testing.T, c net.Conn) {
	t.Helper()
	if !sendQueueKnown {
		t.Skip("a socket's send queue cannot be read on this platform, and a reset could discard what the test sent")
	}
	waitFor(t, "the caller's bytes to leave", 5*time.Second, func() bool {
		n, err := sendQueued(c.(*net.TCPConn))
		return err == nil && n == 0
	})
}

// sendQueued is how many bytes written to c the peer did not acknowledge.
func sendQueued(c *net.TCPConn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var qerr error
	if err := rc.Control(func(fd uintptr) { n, qerr = sendQueue(fd) }); err != nil {
		return 0, err
	}
	return n, qerr
}

// After an exchange cut short (the caller gone mid-download, an upload the
// upstream answered early and the caller then broke off, a pipelined
// request behind a cut), no upstream connection that still carries part
// of it is used again: the next request's head must not be read as the
// rest of a body, nor the rest of a response as the next answer.
func TestNoUpstreamReuseAfterCut(t *testing.T) {
	leakCheck(t)
	var garbled atomic.Int32
	var conns atomic.Int32
	o := startRawServer(t, func(c net.Conn) {
		id := conns.Add(1)
		br := bufio.NewReader(c)
		for n := 1; ; n++ {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			switch req.URL.Path {
			case "/big":
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", 4<<20)
				if _, err := c.Write(bytes.Repeat([]byte("b"), 4<<20)); err != nil {
					return
				}
			case "/early":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			default:
				body := fmt.Sprintf("answer %d-%d to %s", id, n, req.URL.Path)
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
			}
			b, err := io.ReadAll(req.Body)
			if len(bytes.Trim(b, "u")) != 0 {
				garbled.Add(1)
			}
			if err != nil {
				return
			}
		}
	})
	sc, _ := cutFerry(t, o.addr())
	addr := sc.Addr("outbound")
	u := strings.Repeat("u", 100000)
	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		return c, bufio.NewReader(c)
	}
	cuts := []struct {
		name string
		cut  func(t *testing.T)
	}{
		{"caller gone mid-download", func(t *testing.T) {
			c, br := dial()
			defer c.Close()
			io.WriteString(c, "GET /big HTTP/1.1\r\nHost: svc\r\n\r\n")
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.CopyN(io.Discard, res.Body, 200000)
		}},
		{"pipelined behind a cut", func(t *testing.T) {
			c, br := dial()
			defer c.Close()
			io.WriteString(c, "GET /big HTTP/1.1\r\nHost: svc\r\n\r\nGET /second HTTP/1.1\r\nHost: svc\r\n\r\n")
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.CopyN(io.Discard, res.Body, 1000)
		}},
		{"early answer to an upload cut", func(t *testing.T) {
			c, br := dial()
			defer c.Close()
			io.WriteString(c, "POST /early HTTP/1.1\r\nHost: svc\r\nContent-Length: 1000\r\n\r\n"+u[:500])
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.ReadAll(res.Body)
		}},
		{"early answer to a spliced upload cut", func(t *testing.T) {
			c, br := dial()
			defer c.Close()
			io.WriteString(c, "POST /early HTTP/1.1\r\nHost: svc\r\nContent-Length: 200000\r\n\r\n"+u)
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.ReadAll(res.Body)
		}},
		{"early answer to a chunked upload cut", func(t *testing.T) {
			c, br := dial()
			defer c.Close()
			io.WriteString(c, "POST /early HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n1f4\r\n"+u[:500]+"\r\n")
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.ReadAll(res.Body)
		}},
		{"h2c caller gone mid-download", func(t *testing.T) {
			res, err := h2cFor(t).Get("http://" + addr + "/big")
			if err != nil {
				t.Fatal(err)
			}
			io.CopyN(io.Discard, res.Body, 200000)
			res.Body.Close()
		}},
	}
	for _, cut := range cuts {
		t.Run(cut.name, func(t *testing.T) {
			cut.cut(t)
			// The next requests, bodiless and with a body, each get
			// their own whole answer.
			for i, req := range []string{
				"GET /next HTTP/1.1\r\nHost: svc\r\n\r\n",
				"POST /next HTTP/1.1\r\nHost: svc\r\nContent-Length: 3\r\n\r\nuuu",
				"GET /next HTTP/1.1\r\nHost: svc\r\n\r\n",
			} {
				c, br := dial()
				io.WriteString(c, req)
				res, err := http.ReadResponse(br, nil)
				if err != nil {
					c.Close()
					t.Fatalf("request %d after the cut: %v", i, err)
				}
				b, err := io.ReadAll(res.Body)
				c.Close()
				if err != nil || res.StatusCode != 200 || !strings.HasPrefix(string(b), "answer ") || !strings.HasSuffix(string(b), " to /next") {
					t.Fatalf("request %d after the cut: %d %q %v; want the upstream's own answer to it", i, res.StatusCode, b, err)
				}
			}
			if n := garbled.Load(); n > 0 {
				t.Fatalf("the upstream read %d request bodies with bytes of another request in them", n)
			}
		})
	}
}
