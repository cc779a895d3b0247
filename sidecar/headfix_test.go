package sidecar

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// fixHead's rewrites, one per case, and the heads it leaves as they are.
func TestFixHead(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"nothing to fix",
			"HTTP/1.1 200 OK\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\r\n", ""},
		{"named by a Connection that does not close",
			"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", ""},
		{"named by a Connection that closes, before and after it, folded",
			"HTTP/1.1 200 OK\r\nX-Hop: 1\r\n 2\r\nConnection: close, x-hop, X-Other\r\nX-Kept: 1\r\nx-other: 3\r\n\r\n",
			"HTTP/1.1 200 OK\r\nConnection: close, x-hop, X-Other\r\nX-Kept: 1\r\n\r\n"},
		{"framing fields named stay",
			"HTTP/1.1 200 OK\r\nConnection: close, Content-Length, Transfer-Encoding, X-Hop\r\nContent-Length: 2\r\nX-Hop: 1\r\n\r\n",
			"HTTP/1.1 200 OK\r\nConnection: close, Content-Length, Transfer-Encoding, X-Hop\r\nContent-Length: 2\r\n\r\n"},
		{"framed twice",
			"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
			"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"},
		{"framed twice, interim",
			"HTTP/1.1 103 Early Hints\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", ""},
		{"forbidden trailers announced",
			"HTTP/1.1 200 OK\r\nTrailer: Content-Length, X-Sum ,host\r\nTransfer-Encoding: chunked\r\n\r\n",
			"HTTP/1.1 200 OK\r\nTrailer:X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n"},
		{"only forbidden trailers announced, bare LF",
			"HTTP/1.1 200 OK\nTrailer: Transfer-Encoding\nTransfer-Encoding: chunked\n\n",
			"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n"},
	}
	for _, tc := range cases {
		want := tc.want
		if want == "" {
			want = tc.in
		}
		f := scanHead([]byte(tc.in))
		got := string(tc.in)
		if f.needsFix() || f.framedTwice() {
			got = string(fixHead(nil, []byte(tc.in), &f, true))
		}
		if got != want {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, got, want)
		}
		if tc.want != "" && !strings.Contains(tc.name, "framed twice") {
			if short := fixHead(nil, []byte(tc.in), &f, false); len(short) > len(tc.in) {
				t.Errorf("%s: rewritten without closing, %d bytes where the head had %d", tc.name, len(short), len(tc.in))
			}
		}
	}
}

// A response without a body framed both ways keeps its Content-Length
// when fixHead closes its connection: it frames nothing there, and an
// answer to HEAD tells the caller the size of what a GET would get.
func TestFixHeadNoBodyKeepsLength(t *testing.T) {
	cases := []struct {
		in   string
		head bool
	}{
		{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", true},
		{"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", false},
		{"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", false},
	}
	for _, tc := range cases {
		f := scanHead([]byte(tc.in))
		f.head = tc.head
		want := strings.TrimSuffix(tc.in, "\r\n") + "Connection: close\r\n\r\n"
		if got := string(fixHead(nil, []byte(tc.in), &f, true)); got != want {
			t.Errorf("head %v:\n got %q\nwant %q", tc.head, got, want)
		}
	}
}

// pieceConn reads src n bytes at a time, as a socket may deliver it.
type pieceConn struct {
	net.Conn
	src *bytes.Reader
	n   int
}

func (c *pieceConn) Read(p []byte) (int, error) { return c.src.Read(p[:min(len(p), c.n)]) }

// headFixConn hands net/http's Transport the same bytes however the
// socket splits them: an interim head and the final one rewritten, the
// body after them as it came (though it looks like a head), and nothing
// rewritten when it was not armed.
func TestHeadFixConnSplitReads(t *testing.T) {
	const body = "HTTP/1.1 200 OK\r\nConnection: close, X-Body\r\nX-Body: 1\r\n\r\n"
	stream := "HTTP/1.1 100 Continue\r\nX-Hop: 1\r\nConnection: close, X-Hop\r\n\r\n" +
		"HTTP/1.1 200 OK\r\nX-Hop: 2\r\nConnection: close, X-Hop\r\nTrailer: Content-Length, X-Sum\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"39\r\n" + body + "\r\n0\r\n\r\n"
	want := "HTTP/1.1 100 Continue\r\nConnection: close, X-Hop\r\n\r\n" +
		"HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nTrailer:X-Sum\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" +
		"39\r\n" + body + "\r\n0\r\n\r\n"
	for _, n := range []int{1, 2, 3, 7, 64, 1 << 16} {
		for _, armed := range []bool{true, false} {
			c := &headFixConn{Conn: &pieceConn{src: bytes.NewReader([]byte(stream)), n: n}}
			if armed {
				c.expectHead(false)
			}
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatal(err)
			}
			w := want
			if !armed {
				w = stream
			}
			if string(got) != w {
				t.Errorf("reads of %d, armed %v:\n got %q\nwant %q", n, armed, got, w)
			}
		}
		// As net/http reads it: the final response, its body whole.
		c := &headFixConn{Conn: &pieceConn{src: bytes.NewReader([]byte(stream)), n: n}}
		c.expectHead(false)
		br := bufio.NewReader(c)
		res, err := http.ReadResponse(br, nil)
		if err == nil && res.StatusCode == http.StatusContinue {
			res, err = http.ReadResponse(br, nil)
		}
		if err != nil {
			t.Fatalf("reads of %d: %v", n, err)
		}
		b, err := io.ReadAll(res.Body)
		if err != nil || string(b) != body || !res.Close || res.Header["X-Hop"] != nil || res.Header["Content-Length"] != nil {
			t.Errorf("reads of %d: body %q (%v), close %v, header %v", n, b, err, res.Close, res.Header)
		}
	}
}

// A head fixHead rewrote reads as the upstream's did, to the same status
// and body, with a connection that closes when the upstream framed it
// twice; without closing, the rewrite is never longer (prepareHead writes
// it over the old head).
func FuzzFixHead(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nTrailer: Content-Length, X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Sum: 1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\nX-Hop: 1\n\t2\nConnection: X-Hop,close\nTrailer: Host\nContent-Length: 2\n\nok",
		"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\nokEXTRA",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		end := headEnd(msg, 0)
		if end < 0 {
			return
		}
		head, rest := msg[:end], msg[end:]
		facts := scanHead(head)
		fixed := fixHead(nil, head, &facts, true)
		if short := fixHead(nil, head, &facts, false); len(short) > len(head) {
			t.Fatalf("%q: rewritten without closing to %q, longer", head, short)
		}
		ref, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(msg)), nil)
		if err != nil {
			return
		}
		refBody, refErr := io.ReadAll(ref.Body)
		res, err := http.ReadResponse(bufio.NewReader(io.MultiReader(bytes.NewReader(fixed), bytes.NewReader(rest))), nil)
		if err != nil {
			t.Fatalf("%q read; rewritten to %q it is refused: %v", head, fixed, err)
		}
		body, bodyErr := io.ReadAll(res.Body)
		if res.StatusCode != ref.StatusCode || !bytes.Equal(body, refBody) || (bodyErr == nil) != (refErr == nil) {
			t.Fatalf("%q: rewritten to %q reads %d %q (%v), was %d %q (%v)", head, fixed, res.StatusCode, body, bodyErr, ref.StatusCode, refBody, refErr)
		}
		if facts.framedTwice() && res.StatusCode >= 200 && !res.Close {
			t.Fatalf("%q framed twice: rewritten to %q, the connection stays open", head, fixed)
		}
	})
}
