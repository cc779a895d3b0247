package sidecar

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A closed h2c upstream connection is let go at once: nothing of it (its
// read buffer of up to h2MaxFrame, its header tables, its pool) stays in
// memory once it closed. net/http's HTTP/2 client keeps each connection it
// closed referenced by its read-idle timer (SendPingTimeout) until the
// timer fires, h2PingAfter later, so under churn (reloads retiring pools,
// upstreams closing connections or restarting) ferry's heap grew by every
// connection closed in the last 5 minutes.
func TestClosedH2CUpstreamConnectionsAreFreed(t *testing.T) {
	var dialed, freed atomic.Int64
	hook := func(c *frameCapConn) {
		dialed.Add(1)
		runtime.AddCleanup(c, func(int) { freed.Add(1) }, 0)
	}
	testHookH2CDialed.Store(&hook)
	t.Cleanup(func() { testHookH2CDialed.Store(nil) })
	addr := h2cOrigin(t, nil, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello")
	}))
	sc, base := ferryWithProtocol(t, "h2c", addr)
	const conns = 20
	for i := range conns {
		c := h2cClient()
		res, err := c.Get(base + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		c.CloseIdleConnections()
		// A reload that changes the service's settings retires its pools,
		// closing the idle connection the request left.
		cfg := mustParse(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound:
  listen: 127.0.0.1:0
  routes: [ { service: svc } ]
services:
  svc: { endpoints: [%s], protocol: h2c, retry: { max_retries: %d } }
telemetry: { access_log: "off" }
`, addr, i%2))
		if err := sc.Reload(context.Background(), cfg); err != nil {
			t.Fatal(err)
		}
	}
	if n := dialed.Load(); n != conns {
		t.Fatalf("%d h2c upstream connections dialled for %d requests, one per generation", n, conns)
	}
	// Every connection but the one in force's (none: the last reload
	// retired it too) was closed; all of them must become garbage.
	deadline := time.Now().Add(10 * time.Second)
	for freed.Load() < conns {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d closed h2c upstream connections still held in memory 10 s after they closed (h2PingAfter is %v)", conns-freed.Load(), conns, h2PingAfter)
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
}

// writeConn records what is written to it.
type writeConn struct {
	net.Conn
	mu  sync.Mutex
	out []byte
}

func (w *writeConn) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.out = append(w.out, b...)
	return len(b), nil
}

func (w *writeConn) Close() error { return nil }

// The PING the pinger sends goes between two of the client's frames, never
// inside one, however the client's writes cut its frames, and nothing of
// the client's bytes is lost or reordered.
func TestH2CPingGoesBetweenFrames(t *testing.T) {
	preface := []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	stream := append(append(append(append([]byte{}, preface...), pingTestFrame(0x4, 0, 12)...), pingTestFrame(0x0, 0, 70000)...), pingTestFrame(0x1, 0, 30)...)
	for _, cut := range []int{1, 5, 9, 20, 24, 30, 33, 40, 100, 70000, 70050} {
		for _, owedAt := range []int{0, cut / 2, cut} {
			out := writeWithPingDue(t, stream, cut, owedAt)
			if !bytes.HasPrefix(out, preface) {
				t.Fatalf("cut %d, PING owed at %d: the preface is not first", cut, owedAt)
			}
			var rest []byte
			pings := 0
			for i := len(preface); i < len(out); {
				if len(out)-i < h2FrameHeaderLen {
					t.Fatalf("cut %d, PING owed at %d: %d bytes left, less than a frame header", cut, owedAt, len(out)-i)
				}
				n := int(out[i])<<16 | int(out[i+1])<<8 | int(out[i+2])
				if out[i+3] == 0x6 && n == 8 {
					pings++
				} else {
					rest = append(rest, out[i:i+h2FrameHeaderLen+n]...)
				}
				i += h2FrameHeaderLen + n
			}
			if pings != 1 || !bytes.Equal(rest, stream[len(preface):]) {
				t.Fatalf("cut %d, PING owed at %d: %d PINGs, the client's frames intact: %v", cut, owedAt, pings, bytes.Equal(rest, stream[len(preface):]))
			}
		}
	}
}

// pingTestFrame is an HTTP/2 frame of type typ with flags on stream 1, its
// n payload bytes all typ.
func pingTestFrame(typ, flags byte, n int) []byte {
	f := []byte{byte(n >> 16), byte(n >> 8), byte(n), typ, flags, 0, 0, 0, 1}
	return append(f, bytes.Repeat([]byte{typ}, n)...)
}

// writeWithPingDue writes stream through a pinging frameCapConn in writes
// of cut bytes, the PING coming due once owedAt bytes were written (or
// after the last write), and returns what reached the connection.
func writeWithPingDue(t *testing.T, stream []byte, cut, owedAt int) []byte {
	t.Helper()
	wc := &writeConn{}
	c := &frameCapConn{Conn: wc}
	c.startPinger(time.Hour, time.Hour)
	written := 0
	for written < len(stream) {
		if written >= owedAt && !c.ping.owed && !pinged(wc) {
			c.ping.fire()
		}
		end := min(written+cut, len(stream))
		if n, err := c.Write(stream[written:end]); n != end-written || err != nil {
			t.Fatalf("cut %d: Write = %d, %v", cut, n, err)
		}
		written = end
	}
	if !c.ping.owed && !pinged(wc) {
		c.ping.fire() // due after the last write
	}
	c.Close()
	return wc.out
}

func pinged(wc *writeConn) bool {
	wc.mu.Lock()
	defer wc.mu.Unlock()
	return bytes.Contains(wc.out, []byte{0, 0, 8, 6})
}
