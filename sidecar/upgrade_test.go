package sidecar

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// leakCheck fails the test if goroutines it started outlive it: the check
// runs after every other cleanup (ferry's drain, origins closing).
func leakCheck(t *testing.T) {
	t.Helper()
	opts := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opts) })
}

// The key and accept value of RFC 6455 section 1.3.
const (
	wsKey    = "dGhlIHNhbXBsZSBub25jZQ=="
	wsAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
)

// wsOrigin is an upstream that takes over the connection on a WebSocket
// upgrade, greets, then echoes every line it reads as "echo:<line>". A line
// "bye" makes it hang up. It reports "eof" when the caller's side of the
// tunnel ended and "hung-up" when it ended the tunnel itself. With
// ?answer=P it switches to protocol P instead of the one asked for.
type wsOrigin struct {
	addr   string
	events chan string
}

func startWSOrigin(t testing.TB) *wsOrigin {
	o := &wsOrigin{events: make(chan string, 16)}
	o.addr = origin(t, http.HandlerFunc(o.serve))
	return o
}

func (o *wsOrigin) event(e string) {
	select {
	case o.events <- e:
	default:
	}
}

func (o *wsOrigin) serve(w http.ResponseWriter, r *http.Request) {
	if !headerHasToken(r.Header, "Connection", "upgrade") || !headerHasToken(r.Header, "Upgrade", "websocket") {
		http.Error(w, fmt.Sprintf("want an upgrade to websocket, got Connection %q Upgrade %q", r.Header["Connection"], r.Header["Upgrade"]), http.StatusBadRequest)
		return
	}
	if r.URL.Query().Get("refuse") != "" {
		w.Header().Set("Upgrade", "x-chat/3")
		w.Header().Set("Connection", "Upgrade")
		http.Error(w, "only x-chat/3 spoken here", http.StatusUpgradeRequired)
		return
	}
	sum := sha1.Sum([]byte(r.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	answer := "websocket"
	if a := r.URL.Query().Get("answer"); a != "" {
		answer = a
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer conn.Close()
	// The 101 and the greeting leave in one write, so the greeting sits in
	// ferry's read buffer behind the response head.
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\nX-Origin: ws\r\n\r\n",
		answer, base64.StdEncoding.EncodeToString(sum[:]))
	brw.WriteString("hello from origin\n")
	if brw.Flush() != nil {
		return
	}
	for {
		line, err := brw.ReadString('\n')
		if err != nil {
			o.event("eof")
			return
		}
		if line == "bye\n" {
			o.event("hung-up")
			return
		}
		brw.WriteString("echo:" + line)
		if brw.Flush() != nil {
			o.event("write-failed")
			return
		}
	}
}

// wsClient is a raw TCP client of ferry that asked for a WebSocket upgrade.
type wsClient struct {
	t    testing.TB
	conn net.Conn
	br   *bufio.Reader
}

// dialWS sends the upgrade request and, in the same write, early bytes the
// tunnel must deliver once it is up; it returns the client and the
// response head it read.
func dialWS(t testing.TB, addr, target, early string) (*wsClient, *http.Response) {
	t.Helper()
	return dialUpgrade(t, addr, target, "websocket", early)
}

// dialUpgrade is dialWS offering the protocols in upgrade.
func dialUpgrade(t testing.TB, addr, target, upgrade, early string) (*wsClient, *http.Response) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	req := "GET " + target + " HTTP/1.1\r\nHost: chat.example\r\nConnection: keep-alive, Upgrade\r\nUpgrade: " + upgrade + "\r\n" +
		"Sec-WebSocket-Key: " + wsKey + "\r\nSec-WebSocket-Version: 13\r\n\r\n" + early
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the upgrade response: %v", err)
	}
	return &wsClient{t: t, conn: conn, br: br}, res
}

func (c *wsClient) send(s string) {
	c.t.Helper()
	c.conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatalf("send %.20q: %v", s, err)
	}
}

func (c *wsClient) expect(want string) {
	c.t.Helper()
	c.conn.SetDeadline(time.Now().Add(5 * time.Second))
	got, err := c.br.ReadString('\n')
	if err != nil || got != want {
		c.t.Fatalf("read %.40q (%d bytes), err %v; want %.40q (%d bytes)", got, len(got), err, want, len(want))
	}
}

