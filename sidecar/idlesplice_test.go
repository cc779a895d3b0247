package sidecar

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/internal/payload"
)

// body_idle cuts a stalled body moved kernel to kernel within a small
// margin of its value, as it does a relayed one. A move reports nothing
// until a segment (1 MiB) ends, so the timer asks the sockets whether bytes
// moved; asked once per body_idle, a body that stalled just after a look
// was taken for moving at the next, and cut only a second body_idle later:
// 2x its value. The stall here comes mid-segment, 2.5 MiB in, which the
// timer saw moving at its first look.
//
// The bound leaves the machine a wide margin: 1.5x body_idle (3 s), where
// the timer now fires by 1.125x and fired at 2x before; never before
// body_idle (0.9x, for the time the last bytes took to cross).
func TestStalledSplicedBodyCutWithinBodyIdle(t *testing.T) {
	const idle = 2 * time.Second
	const sent, size = 5 << 19, 8 << 20 // 2.5 MiB of 8
	check := func(t *testing.T, took time.Duration, what string) {
		t.Helper()
		if took < idle*9/10 || took > idle*3/2 {
			t.Fatalf("%s %v after the body stalled, want within [%v, %v] (body_idle %v)", what, took.Round(time.Millisecond), idle*9/10, idle*3/2, idle)
		}
		t.Logf("%s %v after the body stalled (body_idle %v)", what, took.Round(time.Millisecond), idle)
	}

	t.Run("upload", func(t *testing.T) {
		upAddr := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
		}))
		_, url := outboundTo(t, fmt.Sprintf("defaults: { retry: { max_retries: 0 }, timeouts: { body_idle: %v } }", idle), upAddr)
		conn := dialRaw(t, url)
		before := splicedUp.Load()
		fmt.Fprintf(conn, "POST /ul HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", size)
		if _, err := io.Copy(conn, payload.NewReader(sent)); err != nil {
			t.Fatal(err)
		}
		stalled := time.Now()
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("no answer to a stalled upload: %v", err)
		}
		took := time.Since(stalled)
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusGatewayTimeout || !strings.Contains(res.Header.Get("X-Ferry-Error"), "idle") {
			t.Fatalf("got %d %q, want 504 body idle", res.StatusCode, b)
		}
		waitFor(t, "the body to take the kernel-to-kernel path this test is about", 5*time.Second, func() bool { return splicedUp.Load() != before })
		check(t, took, "504")
	})

	t.Run("download", func(t *testing.T) {
		var served atomic.Bool
		up := startRawServer(t, func(c net.Conn) {
			if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
				return
			}
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", size)
			io.Copy(c, payload.NewReader(sent))
			served.Store(true)
			c.Read(make([]byte, 1)) // stall until ferry or the test closes it
		})
		_, url := outboundTo(t, fmt.Sprintf("defaults: { retry: { max_retries: 0 }, timeouts: { body_idle: %v } }", idle), up.addr())
		conn := dialRaw(t, url)
		before := spliced.Load()
		io.WriteString(conn, "GET /dl HTTP/1.1\r\nHost: x\r\n\r\n")
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.CopyN(io.Discard, res.Body, sent); err != nil {
			t.Fatalf("the first %d bytes: %v", sent, err)
		}
		stalled := time.Now()
		n, err := io.Copy(io.Discard, res.Body)
		took := time.Since(stalled)
		if err == nil || n != 0 || !served.Load() {
			t.Fatalf("after the stall: read %d more bytes, err %v, want the body cut", n, err)
		}
		waitFor(t, "the body to take the kernel-to-kernel path this test is about", 5*time.Second, func() bool { return spliced.Load() != before })
		check(t, took, "body cut")
	})
}
