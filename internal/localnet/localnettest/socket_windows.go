package localnettest

import (
	"syscall"

	"golang.org/x/sys/windows"
)

// soExclusiveAddrUse is SO_EXCLUSIVEADDRUSE, which syscall does not name.
const soExclusiveAddrUse = ^syscall.SO_REUSEADDR

// tcpSocket opens an IPv4 TCP socket that child processes do not inherit.
// It is made exclusive: on Windows, a socket bound without it can still
// have its port taken by another that sets SO_REUSEADDR, where Linux
// refuses any second bind while the first socket holds the port.
func tcpSocket() (syscall.Handle, error) {
	h, err := windows.WSASocket(windows.AF_INET, windows.SOCK_STREAM, windows.IPPROTO_TCP, nil, 0, windows.WSA_FLAG_NO_HANDLE_INHERIT)
	if err != nil {
		return syscall.InvalidHandle, err
	}
	fd := syscall.Handle(h)
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, soExclusiveAddrUse, 1); err != nil {
		syscall.Closesocket(fd)
		return syscall.InvalidHandle, err
	}
	return fd, nil
}

func closeSocket(fd syscall.Handle) error { return syscall.Closesocket(fd) }
