//go:build linux && (amd64 || arm64)

package nodes

import (
	"fmt"
	"net"
	"runtime"
	"syscall"
	"unsafe"
)

// epollBufSize is each direction's buffer per connection pair, the
// goroutine floor's size: a head must fit in it, a longer body goes
// through it in pieces.
const epollBufSize = 32 << 10

// epollLoop is one thread's event loop: its listener, its epoll instance
// and the connection pairs it accepted, which no other goroutine touches.
type epollLoop struct {
	epfd, lfd, wakefd int
	upstream          *rawSockaddr
	rawWait           bool
	running           bool         // run's goroutine started: only it may close the loop's sockets
	pairs             []*epollPair // by fd, both of a pair's fds
	nextID            int32
	events            [256]syscall.EpollEvent
}

func newEpollLoop(listen *net.TCPAddr, upstream *rawSockaddr, rawWait bool) (*epollLoop, error) {
	l := &epollLoop{epfd: -1, lfd: -1, wakefd: -1, upstream: upstream, rawWait: rawWait}
	fail := func(err error) (*epollLoop, error) {
		l.closeAll()
		if l.wakefd >= 0 {
			rawClose(l.wakefd)
		}
		return nil, err
	}
	var err error
	if l.epfd, err = syscall.EpollCreate1(syscall.EPOLL_CLOEXEC); err != nil {
		return fail(fmt.Errorf("epoll_create1: %w", err))
	}
	r, _, e := syscall.RawSyscall(syscall.SYS_EVENTFD2, 0, syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0)
	if e != 0 {
		return fail(fmt.Errorf("eventfd2: %w", e))
	}
	l.wakefd = int(r)
	if l.lfd, err = listenReusePort(listen); err != nil {
		return fail(err)
	}
	for _, fd := range []int{l.lfd, l.wakefd} {
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN | epollET, Fd: int32(fd)}
		if e := rawEpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); e != 0 {
			return fail(fmt.Errorf("epoll_ctl: %w", e))
		}
	}
	return l, nil
}

// run is the loop. It polls without blocking while polls find events and
// blocks in epoll_wait when one finds none.
func (l *epollLoop) run() error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer l.closeAll()
	block := false
	for {
		n, errno := l.wait(block)
		switch {
		case errno == syscall.EINTR:
			continue
		case errno != 0:
			return fmt.Errorf("h1epoll: epoll_wait: %w", errno)
		}
		block = n == 0
		for i := range n {
			ev := l.events[i]
			switch fd := int(ev.Fd); fd {
			case l.lfd:
				l.accept()
			case l.wakefd:
				return errStopped
			default:
				if p := l.pairs[fd]; p != nil && p.id == ev.Pad {
					l.pairEvent(p, fd, ev.Events)
				}
			}
		}
	}
}

// wait is one epoll_wait, blocking or not.
//
// The blocking wait is where the two ways of making a system call differ.
// RawSyscall6 keeps the P through the wait: no other goroutine can run on
// it (a process that runs only loops has none to run), and the loop wakes
// up on the same P with nothing to ask of the scheduler. The price is that
// the scheduler only gets the P back by preempting the loop: sysmon and a
// stop-the-world signal the thread, the signal ends epoll_wait with EINTR,
// and the next function prologue (wait's own, at the latest) yields. So a
// loop blocked this way still serves the collector, only a signal later,
// and sysmon interrupts an idle loop every 10 ms or so. Syscall6 tells the
// scheduler the thread is blocked; if the wait outlasts sysmon's next look
// (20 µs to 10 ms), the P goes to another thread and the loop's wake-up
// has to get one back: that is the price a goroutine per connection pays
// on every wait through the netpoller, and it is what this floor is built
// to measure without. On a 2-vCPU VM (wrk -t2 -c32, 1 KiB GETs, 9
// interleaved rounds, medians) the raw wait served 54.7k req/s at 10.5
// CPU-µs per request and Syscall6 38.3k at 13.5, below the goroutine
// floor's 41.4k: the raw wait is the default.
func (l *epollLoop) wait(block bool) (int, syscall.Errno) {
	var r uintptr
	var e syscall.Errno
	evs, n := uintptr(unsafe.Pointer(&l.events[0])), uintptr(len(l.events))
	switch {
	case !block:
		r, _, e = syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, uintptr(l.epfd), evs, n, 0, 0, 0)
	case l.rawWait:
		r, _, e = syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, uintptr(l.epfd), evs, n, ^uintptr(0), 0, 0)
	default:
		r, _, e = syscall.Syscall6(syscall.SYS_EPOLL_PWAIT, uintptr(l.epfd), evs, n, ^uintptr(0), 0, 0)
	}
	if e != 0 {
		return 0, e
	}
	return int(r), 0
}

