package sidecar

import (
	"errors"
	"io"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// readWriters reads the config file at path as os.ReadFile does, and
// reports whether a process had it open for writing as it was read: a
// writer that rewrites the file in place and pauses mid-file leaves a
// half that reads the same twice, and is still writing.
//
// Linux refuses a read lease (fcntl F_SETLEASE F_RDLCK) on a file some
// process has open for writing (EAGAIN). Held for the read, the lease also
// keeps a writer from opening the file meanwhile (its open waits the few
// microseconds until the lease is released: the kernel's lease break,
// whose SIGIO Go's runtime ignores). Where no lease can be had (a file
// ferry's uid does not own without CAP_LEASE, a file system without
// leases, leases turned off), writing is false: nothing is known, and the
// file is judged by its bytes alone, as before.
func readWriters(path string) (data []byte, writing bool, err error) {
	// O_NONBLOCK: a FIFO put at the path meanwhile is not waited on.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	var lease error
	rc, err := f.SyscallConn()
	if err == nil {
		err = rc.Control(func(fd uintptr) { _, lease = unix.FcntlInt(fd, unix.F_SETLEASE, unix.F_RDLCK) })
	}
	if err != nil {
		lease = err
	}
	data, err = io.ReadAll(f)
	if lease == nil {
		rc.Control(func(fd uintptr) { unix.FcntlInt(fd, unix.F_SETLEASE, unix.F_UNLCK) })
	}
	if err != nil {
		return nil, false, err
	}
	return data, errors.Is(lease, unix.EAGAIN), nil
}
