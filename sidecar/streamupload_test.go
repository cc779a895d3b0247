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
)

// headsUpstream echoes each request's body and says on heads when it has
// read a request's head, before its body (asking for it with a 100
// Continue when the head expects one); conns counts its connections.
func headsUpstream(t *testing.T) (up *rawServer, heads chan int64, conns *atomic.Int64) {
	return answeringUpstream(t, func(_ *http.Request, body []byte) []byte { return body })
}

// answeringUpstream is headsUpstream answering each request with what
// answer makes of it and its body (read whole).
func answeringUpstream(t *testing.T, answer func(req *http.Request, body []byte) []byte) (up *rawServer, heads chan int64, conns *atomic.Int64) {
	heads = make(chan int64, 16)
	conns = new(atomic.Int64)
	up = startRawServer(t, func(c net.Conn) {
		id := conns.Add(1)
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			heads <- id
			if req.Header.Get("Expect") == "100-continue" {
				io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n")
			}
			b, err := io.ReadAll(req.Body)
			if err != nil {
				return
			}
			b = answer(req, b)
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(b), b)
		}
	})
	return up, heads, conns
}

// A lane request whose body is not whole with its head (it came after the
// head, or it is larger than the lane's buffer) goes through ferry's own
// client, its bytes read from the caller's socket as they come, and both
// connections carry the next requests.
func TestStreamedUploadTakesFerrysClient(t *testing.T) {
	up, heads, conns := headsUpstream(t)
	_, url := outboundTo(t, "", up.addr())
	c := dialRaw(t, url)
	br := bufio.NewReader(c)
	buffered, copied := laneBuffered.Load(), copiedUp.Load()+takenNow.Load()

	// The body after its head: the upstream has the head first.
	io.WriteString(c, "POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello")
	if id := recv(t, heads, 10*time.Second, "the head upstream before the body was whole"); id != 1 {
		t.Fatalf("the head came on upstream connection %d, want 1", id)
	}
	io.WriteString(c, "world")
	readAnswers(t, c, br, "helloworld")

	// A body larger than the lane's buffer, in one write.
	big := strings.Repeat("m", 40000)
	io.WriteString(c, fmt.Sprintf("POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(big), big))
	recv(t, heads, 10*time.Second, "the second head")
	readAnswers(t, c, br, big)

	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	recv(t, heads, 10*time.Second, "the GET's head")
	readAnswers(t, c, br, "")

	if got := laneBuffered.Load() - buffered; got != 0 {
		t.Fatalf("%d bodies taken for buffered ones", got)
	}
	// "world", and at least what of the large body did not fit the
	// lane's buffer, went from the caller's socket: with the head
	// (takeNow) or by the body's goroutine (copyInto).
	if got, least := copiedUp.Load()+takenNow.Load()-copied, int64(5+len(big)-laneBufSize); got < least {
		t.Fatalf("%d body bytes copied from the caller's socket, want at least %d", got, least)
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("the upstream saw %d connections, want 1 (kept after each upload)", n)
	}
}

// An upstream that answers before it read the body (here at once, a 413)
// is heard while the caller still sends: the answer reaches the caller
// before the body is over. The upstream connection never carries another
// request, even once the caller has sent the rest of the body: the
// upstream may not have read it (this one reads on and never answers
// again; another would take what it left for the next request's head).
func TestStreamedUploadEarlyAnswer(t *testing.T) {
	var conns atomic.Int64
	up := startRawServer(t, func(c net.Conn) {
		n := conns.Add(1)
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if n == 1 {
			io.WriteString(c, "HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 7\r\n\r\ntoo big")
			io.Copy(io.Discard, br) // reads on, as a server may, never answering again
			return
		}
		b, _ := io.ReadAll(req.Body)
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(b), b)
	})
	_, url := outboundTo(t, "defaults: { retry: { max_retries: 0 } }", up.addr())
	c := dialRaw(t, url)
	br := bufio.NewReader(c)
	io.WriteString(c, "POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 30000\r\n\r\n"+strings.Repeat("e", 100))
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer while the body was still to come: %v", err)
	}
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusRequestEntityTooLarge || string(b) != "too big" {
		t.Fatalf("got %d %q, want the upstream's 413", res.StatusCode, b)
	}
	// The rest of the body, then the next request, on a new connection
	// (the first one's was not read whole when it was answered).
	io.WriteString(c, strings.Repeat("e", 30000-100))
	c2 := dialRaw(t, url)
	io.WriteString(c2, "POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok")
	readAnswers(t, c2, bufio.NewReader(c2), "ok")
	if n := conns.Load(); n != 2 {
		t.Fatalf("the upstream saw %d connections, want 2", n)
	}
}

