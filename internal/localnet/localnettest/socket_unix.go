//go:build unix

package localnettest

import "syscall"

func closeSocket(fd int) error { return syscall.Close(fd) }
