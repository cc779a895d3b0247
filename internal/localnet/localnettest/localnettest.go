// Package localnettest gives ferry's tests loopback addresses that refuse
// connections.
package localnettest

import (
	"net"
	"syscall"
	"testing"
)

// RefusedAddr returns a loopback address ("127.0.0.1:port") where a TCP
// connect is refused for the rest of the test.
//
// Listening on port 0 and closing the listener frees the port: another
// test process can bind it meanwhile, and then the "dead" endpoint answers.
// Here the port stays held instead: a TCP socket is bound to it, without
// SO_REUSEADDR and without listen(2), until t's cleanup. The kernel
// answers a connect to a bound socket that does not listen with a reset,
// and no other socket can bind the port while it is held, so the address
// cannot come to life, nor coincide with another RefusedAddr's.
func RefusedAddr(t testing.TB) string {
	t.Helper()
	fd, err := tcpSocket()
	if err != nil {
		t.Fatalf("refused address: socket: %v", err)
	}
	t.Cleanup(func() { closeSocket(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("refused address: bind: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatalf("refused address: getsockname: %v", err)
	}
	in4, ok := sa.(*syscall.SockaddrInet4)
	if !ok || in4.Port == 0 {
		t.Fatalf("refused address: bound to %#v", sa)
	}
	return (&net.TCPAddr{IP: net.IP(in4.Addr[:]), Port: in4.Port}).String()
}
