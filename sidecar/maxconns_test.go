package sidecar

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// limits.max_connections: the bound on the connections a proxy listener
// serves at once.

// With limits.max_connections 4 and four requests in progress, a fifth
// connection waits, unserved, and none of the four is closed for it; the
// limit is logged and counted. Once the four are answered (each whole),
// one of them, idle now, is closed to make room, and the fifth is served.
func TestMaxConnections(t *testing.T) {
	arrived, answer := make(chan struct{}, 4), make(chan struct{})
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/wait" {
			arrived <- struct{}{}
			<-answer
		}
		io.WriteString(w, "ok")
	}))
	sc, _ := outboundTo(t, "limits: { max_connections: 4 }\n", up)
	addr := sc.Addr("outbound")
	var four []net.Conn
	for range 4 {
		c := dialConn(t, addr)
		io.WriteString(c, "GET /wait HTTP/1.1\r\nHost: svc\r\n\r\n")
		four = append(four, c)
	}
	for range 4 {
		recv(t, arrived, 10*time.Second, "four requests at the origin")
	}
	fifth := dialConn(t, addr)
	io.WriteString(fifth, "GET /x HTTP/1.1\r\nHost: svc\r\n\r\n")
	fifth.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := fifth.Read(make([]byte, 1)); n > 0 || !isTimeoutErr(err) {
		t.Fatalf("the fifth connection was answered (%d bytes, %v) while four requests were in progress", n, err)
	}
	for i, c := range four {
		c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if n, err := c.Read(make([]byte, 1)); n > 0 || !isTimeoutErr(err) {
			t.Fatalf("connection %d, its request in progress, was answered or closed (%d bytes, %v)", i, n, err)
		}
	}
	if got := scrape(t, sc, `ferry_connection_limit_reached_total{listener="outbound"}`); got != "1" {
		t.Errorf("ferry_connection_limit_reached_total = %q, want 1", got)
	}
	close(answer)
	readers := make([]*bufio.Reader, len(four))
	for i, c := range four {
		readers[i] = bufio.NewReader(c)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if got, err := readOK(readers[i]); err != nil || got != "ok" {
			t.Fatalf("connection %d: %q, %v", i, got, err)
		}
	}
	fifth.SetReadDeadline(time.Now().Add(10 * time.Second))
	if got, err := readOK(bufio.NewReader(fifth)); err != nil || got != "ok" {
		t.Fatalf("the fifth connection, once the four were answered: %q, %v", got, err)
	}
	closed := 0
	for i, c := range four {
		c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		switch _, err := readers[i].ReadByte(); {
		case err == io.EOF:
			closed++
		case !isTimeoutErr(err):
			t.Errorf("connection %d: %v", i, err)
		}
	}
	if closed != 1 {
		t.Errorf("%d of the four idle connections closed to make room for one, want 1", closed)
	}
	if got := scrape(t, sc, `ferry_connections_closed_for_room_total{listener="outbound"}`); got != "1" {
		t.Errorf("ferry_connections_closed_for_room_total = %q, want 1", got)
	}
}

// With limits.max_connections 2 held by two idle keep-alive connections,
// a third caller is served at once: the one idle longest is closed to make
// room, the other stays, and both closure and limit are counted.
func TestMaxConnectionsClosesIdleForRoom(t *testing.T) {
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	sc, _ := outboundTo(t, "limits: { max_connections: 2 }\n", up)
	addr := sc.Addr("outbound")
	l := laneOf(t, sc, "outbound")
	var idle []net.Conn
	for i := range 2 {
		c := dialConn(t, addr)
		if err := idleH1(c); err != nil {
			t.Fatal(err)
		}
		// The first is idle before the second's request: it is idle longest.
		waitFor(t, "the lane to see the connection idle", 10*time.Second, func() bool { return idleKeptAlive(l) == i+1 })
		idle = append(idle, c)
	}
	third := dialConn(t, addr)
	io.WriteString(third, "GET /x HTTP/1.1\r\nHost: svc\r\n\r\n")
	third.SetReadDeadline(time.Now().Add(10 * time.Second))
	if got, err := readOK(bufio.NewReader(third)); err != nil || got != "ok" {
		t.Fatalf("a third caller, two idle connections holding the bound: %q, %v", got, err)
	}
	idle[0].SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := idle[0].Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("the connection idle longest: read %d bytes, %v; want it closed (EOF)", n, err)
	}
	if err := idleH1(idle[1]); err != nil {
		t.Fatalf("the other idle connection: %v", err)
	}
	if got := scrape(t, sc, `ferry_connections_closed_for_room_total{listener="outbound"}`); got != "1" {
		t.Errorf("ferry_connections_closed_for_room_total = %q, want 1", got)
	}
	if got := scrape(t, sc, `ferry_connection_limit_reached_total{listener="outbound"}`); got != "1" {
		t.Errorf("ferry_connection_limit_reached_total = %q, want 1", got)
	}
}

