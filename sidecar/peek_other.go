//go:build !windows

package sidecar

import (
	"net"
	"syscall"
)

// peekSocket looks at c's receive queue without waiting or consuming.
func peekSocket(c *net.TCPConn) (peekState, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return peekClosed, err
	}
	st := peekClosed
	var one [1]byte
	err = rc.Control(func(fd uintptr) {
		n, _, err := syscall.Recvfrom(int(fd), one[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK:
			st = peekEmpty
		case err == nil && n > 0:
			st = peekData
		}
	})
	return st, err
}
