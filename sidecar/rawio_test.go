package sidecar

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

func TestRawSockReadsAndWritesLikeNetConn(t *testing.T) {
	c, s := tcpPair(t)
	rc, rs := newRawSock(c), newRawSock(s)
	if rc == nil || rs == nil {
		t.Fatal("no raw socket for a TCP connection")
	}
	// A write larger than the socket buffers goes out whole: the writer
	// waits in the netpoller for room while the reader drains.
	c.SetWriteBuffer(64 << 10)
	s.SetReadBuffer(64 << 10)
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	done := make(chan error, 1)
	go func() {
		n, err := rc.Write(big)
		if err == nil && n != len(big) {
			err = errors.New("short write")
		}
		done <- err
	}()
	got := make([]byte, len(big))
	if _, err := io.ReadFull(rs, got); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, big) {
		t.Fatal("bytes changed on the way")
	}
	if n, err := rs.Read(nil); n != 0 || err != nil {
		t.Fatalf("empty read: %d, %v", n, err)
	}
	// The peer's end of the stream is io.EOF, as from net.Conn.
	c.CloseWrite()
	if n, err := rs.Read(got); n != 0 || err != io.EOF {
		t.Fatalf("read at the end: %d, %v; want 0, EOF", n, err)
	}
}

func TestRawSockDeadlineAndCloseWordedLikeNetConn(t *testing.T) {
	c, _ := tcpPair(t)
	raw := newRawSock(c)
	buf := make([]byte, 10)

	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, rawErr := raw.Read(buf)
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, netErr := c.Read(buf)
	var ne net.Error
	if !errors.As(rawErr, &ne) || !ne.Timeout() || !errors.Is(rawErr, os.ErrDeadlineExceeded) {
		t.Fatalf("deadline: %v; want a timeout", rawErr)
	}
	if rawErr.Error() != netErr.Error() {
		t.Fatalf("deadline worded %q, net.Conn says %q", rawErr, netErr)
	}
	c.SetReadDeadline(time.Time{})

	// A read waiting in the netpoller (or about to) ends when the
	// connection closes, worded as net.Conn words it.
	errc := make(chan error, 1)
	go func() {
		_, err := raw.Read(buf)
		errc <- err
	}()
	c.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read on a closed connection: %v", err)
		}
		var oe *net.OpError
		if !errors.As(err, &oe) || oe.Op != "read" {
			t.Fatalf("read on a closed connection: %#v; want an OpError of op read", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a read did not end when its connection closed")
	}
	if _, err := raw.Write([]byte("x")); !errors.Is(err, net.ErrClosed) || !strings.HasPrefix(err.Error(), "write tcp") {
		t.Fatalf("write on a closed connection: %v", err)
	}
}

func TestRawSockResetWordedLikeNetConn(t *testing.T) {
	words := func(read func(c *net.TCPConn, b []byte) error) string {
		c, s := tcpPair(t)
		s.SetLinger(0)
		s.Close() // a reset
		b := make([]byte, 10)
		err := read(c, b)
		if err == nil {
			t.Fatal("read after a reset succeeded")
		}
		return strings.ReplaceAll(err.Error(), c.LocalAddr().String(), "LOCAL")
	}
	rawWords := words(func(c *net.TCPConn, b []byte) error { _, err := newRawSock(c).Read(b); return err })
	netWords := words(func(c *net.TCPConn, b []byte) error { _, err := c.Read(b); return err })
	// The remote port differs between the two pairs: compare the rest.
	cut := func(s string) string {
		_, after, _ := strings.Cut(s, "->")
		_, after, _ = strings.Cut(after, ": ")
		return after
	}
	if cut(rawWords) != cut(netWords) || !strings.HasPrefix(rawWords, "read tcp") {
		t.Fatalf("reset worded %q, net.Conn says %q", rawWords, netWords)
	}
}

// Deferred bytes go out with the next Read, which then returns the
// answer to them; nothing is sent before.
func TestRawSockDeferredWriteGoesOutWithTheRead(t *testing.T) {
	c, s := tcpPair(t)
	raw := newRawSock(c)
	deferWrite(raw, []byte("pi"), []byte("ng"))
	if st, err := peekSocket(s); err != nil || st != peekEmpty {
		t.Fatalf("deferred bytes went out at once (peer sees %v, %v)", st, err)
	}
	go func() {
		b := make([]byte, 4)
		if _, err := io.ReadFull(s, b); err == nil && string(b) == "ping" {
			s.Write([]byte("pong"))
		}
		s.Close()
	}()
	got, err := io.ReadAll(raw)
	if err != nil || string(got) != "pong" {
		t.Fatalf("read %q, %v; want pong", got, err)
	}
}

// Deferred bytes larger than the socket buffers still go out whole (the
// rest the ordinary way, waiting for room) before the answer is read.
func TestRawSockDeferredWriteLargerThanTheBuffers(t *testing.T) {
	c, s := tcpPair(t)
	c.SetWriteBuffer(64 << 10)
	s.SetReadBuffer(64 << 10)
	raw := newRawSock(c)
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	deferWrite(raw, big)
	go func() {
		got := make([]byte, len(big))
		if _, err := io.ReadFull(s, got); err == nil && bytes.Equal(got, big) {
			s.Write([]byte("all there"))
		}
		s.Close()
	}()
	got, err := io.ReadAll(raw)
	if err != nil || string(got) != "all there" {
		t.Fatalf("read %q, %v; want the peer to have had every byte", got, err)
	}
}

// A deferred write that fails is reported by the Read as a write error,
// as net.Conn's Write would have reported it.
func TestRawSockDeferredWriteFailure(t *testing.T) {
	c, s := tcpPair(t)
	s.SetLinger(0)
	s.Close() // a reset
	waitFor(t, "the reset to arrive", 10*time.Second, func() bool {
		st, _ := peekSocket(c)
		return st == peekClosed
	})
	raw := newRawSock(c)
	deferWrite(raw, []byte("ping"))
	_, err := raw.Read(make([]byte, 10))
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "write" {
		t.Fatalf("read after a failed deferred write: %v; want a write error", err)
	}
	// Nothing stays pending for the next read.
	if _, err := raw.Read(make([]byte, 10)); err == nil || errors.As(err, &oe) && oe.Op != "read" {
		t.Fatalf("second read: %v; want a read error", err)
	}
}

// deferWrite writes each of ps to raw with its writes deferred.
func deferWrite(raw *rawSock, ps ...[]byte) {
	raw.deferWrites(true)
	defer raw.deferWrites(false)
	for _, p := range ps {
		raw.Write(p)
	}
}
