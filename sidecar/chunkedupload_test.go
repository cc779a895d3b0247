package sidecar

import (
	"bufio"
	"bytes"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// chunkedUpstream reads each request with net/http's parser and answers
// with what it read: the body's length and CRC, its framing and its
// trailers (sorted "name=value" pairs); see answeringUpstream.
func chunkedUpstream(t *testing.T) (up *rawServer, heads chan int64, conns *atomic.Int64) {
	return answeringUpstream(t, func(req *http.Request, b []byte) []byte {
		var tr []string
		for k, vv := range req.Trailer {
			tr = append(tr, k+"="+strings.Join(vv, ","))
		}
		slices.Sort(tr)
		return fmt.Appendf(nil, "%d %08x te=%v cl=%d trailers=%v", len(b), crc32.ChecksumIEEE(b), req.TransferEncoding, req.ContentLength, tr)
	})
}

func chunkedAnswer(body string, trailers ...string) string {
	if trailers == nil {
		trailers = []string{}
	}
	return fmt.Sprintf("%d %08x te=[chunked] cl=-1 trailers=%v", len(body), crc32.ChecksumIEEE([]byte(body)), trailers)
}

// A lane request with a chunked body is served by the lane and goes through
// ferry's own client: chunked upstream with the caller's trailers (less
// those no trailer may carry), whole with its head when it came whole with
// it, else as it comes; large chunks, pipelined requests and the
// connections' reuse work as for a body of known length.
func TestChunkedUploadTakesFerrysClient(t *testing.T) {
	up, heads, conns := chunkedUpstream(t)
	_, url := outboundTo(t, "", up.addr())
	c := dialRaw(t, url)
	br := bufio.NewReader(c)
	handed, sent, inHand := laneHanded.Load(), chunkedUp.Load(), chunkedInHand.Load()
	const head = "POST /u HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"

	// Whole with its head, with trailers (Content-Length may not be one).
	io.WriteString(c, head+"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Sum: abc\r\nContent-Length: 9\r\n\r\n")
	readAnswers(t, c, br, chunkedAnswer("hello world", "X-Sum=abc"))
	recv(t, heads, 5*time.Second, "the first head")
	if got := chunkedInHand.Load() - inHand; got != 1 {
		t.Fatalf("%d bodies went with their heads, want 1", got)
	}

	// The head first: it goes upstream before the body is whole.
	io.WriteString(c, head+"5\r\nhello\r\n")
	recv(t, heads, 5*time.Second, "the head upstream before the body was whole")
	io.WriteString(c, "6\r\n world\r\n0\r\nX-Sum: def\r\n\r\n")
	readAnswers(t, c, br, chunkedAnswer("hello world", "X-Sum=def"))

	// The end of a body that streams, and a GET right behind it in the
	// same write: its reader reads both, and gives the GET back.
	io.WriteString(c, head+"5\r\nhello\r\n")
	recv(t, heads, 5*time.Second, "the head upstream before the body was whole")
	io.WriteString(c, "0\r\n\r\nGET /g HTTP/1.1\r\nHost: x\r\n\r\n")
	recv(t, heads, 5*time.Second, "the GET's head")
	readAnswers(t, c, br, chunkedAnswer("hello"), "0 00000000 te=[] cl=0 trailers=[]")

	// Large chunks, some larger than the lane's buffer, in one write.
	rng := rand.New(rand.NewPCG(1, 2))
	var wire, body bytes.Buffer
	wire.WriteString(head)
	for body.Len() < 300<<10 {
		n := 1 + rng.IntN(3*laneBufSize)
		part := make([]byte, n)
		for i := range part {
			part[i] = byte(rng.Uint32())
		}
		body.Write(part)
		fmt.Fprintf(&wire, "%x\r\n%s\r\n", n, part)
	}
	wire.WriteString("0\r\n\r\n")
	go c.Write(wire.Bytes())
	recv(t, heads, 5*time.Second, "the large upload's head")
	readAnswers(t, c, br, chunkedAnswer(body.String()))

	// An empty body, then a GET in the same write.
	io.WriteString(c, head+"0\r\n\r\nGET /g HTTP/1.1\r\nHost: x\r\n\r\n")
	recv(t, heads, 5*time.Second, "the empty upload's head")
	recv(t, heads, 5*time.Second, "the GET's head")
	readAnswers(t, c, br, chunkedAnswer(""), "0 00000000 te=[] cl=0 trailers=[]")

	if got := laneHanded.Load() - handed; got != 0 {
		t.Fatalf("%d connections handed to net/http", got)
	}
	if got := chunkedUp.Load() - sent; got != 5 {
		t.Fatalf("%d chunked bodies sent by ferry's client, want 5", got)
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("the upstream saw %d connections, want 1 (kept after each upload)", n)
	}
}

// A chunked body the caller frames wrongly is refused as net/http's server
// refuses it, and never reaches the upstream whole: at hand with its head,
// nothing of it goes (a 400); coming after its head, the upstream sees its
// body cut.
func TestChunkedUploadFramedWrongNeverWhole(t *testing.T) {
	leakCheck(t)
	up, heads, _ := chunkedUpstream(t)
	_, url := outboundTo(t, "", up.addr())
	const head = "POST /u HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
	for _, tc := range []struct {
		name, body string
		atHand     bool // the lane's buffer holds enough to tell
	}{
		{"bare LF after the size", "5\nhello\r\n0\r\n\r\n", true},
		{"no CRLF after the data", "5\r\nhelloX\r\n0\r\n\r\n", true},
		{"size not hex", "5z\r\nhello\r\n0\r\n\r\n", true},
		{"size too large", "10000000000000000\r\nhello\r\n0\r\n\r\n", true},
		{"CR in the size line", "5\r;x\r\nhello\r\n0\r\n\r\n", true},
		{"size line too long", "5;" + strings.Repeat("e", 5000) + "\r\nhello\r\n0\r\n\r\n", true},
		{"trailer without its end", "5\r\nhello\r\n0\r\nX-T: " + strings.Repeat("t", 3*laneBufSize) + "\r\n", false},
	} {
		t.Run(tc.name+"/at hand", func(t *testing.T) {
			if !tc.atHand {
				t.Skip("the buffer cannot hold enough of it to tell")
			}
			c := dialRaw(t, url)
			inHand := chunkedInHand.Load()
			io.WriteString(c, head+tc.body)
			if res := readRawResponse(t, c); res.StatusCode != http.StatusBadRequest {
				t.Fatalf("status %d, want 400", res.StatusCode)
			}
			if chunkedInHand.Load() == inHand {
				t.Fatal("the body was not judged at hand: its head went upstream")
			}
			select {
			case <-heads:
				t.Fatal("the upstream had the request")
			default:
			}
		})
		t.Run(tc.name+"/after its head", func(t *testing.T) {
			c := dialRaw(t, url)
			io.WriteString(c, head+"3\r\nabc\r\n")
			recv(t, heads, 5*time.Second, "the upstream to have the head")
			io.WriteString(c, tc.body)
			// (The upstream, its body cut, answers nothing.)
			if res := readRawResponse(t, c); res.StatusCode != http.StatusBadRequest {
				t.Fatalf("status %d, want 400", res.StatusCode)
			}
		})
	}
}
