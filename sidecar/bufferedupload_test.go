package sidecar

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// uploadSeen is one request as an echoing upstream got it.
type uploadSeen struct {
	conn   int64
	method string
	length int64
	body   string
}

// echoUpstream answers each request with its body and notes what it got,
// and on which of its connections. first, when not nil, answers the first
// request of all instead.
func echoUpstream(t *testing.T, first func(c net.Conn)) (*rawServer, func() []uploadSeen) {
	var mu sync.Mutex
	var seen []uploadSeen
	var conns, requests atomic.Int64
	up := startRawServer(t, func(c net.Conn) {
		id := conns.Add(1)
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			b, err := io.ReadAll(req.Body)
			if err != nil {
				return
			}
			mu.Lock()
			seen = append(seen, uploadSeen{id, req.Method, req.ContentLength, string(b)})
			mu.Unlock()
			if requests.Add(1) == 1 && first != nil {
				first(c)
				continue
			}
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(b), b)
		}
	})
	return up, func() []uploadSeen {
		mu.Lock()
		defer mu.Unlock()
		return append([]uploadSeen(nil), seen...)
	}
}

// A request body the lane has read whole with its head goes upstream with
// the head from ferry's own client: every byte, once, framed by its
// Content-Length, on the pooled connection.
func TestBufferedUploadGoesWithItsHead(t *testing.T) {
	up, seen := echoUpstream(t, nil)
	_, url := outboundTo(t, "", up.addr())
	c := dialRaw(t, url)
	defer c.Close()
	br := bufio.NewReader(c)
	bodies := []string{strings.Repeat("a", 1024), "x", strings.Repeat("b", 6000), "{\"k\":\"\r\n\"}"}
	before := laneBuffered.Load()
	for _, b := range bodies {
		// One write: the lane reads head and body together.
		io.WriteString(c, fmt.Sprintf("POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(b), b))
		readAnswers(t, c, br, b)
	}
	if got := laneBuffered.Load() - before; got != int64(len(bodies)) {
		t.Fatalf("%d of %d bodies went with their heads", got, len(bodies))
	}
	got := seen()
	if len(got) != len(bodies) {
		t.Fatalf("the upstream got %d requests, want %d: %+v", len(got), len(bodies), got)
	}
	for i, s := range got {
		if s.method != "POST" || s.length != int64(len(bodies[i])) || s.body != bodies[i] || s.conn != 1 {
			t.Errorf("request %d reached the upstream as %s, Content-Length %d, %d bytes, on connection %d; want POST, %d, %d, 1",
				i+1, s.method, s.length, len(s.body), s.conn, len(bodies[i]), len(bodies[i]))
		}
	}
}

// A pooled connection that turns out not to be quiet (here the upstream
// sent bytes after its last response) gets none of a buffered upload: it
// goes whole on a new connection, once, even for a POST, which is never
// sent twice.
func TestBufferedUploadNotSentOnABrokenPooledConnection(t *testing.T) {
	answered, strayOut := make(chan struct{}), make(chan struct{})
	up, seen := echoUpstream(t, func(c net.Conn) {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		select {
		case <-answered:
		case <-time.After(10 * time.Second):
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray")
		close(strayOut)
	})
	_, url := outboundTo(t, "defaults: { retry: { max_retries: 0 } }", up.addr())
	c := dialRaw(t, url)
	defer c.Close()
	br := bufio.NewReader(c)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	readAnswers(t, c, br, "ok")
	close(answered)
	recv(t, strayOut, 10*time.Second, "the stray bytes sent")
	body := strings.Repeat("p", 2000)
	before := laneBuffered.Load()
	io.WriteString(c, fmt.Sprintf("POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(body), body))
	readAnswers(t, c, br, body)
	if laneBuffered.Load() == before {
		t.Fatal("the body did not go with its head")
	}
	got := seen()
	if len(got) != 2 || got[1].conn != 2 || got[1].body != body {
		t.Fatalf("the upstream got %+v; want the GET on connection 1, then the POST whole on connection 2", got)
	}
}

// A body that has not come whole with its head streams as it comes:
// ferry's client does not wait for it before the upstream hears of the
// request (an upload may be a stream the caller feeds as the upstream
// answers).
func TestUnbufferedUploadStreams(t *testing.T) {
	headIn := make(chan struct{})
	var once sync.Once
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() { close(headIn) })
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	}))
	_, url := outboundTo(t, "", up)
	c := dialRaw(t, url)
	defer c.Close()
	br := bufio.NewReader(c)
	before := laneBuffered.Load()
	io.WriteString(c, "POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello")
	recv(t, headIn, 10*time.Second, "the request at the upstream before its body was whole")
	io.WriteString(c, "world")
	readAnswers(t, c, br, "helloworld")
	if laneBuffered.Load() != before {
		t.Fatal("a body not yet whole was taken for a buffered one")
	}
	// That body was moved from the caller's socket by a goroutine of
	// ferry's client (socketUpload): the next request is not served in
	// its laneHead.
	reused := laneReused.Load()
	io.WriteString(c, "POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok")
	readAnswers(t, c, br, "ok")
	if laneReused.Load() != reused {
		t.Fatal("a request was served in the laneHead of one whose body was moved from the socket")
	}
}

// A lane exchange cancelled before its upload is hooked, whose context
// has made its inner one meanwhile (a value asked of a cancelled lane
// context makes it), has the upload unblocked at once: hookUpload took
// the context's lock and then asked Err, which took it again.
func TestHookUploadAfterCancel(t *testing.T) {
	lh := laneRequest([]byte("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n"), nil, nil)
	if lh == nil {
		t.Fatal("the lane refused a plain head")
	}
	le := &lh.ctx.le
	le.cancel(errGraceEnded)
	lh.req.Context().Value(handedConnKey{})
	c, _ := tcpPair(t)
	sb := &socketBody{conn: c, tc: c}
	sb.left.Store(3)
	b := &requestBody{rc: sb}
	hooked := make(chan bool, 1)
	go func() { hooked <- le.hookUpload(b) }()
	select {
	case ok := <-hooked:
		if !ok {
			t.Fatal("a lane request's upload was not hooked")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("hookUpload on a cancelled exchange never returned")
	}
	if !b.stopped.Load() {
		t.Fatal("the upload of a cancelled exchange was not unblocked")
	}
	read := make(chan error, 1)
	go func() { _, err := b.Read(make([]byte, 1)); read <- err }()
	select {
	case err := <-read:
		if err == nil {
			t.Fatal("read a byte the caller never sent")
		}
	case <-time.After(10 * time.Second):
		c.Close()
		t.Fatal("a read of the cancelled exchange's upload waited")
	}
}

// A buffered upload whose pooled connection turns out closed, and whose
// endpoint then refuses a new connection (a pod going away), is still
// whole: it goes to another endpoint, as it did when net/http's
// Transport sent it. It was taken before the look at the pooled
// connection, and the failed dial then left it counted as sent: a 502.
func TestBufferedUploadRetriedElsewhereAfterItsEndpointWent(t *testing.T) {
	answered, gone := make(chan struct{}), make(chan struct{})
	var a *rawServer
	a = startRawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nA")
		select {
		case <-answered:
		case <-time.After(10 * time.Second):
			return
		}
		// Going away: no new connections, the kept one closed.
		a.ln.Close()
		c.Close()
		close(gone)
	})
	b, seen := echoUpstream(t, nil)
	_, url := outboundTo(t, "defaults: { balancer: round_robin }", a.addr(), b.addr())
	c := dialRaw(t, url)
	defer c.Close()
	br := bufio.NewReader(c)
	// Round robin: the GET that lands on A is followed by one to B, then
	// the POST goes to A's kept connection.
	for i := 0; ; i++ {
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		if string(body) == "A" {
			break
		}
		if i == 1 {
			t.Fatal("two GETs, neither to A")
		}
	}
	close(answered)
	recv(t, gone, 10*time.Second, "A gone")
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	readAnswers(t, c, br, "") // B's echo of no body
	body := strings.Repeat("q", 500)
	io.WriteString(c, fmt.Sprintf("POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(body), body))
	readAnswers(t, c, br, body)
	var posts int
	for _, s := range seen() {
		if s.method == "POST" {
			posts++
			if s.body != body {
				t.Fatalf("B got the POST with %d bytes, want %d", len(s.body), len(body))
			}
		}
	}
	if posts != 1 {
		t.Fatalf("B got %d POSTs, want 1", posts)
	}
}
