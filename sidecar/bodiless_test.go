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

// A response that has no body whatever its framing fields say (an answer
// to HEAD, a 204, a 304: RFC 9112 section 6.3, rule 1) and carries both
// Transfer-Encoding and Content-Length reaches the caller the same through
// ferry's own client (a request without a body) and through net/http's
// Transport (a request with one), as RFC 9110 has it:
//
//   - an answer to HEAD keeps its Content-Length, the size of the
//     representation a GET would get (section 8.6); net/http's path lost it;
//   - a 204 or 304 has none, as an HTTP/1.1 caller always got it: a server
//     must not send one on a 204 (section 8.6), one on a 304 is optional,
//     and ferry's client passed the upstream's to an h2c caller, whose Go
//     client then failed the empty body ("unexpected EOF");
//   - none carries Transfer-Encoding, and the caller's connection reads on
//     (its next answer is whole);
//   - the upstream connection is not reused: an upstream that broke RFC
//     9112 section 6.2 that way is not trusted with another exchange.
//
// The same heads with a Content-Length alone reach the caller the same
// way (the connection is reused then).
func TestBodilessResponseFramedTwice(t *testing.T) {
	leakCheck(t)
	var mu sync.Mutex
	conns := 0
	got := make(chan upstreamRequest, 16)
	up := startRawServer(t, func(c net.Conn) {
		mu.Lock()
		conns++
		id := conns
		mu.Unlock()
		br := bufio.NewReader(c)
		for n := 1; ; n++ {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if _, err := io.Copy(io.Discard, req.Body); err != nil {
				return
			}
			got <- upstreamRequest{id, n}
			if req.URL.Path == "/ok" {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				continue
			}
			status, once := strings.CutPrefix(req.URL.Path, "/once")
			te := "Transfer-Encoding: chunked\r\n"
			if once {
				te = ""
			}
			fmt.Fprintf(c, "HTTP/1.1 %s\r\nContent-Length: 1234\r\n%sX-A: 1\r\n\r\n", strings.TrimPrefix(status, "/"), te)
		}
	})
	base := faultFerry(t, up.addr(), settingsYAML(""))
	cases := []struct {
		method, status string
		length         string // the caller's Content-Length ("" none)
	}{
		{http.MethodHead, "200 OK", "1234"},
		{http.MethodGet, "204 No Content", ""},
		{http.MethodGet, "304 Not Modified", ""},
	}
	for _, tc := range cases {
		for _, once := range []bool{false, true} {
			for _, caller := range []string{"http1", "h2c"} {
				var heads [2]http.Header
				for i, withBody := range []bool{false, true} {
					target := "/" + strings.ReplaceAll(tc.status, " ", "%20")
					if once {
						target = "/once" + target
					}
					name := fmt.Sprintf("%s %s/once=%v/%s/body=%v", tc.method, tc.status, once, caller, withBody)
					var h http.Header
					var code int
					var next string
					if caller == "h2c" {
						code, h, next = bodilessOverH2C(t, name, base, tc.method, target, withBody)
					} else {
						code, h, next = bodilessOverHTTP1(t, base, tc.method, target, withBody)
					}
					if want := atoiStatus(tc.status); code != want {
						t.Fatalf("%s: status %d, want %d", name, code, want)
					}
					if next != "ok" {
						t.Fatalf("%s: the next answer's body %q, want \"ok\"", name, next)
					}
					first := recv(t, got, 5*time.Second, "the upstream request")
					if second := recv(t, got, 5*time.Second, "the next upstream request"); !once && second.conn == first.conn {
						t.Errorf("%s: the next request went on upstream connection %d, which carried a response framed two ways", name, second.conn)
					}
					if v := h.Get("Content-Length"); v != tc.length {
						t.Errorf("%s: Content-Length %q, want %q", name, v, tc.length)
					}
					if v, ok := h["Transfer-Encoding"]; ok {
						t.Errorf("%s: Transfer-Encoding %q reached the caller", name, v)
					}
					delete(h, "Date")
					heads[i] = h
				}
				if !reflect.DeepEqual(heads[0], heads[1]) {
					t.Errorf("%s %s, once %v, %s caller: through ferry's client %v, through net/http's %v", tc.method, tc.status, once, caller, heads[0], heads[1])
				}
			}
		}
	}
}

// kindBody is a short body for sendKind, or none.
func kindBody(withBody bool) func() io.Reader {
	if !withBody {
		return nil
	}
	return func() io.Reader { return strings.NewReader("abc") }
}

// atoiStatus is the code at the start of "204 No Content".
func atoiStatus(s string) int {
	var code int
	fmt.Sscanf(s, "%d", &code)
	return code
}

