package sidecar

// limits.max_connections: the lane serves at most that many connections at
// once, each holding a token in slots. When a caller comes and the lane is
// at the bound, the lane closes its longest-idle HTTP/1.1 keep-alive
// connection to make room, as servers do with idle connections under
// pressure: HTTP/1.1 lets a server close a connection between requests at
// any time, and a client retries an idempotent request it sent on one just
// closed (RFC 9112 section 9.3.1). Without that, an application's pool of
// idle connections could hold every slot while new callers waited out
// limits.idle_timeout. A connection with a request in progress is never
// closed for room, and neither is one still waiting for its first request
// (read_header_timeout bounds that wait).
//
// How the lane knows a caller is waiting: at the bound it still accepts
// one connection, the next caller's, and holds it unserved while it makes
// room; further callers wait in the kernel's backlog as before. The
// accepted connection is the signal itself, on every platform and for any
// listener, and it comes exactly when a caller does. Linux reports the
// accept queue's length on a listening socket (TCP_INFO's tcpi_unacked),
// but reading it would mean polling the socket while at the bound, or
// waiting for it to become readable beside Accept; and the caller it
// counted would still have to be accepted. The cost: one socket past the
// bound, with no goroutine or buffer.
//
// Connections handed over to net/http (h2c, and HTTP/1.1 requests the lane
// does not serve itself) keep their slots until they close: net/http's
// server has no way to close one of its idle connections alone, and
// closing one from outside could cut a request it has begun reading.

// A lane connection's state, for a drain and for making room.
const (
	connBusy   int32 = iota // a request in progress, or the connection starting
	connFresh               // waiting for its first request
	connIdle                // kept alive after a request, the next not begun
	connReaped              // closed to make room: no request starts on it
)

// limitEpisode is Serve's memory of the current stretch at the bound: it
// begins when a caller finds the lane full and ends when one is admitted
// without waiting. Each episode is logged and counted once.
type limitEpisode struct {
	atLimit    bool
	roomLogged bool // the episode's first closure for room was logged
}

// admit takes a slot for a connection just accepted, and says whether it
// did (false: the lane is closing). At the bound it closes the
// longest-idle keep-alive connection, or, with none idle, the first to
// become idle, and waits for a slot.
func (l *lane) admit(ep *limitEpisode) bool {
	if l.slots == nil {
		return true
	}
	select {
	case l.slots <- struct{}{}:
		if ep.atLimit {
			*ep = limitEpisode{}
			l.log.Info("below limits.max_connections again", "listener", l.name)
		}
		return true
	default:
	}
	if !ep.atLimit {
		ep.atLimit = true
		l.log.Warn("limits.max_connections reached; a new connection waits for room",
			"listener", l.name, "max_connections", cap(l.slots))
		if l.tel != nil {
			l.tel.Metrics().ConnectionLimitReached(l.name)
		}
	}
	// roomWanted before the look for an idle connection: setIdle stores
	// the state before it loads roomWanted, so (the atomics being
	// sequentially consistent) a connection going idle now is either
	// found by closeIdlest or signals idled.
	l.roomWanted.Store(true)
	defer l.roomWanted.Store(false)
	for made := false; ; {
		if !made && l.closeIdlest() {
			// One closure per waiting caller: its slot comes back when the
			// connection's goroutine ends.
			made = true
			if l.tel != nil {
				l.tel.Metrics().ConnectionClosedForRoom(l.name)
			}
			if !ep.roomLogged {
				ep.roomLogged = true
				l.log.Info("closing idle keep-alive connections to make room for new ones",
					"listener", l.name, "max_connections", cap(l.slots))
			}
		}
		select {
		case l.slots <- struct{}{}:
			return true
		case <-l.idled:
			// A connection went idle: look again.
		case <-l.stopped:
			return false
		}
	}
}

// closeIdlest closes the lane connection idle longest, if one is idle, and
// says whether it did. It skips a connection whose caller has sent bytes
// the lane has not read yet: its next request has begun.
func (l *lane) closeIdlest() bool {
	l.mu.Lock()
	var idle []*laneConn
	for c := range l.conns {
		if c.state.Load() == connIdle {
			idle = append(idle, c)
		}
	}
	l.mu.Unlock()
	for len(idle) > 0 {
		// The oldest first; a scan, the list being at most the bound and
		// made only when a caller waits at it.
		k := 0
		for i, c := range idle {
			if c.idleSince.Load() < idle[k].idleSince.Load() {
				k = i
			}
		}
		c := idle[k]
		idle[k] = idle[len(idle)-1]
		idle = idle[:len(idle)-1]
		if n, ok := unreadBytes(c.tc); ok && n > 0 {
			continue
		}
		// The state decides a race with a request beginning: setBusy
		// moves idle to busy, this idle to reaped; only one succeeds.
		if c.state.CompareAndSwap(connIdle, connReaped) {
			c.c.Close()
			return true
		}
	}
	return false
}

// setIdle records that a connection waits for its next request: kept
// after a request (a candidate to close for room), or still waiting for
// its first.
func (l *lane) setIdle(c *laneConn, kept bool) {
	if !kept {
		c.state.Store(connFresh)
		return
	}
	if l.slots != nil {
		c.idleSince.Store(monoOr(c.doneMono))
	}
	c.state.Store(connIdle)
	if l.roomWanted.Load() {
		select {
		case l.idled <- struct{}{}:
		default: // a signal is pending already
		}
	}
}

// setBusy records that a request begins on a connection, and says whether
// it may be served: not once the connection was closed for room, nor once
// the lane is closing. Shutdown sets closing before it looks for idle
// connections to close, and setBusy marks a connection busy before it
// looks at closing, so (the atomics being sequentially consistent) either
// Shutdown sees the connection busy and leaves it to end after its
// request, or setBusy sees the lane closing.
func (l *lane) setBusy(c *laneConn) bool {
	c.answered.Store(false) // before busy: the request beginning is not answered
	for {
		s := c.state.Load()
		if s == connReaped {
			return false
		}
		if c.state.CompareAndSwap(s, connBusy) {
			break
		}
	}
	if l.closing.Load() {
		c.state.Store(connFresh) // not busy: a drain closes it; not idle: not for room
		return false
	}
	return true
}