// expectClosed asserts the tunnel ends (EOF or reset) well before the
// deadline, with no more bytes.
func (c *wsClient) expectClosed() {
	c.t.Helper()
	c.conn.SetDeadline(time.Now().Add(5 * time.Second))
	rest, err := io.ReadAll(c.br)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.t.Fatalf("tunnel still open after 5s (read %q)", rest)
	}
	if len(rest) > 0 {
		c.t.Fatalf("unexpected bytes before the close: %q", rest)
	}
}

// checkUpgraded asserts res is the origin's 101, headers intact.
func checkUpgraded(t testing.TB, res *http.Response) {
	t.Helper()
	if res.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(io.LimitReader(res.Body, 1024))
		t.Fatalf("status %d (%s), want 101", res.StatusCode, body)
	}
	if got := res.Header.Get("Upgrade"); got != "websocket" {
		t.Fatalf("Upgrade %q, want websocket", got)
	}
	if !headerHasToken(res.Header, "Connection", "upgrade") {
		t.Fatalf("Connection %q, want Upgrade", res.Header["Connection"])
	}
	if got := res.Header.Get("Sec-WebSocket-Accept"); got != wsAccept {
		t.Fatalf("Sec-WebSocket-Accept %q, want %q", got, wsAccept)
	}
	if got := res.Header.Get("X-Origin"); got != "ws" {
		t.Fatalf("X-Origin %q, want ws (origin's headers lost)", got)
	}
}

// openTunnels counts the tunnels sc tracks.
func openTunnels(sc *Sidecar) int {
	sc.tunnels.mu.Lock()
	defer sc.tunnels.mu.Unlock()
	return len(sc.tunnels.conns)
}

