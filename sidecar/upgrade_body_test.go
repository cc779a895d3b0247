package sidecar

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// upgradeBodySize is the body of the upgrade requests below: larger than
// any buffer on the way.
const upgradeBodySize = 1 << 20

// upgradeBody is a body of upgradeBodySize whose every 16 bytes name
// their offset, so a byte lost, repeated or moved shows.
func upgradeBody() []byte {
	var b bytes.Buffer
	for b.Len() < upgradeBodySize {
		fmt.Fprintf(&b, "%015x\n", b.Len())
	}
	return b.Bytes()
}

// upstreamRead is what an upstream read of an upgrade request with a body:
// the body, the first line after it (the tunnel's) and the error that
// ended its reading, if any.
type upstreamRead struct {
	body []byte
	line string
	err  error
}

// switchBeforeBodyOrigin answers an upgrade request with a 101 as soon as
// its head is in, before reading its body; then it reads the body and the
// tunnel's first line, reports them, and answers "tunnel up".
// read counts the body bytes it read so far.
func switchBeforeBodyOrigin(t *testing.T, got chan<- upstreamRead, read *atomic.Int64) *rawServer {
	return startRawServer(t, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(20 * time.Second))
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			got <- upstreamRead{err: err}
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		var r upstreamRead
		r.body, err = io.ReadAll(countingReader{req.Body, read})
		if err == nil {
			r.line, err = br.ReadString('\n')
		}
		r.err = err
		got <- r
		if err != nil {
			return
		}
		io.WriteString(c, "tunnel up\n")
		io.Copy(io.Discard, br)
	})
}

// upgradeWithBody sends ferry at addr the head of a WebSocket upgrade
// request with a body of upgradeBodySize, and waits until the upstream's
// 101 reached ferry: the upstream answered before it had any of the body.
// With chunked, the body has no length: it is sent chunked.
func upgradeWithBody(t *testing.T, addr string, chunked bool) *net.TCPConn {
	t.Helper()
	answered := make(chan struct{}, 1)
	testHookSwitchAnswered = func() {
		select {
		case answered <- struct{}{}:
		default:
		}
	}
	t.Cleanup(func() { testHookSwitchAnswered = nil })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	framing := fmt.Sprintf("Content-Length: %d", upgradeBodySize)
	if chunked {
		framing = "Transfer-Encoding: chunked"
	}
	fmt.Fprintf(c, "POST /chat HTTP/1.1\r\nHost: chat.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n%s\r\n\r\n", framing)
	recv(t, answered, 5*time.Second, "the upstream's 101 to reach ferry")
	return c.(*net.TCPConn)
}

// accessLogLine waits for the only access log line in path and decodes it.
func accessLogLine(t *testing.T, path string) map[string]any {
	t.Helper()
	var line map[string]any
	waitFor(t, "the access log line", 5*time.Second, func() bool {
		b, _ := os.ReadFile(path)
		l, _, ok := strings.Cut(string(b), "\n")
		return ok && json.Unmarshal([]byte(l), &line) == nil
	})
	return line
}

// An upgrade request with a body whose upstream switches protocols before
// reading it: the body goes upstream whole, then the tunnel's bytes, in
// order, none lost or repeated; the caller gets the 101 and the tunnel.
func TestUpgradeBodyThenTunnel(t *testing.T) {
	for _, chunked := range []bool{false, true} {
		t.Run(map[bool]string{false: "content-length", true: "chunked"}[chunked], func(t *testing.T) {
			testUpgradeBodyThenTunnel(t, chunked)
		})
	}
}

func testUpgradeBodyThenTunnel(t *testing.T, chunked bool) {
	leakCheck(t)
	got := make(chan upstreamRead, 1)
	var read atomic.Int64
	o := switchBeforeBodyOrigin(t, got, &read)
	sc, logPath := tunnelFerry(t, o.addr())
	c := upgradeWithBody(t, sc.Addr("outbound"), chunked)
	body := upgradeBody()
	const tunnelLine = "first tunnel bytes\n"
	sent := body
	if chunked {
		var b bytes.Buffer
		for rest := body; len(rest) > 0; {
			n := min(len(rest), 100<<10)
			fmt.Fprintf(&b, "%x\r\n%s\r\n", n, rest[:n])
			rest = rest[n:]
		}
		b.WriteString("0\r\n\r\n")
		sent = b.Bytes()
	}
	if _, err := c.Write(append(sent, tunnelLine...)); err != nil {
		t.Fatalf("sending the body and the tunnel's bytes: %v", err)
	}
	r := recv(t, got, 10*time.Second, "the upstream to read the body")
	if r.err != nil || !bytes.Equal(r.body, body) || r.line != tunnelLine {
		i := 0
		for i < len(r.body) && r.body[i] == body[i] {
			i++
		}
		t.Fatalf("the upstream read %d body bytes (the first %d as sent), then %q, ending with %v; want %d bytes, then %q",
			len(r.body), i, r.line, r.err, len(body), tunnelLine)
	}
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("caller got %v, %v; want the 101", res, err)
	}
	if l, err := br.ReadString('\n'); l != "tunnel up\n" {
		t.Fatalf("caller read %q, %v through the tunnel; want the upstream's answer", l, err)
	}
	c.Close()
	line := accessLogLine(t, logPath)
	want := float64(len(body) + len(tunnelLine))
	if line["status"] != 101.0 || line["reason"] != "" || line["bytes_in"] != want {
		t.Fatalf("access log %v, want status 101, no reason, bytes_in %v", line, want)
	}
}

// An upgrade request whose caller resets its connection halfway through
// the body, after the upstream switched protocols: no tunnel is passed off
// as fine. The upstream sees a reset, not the end of a stream, and the
// access log says the caller broke the exchange.
func TestUpgradeBodyCutBeforeTunnel(t *testing.T) {
	leakCheck(t)
	got := make(chan upstreamRead, 1)
	var read atomic.Int64
	o := switchBeforeBodyOrigin(t, got, &read)
	sc, logPath := tunnelFerry(t, o.addr())
	c := upgradeWithBody(t, sc.Addr("outbound"), false)
	if _, err := c.Write(upgradeBody()[:upgradeBodySize/2]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the upstream to read the half of the body sent", 5*time.Second, func() bool {
		return read.Load() == upgradeBodySize/2
	})
	c.SetLinger(0)
	c.Close()
	r := recv(t, got, 10*time.Second, "the upstream's read to end")
	if !errors.Is(r.err, syscall.ECONNRESET) {
		t.Fatalf("the caller reset mid-body; the upstream read %d body bytes, then %q, ending with %v; want a reset", len(r.body), r.line, r.err)
	}
	line := accessLogLine(t, logPath)
	if line["reason"] != "client_canceled" || line["status"] == 101.0 {
		t.Fatalf("access log %v, want reason client_canceled and no 101", line)
	}
}

// countingReader counts the bytes read through it in n.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}
