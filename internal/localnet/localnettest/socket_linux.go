package localnettest

import "syscall"

// tcpSocket opens an IPv4 TCP socket that is not inherited across exec.
func tcpSocket() (int, error) {
	return syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, syscall.IPPROTO_TCP)
}