// wsFerry starts a ferry whose outbound and inbound listeners both lead to
// the origin at addr, with the given shutdown grace.
func wsFerry(t testing.TB, addr string) *Sidecar {
	return startFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound:
  listen: 127.0.0.1:0
  routes: [ { service: chat } ]
inbound: { listen: 127.0.0.1:0, app: %s }
services:
  chat: { endpoints: [%s] }
`, addr, addr))
}

// greetTunnel runs the opening of a tunnel: the greeting, the early bytes'
// echo, then several messages, one larger than any relay buffer.
func greetTunnel(c *wsClient) {
	c.t.Helper()
	c.expect("hello from origin\n")
	c.expect("echo:early\n")
	for i := range 5 {
		msg := fmt.Sprintf("message %d\n", i)
		c.send(msg)
		c.expect("echo:" + msg)
	}
	big := strings.Repeat("z", 200<<10) + "\n"
	c.send(big)
	c.expect("echo:" + big)
}

func TestUpgradeTunnel(t *testing.T) {
	leakCheck(t)
	o := startWSOrigin(t)
	sc := wsFerry(t, o.addr)
	bodies := track(sc)
	opened := int64(0)
	for _, listener := range []string{"outbound", "inbound"} {
		t.Run(listener+"/caller closes", func(t *testing.T) {
			c, res := dialWS(t, sc.Addr(listener), "/chat", "early\n")
			opened++
			checkUpgraded(t, res)
			greetTunnel(c)
			c.conn.Close()
			if e := recv(t, o.events, 5*time.Second, "the origin to see the caller hang up"); e != "eof" {
				t.Fatalf("origin reported %q, want eof", e)
			}
			allClosed(t, bodies, opened)
			waitFor(t, "the tunnel to be forgotten", 5*time.Second, func() bool { return openTunnels(sc) == 0 })
		})
		t.Run(listener+"/origin closes", func(t *testing.T) {
			c, res := dialWS(t, sc.Addr(listener), "/chat", "early\n")
			opened++
			checkUpgraded(t, res)
			greetTunnel(c)
			c.send("bye\n")
			if e := recv(t, o.events, 5*time.Second, "the origin to hang up"); e != "hung-up" {
				t.Fatalf("origin reported %q, want hung-up", e)
			}
			c.expectClosed()
			// The origin's end reached the caller as a half-close; the
			// tunnel is over once the caller ends its side too, as a
			// WebSocket client does when the server closed.
			c.conn.Close()
			allClosed(t, bodies, opened)
			waitFor(t, "the tunnel to be forgotten", 5*time.Second, func() bool { return openTunnels(sc) == 0 })
		})
	}
}

// TestUpgradeProtocolMismatch proves an origin that switches to another
// protocol than the caller asked for gets the caller a 502, its connection
// is closed, and the attempt counts as the endpoint's failure.
func TestUpgradeProtocolMismatch(t *testing.T) {
	leakCheck(t)
	o := startWSOrigin(t)
	sc := wsFerry(t, o.addr)
	bodies := track(sc)
	_, res := dialWS(t, sc.Addr("outbound"), "/chat?answer=h2c", "")
	body, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
	if res.StatusCode != http.StatusBadGateway {
		t.Fatalf("status %d (%s), want 502", res.StatusCode, body)
	}
	if !strings.Contains(string(body), `"h2c"`) || !strings.Contains(string(body), `"websocket"`) {
		t.Fatalf("502 body %q should name both protocols", body)
	}
	if e := recv(t, o.events, 5*time.Second, "the origin's connection to be closed"); e != "eof" {
		t.Fatalf("origin reported %q, want eof", e)
	}
	allClosed(t, bodies, 1)
	if n := openTunnels(sc); n != 0 {
		t.Fatalf("%d tunnels open after a refused switch", n)
	}
	// The switch the upstream made unasked is its failure, as the breaker
	// and outlier ejection see it.
	if eps := upstreamStatus(t, sc, "chat").Endpoints; len(eps) != 1 || eps[0].Failures != 1 {
		t.Fatalf("endpoint status after a mismatched switch: %+v, want 1 failure", eps)
	}
}

// TestTunnelShutdown covers a drain with tunnels: an open tunnel keeps
// working through the grace period and is closed when it ends; a tunnel
// that ends during the grace, or before the drain, lets Shutdown return at
// once.
func TestTunnelShutdown(t *testing.T) {
	leakCheck(t)
	t.Run("grace ends", func(t *testing.T) {
		o := startWSOrigin(t)
		sc := wsFerry(t, o.addr)
		bodies := track(sc)
		c, res := dialWS(t, sc.Addr("outbound"), "/chat", "early\n")
		checkUpgraded(t, res)
		greetTunnel(c)

		const grace = time.Second
		ctx, cancel := context.WithTimeout(context.Background(), grace)
		defer cancel()
		start := time.Now()
		done := make(chan error, 1)
		go func() { done <- sc.Shutdown(ctx) }()
		waitFor(t, "the drain to start", 5*time.Second, func() bool { return !sc.Ready() })
		c.send("during the drain\n")
		c.expect("echo:during the drain\n")

		err := recv(t, done, 5*time.Second, "Shutdown to return")
		elapsed := time.Since(start)
		if err == nil {
			t.Fatal("Shutdown returned nil with a tunnel cut at the end of the grace; want an error")
		}
		if elapsed < grace-50*time.Millisecond {
			t.Fatalf("Shutdown returned after %v, before the %v grace ended", elapsed, grace)
		}
		c.expectClosed()
		if e := recv(t, o.events, 5*time.Second, "the origin's side to be closed"); e != "eof" {
			t.Fatalf("origin reported %q, want eof", e)
		}
		allClosed(t, bodies, 1)
	})
	t.Run("tunnel ends during grace", func(t *testing.T) {
		o := startWSOrigin(t)
		sc := wsFerry(t, o.addr)
		bodies := track(sc)
		c, res := dialWS(t, sc.Addr("outbound"), "/chat", "early\n")
		checkUpgraded(t, res)
		greetTunnel(c)

		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- sc.Shutdown(ctx) }()
		waitFor(t, "the drain to start", 5*time.Second, func() bool { return !sc.Ready() })
		start := time.Now()
		c.send("bye\n")
		c.expectClosed()
		c.conn.Close()
		if err := recv(t, done, 5*time.Second, "Shutdown to return once the tunnel ended"); err != nil {
			t.Fatalf("Shutdown: %v, want nil (nothing was cut)", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("Shutdown took %v after the tunnel ended", d)
		}
		allClosed(t, bodies, 1)
	})
	t.Run("tunnel already ended", func(t *testing.T) {
		o := startWSOrigin(t)
		sc := wsFerry(t, o.addr)
		bodies := track(sc)
		c, res := dialWS(t, sc.Addr("outbound"), "/chat", "early\n")
		checkUpgraded(t, res)
		greetTunnel(c)
		c.conn.Close()
		recv(t, o.events, 5*time.Second, "the origin to see the caller hang up")

		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		start := time.Now()
		if err := sc.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown: %v, want nil", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("Shutdown took %v with no tunnel open", d)
		}
		allClosed(t, bodies, 1)
	})
}

// TestUpgradeOfferedList proves a caller may offer several protocols: the
// origin's pick among them is a valid switch, not a mismatch.
func TestUpgradeOfferedList(t *testing.T) {
	leakCheck(t)
	o := startWSOrigin(t)
	sc := wsFerry(t, o.addr)
	bodies := track(sc)
	c, res := dialUpgrade(t, sc.Addr("outbound"), "/chat", "x-chat/2, websocket", "early\n")
	checkUpgraded(t, res)
	greetTunnel(c)
	c.conn.Close()
	recv(t, o.events, 5*time.Second, "the origin to see the caller hang up")
	allClosed(t, bodies, 1)
}

type closeCounter struct{ n int }

func (c *closeCounter) Close() error { c.n++; return nil }

// TestTunnelSetRefusesAfterDrain proves a tunnel that switches after the
// drain closed every tunnel is refused, so nothing outlives Shutdown.
func TestTunnelSetRefusesAfterDrain(t *testing.T) {
	leakCheck(t)
	s := newTunnelSet()
	open := &closeCounter{}
	if !s.add(open) {
		t.Fatal("add refused before the drain")
	}
	if n := s.closeAll(); n != 1 || open.n != 1 {
		t.Fatalf("closeAll closed %d (reported %d), want 1", open.n, n)
	}
	late := &closeCounter{}
	if s.add(late) {
		t.Fatal("add accepted a tunnel after closeAll; it would never be closed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	s.waitEmpty(ctx)
	if ctx.Err() != nil {
		t.Fatal("waitEmpty blocked after closeAll")
	}
}

// TestUpgradeRefused proves an origin that declines to switch answers the
// caller as a plain response, and the caller's connection stays usable.
func TestUpgradeRefused(t *testing.T) {
	leakCheck(t)
	o := startWSOrigin(t)
	sc := wsFerry(t, o.addr)
	bodies := track(sc)
	c, res := dialWS(t, sc.Addr("outbound"), "/chat?refuse=1", "")
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusUpgradeRequired || string(body) != "only x-chat/3 spoken here\n" {
		t.Fatalf("status %d %q, want 426 with the origin's body", res.StatusCode, body)
	}
	if n := openTunnels(sc); n != 0 {
		t.Fatalf("%d tunnels open after a refused upgrade", n)
	}
	// The connection still carries ordinary requests.
	c.send("GET /chat HTTP/1.1\r\nHost: chat.example\r\n\r\n")
	c.conn.SetDeadline(time.Now().Add(5 * time.Second))
	res, err = http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatalf("second request on the connection: %v", err)
	}
	body, _ = io.ReadAll(res.Body)
	if res.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "want an upgrade") {
		t.Fatalf("second request: %d %q, want the origin's 400", res.StatusCode, body)
	}
	allClosed(t, bodies, 2)
}

// TestUpgradeOverH2CService proves an upgrade to a service spoken to over
// h2c still goes upstream over HTTP/1.1, where upgrades exist.
func TestUpgradeOverH2CService(t *testing.T) {
	leakCheck(t)
	o := startWSOrigin(t)
	sc := chatFerry(t, o.addr, "protocol: h2c")
	bodies := track(sc)
	c, res := dialWS(t, sc.Addr("outbound"), "/chat", "early\n")
	checkUpgraded(t, res)
	greetTunnel(c)
	c.conn.Close()
	if e := recv(t, o.events, 5*time.Second, "the origin to see the caller hang up"); e != "eof" {
		t.Fatalf("origin reported %q, want eof", e)
	}
	allClosed(t, bodies, 1)
}

// timeouts.tunnel_idle closes a tunnel on which nothing moved for that
// long, on both sides, and leaves a busy one alone.
func TestTunnelIdleTimeout(t *testing.T) {
	leakCheck(t)
	o := startWSOrigin(t)
	sc := chatFerry(t, o.addr, "timeouts: { tunnel_idle: 1s }")
	c, res := dialWS(t, sc.Addr("outbound"), "/chat", "early\n")
	checkUpgraded(t, res)
	c.expect("hello from origin\n")
	c.expect("echo:early\n")
	// Busy for well over the idle timeout: a message every 60 ms (pacing
	// the traffic, not waiting for anything).
	for i := range 30 {
		msg := fmt.Sprintf("message %d\n", i)
		c.send(msg)
		c.expect("echo:" + msg)
		time.Sleep(60 * time.Millisecond)
	}
	start := time.Now()
	c.expectClosed()
	if e := recv(t, o.events, 5*time.Second, "the origin to see the tunnel closed"); e != "eof" {
		t.Fatalf("origin reported %q, want eof", e)
	}
	if d := time.Since(start); d < 800*time.Millisecond {
		t.Fatalf("idle tunnel closed after %s, before tunnel_idle", d)
	}
	waitFor(t, "the tunnel to be forgotten", 5*time.Second, func() bool { return openTunnels(sc) == 0 })
}

// chatFerry starts a ferry whose outbound listener leads to the chat
// service at addr, with more settings for that service.
func chatFerry(t *testing.T, addr, settings string) *Sidecar {
	return startFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound:
  listen: 127.0.0.1:0
  routes: [ { service: chat } ]
services:
  chat: { endpoints: [%s], %s }
`, addr, settings))
}

