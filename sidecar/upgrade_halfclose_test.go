package sidecar

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/ferrymesh/ferry/internal/syncbuf"
	"github.com/ferrymesh/ferry/telemetry"
)

// tracedTunnel is a traced ferry whose chat service leads to addr, with
// more timeouts for it (YAML flow mapping entries, may be empty).
func tracedTunnel(t *testing.T, addr, timeouts string) (*Sidecar, *tracetest.SpanRecorder, *syncbuf.Buffer) {
	t.Helper()
	return tracedFerry(t, tunnelConfig(addr, timeouts))
}

// tunnelConfig is tracedTunnel's config; its inbound listener leads to
// addr too.
func tunnelConfig(addr, timeouts string) string {
	return fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: chat } ] }
inbound: { listen: 127.0.0.1:0, app: %s }
services: { chat: { endpoints: [%s], timeouts: { %s } } }
`, addr, addr, timeouts)
}

// lineReader reports each line the upstream reads on got, then how its
// reading ended: "EOF" for a clean end, else the error.
func lineReader(br *bufio.Reader, got chan<- string) {
	for {
		l, err := br.ReadString('\n')
		switch {
		case err == nil:
			got <- l
			continue
		case errors.Is(err, io.EOF) && l == "":
			got <- "EOF"
		case errors.Is(err, syscall.ECONNRESET):
			got <- "reset"
		default:
			got <- fmt.Sprintf("%q then %v", l, err)
		}
		return
	}
}

// readEOF asserts the caller's read side of the tunnel ended cleanly, with
// nothing more.
func readEOF(t *testing.T, c *net.TCPConn, br *bufio.Reader, after string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if rest, err := io.ReadAll(br); err != nil || len(rest) > 0 {
		t.Fatalf("after %s the caller read %q, %v; want a clean end (EOF) at once", after, rest, err)
	}
}

// An upstream that half-closes its side of a tunnel (it sent its last
// answer and still reads) has that end passed on to the caller as a
// half-close; what the caller sends afterwards still reaches the upstream,
// and once the caller ends its side too, the tunnel is over, clean.
func TestTunnelUpstreamHalfCloseCallerSendsOn(t *testing.T) {
	for _, listener := range []string{"outbound", "inbound"} {
		t.Run(listener, func(t *testing.T) { testTunnelUpstreamHalfCloseCallerSendsOn(t, listener) })
	}
}

func testTunnelUpstreamHalfCloseCallerSendsOn(t *testing.T, listener string) {
	leakCheck(t)
	got := make(chan string, 8)
	o := rawTunnelOrigin(t, func(c *net.TCPConn, br *bufio.Reader) {
		io.WriteString(c, "last answer\n")
		if err := c.CloseWrite(); err != nil {
			got <- "CloseWrite: " + err.Error()
			return
		}
		lineReader(br, got)
	})
	sc, rec, logs := tracedTunnel(t, o.addr(), "")
	c, br := openRawTunnel(t, sc.Addr(listener))
	if l, err := br.ReadString('\n'); l != "last answer\n" {
		t.Fatalf("caller read %q, %v", l, err)
	}
	readEOF(t, c, br, "the upstream's half-close")
	for _, l := range []string{"more after your end\n", "and the rest\n"} {
		if _, err := io.WriteString(c, l); err != nil {
			t.Fatalf("caller's write after the upstream's half-close: %v", err)
		}
		if r := recv(t, got, 5*time.Second, "the caller's line at the upstream"); r != l {
			t.Fatalf("upstream read %s, want %q: the caller's bytes after the upstream's half-close were not passed on", r, l)
		}
	}
	if n := openTunnels(sc); n != 1 {
		t.Fatalf("%d tunnels tracked while the caller still sends, want 1", n)
	}
	c.Close()
	if r := recv(t, got, 5*time.Second, "the caller's end at the upstream"); r != "EOF" {
		t.Fatalf("upstream's read ended with %s, want EOF (the caller's clean end)", r)
	}
	expectOutcome(t, rec, logs, 101, "")
	waitFor(t, "the tunnel to be forgotten", 5*time.Second, func() bool { return openTunnels(sc) == 0 })
}

// halfClosedTimedOut waits for a tunnel's report and checks it says the
// half-closed timer ended it, no sooner than after.
func halfClosedTimedOut(t *testing.T, rec *tracetest.SpanRecorder, logs *syncbuf.Buffer, start time.Time, after time.Duration) {
	t.Helper()
	expectOutcome(t, rec, logs, 101, telemetry.ReasonTimeout)
	if d := time.Since(start); d < after {
		t.Errorf("the tunnel ended %v after its first half-close, before timeouts.tunnel_half_closed (%v)", d, after)
	}
}

// timeouts.tunnel_half_closed bounds a tunnel one side of which ended its
// sending: once it elapses the tunnel is reset both ways (the side still
// sending was cut) and reported timeout. Either side's half-close starts
// it; a reload's value holds for the tunnels opened after it.
func TestTunnelHalfClosedTimeout(t *testing.T) {
	const limit = 300 * time.Millisecond
	t.Run("upstream half-closed", func(t *testing.T) {
		leakCheck(t)
		got := make(chan string, 8)
		halfClose := make(chan struct{})
		o := rawTunnelOrigin(t, func(c *net.TCPConn, br *bufio.Reader) {
			io.WriteString(c, "last answer\n")
			<-halfClose
			c.CloseWrite()
			lineReader(br, got)
		})
		sc, rec, logs := tracedTunnel(t, o.addr(), fmt.Sprintf("tunnel_half_closed: %v", limit))
		c, br := openRawTunnel(t, sc.Addr("outbound"))
		if l, err := br.ReadString('\n'); l != "last answer\n" {
			t.Fatalf("caller read %q, %v", l, err)
		}
		start := time.Now()
		close(halfClose)
		readEOF(t, c, br, "the upstream's half-close")
		halfClosedTimedOut(t, rec, logs, start, limit)
		// The caller's way, still open, was cut: the upstream sees a
		// reset, not a clean end.
		if r := recv(t, got, 5*time.Second, "the upstream's read to end"); r != "reset" {
			t.Fatalf("upstream's read ended with %s, want a reset", r)
		}
	})
	t.Run("caller half-closed", func(t *testing.T) {
		leakCheck(t)
		got := make(chan string, 8)
		release := make(chan struct{})
		o := rawTunnelOrigin(t, func(c *net.TCPConn, br *bufio.Reader) {
			lineReader(br, got)
			io.WriteString(c, "still answering\n")
			<-release // its side stays open, silent
		})
		t.Cleanup(func() { close(release) })
		sc, rec, logs := tracedTunnel(t, o.addr(), fmt.Sprintf("tunnel_half_closed: %v", limit))
		c, br := openRawTunnel(t, sc.Addr("outbound"))
		start := time.Now()
		c.CloseWrite()
		if r := recv(t, got, 5*time.Second, "the caller's half-close at the upstream"); r != "EOF" {
			t.Fatalf("upstream read %s, want EOF", r)
		}
		if l, err := br.ReadString('\n'); l != "still answering\n" {
			t.Fatalf("caller read %q, %v", l, err)
		}
		halfClosedTimedOut(t, rec, logs, start, limit)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := br.ReadByte(); !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("caller's read ended with %v, want a reset (its way was cut)", err)
		}
	})
	t.Run("set by a reload", func(t *testing.T) {
		leakCheck(t)
		o := rawTunnelOrigin(t, func(c *net.TCPConn, br *bufio.Reader) {
			c.CloseWrite()
			io.Copy(io.Discard, br)
		})
		sc, rec, logs := tracedTunnel(t, o.addr(), "")
		cfg, err := ParseConfig([]byte(tunnelConfig(o.addr(), fmt.Sprintf("tunnel_half_closed: %v", limit))))
		if err != nil {
			t.Fatal(err)
		}
		if err := sc.Reload(context.Background(), cfg); err != nil {
			t.Fatal(err)
		}
		// The default (10s) is past expectOutcome's wait: only the
		// reloaded value ends the tunnel in time.
		start := time.Now()
		c, br := openRawTunnel(t, sc.Addr("outbound"))
		readEOF(t, c, br, "the upstream's half-close")
		halfClosedTimedOut(t, rec, logs, start, limit)
	})
}

// A WebSocket server that closes its connection fully after its Close
// frame: the caller's answer (its own Close frame) and anything it sends
// after it meet a connection that is gone, which is the normal end of the
// tunnel, reported clean, not a broken upstream.
func TestTunnelUpstreamFullCloseIsClean(t *testing.T) {
	for _, caller := range []string{"answers and closes", "keeps sending", "answers and closes, both ends seen at once", "answers and closes, the caller's way reported first"} {
		t.Run(caller, func(t *testing.T) {
			leakCheck(t)
			if strings.HasSuffix(caller, "reported first") {
				// The way back reports the upstream's end only once
				// the caller's way ended: it passed the end on to the
				// caller first, whose answer met the closed upstream
				// (or not, when the reset came late) before the report.
				callerEnded := make(chan struct{})
				testHookTunnelEnd = func(from tunnelSide) {
					if from == callerSide {
						close(callerEnded)
						return
					}
					select {
					case <-callerEnded:
					case <-time.After(5 * time.Second):
					}
				}
				defer func() { testHookTunnelEnd = nil }()
			}
			if strings.HasSuffix(caller, "at once") {
				// The tunnel looks at the ends only once both ways
				// ended, as a loaded machine may have it: it used to
				// pick either first, and the caller's write to the
				// closed upstream read as a break half the time.
				testHookTunnelEnds = func(up, down <-chan tunnelEnd) {
					deadline := time.Now().Add(5 * time.Second)
					for (len(up) == 0 || len(down) == 0) && time.Now().Before(deadline) {
						time.Sleep(time.Millisecond) // polling the channels' state
					}
				}
				defer func() { testHookTunnelEnds = nil }()
			}
			o := rawTunnelOrigin(t, func(c *net.TCPConn, br *bufio.Reader) {
				io.WriteString(c, "close frame\n")
				// Returning closes the connection, both ways.
			})
			sc, rec, logs := tracedTunnel(t, o.addr(), "")
			c, br := openRawTunnel(t, sc.Addr("outbound"))
			if l, err := br.ReadString('\n'); l != "close frame\n" {
				t.Fatalf("caller read %q, %v", l, err)
			}
			readEOF(t, c, br, "the upstream's close")
			if strings.HasPrefix(caller, "answers and closes") {
				io.WriteString(c, "close frame back\n")
				c.Close()
			} else {
				// Until ferry ends the tunnel: the writes to the gone
				// upstream fail (EPIPE, ECONNRESET) and that ends it.
				deadline := time.Now().Add(5 * time.Second)
				for {
					if _, err := io.WriteString(c, "more\n"); err != nil {
						break
					}
					if time.Now().After(deadline) {
						t.Fatal("the tunnel to a gone upstream still takes the caller's bytes after 5s")
					}
					time.Sleep(5 * time.Millisecond) // pacing the writes, not waiting for anything
				}
			}
			expectOutcome(t, rec, logs, 101, "")
		})
	}
}

// The drain's grace end closes a tunnel the upstream half-closed while
// the caller still sends; it is reported grace_ended, as any tunnel it
// cuts.
func TestTunnelUpstreamHalfClosedEndsAtDrain(t *testing.T) {
	leakCheck(t)
	got := make(chan string, 8)
	o := rawTunnelOrigin(t, func(c *net.TCPConn, br *bufio.Reader) {
		c.CloseWrite()
		lineReader(br, got)
	})
	sc, rec, logs := tracedTunnel(t, o.addr(), "tunnel_half_closed: 0s")
	c, br := openRawTunnel(t, sc.Addr("outbound"))
	readEOF(t, c, br, "the upstream's half-close")
	io.WriteString(c, "still sending\n")
	if r := recv(t, got, 5*time.Second, "the caller's line at the upstream"); r != "still sending\n" {
		t.Fatalf("upstream read %s", r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := sc.Shutdown(ctx); err == nil {
		t.Fatal("Shutdown reported a clean drain although a half-closed tunnel outlived the grace period")
	}
	recv(t, got, 5*time.Second, "the upstream's side to be closed")
	expectOutcome(t, rec, logs, 101, telemetry.ReasonGraceEnded)
}
