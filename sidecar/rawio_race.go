//go:build race && !windows

package sidecar

import "syscall"

const rawSockSupported = true // see rawio_windows.go

// Under the race detector rawSock goes through syscall.Read and
// syscall.Write, which tell the detector that a write to a socket happens
// before the read of its bytes (as net.Conn does). Raw system calls would
// hide that ordering and make every test that hands data between
// goroutines through a socket report false races.
func sysRead(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Read(int(fd), p)
	return n, errnoOf(err)
}

func sysWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := syscall.Write(int(fd), p)
	return n, errnoOf(err)
}

func errnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	return err.(syscall.Errno)
}
