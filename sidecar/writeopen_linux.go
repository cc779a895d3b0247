package sidecar

import (
	"errors"
	"io"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// readWriters reads the config file at path as os.ReadFile does, and
// reports whether a process had it open for writing as it was read: a
// writer that rewrites the file in place and pauses mid-file leaves a
// half that reads the same twice, and is still writing.
//
// Linux refuses a read lease (fcntl F_SETLEASE F_RDLCK) on a file some
// process has open for writing (EAGAIN). Held for the read, the lease also
// keeps a writer from opening the file meanwhile: its open waits until the
// read ends and the lease is released (the kernel's lease break, whose
// SIGIO Go's runtime ignores). Where no lease can be had (a file ferry's
// uid does not own without CAP_LEASE, a file system without leases,
// leases turned off, a FIFO or other file that is not a regular one),
// writing is false: nothing is known, and the file is judged by its bytes
// alone, as before.
//
// The open blocks, as os.ReadFile's does: a FIFO at the path is read once
// a writer opened it (and until it closes it), and a file another process
// holds a write lease on (a file server sharing the directory) is read
// once the holder let it go, at most the system's lease-break-time.
func readWriters(path string) (data []byte, writing bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, false, err
	}
	var lease error
	if err := rc.Control(func(fd uintptr) { _, lease = unix.FcntlInt(fd, unix.F_SETLEASE, unix.F_RDLCK) }); err != nil {
		lease = err
	}
	if lease == nil {
		if h := testHookLeaseHeld.Load(); h != nil {
			(*h)(f)
		}
	}
	data, err = io.ReadAll(f)
	if lease == nil {
		// Release the lease (the Close would too): a writer waiting in
		// its open of the file goes on.
		rc.Control(func(fd uintptr) { unix.FcntlInt(fd, unix.F_SETLEASE, unix.F_UNLCK) })
	}
	if err != nil {
		return nil, false, err
	}
	return data, errors.Is(lease, unix.EAGAIN), nil
}

// testHookLeaseHeld, when set, is called by readWriters with the file it
// holds a read lease on, before it reads it.
var testHookLeaseHeld atomic.Pointer[func(f *os.File)]