// accept takes every pending connection and starts its upstream
// connection.
func (l *epollLoop) accept() {
	for {
		down, e := rawAccept(l.lfd)
		switch e {
		case 0:
		case syscall.EAGAIN:
			return
		case syscall.EINTR, syscall.ECONNABORTED:
			continue
		default:
			// EMFILE and the like: the connections stay queued, and
			// an edge comes with the next one.
			return
		}
		rawNoDelay(down)
		up, e := rawSocket(l.upstream.family)
		if e != 0 {
			rawClose(down)
			continue
		}
		p := &epollPair{down: down, up: up, id: l.nextID, toUp: true,
			req:  flow{buf: make([]byte, epollBufSize)},
			resp: flow{buf: make([]byte, epollBufSize)},
		}
		l.nextID++
		switch e := rawConnect(up, l.upstream); e {
		case 0:
			rawNoDelay(up)
		case syscall.EINPROGRESS:
			p.connecting = true
		default:
			rawClose(down) // the upstream is down: so is the caller
			rawClose(up)
			continue
		}
		if !l.add(p, down) || !l.add(p, up) {
			l.closePair(p)
		}
	}
}

// add registers fd of p, edge-triggered for reading and writing both, so
// that it never needs an epoll_ctl again: a flow goes on until a call
// would block, and that socket's next edge resumes it.
func (l *epollLoop) add(p *epollPair, fd int) bool {
	for fd >= len(l.pairs) {
		l.pairs = append(l.pairs, make([]*epollPair, max(64, len(l.pairs)))...)
	}
	l.pairs[fd] = p
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLOUT | epollET, Fd: int32(fd), Pad: p.id}
	return rawEpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, fd, &ev) == 0
}

// pairEvent moves p on after an event on fd.
func (l *epollLoop) pairEvent(p *epollPair, fd int, events uint32) {
	if fd == p.up && p.connecting {
		if events&(syscall.EPOLLOUT|syscall.EPOLLERR|syscall.EPOLLHUP) == 0 {
			return
		}
		if rawSoError(p.up) != 0 {
			l.closePair(p)
			return
		}
		p.connecting = false
		rawNoDelay(p.up)
	}
	if !p.drive() {
		l.closePair(p)
		return
	}
	// An error or hang-up on the socket the pair is not waiting on would
	// come as no other edge: the pair is done.
	if events&(syscall.EPOLLERR|syscall.EPOLLHUP) != 0 {
		l.closePair(p)
	}
}

// closePair closes both sockets of p; closing takes them out of the epoll
// set.
func (l *epollLoop) closePair(p *epollPair) {
	if l.pairs[p.down] == p {
		l.pairs[p.down] = nil
	}
	if p.up < len(l.pairs) && l.pairs[p.up] == p {
		l.pairs[p.up] = nil
	}
	rawClose(p.down)
	rawClose(p.up)
}

// stop wakes the loop, which closes everything it holds and returns.
func (l *epollLoop) stop() {
	one := uint64(1)
	_, _, _ = syscall.RawSyscall(syscall.SYS_WRITE, uintptr(l.wakefd), uintptr(unsafe.Pointer(&one)), 8)
}

// closeAll closes the loop's pairs, listener and epoll fd. The wake-up
// fd outlives the loop, so that stop never writes to a closed (or
// reused) fd; h1Epoll.close closes it.
func (l *epollLoop) closeAll() {
	for _, p := range l.pairs {
		if p != nil {
			l.closePair(p)
		}
	}
	for _, fd := range []int{l.lfd, l.epfd} {
		if fd >= 0 {
			rawClose(fd)
		}
	}
	l.lfd, l.epfd = -1, -1
}