// halfClosedTunnel opens a tunnel through ferry to an origin that runs
// after on its side, and half-closes the caller's side of it.
func halfClosedTunnel(t *testing.T, after func(c *net.TCPConn, brw *bufio.ReadWriter)) (*Sidecar, *wsClient) {
	t.Helper()
	sc := chatFerry(t, halfCloseOrigin(t, after), "")
	c, res := dialWS(t, sc.Addr("outbound"), "/chat", "")
	if res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d, want 101", res.StatusCode)
	}
	if err := c.conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	return sc, c
}

// halfCloseOrigin answers a WebSocket upgrade with 101 and then runs
// after(conn, brw) on the hijacked connection.
func halfCloseOrigin(t *testing.T, after func(c *net.TCPConn, brw *bufio.ReadWriter)) string {
	return origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		if brw.Flush() != nil {
			return
		}
		after(conn.(*net.TCPConn), brw)
	}))
}

// TestTunnelHalfCloseFromCaller: the caller half-closes its side of
// a tunnel (CloseWrite) and keeps reading; the upstream sees EOF and then
// sends its last words. The caller must receive them: a half-close is
// propagated, not turned into a full close of both sides.
func TestTunnelHalfCloseFromCaller(t *testing.T) {
	_, c := halfClosedTunnel(t, func(c *net.TCPConn, brw *bufio.ReadWriter) {
		io.Copy(io.Discard, brw) // until the caller's half-close arrives
		time.Sleep(50 * time.Millisecond)
		brw.WriteString("last words after your EOF\n")
		brw.Flush()
	})
	c.conn.SetDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c.br)
	if string(got) != "last words after your EOF\n" {
		t.Fatalf("after half-closing, the caller read %q (err %v); want the upstream's reply sent after it saw EOF", got, err)
	}
}

