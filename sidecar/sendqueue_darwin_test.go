package sidecar

import "golang.org/x/sys/unix"

const sendQueueKnown = true

// sendQueue is SO_NWRITE: the bytes in the socket fd's send buffer, where
// TCP keeps what it sent until the peer acknowledges it, which is what
// Linux's SIOCOUTQ counts.
func sendQueue(fd uintptr) (int, error) {
	return unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_NWRITE)
}