// An upstream that echoes as it reads (full duplex) gets the rest of the
// body only once the caller has read the echo of what it sent: the
// response flows while the upload goes on.
func TestStreamedUploadFullDuplex(t *testing.T) {
	const piece, pieces = 5000, 6
	up := startRawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", req.ContentLength)
		buf := make([]byte, 4096)
		for {
			n, err := req.Body.Read(buf)
			if n > 0 {
				if _, werr := c.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	})
	_, url := outboundTo(t, "", up.addr())
	c := dialRaw(t, url)
	br := bufio.NewReader(c)
	io.WriteString(c, fmt.Sprintf("POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", piece*pieces))
	var body io.Reader
	for i := range pieces {
		p := strings.Repeat(string(rune('a'+i)), piece)
		io.WriteString(c, p)
		if i == 0 {
			// ferry sends the response head with the body's first bytes.
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer after the first piece: %v", err)
			}
			body = res.Body
		}
		got := make([]byte, piece)
		if _, err := io.ReadFull(body, got); err != nil {
			t.Fatalf("piece %d: no echo (%v): the upload and its answer must flow together", i+1, err)
		}
		if string(got) != p {
			t.Fatalf("piece %d echoed wrong", i+1)
		}
	}
	if n, err := io.Copy(io.Discard, body); n != 0 || err != nil {
		t.Fatalf("after the echo: %d more bytes, %v", n, err)
	}
}

// A lane body that came after its head, cut by its caller (FIN) once the
// upstream's answer has begun, is the caller's doing, as when net/http's
// Transport read it: no breaker failure, client_canceled in the access
// log, and a 400 when none of the answer went out yet. The move's failure
// closes the upstream connection, and the relay's failure that follows
// was taken for the upstream's body breaking (a 502, body_broken, a
// breaker failure).
func TestLaneStreamedBodyCutByCallerMidAnswer(t *testing.T) {
	sc, gotHead, settled := midAnswerFerry(t, "the caller cut its body")
	// The body's rest copied (less than spliceMin) and spliced.
	for _, size := range []int{2000, 4 * spliceMin} {
		t.Run(fmt.Sprintf("answer begun/%d", size), func(t *testing.T) {
			spliced, copied := splicedUp.Load(), copiedUp.Load()
			c := dialRaw(t, "http://"+sc.Addr("outbound"))
			fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: echo\r\nContent-Length: %d\r\n\r\n", size)
			io.WriteString(c, "hello") // with the head, or just after it
			res, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, piece := range []string{"hello", strings.Repeat("m", 1000)} {
				if piece != "hello" {
					io.WriteString(c, piece) // moved by the body's goroutine
				}
				got := make([]byte, len(piece))
				if _, err := io.ReadFull(res.Body, got); err != nil || string(got) != piece {
					t.Fatalf("echo of %d bytes: %d, err %v", len(piece), len(got), err)
				}
			}
			c.(*net.TCPConn).CloseWrite() // the body cut short
			if rest, err := io.ReadAll(res.Body); err == nil {
				t.Errorf("the answer ended whole after %q, want it broken", rest)
			}
			settled(t, "echo")
			// Counted as each move ends, the last before the exchange's
			// end was logged.
			moved := copiedUp.Load() - copied
			if size > spliceMin {
				moved = splicedUp.Load() - spliced
			}
			if moved < 1000 {
				t.Errorf("%d of the 1000 bytes after the head moved the way a body of %d bytes takes", moved, size)
			}
		})
	}

	t.Run("head before its body", func(t *testing.T) {
		c := dialRaw(t, "http://"+sc.Addr("outbound"))
		// The head alone first: the body is not whole with it.
		io.WriteString(c, "POST / HTTP/1.1\r\nHost: head\r\nContent-Length: 100\r\n\r\n")
		io.WriteString(c, "hello")
		recv(t, gotHead, 5*time.Second, "ferry to have the upstream's head")
		c.(*net.TCPConn).CloseWrite()
		wantCallersBody400(t, c)
		settled(t, "head")
	})
}