// bodilessOverHTTP1 sends method target and then a request for /ok (each
// with a short body when withBody) on one HTTP/1.1 connection, and returns
// the first answer's status and header, and the second's body: the first
// has none if the second reads whole.
// bodilessOverH2C sends method target (with a small body when withBody)
// over h2c, checks that its answer has no body, then sends a request for
// /ok; it returns the answer's status and header and /ok's body.
func bodilessOverH2C(t *testing.T, name, base, method, target string, withBody bool) (int, http.Header, string) {
	t.Helper()
	var body io.Reader
	if withBody {
		body = strings.NewReader("abc")
	}
	req, _ := http.NewRequest(method, base+target, body)
	res, err := h2cFor(t).Do(req)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || len(b) != 0 {
		t.Errorf("%s: body %q (%v); want none", name, b, err)
	}
	_, next := sendKind(t, h2cFor(t), base+"/ok", kindBody(withBody))
	return res.StatusCode, res.Header, next
}

func bodilessOverHTTP1(t *testing.T, base, method, target string, withBody bool) (int, http.Header, string) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if withBody {
		fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: svc\r\nContent-Length: 3\r\n\r\nabc", method, target)
	} else {
		fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: svc\r\n\r\n", method, target)
	}
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	if len(res.TransferEncoding) > 0 {
		t.Fatalf("%s %s: %d, Transfer-Encoding %q", method, target, res.StatusCode, res.TransferEncoding)
	}
	if withBody {
		io.WriteString(c, "POST /ok HTTP/1.1\r\nHost: svc\r\nContent-Length: 3\r\n\r\nabc")
	} else {
		io.WriteString(c, "GET /ok HTTP/1.1\r\nHost: svc\r\n\r\n")
	}
	next, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("%s %s, then /ok: %v", method, target, err)
	}
	b, err := io.ReadAll(next.Body)
	if err != nil {
		t.Fatalf("%s %s, then /ok: %v", method, target, err)
	}
	return res.StatusCode, res.Header, string(b)
}

// A 304 from an h2c upstream that carries the Content-Length a 200 would
// have (RFC 9110 section 8.6 allows it), or a 204 that carries one, has no
// body: its stream ends with its head. Go's HTTP/2 client hands such a
// response a body that fails when read ("unexpected EOF", its
// Content-Length not met), and ferry relayed that failure: an HTTP/1.1
// caller's connection closed without an answer, an h2c caller's stream
// was reset, and each counted against the endpoint's breaker as a body
// broken mid-way. Every caller gets the 304 or 204 as an HTTP/1.1
// upstream's, without its Content-Length, and its connection reads on.
func TestBodilessResponseFromH2CUpstream(t *testing.T) {
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/ok" {
			io.WriteString(w, "ok")
			return
		}
		w.Header().Set("Content-Length", "1234")
		w.Header().Set("Etag", `"v1"`)
		w.WriteHeader(atoiStatus(strings.TrimPrefix(r.URL.Path, "/")))
	}))
	_, base := ferryWithProtocol(t, "h2c", up)
	for _, status := range []int{http.StatusNotModified, http.StatusNoContent} {
		target := fmt.Sprintf("/%d", status)
		for _, withBody := range []bool{false, true} {
			for _, caller := range []string{"http1", "h2c"} {
				name := fmt.Sprintf("%d/%s/body=%v", status, caller, withBody)
				var h http.Header
				var code int
				var next string
				if caller == "h2c" {
					method := http.MethodGet
					if withBody {
						method = http.MethodPost
					}
					code, h, next = bodilessOverH2C(t, name, base, method, target, withBody)
				} else {
					code, h, next = bodilessOverHTTP1(t, base, http.MethodGet, target, withBody)
				}
				if code != status || next != "ok" {
					t.Errorf("%s: status %d, then %q; want %d, then \"ok\"", name, code, next, status)
				}
				if v, ok := h["Content-Length"]; ok {
					t.Errorf("%s: Content-Length %q reached the caller", name, v)
				}
				if v := h.Get("Etag"); v != `"v1"` {
					t.Errorf("%s: ETag %q, want %q", name, v, `"v1"`)
				}
			}
		}
		// An HTTP/1.0 caller, which net/http's server answers.
		res, b := rawRoundTrip(t, strings.TrimPrefix(base, "http://"), "GET "+target+" HTTP/1.0\r\nHost: svc\r\n\r\n", http.MethodGet)
		if res.StatusCode != status || b != "" || res.Header.Get("Etag") != `"v1"` {
			t.Errorf("%d/http1.0: %d %q (ETag %q), want %d without a body", status, res.StatusCode, b, res.Header.Get("Etag"), status)
		}
	}
}
