package sidecar

import (
	"bufio"
	"bytes"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
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

// takeInHand's snapshots come from a pool: one goroutine's decode must not
// touch a snapshot another took since (go test -race reports it, and a
// snapshot reset under another's decode loses its bytes, or the bytes
// behind its body). Each decode here must leave the pipelined request
// behind its body in its own reader.
func TestTakeInHandSnapshotsDoNotMix(t *testing.T) {
	const pipelined = "GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5000 {
				for _, wire := range []string{"0\r\n\r\n" + pipelined, "5\r\nhello\r\n0\r\n\r\n" + pipelined, "5\r\nhel\r\n\r\n"} {
					br := bufio.NewReaderSize(strings.NewReader(wire), laneBufSize)
					br.Peek(len(wire))
					c := &chunkedIn{br: br, trailer: http.Header{}}
					if !c.takeInHand() || c.err != nil && c.err != io.EOF {
						if strings.HasSuffix(wire, pipelined) {
							errs <- fmt.Sprintf("%q: not taken whole (%v)", wire, c.err)
							return
						}
						continue
					}
					if rest, _ := io.ReadAll(br); string(rest) != pipelined {
						errs <- fmt.Sprintf("%q: %q left behind the body, want the pipelined request", wire, rest)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// A caller's trailer section is bounded as net/http's server bounds it
// (its 4 KiB reader): one beyond that fails the body (a 400, nothing whole
// upstream), at hand or as it comes; one within it goes upstream.
func TestChunkedUploadTrailerBoundedAsNetHTTP(t *testing.T) {
	section := func(n int) string { return "5\r\nhello\r\n0\r\nX-Big: " + strings.Repeat("b", n) + "\r\n\r\n" }
	// net/http's own verdict on the long one.
	readErr := make(chan error, 1)
	c0 := dialServer(t, netHTTPServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		readErr <- err
	}), 5*time.Second, 64<<10))
	const head = "POST /u HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
	io.WriteString(c0, head+section(5000))
	if err := recv(t, readErr, 5*time.Second, "net/http's read"); err == nil {
		t.Fatal("net/http took a 5000-byte trailer section (the test's premise is wrong)")
	}

	up, heads, _ := chunkedUpstream(t)
	_, url := outboundTo(t, "", up.addr())
	for _, atHand := range []bool{true, false} {
		c := dialRaw(t, url)
		if atHand {
			io.WriteString(c, head+section(5000))
		} else {
			io.WriteString(c, head+"3\r\nabc\r\n")
			recv(t, heads, 5*time.Second, "the upstream to have the head")
			io.WriteString(c, section(5000))
		}
		if res := readRawResponse(t, c); res.StatusCode != http.StatusBadRequest {
			t.Fatalf("at hand %v: status %d for a trailer section net/http refuses, want 400", atHand, res.StatusCode)
		}
	}
	c := dialRaw(t, url)
	io.WriteString(c, head+section(3900))
	recv(t, heads, 5*time.Second, "the upstream to have the head")
	readAnswers(t, c, bufio.NewReader(c), chunkedAnswer("hello", "X-Big="+strings.Repeat("b", 3900)))
}

// A body framed wrongly at hand ends the exchange before any byte of the
// request goes upstream, even behind a head longer than the upstream
// writer's buffer.
func TestChunkedUploadFramedWrongAtHandSendsNothing(t *testing.T) {
	got := make(chan int64, 4)
	up := startRawServer(t, func(c net.Conn) {
		n, _ := io.Copy(io.Discard, c)
		got <- n
	})
	_, url := outboundTo(t, "", up.addr())
	for _, extra := range []string{"", "X-Big: " + strings.Repeat("h", 5000) + "\r\n"} {
		c := dialRaw(t, url)
		io.WriteString(c, "POST /u HTTP/1.1\r\nHost: x\r\n"+extra+"Transfer-Encoding: chunked\r\n\r\n5z\r\nhello\r\n0\r\n\r\n")
		if res := readRawResponse(t, c); res.StatusCode != http.StatusBadRequest {
			t.Fatalf("status %d, want 400", res.StatusCode)
		}
		if n := recv(t, got, 5*time.Second, "the upstream connection's end"); n != 0 {
			t.Fatalf("head of %d bytes more: the upstream got %d bytes", len(extra), n)
		}
	}
}
