//go:build unix && !linux

package localnettest

import "syscall"

// tcpSocket opens an IPv4 TCP socket that is not inherited across exec;
// without SOCK_CLOEXEC, the fork lock keeps an exec from seeing it before
// it is marked close-on-exec.
func tcpSocket() (int, error) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, syscall.IPPROTO_TCP)
	if err == nil {
		syscall.CloseOnExec(fd)
	}
	return fd, err
}
