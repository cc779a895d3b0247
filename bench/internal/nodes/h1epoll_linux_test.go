//go:build linux && (amd64 || arm64)

package nodes

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// epollFixture is an origin and the epoll relay in front of it, in this
// process. The loops hold their Ps (the raw wait), so the test runs with
// two more Ps than loops for its own goroutines and the origin's.
type epollFixture struct {
	relay  *h1Epoll
	origin *httptest.Server
	open   atomic.Int64 // the origin's connections not yet closed
}

func startEpollFixture(t *testing.T, o H1EpollOptions) *epollFixture {
	t.Helper()
	prev := runtime.GOMAXPROCS(o.Loops + 2)
	f := &epollFixture{origin: httptest.NewUnstartedServer(OriginHandler())}
	f.origin.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			f.open.Add(1)
		case http.StateClosed, http.StateHijacked:
			f.open.Add(-1)
		}
	}
	f.origin.Start()
	fds := openFDs(t)
	var err error
	f.relay, err = startH1Epoll("127.0.0.1:0", strings.TrimPrefix(f.origin.URL, "http://"), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		f.relay.close()
		f.waitOriginConns(t, 0) // the origin's ends of the relay's connections, in this process too
		if n := openFDs(t); n != fds {
			t.Errorf("%d fds open after the relay closed; %d before it started", n, fds)
		}
		f.origin.Close()
		runtime.GOMAXPROCS(prev)
	})
	return f
}

func openFDs(t *testing.T) int {
	des, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(des)
}