// holdTakeNow makes takeNow wait, once, until the test has written the
// body (atHook: it waits; then the test closes sent) and the caller's
// socket holds all of it.
func holdTakeNow(t *testing.T) (atHook chan struct{}, sent chan struct{}) {
	atHook, sent = make(chan struct{}, 1), make(chan struct{})
	testHookTakeNow = func(tc *net.TCPConn, left int64) {
		atHook <- struct{}{}
		<-sent
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if n, ok := unreadBytes(tc); !ok || n >= int(left) {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
	t.Cleanup(func() { testHookTakeNow = nil })
	return atHook, sent
}

// The rest of a small body that is in the caller's socket by the time its
// head goes upstream goes with the head, in one write, and nothing is left
// for the body's goroutine; one that is not there yet streams as before
// (TestStreamedUploadTakesFerrysClient, TestUnbufferedUploadStreams).
func TestStreamedUploadRestGoesWithItsHead(t *testing.T) {
	up, seen := echoUpstream(t, nil)
	_, url := outboundTo(t, "", up.addr())
	body := strings.Repeat("r", 5000)
	atHook, sent := holdTakeNow(t)
	c := dialRaw(t, url)
	br := bufio.NewReader(c)
	taken, copied := takenNow.Load(), copiedUp.Load()
	fmt.Fprintf(c, "POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", len(body))
	recv(t, atHook, 10*time.Second, "ferry about to send the head")
	io.WriteString(c, body)
	close(sent)
	readAnswers(t, c, br, body)
	if n, ok := unreadBytes(c.(*net.TCPConn)); ok && n != 0 {
		t.Fatalf("%d bytes after the answer", n)
	}
	if got := takenNow.Load() - taken; got != int64(len(body)) {
		t.Fatalf("%d of the body's %d bytes went with the head", got, len(body))
	}
	if got := copiedUp.Load() - copied; got != 0 {
		t.Fatalf("%d bytes left for the body's goroutine, want none", got)
	}
	if s := seen(); len(s) != 1 || s[0].body != body {
		t.Fatalf("the upstream got %d requests, want the one with its body whole", len(s))
	}
}

// An upload whose whole body went with its head waits for the answer's
// head as a bodiless request does: timeouts.response_header answers 504.
func TestStreamedUploadWithItsHeadResponseHeaderTimeout(t *testing.T) {
	up := startRawServer(t, func(c net.Conn) {
		io.Copy(io.Discard, c) // reads all, never answers
	})
	_, url := outboundTo(t, "defaults: { retry: { max_retries: 0 }, timeouts: { response_header: 300ms } }", up.addr())
	atHook, sent := holdTakeNow(t)
	c := dialRaw(t, url)
	taken := takenNow.Load()
	io.WriteString(c, "POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 3000\r\n\r\n")
	recv(t, atHook, 10*time.Second, "ferry about to send the head")
	io.WriteString(c, strings.Repeat("h", 3000))
	close(sent)
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusGatewayTimeout || !strings.Contains(res.Header.Get("X-Ferry-Error"), "timeouts.response_header") {
		t.Fatalf("got %d %q, want 504 naming timeouts.response_header", res.StatusCode, res.Header.Get("X-Ferry-Error"))
	}
	if got := takenNow.Load() - taken; got != 3000 {
		t.Fatalf("%d of the body's 3000 bytes went with the head", got)
	}
}