// Callers with keep-alive pools, more of them than limits.max_connections,
// making requests in rounds (each round waits for every caller's request,
// so no caller's pool empties while another waits): every request is
// answered (a GET sent on a connection closed while idle is retried by
// Go's client, as HTTP/1.1 allows), none waits out an idle timeout, and
// none is cut mid-exchange.
func TestMaxConnectionsRoomUnderChurn(t *testing.T) {
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	sc, url := outboundTo(t, "limits: { max_connections: 1 }\n", up)
	const callers, rounds = 3, 20
	clients := make([]*http.Client, callers)
	for i := range clients {
		tr := &http.Transport{Proxy: nil, DisableCompression: true}
		t.Cleanup(tr.CloseIdleConnections)
		clients[i] = &http.Client{Transport: tr, Timeout: 10 * time.Second}
	}
	for round := range rounds {
		errs := make(chan error, callers)
		for _, c := range clients {
			go func() {
				res, err := c.Get(url + "/x")
				if err != nil {
					errs <- err
					return
				}
				b, err := io.ReadAll(res.Body)
				res.Body.Close()
				if err == nil && (res.StatusCode != 200 || string(b) != "ok") {
					err = fmt.Errorf("%d %q", res.StatusCode, b)
				}
				errs <- err
			}()
		}
		for range callers {
			if err := recv(t, errs, 30*time.Second, "the callers"); err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
	}
	if got := scrape(t, sc, `ferry_connections_closed_for_room_total{listener="outbound"}`); got == "" || got == "0" {
		t.Errorf("ferry_connections_closed_for_room_total = %q: the callers' idle connections were never closed for room", got)
	}
}

// dialConn connects to addr; the connection ends with the test.
func dialConn(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readOK reads one response and returns its body, or an error for a
// response that is not a whole 200.
func readOK(br *bufio.Reader) (string, error) {
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err == nil && res.StatusCode != 200 {
		err = fmt.Errorf("status %d", res.StatusCode)
	}
	return string(b), err
}

// laneOf returns the lane of one of ferry's proxy listeners.
func laneOf(t *testing.T, sc *Sidecar, name string) *lane {
	t.Helper()
	for _, l := range sc.servers {
		if l.name == name {
			return l.srv.(*lane)
		}
	}
	t.Fatalf("no listener %q", name)
	return nil
}

// idleKeptAlive counts the lane's connections kept alive between requests.
func idleKeptAlive(l *lane) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for c := range l.conns {
		if c.state.Load() == connIdle {
			n++
		}
	}
	return n
}

// A caller connection taken over for a spliced upload (here one with an
// absolute-form target, which the lane hands to net/http first) still
// counts against limits.max_connections until it closes.
func TestMaxConnectionsCountsTakenOverUpload(t *testing.T) {
	const size = 4 << 20
	got := make(chan int64, 1)
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		got <- n
		io.WriteString(w, "ok")
	}))
	sc, _ := outboundTo(t, "limits: { max_connections: 1 }\n", up)
	addr := sc.Addr("outbound")
	upload, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer upload.Close()
	fmt.Fprintf(upload, "POST http://svc/up HTTP/1.1\r\nHost: svc\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", size)
	br := bufio.NewReader(upload)
	upload.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100") {
		t.Fatalf("before the body: %q, %v", line, err)
	}
	br.ReadString('\n') // the empty line ending the interim answer
	half := make([]byte, size/2)
	if _, err := upload.Write(half); err != nil {
		t.Fatal(err)
	}
	// The upload is under way on the only connection allowed: a second
	// one waits in the backlog.
	second, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	io.WriteString(second, "GET /x HTTP/1.1\r\nHost: svc\r\n\r\n")
	second.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := second.Read(make([]byte, 1)); n > 0 || !isTimeoutErr(err) {
		t.Fatalf("a second connection was answered (%d bytes, %v) during the upload on the only one allowed", n, err)
	}
	if _, err := upload.Write(half); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if n := <-got; res.StatusCode != 200 || n != size {
		t.Fatalf("upload: %d, origin read %d of %d bytes", res.StatusCode, n, size)
	}
	upload.Close()
	second.SetReadDeadline(time.Now().Add(10 * time.Second))
	res, err = http.ReadResponse(bufio.NewReader(second), nil)
	if err != nil {
		t.Fatalf("the second connection, once the upload's closed: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("second: %d", res.StatusCode)
	}
}