// waitOriginConns polls until the origin has n connections open.
func (f *epollFixture) waitOriginConns(t *testing.T, n int64) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); f.open.Load() != n; {
		if time.Now().After(deadline) {
			t.Fatalf("origin has %d connections open; want %d", f.open.Load(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// rawClient is one keep-alive connection to the relay, written and read
// by hand so that the test decides how requests are split and pipelined.
type rawClient struct {
	c  net.Conn
	br *bufio.Reader
}

func dialRelay(t *testing.T, addr string) *rawClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	return &rawClient{c: c, br: bufio.NewReader(c)}
}

// get returns the body of GET /?size=n.
func (rc *rawClient) get(n int64) ([]byte, error) {
	if _, err := fmt.Fprintf(rc.c, "GET /?size=%d HTTP/1.1\r\nHost: origin\r\n\r\n", n); err != nil {
		return nil, err
	}
	return rc.read()
}

// post sends n bytes of body with a Content-Length and returns the count
// the origin answered.
func (rc *rawClient) post(n int64) (string, error) {
	if _, err := fmt.Fprintf(rc.c, "POST /upload HTTP/1.1\r\nHost: origin\r\nContent-Length: %d\r\n\r\n", n); err != nil {
		return "", err
	}
	if _, err := io.Copy(rc.c, NewBody(n)); err != nil {
		return "", err
	}
	b, err := rc.read()
	return string(b), err
}

func (rc *rawClient) read() ([]byte, error) {
	res, err := http.ReadResponse(rc.br, nil)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %s", res.Status)
	}
	return io.ReadAll(res.Body)
}

func body(n int64) []byte {
	b, _ := io.ReadAll(NewBody(n))
	return b
}

// The epoll relay carries GETs and POSTs with empty, small and
// larger-than-its-buffer bodies, byte for byte, on several keep-alive
// connections at once, with either blocking wait.
func TestH1EpollRelays(t *testing.T) {
	for _, o := range []H1EpollOptions{{Loops: 2}, {Loops: 2, SyscallWait: true}} {
		t.Run(fmt.Sprintf("syscallWait=%v", o.SyscallWait), func(t *testing.T) {
			f := startEpollFixture(t, o)
			const clients = 6
			sizes := []int64{0, 1024, 1<<20 + 3, epollBufSize, epollBufSize - 1}
			var wg sync.WaitGroup
			errs := make(chan error, clients)
			for i := range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rc := dialRelay(t, f.relay.addr)
					defer rc.c.Close()
					for round := range 3 {
						for j := range sizes {
							n := sizes[(i+j+round)%len(sizes)]
							got, err := rc.get(n)
							if err != nil || !bytes.Equal(got, body(n)) {
								errs <- fmt.Errorf("client %d: GET %d: %d bytes, %v", i, n, len(got), err)
								return
							}
							count, err := rc.post(n)
							if err != nil || count != strconv.FormatInt(n, 10) {
								errs <- fmt.Errorf("client %d: POST %d: origin counted %q, %v", i, n, count, err)
								return
							}
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			// Keep-alive all the way: one origin connection per client,
			// and none once the clients are gone.
			if t.Failed() {
				return
			}
			f.waitOriginConns(t, 0)
		})
	}
}

// A head that arrives in pieces, and two requests in one write, are
// relayed as the messages they are: the second request waits its turn.
func TestH1EpollSplitAndPipelined(t *testing.T) {
	f := startEpollFixture(t, H1EpollOptions{Loops: 1})
	rc := dialRelay(t, f.relay.addr)
	defer rc.c.Close()
	req := "GET /?size=777 HTTP/1.1\r\nHost: origin\r\n\r\n"
	for _, piece := range []string{req[:5], req[5:20], req[20 : len(req)-3], req[len(req)-3:]} {
		if _, err := io.WriteString(rc.c, piece); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := rc.read(); err != nil || !bytes.Equal(got, body(777)) {
		t.Fatalf("split head: %d bytes, %v", len(got), err)
	}
	post := "POST /upload HTTP/1.1\r\nHost: origin\r\nContent-Length: 5\r\n\r\nhello"
	if _, err := io.WriteString(rc.c, post+req+post); err != nil {
		t.Fatal(err)
	}
	for i, want := range [][]byte{[]byte("5"), body(777), []byte("5")} {
		if got, err := rc.read(); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("pipelined response %d: %q, %v", i, got[:min(len(got), 20)], err)
		}
	}
}

// A caller that goes away halfway through a body takes its upstream
// connection with it and nothing else: a connection open beside it, and
// new ones, are served.
func TestH1EpollCallerGoneMidBody(t *testing.T) {
	f := startEpollFixture(t, H1EpollOptions{Loops: 1})
	other := dialRelay(t, f.relay.addr)
	defer other.c.Close()
	if _, err := other.get(10); err != nil {
		t.Fatal(err)
	}
	quitter := dialRelay(t, f.relay.addr)
	if _, err := fmt.Fprintf(quitter.c, "POST /upload HTTP/1.1\r\nHost: origin\r\nContent-Length: %d\r\n\r\n", 1<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(quitter.c, NewBody(1<<20), 100<<10); err != nil {
		t.Fatal(err)
	}
	f.waitOriginConns(t, 2)
	quitter.c.Close()
	f.waitOriginConns(t, 1) // the quitter's upstream connection, closed by the relay

	// A caller that leaves halfway through a response it asked for.
	reader := dialRelay(t, f.relay.addr)
	if _, err := fmt.Fprintf(reader.c, "GET /?size=%d HTTP/1.1\r\nHost: origin\r\n\r\n", 8<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(reader.br, make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	reader.c.Close()
	f.waitOriginConns(t, 1)

	if got, err := other.get(1 << 20); err != nil || !bytes.Equal(got, body(1<<20)) {
		t.Fatalf("the connection beside: %d bytes, %v", len(got), err)
	}
	fresh := dialRelay(t, f.relay.addr)
	defer fresh.c.Close()
	if count, err := fresh.post(3000); err != nil || count != "3000" {
		t.Fatalf("a new connection: %q, %v", count, err)
	}
}

// When the upstream is down, the relay closes the caller's connection
// instead of holding it.
func TestH1EpollUpstreamDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String()
	ln.Close()
	prev := runtime.GOMAXPROCS(3)
	defer runtime.GOMAXPROCS(prev)
	s, err := startH1Epoll("127.0.0.1:0", down, H1EpollOptions{Loops: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	rc := dialRelay(t, s.addr)
	defer rc.c.Close()
	_ = rc.c.SetDeadline(time.Now().Add(10 * time.Second))
	// The write may or may not land before the close; the read must end.
	_, _ = io.WriteString(rc.c, "GET / HTTP/1.1\r\nHost: origin\r\n\r\n")
	b, err := io.ReadAll(rc.br)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the caller's connection stayed open with the upstream down")
	}
	if len(b) != 0 {
		t.Fatalf("read %q; want the connection closed", b)
	}
}

// The stub's error, and ServeH1Epoll's, name what went wrong.
func TestH1EpollBadUpstream(t *testing.T) {
	if err := ServeH1Epoll("127.0.0.1:0", "no-port"); err == nil || !strings.Contains(err.Error(), "upstream") {
		t.Fatalf("ServeH1Epoll with a bad upstream: %v", err)
	}
}
