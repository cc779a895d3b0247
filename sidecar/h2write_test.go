package sidecar

import (
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
)

// closedPeerConn is an upstream connection as it stands once the upstream
// answered the HTTP/2 preface in HTTP/1 and closed it: a write fails (the
// peer reset the connection), and the answer waits in the receive queue,
// read only after that write failed, as net/http's read loop may.
type closedPeerConn struct {
	net.Conn
	answer []byte
	failed chan struct{}
}

func (c *closedPeerConn) Write(p []byte) (int, error) {
	select {
	case <-c.failed:
	default:
		close(c.failed)
	}
	return 0, &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", syscall.EPIPE)}
}

func (c *closedPeerConn) Read(p []byte) (int, error) {
	<-c.failed
	if len(c.answer) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.answer)
	c.answer = c.answer[n:]
	return n, nil
}

// A request's write that fails because an HTTP/1 upstream answered the
// preface and closed (a POST's HEADERS and DATA, written as the answer
// arrives) fails with the upstream's answer, as the read of it does: the
// round trip then reports that the upstream does not speak HTTP/2, not
// 'write: broken pipe' (or 'connection reset by peer'), which the read loop
// would have explained had it come first.
func TestFrameCapConnWriteFailsWithTheHTTP1Answer(t *testing.T) {
	peer := &h2cPeer{key: "services.s.protocol", protocol: ProtocolAuto}
	cc := &closedPeerConn{answer: []byte("HTTP/1.1 505 HTTP Version Not Supported\r\nConnection: close\r\n\r\n"), failed: make(chan struct{})}
	c := &frameCapConn{Conn: cc, peer: peer, addr: "127.0.0.1:1"}
	read := make(chan error, 1)
	go func() { // net/http's read loop
		_, err := c.Read(make([]byte, 4096))
		read <- err
	}()
	_, err := c.Write([]byte("a HEADERS frame"))
	var nh *notHTTP2Error
	if !errors.As(err, &nh) || !strings.Contains(err.Error(), `"HTTP/1.1 505 HTTP Version Not Supported"`) {
		t.Errorf("write error %v, want the upstream's HTTP/1 answer", err)
	}
	if err := <-read; !errors.As(err, &nh) {
		t.Errorf("read error %v, want the upstream's HTTP/1 answer", err)
	}
}

// A write that fails on a connection whose upstream spoke HTTP/2 keeps its
// own error.
func TestFrameCapConnWriteErrorAfterHTTP2Frames(t *testing.T) {
	cc := &closedPeerConn{answer: settingsFrame(), failed: make(chan struct{})}
	c := &frameCapConn{Conn: cc, peer: &h2cPeer{key: "services.s.protocol", protocol: ProtocolAuto}, addr: "127.0.0.1:1"}
	read := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 4096))
		read <- err
	}()
	_, err := c.Write([]byte("a HEADERS frame"))
	if !errors.Is(err, syscall.EPIPE) {
		t.Errorf("write error %v, want its own (EPIPE)", err)
	}
	if err := <-read; err != nil {
		t.Errorf("read error %v, want the SETTINGS frame", err)
	}
}
