//go:build linux && (amd64 || arm64)

package nodes

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"syscall"
	"unsafe"
)

// ServeH1Epoll relays HTTP/1.1 exchanges to upstream as ServeH1Floor does
// (the same framing, one upstream connection per caller connection dialled
// when the caller connects, both closed on any error), but on hand-written
// epoll loops instead of a goroutine per connection: one loop per P
// (GOMAXPROCS of them), each on a goroutine locked to its thread, making
// its system calls raw so that it keeps its P and never goes through the
// scheduler or Go's netpoller. It is the floor of a Go proxy that takes
// Go's runtime out of its I/O path, not a proxy anyone should run: besides
// the goroutine floor's limits it has no connect timeout (an upstream that
// never answers a SYN holds the caller until the kernel gives up).
//
// Each loop has its own listening socket on the same address
// (SO_REUSEPORT): the kernel spreads connections over the loops by a hash
// of their addresses whatever each loop is doing, and a loop is woken only
// for connections it will accept (wrk's 32 connections put 92 and 81,
// 104 and 81, 67 and 69 ticks of CPU on the two loops in three runs). A
// single listener shared with EPOLLEXCLUSIVE (what nginx does) wakes
// whichever loop sleeps, so connections opened while one loop is busy can
// all go to the other, and a loop woken for a connection may find another
// took it. The price of the hash: a connection stays on its loop, busy or
// not, for as long as it lives.
func ServeH1Epoll(listen, upstream string) error {
	return ServeH1EpollWith(listen, upstream, H1EpollOptions{})
}

// ServeH1EpollWith is ServeH1Epoll with other than the default options.
func ServeH1EpollWith(listen, upstream string, o H1EpollOptions) error {
	s, err := startH1Epoll(listen, upstream, o)
	if err != nil {
		return err
	}
	return s.wait()
}

// H1EpollOptions are the knobs of ServeH1EpollWith; the zero value is
// what ServeH1Epoll runs.
type H1EpollOptions struct {
	// Loops is the number of epoll loops; 0 means GOMAXPROCS.
	Loops int
	// SyscallWait makes a loop's blocking epoll_wait go through
	// syscall.Syscall6, which tells the scheduler and lets it hand the P
	// to another thread, instead of syscall.RawSyscall6, which keeps it.
	// See epollLoop.wait.
	SyscallWait bool
}

// h1Epoll is a running set of epoll loops.
type h1Epoll struct {
	addr  string
	loops []*epollLoop
	errs  chan error
	done  sync.WaitGroup
}

// startH1Epoll opens the listeners and starts the loops.
func startH1Epoll(listen, upstream string, o H1EpollOptions) (*h1Epoll, error) {
	la, err := net.ResolveTCPAddr("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("h1epoll: listen %s: %w", listen, err)
	}
	ua, err := net.ResolveTCPAddr("tcp", upstream)
	if err != nil || ua.IP == nil {
		return nil, fmt.Errorf("h1epoll: upstream %q: want host:port (%v)", upstream, err)
	}
	up := rawAddr(ua)
	n := o.Loops
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	s := &h1Epoll{errs: make(chan error, n)}
	for i := range n {
		l, err := newEpollLoop(la, up, !o.SyscallWait)
		if err != nil {
			s.close()
			return nil, fmt.Errorf("h1epoll: %w", err)
		}
		s.loops = append(s.loops, l)
		if i == 0 {
			// The other loops bind the port the first was given, so
			// that --listen 127.0.0.1:0 works.
			sa, err := syscall.Getsockname(l.lfd)
			if err != nil {
				s.close()
				return nil, fmt.Errorf("h1epoll: getsockname: %w", err)
			}
			switch a := sa.(type) {
			case *syscall.SockaddrInet4:
				la = &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}
			case *syscall.SockaddrInet6:
				la = &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}
			}
			s.addr = la.String()
		}
	}
	for _, l := range s.loops {
		l.running = true
		s.done.Add(1)
		go func() {
			defer s.done.Done()
			s.errs <- l.run()
		}()
	}
	return s, nil
}

// wait returns the first loop's error.
func (s *h1Epoll) wait() error { return <-s.errs }

// close stops the loops, closes every socket they hold and waits for them.
func (s *h1Epoll) close() {
	for _, l := range s.loops {
		if l.running {
			l.stop()
		} else {
			l.closeAll()
		}
	}
	s.done.Wait()
	for _, l := range s.loops {
		rawClose(l.wakefd)
	}
}

// rawSockaddr is an upstream address in the form connect(2) takes.
type rawSockaddr struct {
	family int
	buf    [syscall.SizeofSockaddrInet6]byte
	len    uintptr
}

