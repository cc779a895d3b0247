package sidecar

import "syscall"

// rawSock is not used on Windows: newRawSock returns nil, and callers use
// the net.Conn. Its plain read(2) and write(2) on a non-blocking socket
// have no counterpart there, where Go's sockets are overlapped handles
// driven by an I/O completion port. sysRead and sysWrite only say so.
const rawSockSupported = false

func sysRead(uintptr, []byte) (int, syscall.Errno) { return 0, syscall.EWINDOWS }

func sysWrite(uintptr, []byte) (int, syscall.Errno) { return 0, syscall.EWINDOWS }
