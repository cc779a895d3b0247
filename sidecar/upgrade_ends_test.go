package sidecar

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// rawTunnelOrigin is an upstream that answers its first request with a 101
// to websocket and then runs after on the raw connection.
func rawTunnelOrigin(t *testing.T, after func(c *net.TCPConn, br *bufio.Reader)) *rawServer {
	return startRawServer(t, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(20 * time.Second))
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		after(c.(*net.TCPConn), br)
	})
}

// tunnelFerry is a ferry to addr whose access log goes to the file it
// returns.
func tunnelFerry(t *testing.T, addr string) (*Sidecar, string) {
	logPath := filepath.Join(t.TempDir(), "access.log")
	return startFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: chat } ] }
services: { chat: { endpoints: [%s] } }
telemetry: { access_log: %s }
`, addr, logPath)), logPath
}

// tunnelLogLine waits for the tunnel's access log line.
func tunnelLogLine(t *testing.T, path string) string {
	t.Helper()
	var line string
	waitFor(t, "the tunnel's access log line", 5*time.Second, func() bool {
		b, _ := os.ReadFile(path)
		for l := range strings.SplitSeq(string(b), "\n") {
			if strings.Contains(l, `"status":101`) {
				line = l
				return true
			}
		}
		return false
	})
	return line
}

// openRawTunnel asks ferry at addr for a WebSocket upgrade and reads the 101.
func openRawTunnel(t *testing.T, addr string) (*net.TCPConn, *bufio.Reader) {
	t.Helper()
	c, br := dialWSRaw(t, addr)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d, want 101", res.StatusCode)
	}
	return c, br
}

func dialWSRaw(t *testing.T, addr string) (*net.TCPConn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(c, "GET /chat HTTP/1.1\r\nHost: chat.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: "+wsKey+"\r\nSec-WebSocket-Version: 13\r\n\r\n")
	return c.(*net.TCPConn), bufio.NewReader(c)
}

// A side of a tunnel that resets (its socket closed with unread bytes, or
// SO_LINGER 0) is passed on as a reset: the other side must not take the
// end of the bytes it got for a clean end. The access log says why the
// tunnel ended.
func TestTunnelResetPassedOn(t *testing.T) {
	for _, side := range []string{"caller", "upstream"} {
		t.Run(side+" resets", func(t *testing.T) {
			leakCheck(t)
			got := make(chan error, 1)
			ready := make(chan struct{}, 1)
			o := rawTunnelOrigin(t, func(c *net.TCPConn, br *bufio.Reader) {
				io.WriteString(c, "hello\n")
				if side == "upstream" {
					br.ReadString('\n')
					c.SetLinger(0)
					c.Close()
					return
				}
				br.ReadString('\n')
				ready <- struct{}{}
				_, err := io.Copy(io.Discard, br)
				got <- err
			})
			sc, logPath := tunnelFerry(t, o.addr())
			c, br := openRawTunnel(t, sc.Addr("outbound"))
			if l, err := br.ReadString('\n'); l != "hello\n" {
				t.Fatalf("caller read %q, %v", l, err)
			}
			io.WriteString(c, "data\n")
			var err error
			reason := "client_canceled"
			if side == "caller" {
				recv(t, ready, 5*time.Second, "the data to reach the upstream")
				c.SetLinger(0)
				c.Close()
				err = recv(t, got, 5*time.Second, "the upstream's read to end")
			} else {
				reason = "body_broken"
				_, err = io.Copy(io.Discard, br)
			}
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("the %s reset; the other side's read ended with %v, want a reset", side, err)
			}
			if line := tunnelLogLine(t, logPath); !strings.Contains(line, `"reason":"`+reason+`"`) {
				t.Fatalf("access log %s, want reason %s", line, reason)
			}
		})
	}
}

// A panic on one of a tunnel's own goroutines (as net/http's server made
// when a tunnel read a hijacked request's body) ends that tunnel, reset
// both ways and reported, not the process: ferry goes on serving.
func TestTunnelPanicEndsTheTunnelNotFerry(t *testing.T) {
	leakCheck(t)
	var armed atomic.Bool
	testHookTunnelCopy = func(from tunnelSide) {
		if from == callerSide && armed.Load() {
			panic("boom")
		}
	}
	t.Cleanup(func() { testHookTunnelCopy = nil })
	o := rawTunnelOrigin(t, func(c *net.TCPConn, br *bufio.Reader) {
		io.WriteString(c, "hello\n")
		io.Copy(io.Discard, br)
	})
	sc, logPath := tunnelFerry(t, o.addr())
	armed.Store(true)
	c, br := openRawTunnel(t, sc.Addr("outbound"))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	io.Copy(io.Discard, br)
	if line := tunnelLogLine(t, logPath); !strings.Contains(line, `"reason":"other"`) {
		t.Fatalf("access log %s, want reason other", line)
	}
	armed.Store(false)
	c2, br2 := openRawTunnel(t, sc.Addr("outbound"))
	defer c2.Close()
	if l, err := br2.ReadString('\n'); l != "hello\n" {
		t.Fatalf("a tunnel after the panic read %q, %v", l, err)
	}
}