func rawAddr(a *net.TCPAddr) *rawSockaddr {
	r := &rawSockaddr{}
	port := [2]byte{byte(a.Port >> 8), byte(a.Port)}
	if ip4 := a.IP.To4(); ip4 != nil {
		sa := (*syscall.RawSockaddrInet4)(unsafe.Pointer(&r.buf[0]))
		sa.Family = syscall.AF_INET
		sa.Port = *(*uint16)(unsafe.Pointer(&port[0])) // network order in memory
		copy(sa.Addr[:], ip4)
		r.family, r.len = syscall.AF_INET, syscall.SizeofSockaddrInet4
		return r
	}
	sa := (*syscall.RawSockaddrInet6)(unsafe.Pointer(&r.buf[0]))
	sa.Family = syscall.AF_INET6
	sa.Port = *(*uint16)(unsafe.Pointer(&port[0]))
	copy(sa.Addr[:], a.IP.To16())
	r.family, r.len = syscall.AF_INET6, syscall.SizeofSockaddrInet6
	return r
}

// listenReusePort opens a non-blocking listening socket on a with
// SO_REUSEPORT. An address without an IP listens on every IPv4 address.
func listenReusePort(a *net.TCPAddr) (int, error) {
	family := syscall.AF_INET
	var sa syscall.Sockaddr
	if ip4 := a.IP.To4(); ip4 != nil || a.IP == nil {
		s4 := &syscall.SockaddrInet4{Port: a.Port}
		copy(s4.Addr[:], ip4)
		sa = s4
	} else {
		s6 := &syscall.SockaddrInet6{Port: a.Port}
		copy(s6.Addr[:], a.IP.To16())
		sa, family = s6, syscall.AF_INET6
	}
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	for _, opt := range []int{syscall.SO_REUSEADDR, soReusePort} {
		if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, opt, 1); err != nil {
			syscall.Close(fd)
			return -1, fmt.Errorf("setsockopt: %w", err)
		}
	}
	if err := syscall.Bind(fd, sa); err != nil {
		syscall.Close(fd)
		return -1, fmt.Errorf("listen %s: bind: %w", a, err)
	}
	if err := syscall.Listen(fd, 4096); err != nil {
		syscall.Close(fd)
		return -1, fmt.Errorf("listen %s: %w", a, err)
	}
	return fd, nil
}

// The raw system calls of the loops. Each takes the slice's pointer in
// the call expression itself, where the compiler keeps the memory alive
// and in place for the call.

func rawRead(fd int, p []byte) (int, syscall.Errno) {
	r, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
	return int(r), e
}

// rawSend writes with MSG_NOSIGNAL, so that a peer gone away is an EPIPE
// and never a SIGPIPE.
func rawSend(fd int, p []byte) (int, syscall.Errno) {
	r, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)), syscall.MSG_NOSIGNAL, 0, 0)
	return int(r), e
}

func rawAccept(lfd int) (int, syscall.Errno) {
	r, _, e := syscall.RawSyscall6(syscall.SYS_ACCEPT4, uintptr(lfd), 0, 0, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0, 0)
	return int(r), e
}

func rawSocket(family int) (int, syscall.Errno) {
	r, _, e := syscall.RawSyscall(syscall.SYS_SOCKET, uintptr(family), syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	return int(r), e
}

func rawConnect(fd int, a *rawSockaddr) syscall.Errno {
	_, _, e := syscall.RawSyscall(syscall.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&a.buf[0])), a.len)
	return e
}

func rawNoDelay(fd int) {
	one := int32(1)
	_, _, _ = syscall.RawSyscall6(syscall.SYS_SETSOCKOPT, uintptr(fd), syscall.IPPROTO_TCP, syscall.TCP_NODELAY, uintptr(unsafe.Pointer(&one)), 4, 0)
}

func rawSoError(fd int) syscall.Errno {
	var v, n int32 = 0, 4
	_, _, e := syscall.RawSyscall6(syscall.SYS_GETSOCKOPT, uintptr(fd), syscall.SOL_SOCKET, syscall.SO_ERROR, uintptr(unsafe.Pointer(&v)), uintptr(unsafe.Pointer(&n)), 0)
	if e != 0 {
		return e
	}
	return syscall.Errno(v)
}

func rawEpollCtl(epfd, op, fd int, ev *syscall.EpollEvent) syscall.Errno {
	_, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	return e
}

func rawClose(fd int) {
	_, _, _ = syscall.RawSyscall(syscall.SYS_CLOSE, uintptr(fd), 0, 0)
}

// soReusePort is SO_REUSEPORT on amd64 and arm64, which package syscall
// does not name.
const soReusePort = 0xf

// epollET is EPOLLET as the uint32 of EpollEvent.Events (package syscall
// spells it as a negative int).
const epollET = 1 << 31

var errStopped = errors.New("h1epoll: stopped")
