package sidecar

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
)

// rawSock reads and writes a TCP connection with plain system calls made
// from inside the connection's syscall.RawConn, on the hot path of small
// exchanges (the lane's caller side, the zero-copy client's upstream
// side).
//
// Why: net.Conn's Read and Write enter each system call through the Go
// scheduler (entersyscall/exitsyscall). Every entry wakes the runtime's
// monitor thread when it sleeps, and a call that takes a few microseconds
// (a loopback write runs the receiver's TCP input) can have its P handed to
// another thread. At a few thousand requests a second that is several
// thread wake-ups per request, more CPU than ferry's own work. The socket
// is non-blocking, so a read or write never blocks: it returns EAGAIN,
// and RawConn then parks the goroutine in the netpoller exactly as
// net.Conn would, deadlines and Close included.
//
// Errors read as net.Conn's (a *net.OpError with Op "read" or "write"),
// so failure reasons and their classification do not change.
type rawSock struct {
	tc *net.TCPConn
	rc syscall.RawConn

	// The state of the read and of the write in progress, kept here so
	// that the functions handed to RawConn are made once, not per call. A
	// connection has at most one reader and one writer at a time.
	rbuf   []byte
	rn     int
	rerrno syscall.Errno
	readFn func(fd uintptr) bool
	// probeFn, probed and pbuf: quietNow's.
	probeFn func(fd uintptr) bool
	probed  bool
	pbuf    [1]byte
	wbuf    []byte
	wn      int
	werrno  syscall.Errno
	writeFn func(fd uintptr) bool

	// Deferred writes (see deferWrites): pend[:pn] went out, pend[pn:]
	// goes out at the start of the next Read.
	deferring bool
	pend      []byte
	pn        int
	perrno    syscall.Errno
	// quiet (see expectQuiet): the deferred bytes go out only if nothing
	// waits to be read first; early reports that something did.
	quiet, early bool
	// readNow's: the buffer, bytes read, and the read's error.
	nbuf   []byte
	nn     int
	nerrno syscall.Errno
	nowFn  func(fd uintptr) bool
}