// goroutinesIn counts goroutines whose stack names fn.
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			n++
		}
	}
	return n
}

// A caller half-closes its side of a tunnel; the upstream reads the EOF and
// then neither writes nor closes. tunnel_idle is off. ferry's Shutdown must
// still end the tunnel, upstream side included, once its grace is over.
func TestTunnelHalfClosedEndsAtDrain(t *testing.T) {
	release := make(chan struct{})
	eof := make(chan struct{}, 1)
	t.Cleanup(func() { close(release) })
	sc, _ := halfClosedTunnel(t, func(c *net.TCPConn, brw *bufio.ReadWriter) {
		io.Copy(io.Discard, brw) // until the caller's half-close arrives
		eof <- struct{}{}
		<-release // silent, never closing, until the test ends
	})
	recv(t, eof, 5*time.Second, "the origin to see the half-close")
	if n := goroutinesIn("sidecar.(*Proxy).tunnel("); n != 1 {
		t.Fatalf("%d tunnels running before the drain, want 1", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := sc.Shutdown(ctx)
	t.Logf("Shutdown: %v; tunnels tracked: %d", err, openTunnels(sc))
	t.Cleanup(func() {
		if t.Failed() {
			dumpIn(t, "sidecar.tunnelCopy(")
		}
	})
	waitFor(t, "the tunnel to end after the drain", 3*time.Second, func() bool {
		return goroutinesIn("sidecar.(*Proxy).tunnel(") == 0 && goroutinesIn("sidecar.tunnelCopy(") == 0
	})
}

func dumpIn(t *testing.T, fn string) {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			t.Log(g)
		}
	}
}

