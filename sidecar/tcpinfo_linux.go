package sidecar

import (
	"net"

	"golang.org/x/sys/unix"
)

// socketFlow reads what c's socket has moved so far: the bytes it
// received and how many of them wait unread in its receive queue, and
// the bytes of its own the peer acknowledged (TCP_INFO's
// tcpi_bytes_received and tcpi_bytes_acked, Linux 4.1 and later; an older
// kernel leaves them 0); false when it cannot say.
func socketFlow(c *net.TCPConn) (flow, bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return flow{}, false
	}
	var f flow
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		var info *unix.TCPInfo
		if info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); ierr != nil {
			return
		}
		f.received, f.acked = info.Bytes_received, info.Bytes_acked
		f.queued, ierr = unix.IoctlGetInt(int(fd), unix.SIOCINQ)
	}); err != nil || ierr != nil {
		return flow{}, false
	}
	return f, true
}

// unreadBytes says how many bytes wait unread in c's receive queue
// (SIOCINQ); false when it cannot say.
func unreadBytes(c *net.TCPConn) (int, bool) {
	if c == nil {
		return 0, false
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, false
	}
	var n int
	var ierr error
	if err := rc.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); err != nil || ierr != nil {
		return 0, false
	}
	return n, true
}