// newRawSock returns tc's raw reader and writer, or nil when tc does not
// give its RawConn, or on Windows (then the caller keeps using tc).
func newRawSock(tc *net.TCPConn) *rawSock {
	if tc == nil || !rawSockSupported {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	s := &rawSock{tc: tc, rc: rc}
	s.readFn, s.writeFn, s.probeFn, s.nowFn = s.read, s.write, s.probe, s.now
	return s
}

// Read implements io.Reader as net.Conn's Read does: at least one byte,
// or an error (io.EOF at the peer's end of the stream).
//
// Bytes whose write was deferred (see deferWrites) go out first, from
// inside the read's wait: the read then does not try the socket before
// waiting (the answer to those bytes cannot be there yet), which spares a
// read(2) that would only say EAGAIN (unless expectQuiet asks for one
// before the write). RawConn resets the socket's
// readiness before calling the read function, so an answer arriving
// after the write wakes the wait. A failed write is returned as a write
// error.
func (s *rawSock) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		s.rbuf, s.rn, s.rerrno, s.perrno = p, 0, 0, 0
		err := s.rc.Read(s.readFn)
		n, errno, perrno := s.rn, s.rerrno, s.perrno
		s.rbuf, s.quiet = nil, false
		if s.early {
			s.early = false
			s.dropPending()
			return 0, errNotQuiet
		}
		if s.pn < len(s.pend) && err == nil && perrno == 0 {
			// The send buffer filled: write the rest the ordinary
			// way (waiting for room), then read.
			rest := s.pend[s.pn:]
			s.dropPending()
			if _, err := s.Write(rest); err != nil {
				return 0, err
			}
			continue
		}
		s.dropPending()
		switch {
		case perrno != 0:
			return 0, s.opError("write", os.NewSyscallError("write", perrno))
		case err != nil:
			return 0, s.opError("read", err)
		case errno != 0:
			return 0, s.opError("read", os.NewSyscallError("read", errno))
		case n == 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

// read is the RawConn function of Read: false asks to wait for the socket
// to become readable and be called again.
func (s *rawSock) read(fd uintptr) bool {
	if s.pn < len(s.pend) {
		if s.quiet && !s.nothingWaiting(fd) {
			s.early = true // nothing of pend went out
			return true
		}
		for s.pn < len(s.pend) {
			r, e := sysWrite(fd, s.pend[s.pn:])
			switch e {
			case 0:
				s.pn += r
			case syscall.EINTR:
			case syscall.EAGAIN:
				return true // Read writes the rest
			default:
				s.perrno = e
				return true
			}
		}
		return false // sent: wait for the answer
	}
	p := s.rbuf
	for {
		r, e := sysRead(fd, p)
		switch e {
		case 0:
			s.rn = r
			return true
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			s.rerrno = e
			return true
		}
	}
}

// errNotQuiet: the socket had bytes to read, its end of stream or an
// error before the deferred bytes went out (see expectQuiet). None of them
// went out.
var errNotQuiet = errors.New("bytes, a close or an error arrived before the request was sent")

// expectQuiet makes the next Read send its deferred bytes only if nothing
// is waiting to be read (what the peer sent before hearing them), and
// fail with errNotQuiet otherwise. It costs that Read one read(2).
func (s *rawSock) expectQuiet() { s.quiet = true }

// nothingWaiting reports that a read of fd finds nothing yet. What it
// reads, if anything, is dropped.
func (s *rawSock) nothingWaiting(fd uintptr) bool {
	for {
		_, e := sysRead(fd, s.rbuf)
		if e != syscall.EINTR {
			return e == syscall.EAGAIN
		}
	}
}

// quietNow reports whether nothing is waiting to be read on the socket now
// (what expectQuiet checks before a deferred write), with one read(2).
// What it reads, if anything, is dropped: the connection is done with.
func (s *rawSock) quietNow() bool {
	s.probed = false
	err := s.rc.Read(s.probeFn)
	return err == nil && s.probed
}

// readNow reads into p what the socket holds now, with one read(2) and
// no wait: 0 and no error when nothing is there yet.
func (s *rawSock) readNow(p []byte) (int, error) {
	s.nbuf, s.nn, s.nerrno = p, 0, 0
	err := s.rc.Read(s.nowFn)
	n, errno := s.nn, s.nerrno
	s.nbuf = nil
	switch {
	case err != nil:
		return 0, s.opError("read", err)
	case errno == syscall.EAGAIN:
		return 0, nil
	case errno != 0:
		return 0, s.opError("read", os.NewSyscallError("read", errno))
	case n == 0 && len(p) > 0:
		return 0, io.EOF
	}
	return n, nil
}

// now is the RawConn function of readNow.
func (s *rawSock) now(fd uintptr) bool {
	for {
		r, e := sysRead(fd, s.nbuf)
		if e != syscall.EINTR {
			s.nn, s.nerrno = max(r, 0), e
			return true
		}
	}
}

// probe is the RawConn function of quietNow.
func (s *rawSock) probe(fd uintptr) bool {
	s.rbuf = s.pbuf[:]
	s.probed = s.nothingWaiting(fd)
	s.rbuf = nil
	return true
}

// deferWrites, while on, makes Write keep its bytes for the next Read to
// send (see Read). The caller must make sure a Read follows that reaches
// the socket (nothing buffered above it is read instead).
func (s *rawSock) deferWrites(on bool) { s.deferring = on }

// sendPending writes the deferred bytes now, the ordinary way (waiting for
// room); deferWrites must be off.
func (s *rawSock) sendPending() error {
	if len(s.pend) == 0 {
		return nil
	}
	_, err := s.Write(s.pend)
	s.dropPending()
	return err
}

func (s *rawSock) dropPending() {
	s.pend, s.pn = s.pend[:0], 0
}

// Write implements io.Writer as net.Conn's Write does: all of p, or an
// error.
func (s *rawSock) Write(p []byte) (int, error) {
	if s.deferring {
		s.pend = append(s.pend, p...)
		return len(p), nil
	}
	s.wbuf, s.wn, s.werrno = p, 0, 0
	err := s.rc.Write(s.writeFn)
	n, errno := s.wn, s.werrno
	s.wbuf = nil
	switch {
	case err != nil:
		return n, s.opError("write", err)
	case errno != 0:
		return n, s.opError("write", os.NewSyscallError("write", errno))
	}
	return n, nil
}

// write is the RawConn function of Write: false (the send buffer is full)
// asks to wait for room and be called again.
func (s *rawSock) write(fd uintptr) bool {
	for s.wn < len(s.wbuf) {
		rest := s.wbuf[s.wn:]
		r, e := sysWrite(fd, rest)
		switch e {
		case 0:
			s.wn += r
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			s.werrno = e
			return true
		}
	}
	return true
}

// opError words err as net.Conn would for op: RawConn reports its own
// operation ("raw-read"), which is replaced.
func (s *rawSock) opError(op string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err
	}
	return &net.OpError{Op: op, Net: "tcp", Source: s.tc.LocalAddr(), Addr: s.tc.RemoteAddr(), Err: err}
}
