package sidecar

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ferrymesh/ferry/internal/localnet/localnettest"
	"github.com/ferrymesh/ferry/internal/payload"
)

// digestOrigin answers every request with "<bytes> <sha256>" of the body it
// read, and counts the requests that reached it.
func digestOrigin(t *testing.T) (string, *atomic.Int64) {
	var n atomic.Int64
	addr := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		h := sha256.New()
		got, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d %s", got, hex.EncodeToString(h.Sum(nil)))
	}))
	return addr, &n
}

// postThrough uploads size bytes of the payload pattern with a
// Content-Length and checks the origin read exactly them; it returns the
// response. handed: the head has a field value the lane hands to
// net/http's server (a byte above ASCII).
func postThrough(t *testing.T, c *http.Client, url string, size int64, expect, handed bool) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url+"/ul", io.NopCloser(payload.NewReader(size)))
	req.ContentLength = size
	if expect {
		req.Header.Set("Expect", "100-continue")
	}
	if handed {
		req.Header.Set("X-Odd", "caf\xe9")
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("%d %s", size, payload.Digest(size)); res.StatusCode != 200 || string(b) != want {
		t.Fatalf("status %d, origin read %q, want %q (X-Ferry-Error %q)", res.StatusCode, b, want, res.Header.Get("X-Ferry-Error"))
	}
	return res
}

// A large Content-Length upload over HTTP/1.1 moves kernel to kernel: the
// origin reads every byte, ferry counts nearly all of them as spliced, and
// the caller's connection closes after the answer.
func TestZeroCopyUploadTaken(t *testing.T) {
	up, _ := digestOrigin(t)
	_, url := outboundTo(t, "", up)
	c := h1Client()
	c.Transport.(*http.Transport).ExpectContinueTimeout = 5 * time.Second
	const size = 8 << 20
	for i, tc := range []struct{ expect, handed bool }{
		{false, false},
		{false, false}, // reusing ferry's pooled upstream connection
		{true, false},
		{true, true},
		{false, true},
	} {
		before, handed := splicedUp.Load(), laneHanded.Load()
		res := postThrough(t, c, url, size, tc.expect, tc.handed)
		// The lane keeps the connection (Expect: 100-continue or not);
		// an upload net/http serves is taken over and closes it.
		if res.Close != tc.handed {
			t.Errorf("upload %d (%+v): connection closed %v", i, tc, res.Close)
		}
		if got := laneHanded.Load() - handed; (got == 1) != tc.handed {
			t.Errorf("upload %d (%+v): %d connections handed to net/http", i, tc, got)
		}
		// ferry counts a segment once its move returned, a moment after
		// the origin may have read the last byte and answered.
		waitFor(t, fmt.Sprintf("upload %d to be counted as moved kernel to kernel", i), 5*time.Second, func() bool {
			return splicedUp.Load()-before >= size-64<<10
		})
	}
}

// Small uploads, uploads of unknown length and HTTP/2 callers keep the
// pooled-buffer path and their connections.
func TestZeroCopyUploadNotTakenElsewhere(t *testing.T) {
	up, _ := digestOrigin(t)
	_, url := outboundTo(t, "", up)
	for _, tc := range []struct {
		name     string
		client   *http.Client
		size     int64
		declared bool
	}{
		{"small", h1Client(), spliceMin - 1, true},
		{"chunked", h1Client(), 4 << 20, false},
		{"h2c caller", h2cClient(), 4 << 20, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := splicedUp.Load()
			if err := upload(context.Background(), tc.client, url, "x", tc.size, tc.declared); err != nil {
				t.Fatal(err)
			}
			if got := splicedUp.Load() - before; got != 0 {
				t.Fatalf("%d bytes went kernel to kernel", got)
			}
		})
	}
}

// An upstream that answers Expect: 100-continue with a final status is
// relayed at once, and the body is never moved.
func TestZeroCopyUploadEarlyAnswer(t *testing.T) {
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// net/http sends no 100 Continue when the handler never reads.
		http.Error(w, "too big for me", http.StatusRequestEntityTooLarge)
	}))
	_, url := outboundTo(t, "defaults: { retry: { max_retries: 0 } }", up)
	before := splicedUp.Load()
	conn := dialRaw(t, url)
	defer conn.Close()
	fmt.Fprintf(conn, "POST /ul HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", 4<<20)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(b), "too big") {
		t.Fatalf("got %d %q, want the upstream's 413", res.StatusCode, b)
	}
	if got := splicedUp.Load() - before; got != 0 {
		t.Fatalf("%d body bytes moved after a final answer", got)
	}
}

