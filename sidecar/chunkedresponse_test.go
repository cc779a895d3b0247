package sidecar

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
)

// A chunked upstream response of the plain kind is read by ferry's own
// client: its body and its trailers (announced or not) reach an HTTP/1.1
// caller, and its connection carries the next request. One whose chunks
// break reaches the caller broken, and its connection carries no other.
func TestChunkedResponseReadByFerrysClient(t *testing.T) {
	var conns, requests atomic.Int64
	up := startRawServer(t, func(c net.Conn) {
		conns.Add(1)
		br := bufio.NewReader(c)
		for {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			if requests.Add(1) == 3 {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n")
				continue
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"+
				"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Checksum: 42\r\n\r\n")
		}
	})
	_, url := outboundTo(t, "defaults: { retry: { max_retries: 0 } }", up.addr())
	before := chunkedRead.Load()
	c := dialRaw(t, url)
	br := bufio.NewReader(c)
	for i := range 2 {
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n")
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(res.Body)
		if err != nil || string(b) != "hello world" || res.Trailer.Get("X-Checksum") != "42" || res.Header.Get("Content-Type") != "text/plain" {
			t.Fatalf("request %d: body %q (%v), trailer %v, header %v", i+1, b, err, res.Trailer, res.Header)
		}
	}
	if got := chunkedRead.Load() - before; got != 2 {
		t.Fatalf("ferry's client read %d of the 2 chunked bodies", got)
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("the upstream saw %d connections for two chunked answers, want 1", n)
	}
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(res.Body); err == nil {
		t.Fatalf("a body whose chunks broke reached the caller whole: %q", b)
	}
	c2 := dialRaw(t, url)
	io.WriteString(c2, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	readAnswers(t, c2, bufio.NewReader(c2), "hello world")
	if n := conns.Load(); n != 2 {
		t.Fatalf("the upstream saw %d connections, want 2: the one whose chunks broke carries no other request", n)
	}
}

// The head of a chunked answer waits for its first chunk's bytes only when
// they are in hand: a size line above zero, whole, and a byte after it.
func TestChunkSizeAbove0(t *testing.T) {
	for _, tc := range []struct {
		buf  string
		want bool
	}{
		{"5\r\nhello\r\n", true},
		{"5\r\nh", true},
		{"1a;name=v\r\nx", true},
		{"00000001\r\nx", true},
		{"FF\r\nx", true},
		{"5\r\n", false},          // no byte of the chunk yet
		{"5\r", false},            // the line not whole
		{"0\r\n\r\n", false},      // the last chunk: the body is empty
		{"000\r\nx", false},       // zero however written
		{"zz\r\nx", false},        // no size: the relay reports it
		{"5\nhello", false},       // a bare LF
		{";x\r\nhello", false},    // an extension without a size
		{"100000000\r\nx", false}, // more than eight digits
		{" 5\r\nx", false},
		{"", false},
	} {
		if got := chunkSizeAbove0([]byte(tc.buf)); got != tc.want {
			t.Errorf("%q: %v, want %v", tc.buf, got, tc.want)
		}
	}
}
