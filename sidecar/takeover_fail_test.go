package sidecar

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/internal/payload"
)

// readHead reads a request head from an upstream connection.
func readHead(br *bufio.Reader) error {
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return err
		}
		if line == "\r\n" {
			return nil
		}
	}
}

// An upstream that dies mid-upload fails the exchange with a 502 (or a
// broken connection), never an answer that looks like success.
func TestZeroCopyUploadUpstreamDiesMidBody(t *testing.T) {
	for _, tc := range []struct {
		expect bool
		target string // absolute-form: the lane hands it to net/http, whose connection ferry takes
	}{{false, "/ul"}, {true, "/ul"}, {false, "http://x/ul"}, {true, "http://x/ul"}} {
		expect := tc.expect
		t.Run(fmt.Sprintf("expect=%v/%s", expect, tc.target), func(t *testing.T) {
			up := startRawServer(t, func(c net.Conn) {
				br := bufio.NewReader(c)
				if readHead(br) != nil {
					return
				}
				if expect {
					io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n")
				}
				io.CopyN(io.Discard, br, 1<<20)
				c.(*net.TCPConn).SetLinger(0)
			})
			_, url := outboundTo(t, "defaults: { retry: { max_retries: 0 } }", up.addr())
			conn := dialRaw(t, url)
			defer conn.Close()
			const size = 8 << 20
			head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n", tc.target, size)
			if expect {
				head += "Expect: 100-continue\r\n"
			}
			io.WriteString(conn, head+"\r\n")
			br := bufio.NewReader(conn)
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			if expect {
				res, err := http.ReadResponse(br, nil)
				if err != nil || res.StatusCode != 100 {
					t.Fatalf("want 100 Continue first: %v %v", res, err)
				}
			}
			go io.Copy(conn, payload.NewReader(size))
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				return // a broken connection: fine
			}
			b, _ := io.ReadAll(res.Body)
			if res.StatusCode != http.StatusBadGateway {
				t.Fatalf("upstream died mid-body; caller got %d %q (X-Ferry-Error %q)", res.StatusCode, b, res.Header.Get("X-Ferry-Error"))
			}
		})
	}
}

// A caller that stalls mid-upload is cut by body_idle: a 504 naming it,
// and the upstream never takes the short body for a whole one.
func TestZeroCopyUploadBodyIdle(t *testing.T) {
	got := make(chan error, 1)
	upAddr := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.Copy(io.Discard, r.Body)
		got <- err
	}))
	_, url := outboundTo(t, "defaults: { retry: { max_retries: 0 }, timeouts: { body_idle: 300ms } }", upAddr)
	conn := dialRaw(t, url)
	defer conn.Close()
	fmt.Fprintf(conn, "POST /ul HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", 8<<20)
	io.Copy(conn, payload.NewReader(3<<20))
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a stalled upload: %v", err)
	}
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusGatewayTimeout || !strings.Contains(res.Header.Get("X-Ferry-Error"), "idle") {
		t.Fatalf("got %d %q (X-Ferry-Error %q), want 504 body idle", res.StatusCode, b, res.Header.Get("X-Ferry-Error"))
	}
	if err := recv(t, got, 10*time.Second, "the origin's read"); err == nil {
		t.Fatal("the origin read a cut body as complete")
	}
}

// An upstream that sends another 1xx (103 Early Hints) to an Expect:
// 100-continue upload but never a 100 still gets the body after
// continueTimeout, as from net/http's Transport: the interim answer is not
// the go-ahead, nor a reason to wait for one without end.
func TestZeroCopyUploadExpectOther1xxStillSendsBody(t *testing.T) {
	const size = 2 << 20
	up := startRawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		if readHead(br) != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
		n, _ := io.CopyN(io.Discard, br, size)
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%d", len(fmt.Sprint(n)), n)
	})
	_, url := outboundTo(t, "defaults: { retry: { max_retries: 0 } }", up.addr())
	conn := dialRaw(t, url)
	defer conn.Close()
	fmt.Fprintf(conn, "POST /ul HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", size)
	br := bufio.NewReader(conn)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("waiting for the go-ahead: %v", err)
		}
		if res.StatusCode == http.StatusContinue {
			break
		}
		if res.StatusCode >= 200 {
			t.Fatalf("got %d before the body went", res.StatusCode)
		}
	}
	go io.Copy(conn, payload.NewReader(size))
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode < 200 {
			continue
		}
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != 200 || string(b) != fmt.Sprint(size) {
			t.Fatalf("got %d %q, want 200 %d", res.StatusCode, b, size)
		}
		return
	}
}

// A lane upload spliced upstream ends with its exchange: the body move's
// goroutine, which feeds the connection's idle timer between segments,
// never touches that timer once the exchange ended, when it may already
// watch the connection's next request. The upstream answers the first
// upload once its body is in, with "Connection: close" (so the answer does
// not wait for the move to report); the move is held after its last
// segment until either the next request reached the upstream (the
// exchange ended without it) or the exchange waits for it. The next
// request, an upload that stalls, must still be cut by body_idle: a move
// let go after it began would pause its watch.
func TestLaneUploadMoveEndsWithItsExchange(t *testing.T) {
	const size = 256 << 10
	secondIn := make(chan struct{}) // the second request's head reached the upstream
	var conns atomic.Int32
	up := startRawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		if readHead(br) != nil {
			return
		}
		if conns.Add(1) > 1 {
			close(secondIn)
			io.Copy(io.Discard, br)
			return
		}
		if _, err := io.CopyN(io.Discard, br, size); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
	})
	var once, fenced sync.Once
	waited := make(chan struct{}) // the exchange waits for the move
	testHookUploadSegment = func(left int64) {
		if left != 0 {
			return
		}
		once.Do(func() {
			select {
			case <-secondIn:
			case <-waited:
			}
		})
	}
	testHookAwaitMove = func() { fenced.Do(func() { close(waited) }) }
	t.Cleanup(func() { testHookUploadSegment, testHookAwaitMove = nil, nil })

	_, url := outboundTo(t, "defaults: { retry: { max_retries: 0 }, timeouts: { body_idle: 200ms } }", up.addr())
	conn := dialRaw(t, url)
	br := bufio.NewReader(conn)
	fmt.Fprintf(conn, "POST /one HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", size)
	go io.Copy(conn, payload.NewReader(size))
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("first upload: %v", err)
	}
	io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK || res.Close {
		t.Fatalf("first upload: %d, close %v; want 200 on a connection kept", res.StatusCode, res.Close)
	}
	// The second upload sends a little of its body and stalls.
	fmt.Fprintf(conn, "POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", size)
	io.Copy(conn, payload.NewReader(1000))
	res, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer to a stalled upload after a spliced one: %v", err)
	}
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusGatewayTimeout || !strings.Contains(res.Header.Get("X-Ferry-Error"), "idle") {
		t.Fatalf("got %d %q (X-Ferry-Error %q), want 504 body idle", res.StatusCode, b, res.Header.Get("X-Ferry-Error"))
	}
}