// A connection whose request body ferry did not read whole lingers after
// its response, draining what the caller still sends, before it closes:
// it holds its limits.max_connections slot until then, or ferry would
// serve more connections than the bound.
func TestMaxConnectionsCountsLingeringConnection(t *testing.T) {
	lingerTest.Store(int64(time.Hour)) // the linger ends when the caller closes
	t.Cleanup(func() { lingerTest.Store(0) })
	// Answers before the body and reads no more of it.
	up := earlyAnswerServer(t, "Connection: close\r\n", nil)
	sc, url := outboundTo(t, "limits: { max_connections: 1 }\ndefaults: { retry: { max_retries: 0 } }", up.addr())
	a := dialRaw(t, url)
	fmt.Fprintf(a, "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n0123456789", 50000)
	if got := answerBody(t, a); got != "early" {
		t.Fatalf("the upload's answer: %q", got)
	}
	// a lingers: the rest of its body may still come. A second caller
	// waits for its slot.
	b := dialRaw(t, url)
	io.WriteString(b, "GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
	b.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := b.Read(make([]byte, 1)); n > 0 || !isTimeoutErr(err) {
		t.Fatalf("a second connection was answered (%d bytes, %v) while the first lingered on the only slot", n, err)
	}
	if got := scrape(t, sc, `ferry_connection_limit_reached_total{listener="outbound"}`); got != "1" {
		t.Errorf("ferry_connection_limit_reached_total = %q, want 1", got)
	}
	a.Close() // the linger ends
	b.SetReadDeadline(time.Now().Add(10 * time.Second))
	if got := answerBody(t, b); got != "ok" {
		t.Fatalf("the second connection, once the first closed: %q", got)
	}
}

// closeIdlest closes the connection idle longest, and only connections
// kept alive between requests: never one busy, one still waiting for its
// first request, or one whose caller has begun its next request. A
// connection it closed starts no request; one whose request began first is
// not closed.
func TestLaneCloseIdlest(t *testing.T) {
	l := newLane("test", http.NotFoundHandler(), &http.Server{}, slog.New(slog.DiscardHandler))
	l.limit(8)
	add := func(c net.Conn) *laneConn {
		lc := &laneConn{l: l, c: c}
		lc.tc, _ = c.(*net.TCPConn)
		if !l.track(lc) {
			t.Fatal("lane closing")
		}
		return lc
	}
	pipe := func() (*laneConn, net.Conn) {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		return add(a), b
	}
	closed := func(peer net.Conn) bool {
		peer.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		_, err := peer.Read(make([]byte, 1))
		return err == io.EOF
	}
	_, busyPeer := pipe() // tracked busy, as a new connection
	fresh, freshPeer := pipe()
	l.setIdle(fresh, false)
	newer, newerPeer := pipe()
	l.setIdle(newer, true)
	newer.idleSince.Store(200)
	older, olderPeer := pipe()
	l.setIdle(older, true)
	older.idleSince.Store(100)

	// A caller whose next request has arrived, unread by the lane yet.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	caller := dialConn(t, ln.Addr().String())
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	begun := add(sc)
	l.setIdle(begun, true)
	begun.idleSince.Store(1) // idle longest
	io.WriteString(caller, "G")
	waitFor(t, "the byte in the socket's queue", 10*time.Second, func() bool {
		n, ok := unreadBytes(sc.(*net.TCPConn))
		if !ok {
			t.Skip("no SIOCINQ here")
		}
		return n > 0
	})

	if !l.closeIdlest() || !closed(olderPeer) || older.state.Load() != connReaped {
		t.Fatal("the connection idle longest was not closed")
	}
	if l.setBusy(older) {
		t.Fatal("a request began on a connection closed for room")
	}
	if closed(newerPeer) {
		t.Fatal("a second connection closed at once")
	}
	if !l.setBusy(newer) { // its next request begins: it is not idle now
		t.Fatal("setBusy refused a request on an idle connection")
	}
	if l.closeIdlest() {
		t.Fatal("closed a connection busy, waiting for its first request, or with a request begun")
	}
	for what, peer := range map[string]net.Conn{"busy": busyPeer, "fresh": freshPeer, "newer, busy again": newerPeer} {
		if closed(peer) {
			t.Errorf("the %s connection was closed", what)
		}
	}
	caller.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if _, err := caller.Read(make([]byte, 1)); !isTimeoutErr(err) {
		t.Errorf("the connection with a request begun: %v", err)
	}
}
