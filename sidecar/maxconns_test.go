package sidecar

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// limits.max_connections: the bound on the connections a proxy listener
// serves at once.

// With limits.max_connections 4, a fifth connection waits in the backlog,
// unserved, until one of the four closes; the limit is logged and counted.
func TestMaxConnections(t *testing.T) {
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	sc, _ := outboundTo(t, "limits: { max_connections: 4 }\n", up)
	addr := sc.Addr("outbound")
	var four []net.Conn
	for range 4 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := idleH1(c); err != nil {
			t.Fatal(err)
		}
		four = append(four, c)
	}
	fifth, err := net.Dial("tcp", addr) // the kernel completes it: the backlog
	if err != nil {
		t.Fatal(err)
	}
	defer fifth.Close()
	io.WriteString(fifth, "GET /x HTTP/1.1\r\nHost: svc\r\n\r\n")
	fifth.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := fifth.Read(make([]byte, 1)); n > 0 || !isTimeoutErr(err) {
		t.Fatalf("the fifth connection was answered (%d bytes, %v) while four were open", n, err)
	}
	if got := scrape(t, sc, `ferry_connection_limit_reached_total{listener="outbound"}`); got != "1" {
		t.Errorf("ferry_connection_limit_reached_total = %q, want 1", got)
	}
	four[0].Close()
	fifth.SetReadDeadline(time.Now().Add(10 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(fifth), nil)
	if err != nil {
		t.Fatalf("the fifth connection, once one of four closed: %v", err)
	}
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("fifth: %d %q", res.StatusCode, body)
	}
}

// A caller connection taken over for a spliced upload (here one sent with
// Expect: 100-continue, which the lane hands to net/http first) still
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
	fmt.Fprintf(upload, "POST /up HTTP/1.1\r\nHost: svc\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", size)
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
	up := startRawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if req.Method == http.MethodGet {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				continue
			}
			// Answers before the body and reads no more of it.
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nearly")
			return
		}
	})
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