// A caller that sends less than its Content-Length and closes leaves the
// upstream with a short body (never passed off as complete) and ferry
// healthy.
func TestZeroCopyUploadCallerCutShort(t *testing.T) {
	// The origin's own server lingers 500 ms on the connection whose body
	// was cut (net/http's close-write-and-wait): not ferry's goroutine.
	opts := []goleak.Option{goleak.IgnoreCurrent(), goleak.IgnoreAnyFunction("net/http.(*conn).closeWriteAndWait")}
	t.Cleanup(func() { goleak.VerifyNone(t, opts...) })
	fdCheck(t)
	got := make(chan error, 1)
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if r.Header.Get("X-Cut") != "" {
			got <- err
			return
		}
		fmt.Fprintf(w, "%d %s", n, hex.EncodeToString(h.Sum(nil)))
	}))
	_, url := outboundTo(t, "", up)
	conn := dialRaw(t, url)
	fmt.Fprintf(conn, "POST /ul HTTP/1.1\r\nHost: x\r\nX-Cut: 1\r\nContent-Length: %d\r\n\r\n", 4<<20)
	io.Copy(conn, payload.NewReader(2<<20))
	conn.Close()
	if err := recv(t, got, 10*time.Second, "the origin's read of the short body"); err == nil {
		t.Fatal("the origin read a cut body as complete")
	}
	// ferry still serves.
	postThrough(t, h1Client(), url, 2<<20, false, false)
}

// A first endpoint that refuses connections is skipped before any body
// byte was taken: the upload goes whole to the second.
func TestZeroCopyUploadRetriedBeforeBody(t *testing.T) {
	up, n := digestOrigin(t)
	dead := localnettest.RefusedAddr(t)
	_, url := outboundTo(t, "defaults: { balancer: round_robin }", dead, up)
	for range 4 {
		postThrough(t, h1Client(), url, 2<<20, false, false)
	}
	if n.Load() != 4 {
		t.Fatalf("origin saw %d requests, want 4", n.Load())
	}
}

// The drain waits for an upload in flight on a taken-over connection.
func TestZeroCopyUploadSurvivesDrain(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-release
		h := sha256.New()
		got, _ := io.Copy(h, r.Body)
		fmt.Fprintf(w, "%d %s", got, hex.EncodeToString(h.Sum(nil)))
	}))
	sc, url := outboundTo(t, "shutdown: { grace: 20s }", up)
	done := make(chan error, 1)
	go func() {
		const size = 4 << 20
		req, _ := http.NewRequest(http.MethodPost, url+"/ul", io.NopCloser(payload.NewReader(size)))
		req.ContentLength = size
		res, err := h1Client().Do(req)
		if err != nil {
			done <- err
			return
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if want := fmt.Sprintf("%d %s", size, payload.Digest(size)); string(b) != want {
			done <- fmt.Errorf("origin read %q, want %q", b, want)
			return
		}
		done <- nil
	}()
	recv(t, started, 10*time.Second, "the upload to reach the origin")
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		drained <- sc.Shutdown(ctx)
	}()
	waitFor(t, "ferry to report not ready", 5*time.Second, func() bool { return !sc.Ready() })
	select {
	case err := <-drained:
		t.Fatalf("drain ended with the upload in flight: %v", err)
	default:
	}
	close(release)
	if err := recv(t, done, 20*time.Second, "the upload"); err != nil {
		t.Fatal(err)
	}
	if err := recv(t, drained, 20*time.Second, "the drain"); err != nil {
		t.Fatal(err)
	}
}

// A spliced upload takes a pooled connection only when it carried a
// request within uploadReuseIdle: an older one may be closed by the
// upstream for idleness just as the unreplayable body goes out. Bodiless
// requests still take it.
func TestZeroCopyUploadAvoidsLongIdleConnections(t *testing.T) {
	f, addr := idlePoolTo(t)
	old, _, err := f.get(context.Background(), addr, true, poolIdleTimeout, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.put(addr, old, 0)
	f.mu.Lock()
	old.since = monoNow() - int64(2*uploadReuseIdle)
	f.mu.Unlock()
	c, reused, err := f.get(context.Background(), addr, false, uploadReuseIdle, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.tc.Close()
	if reused || c == old {
		t.Fatal("an upload took a connection idle for longer than uploadReuseIdle")
	}
	again, reused, err := f.get(context.Background(), addr, false, poolIdleTimeout, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !reused || again != old {
		t.Fatal("a bodiless request did not get the pooled connection")
	}
}

// writeStatus writes every status line as net/http's would read it back:
// the code's three digits and its text (or "status code N").
func TestWriteStatus(t *testing.T) {
	for _, code := range []int{100, 101, 103, 200, 204, 299, 404, 418, 503, 599, 999, 1000, 42} {
		var b strings.Builder
		w := &connWriter{bw: bufio.NewWriter(&b)}
		w.writeStatus(code)
		w.bw.Flush()
		text := http.StatusText(code)
		if text == "" {
			text = fmt.Sprintf("status code %d", code)
		}
		if want := fmt.Sprintf("HTTP/1.1 %d %s\r\n", code, text); b.String() != want {
			t.Errorf("code %d: %q, want %q", code, b.String(), want)
		}
	}
}
