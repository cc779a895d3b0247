package sidecar

import (
	"net"
	"unsafe"

	"golang.org/x/sys/windows"
)

// WSAPoll, which x/sys/windows does not wrap.
var procWSAPoll = windows.NewLazySystemDLL("ws2_32.dll").NewProc("WSAPoll")

const (
	fionread   = 0x4004667f // FIONREAD: the bytes waiting to be read
	pollRdNorm = 0x0100     // POLLRDNORM
)

// wsaPollFD is WSAPOLLFD.
type wsaPollFD struct {
	fd      windows.Handle
	events  int16
	revents int16
}

// peekSocket looks at c's receive queue without waiting or consuming.
// Go's sockets on Windows are overlapped handles in blocking mode, so the
// Linux way (recv with MSG_PEEK|MSG_DONTWAIT) would wait there. Instead
// FIONREAD counts the bytes waiting, and, when there are none, a WSAPoll
// that does not wait tells an open socket with nothing to read (nothing
// to report) from one whose peer closed or reset it (readable, hung up or
// failed, with nothing to read). The verdicts are the Linux version's.
func peekSocket(c *net.TCPConn) (peekState, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return peekClosed, err
	}
	st := peekClosed
	err = rc.Control(func(fd uintptr) {
		h := windows.Handle(fd)
		var waiting, size uint32
		if windows.WSAIoctl(h, fionread, nil, 0, (*byte)(unsafe.Pointer(&waiting)), uint32(unsafe.Sizeof(waiting)), &size, nil, 0) != nil {
			return // the socket failed
		}
		if waiting > 0 {
			st = peekData
			return
		}
		p := wsaPollFD{fd: h, events: pollRdNorm}
		if n, _, _ := procWSAPoll.Call(uintptr(unsafe.Pointer(&p)), 1, 0); int32(n) == 0 {
			st = peekEmpty // nothing to report: open, nothing yet
		}
		// Otherwise readable with no bytes (the end of stream), hung up
		// or failed; or WSAPoll itself failed: peekClosed, as a failed
		// recv is on Linux.
	})
	return st, err
}
