package sidecar

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/internal/payload"
)

// slowReadingOrigin is an HTTP/1.1 upstream that reads a request body
// piece bytes at a time, pausing pace after each, with a small receive
// buffer: its window opens a little at a time, as a slow but steady
// consumer's does. (Not smaller than loopback's MSS of 64 KiB: with less,
// the window opens by less than a segment and the sender waits for its
// zero-window probes, which back off to seconds: TCP itself stalls then.) After stopAfter bytes (0: never) it reads nothing more
// until the test ends. It answers 200 with the number of bytes it read.
func slowReadingOrigin(t *testing.T, piece int64, pace time.Duration, stopAfter int64) *rawServer {
	ended := make(chan struct{})
	defer t.Cleanup(func() { close(ended) }) // before the server's cleanup, which waits for serve
	return startRawServer(t, func(c net.Conn) {
		c.(*net.TCPConn).SetReadBuffer(128 << 10)
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		var n int64
		for stopAfter == 0 || n < stopAfter {
			m, err := io.CopyN(io.Discard, req.Body, piece)
			n += m
			if err != nil {
				break
			}
			time.Sleep(pace) // the origin's pace, not synchronisation
		}
		if stopAfter > 0 && n >= stopAfter {
			<-ended
			return
		}
		body := fmt.Sprint(n)
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
	})
}

// slowUploadCallers are the callers whose uploads reach an HTTP/1.1
// upstream through net/http's Transport: a chunked HTTP/1.1 upload (on a
// raw connection, which reads the answer whatever became of the upload),
// and any upload over h2c. Each posts size bytes to base+"/up" and returns
// the answer's status, and its body and X-Ferry-Error.
var slowUploadCallers = []struct {
	name   string
	upload func(t *testing.T, base string, size int64) (int, string, error)
}{
	{"http1 chunked", func(t *testing.T, base string, size int64) (int, string, error) {
		c := dialRaw(t, base)
		c.SetDeadline(time.Now().Add(30 * time.Second))
		go func() {
			fmt.Fprintf(c, "POST /up HTTP/1.1\r\nHost: s\r\nTransfer-Encoding: chunked\r\n\r\n")
			cw := httputil.NewChunkedWriter(c)
			if _, err := io.Copy(cw, payload.NewReader(size)); err == nil {
				cw.Close()
				io.WriteString(c, "\r\n")
			}
		}()
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return 0, "", err
		}
		return answer(res)
	}},
	{"h2c", func(t *testing.T, base string, size int64) (int, string, error) {
		c := h2cFor(t)
		c.Timeout = 30 * time.Second
		req, err := http.NewRequest(http.MethodPost, base+"/up", io.NopCloser(payload.NewReader(size)))
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = -1
		res, err := c.Do(req)
		if err != nil {
			return 0, "", err
		}
		return answer(res)
	}},
}

// answer reads res: its status, and its body and X-Ferry-Error.
func answer(res *http.Response) (int, string, error) {
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, string(b) + " " + res.Header.Get("X-Ferry-Error"), err
}

// TestSlowSteadyUpstreamReaderNotCut is TestSlowSteadySplicedUploadNotCut
// for uploads that go upstream through net/http's Transport, the pace
// being the upstream's: the caller sends the body at once, the upstream
// reads 64 KiB every 100 ms. ferry's writes to the upstream wait for its
// window to open far enough (the kernel wakes a writer once a third of a
// send buffer of MiBs is free: over a second at this pace), longer than
// body_idle, and meanwhile ferry reads nothing of the caller: the body is
// moving all the same. body_idle is 1s, not less, so that a loaded
// machine's pause in the origin's reading is not taken for a stall.
func TestSlowSteadyUpstreamReaderNotCut(t *testing.T) {
	const size = 5 << 20 // about 8 s at the origin's pace
	up := slowReadingOrigin(t, 64<<10, 100*time.Millisecond, 0)
	sc := startFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: svc } ] }
services: { svc: { endpoints: [%s], protocol: http1, timeouts: { body_idle: 1s } } }
`, up.addr()))
	for _, caller := range slowUploadCallers {
		t.Run(caller.name, func(t *testing.T) {
			status, body, err := caller.upload(t, "http://"+sc.Addr("outbound"), size)
			if want := fmt.Sprintf("%d ", size); err != nil || status != http.StatusOK || body != want {
				t.Fatalf("got %d %q, err %v; want 200 %q: a steadily read upload was cut", status, body, err, want)
			}
		})
	}
}

// TestStalledUpstreamReaderCut: an upstream that stops reading an upload
// that goes through net/http's Transport is cut by body_idle, watched
// socket or not: a 504 naming the idle body, well before the caller would
// give up.
func TestStalledUpstreamReaderCut(t *testing.T) {
	up := slowReadingOrigin(t, 16<<10, 10*time.Millisecond, 512<<10)
	sc := startFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: svc } ] }
services: { svc: { endpoints: [%s], protocol: http1, retry: { max_retries: 0 }, timeouts: { body_idle: 300ms } } }
`, up.addr()))
	for _, caller := range slowUploadCallers {
		t.Run(caller.name, func(t *testing.T) {
			start := time.Now()
			status, body, err := caller.upload(t, "http://"+sc.Addr("outbound"), 64<<20)
			if took := time.Since(start); err != nil || status != http.StatusGatewayTimeout || !strings.Contains(body, "idle") || took > 5*time.Second {
				t.Fatalf("got %d %q, err %v after %v; want 504 body idle", status, body, err, time.Since(start).Round(time.Millisecond))
			}
		})
	}
}