// TestTunnelCutReportedWhileLaneWaits: a tunnel cut at the grace period's
// end gets the report wait for its access log line, as the exchanges cut
// with it do, even while the lane's Close spends that wait on a request
// whose head is still arriving (a slow caller): the tunnel is cut with
// them, not once Close gave up.
func TestTunnelCutReportedWhileLaneWaits(t *testing.T) {
	o := startWSOrigin(t)
	logPath := filepath.Join(t.TempDir(), "access.log")
	sc := startFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: chat } ] }
services: { chat: { endpoints: [%s] } }
telemetry: { access_log: %s }
`, o.addr, logPath))
	c, res := dialWS(t, sc.Addr("outbound"), "/chat", "early\n")
	checkUpgraded(t, res)
	greetTunnel(c)

	// A caller whose next request's head is half sent: busy, with no
	// exchange, Close waits for it.
	var l *lane
	for _, ln := range sc.servers {
		if ln.name == "outbound" {
			l = ln.srv.(*lane)
		}
	}
	slow := dialRaw(t, "http://"+sc.Addr("outbound"))
	io.WriteString(slow, "GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
	if res, err := http.ReadResponse(bufio.NewReader(slow), nil); err != nil {
		t.Fatal(err)
	} else {
		res.Body.Close() // the origin's 400, whole (Content-Length)
	}
	busy := func(want bool) func() bool {
		return func() bool {
			l.mu.Lock()
			defer l.mu.Unlock()
			for lc := range l.conns {
				if (lc.state.Load() == connBusy) == want {
					return true
				}
			}
			return false
		}
	}
	waitFor(t, "the slow caller's connection to wait for its next request", 5*time.Second, busy(false))
	io.WriteString(slow, "GET /plain HTTP/1.1\r\n")
	waitFor(t, "its next head to begin", 5*time.Second, busy(true))

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := sc.Shutdown(ctx); err == nil {
		t.Fatal("Shutdown reported a clean drain although a tunnel was cut")
	}
	c.expectClosed()
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"status":101`) {
		t.Fatalf("the cut tunnel is not in the access log when Shutdown returned:\n%s", b)
	}
}

// A tunnel is an exchange in flight until it closes: it holds its slot of
// the service's max_in_flight (and its endpoint's load) from the request
// to the tunnel's end, however it ends, and gives it back once. With
// max_in_flight 1, an open WebSocket tunnel sheds every other request.
func TestTunnelHoldsMaxInFlightSlot(t *testing.T) {
	leakCheck(t)
	o := startWSOrigin(t)
	sc := chatFerry(t, o.addr, "max_in_flight: 1")
	res := sc.state.Load().upstreams["chat"].res
	url := "http://" + sc.Addr("outbound") + "/chat"
	for _, end := range []string{"caller closes", "origin closes"} {
		t.Run(end, func(t *testing.T) {
			c, up := dialWS(t, sc.Addr("outbound"), "/chat", "")
			checkUpgraded(t, up)
			c.expect("hello from origin\n")
			r, body := get(t, h1Client(), url, "")
			if r.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "max_in_flight 1") {
				t.Fatalf("request beside the open tunnel: %d %q, want ferry's 503 (max_in_flight 1)", r.StatusCode, body)
			}
			if n := res.InFlight(); n != 1 {
				t.Fatalf("%d in flight with a tunnel open, want 1", n)
			}
			_, second := dialWS(t, sc.Addr("outbound"), "/chat", "")
			if second.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("second tunnel beside the open one: %d, want 503", second.StatusCode)
			}
			c.send("still open\n")
			c.expect("echo:still open\n")
			if end == "caller closes" {
				c.conn.Close()
			} else {
				c.send("bye\n")
				c.expectClosed()
				// Half-closed by the origin, the tunnel holds its
				// slot until the caller ends its side too.
				if n := res.InFlight(); n != 1 {
					t.Fatalf("%d in flight with a tunnel the origin half-closed, want 1", n)
				}
				c.conn.Close()
			}
			recv(t, o.events, 5*time.Second, "the origin's side to end")
			waitFor(t, "the tunnel's slot to come back", 5*time.Second, func() bool { return res.InFlight() == 0 })
			r, body = get(t, h1Client(), url, "")
			if r.StatusCode != http.StatusBadRequest || !strings.Contains(body, "want an upgrade") {
				t.Fatalf("request after the tunnel closed: %d %q, want the origin's 400", r.StatusCode, body)
			}
			// Given back once: a second release would leave -1.
			waitFor(t, "nothing in flight", 5*time.Second, func() bool { return res.InFlight() == 0 })
		})
	}
}
