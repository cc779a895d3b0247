//go:build !race && !windows

package sidecar

import (
	"syscall"
	"unsafe"
)

const rawSockSupported = true // see rawio_windows.go

// sysRead and sysWrite are read(2) and write(2) made without entering the
// scheduler (see rawSock).
func sysRead(fd uintptr, p []byte) (int, syscall.Errno) {
	r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(r), e
}

func sysWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(r), e
}
