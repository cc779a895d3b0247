package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"net/http"
	"net/http/httptrace"
	"runtime/debug"
	"strings"

	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ferrymesh/ferry/resilience"
	"github.com/ferrymesh/ferry/telemetry"
)

// tunnelSet tracks hijacked connections (WebSocket and other upgrades,
// and connections taken over for a spliced upload), which
// http.Server.Shutdown does not see, so a drain can close them.
//
// A taken-over connection whose answer went out whole, or whose exchange
// is done with it, and a tunnel that is over, are ending (see ending): closing it would cut nothing,
// so the drain's end leaves it to close itself and does not count it, but
// it stays tracked until its exchange was reported (its span, metrics and
// access log line), which the drain waits for before telemetry closes.
type tunnelSet struct {
	mu     sync.Mutex
	conns  map[io.Closer]bool // true: ending
	empty  chan struct{}      // closed when the last tunnel ends; nil when none open
	closed bool               // closeAll ran: the drain is over, no new tunnel
}

func newTunnelSet() *tunnelSet { return &tunnelSet{conns: map[io.Closer]bool{}} }

// add tracks a tunnel. It refuses one once closeAll ran: a connection
// hijacked while the drain was ending would otherwise outlive it, open and
// unseen.
func (s *tunnelSet) add(c io.Closer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if len(s.conns) == 0 {
		s.empty = make(chan struct{})
	}
	s.conns[c] = false
	return true
}

// ending records that closing c would cut nothing (its answer went out
// whole, or its exchange is done with the connection): the drain's end
// neither closes nor counts it, and waits for its removal (see
// awaitEnding).
func (s *tunnelSet) ending(c io.Closer) {
	s.mu.Lock()
	if _, ok := s.conns[c]; ok {
		s.conns[c] = true
	}
	s.mu.Unlock()
}

func (s *tunnelSet) remove(c io.Closer) {
	s.mu.Lock()
	if _, ok := s.conns[c]; ok {
		delete(s.conns, c)
		if len(s.conns) == 0 {
			close(s.empty)
			s.empty = nil
		}
	}
	s.mu.Unlock()
}

// waitEmpty returns when no tunnel is open or ctx ends.
func (s *tunnelSet) waitEmpty(ctx context.Context) {
	s.mu.Lock()
	empty := s.empty
	s.mu.Unlock()
	if empty == nil {
		return
	}
	select {
	case <-empty:
	case <-ctx.Done():
	}
}

// closeAll ends every tunnel but the ending ones and refuses new ones; it
// returns how many it ended.
func (s *tunnelSet) closeAll() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	n := 0
	for c, ending := range s.conns {
		if ending {
			continue
		}
		if e, ok := c.(*tunnelEnds); ok {
			e.cut.Store(true) // before the close its copies see
		}
		c.Close()
		delete(s.conns, c)
		n++
	}
	if len(s.conns) == 0 && s.empty != nil {
		close(s.empty)
		s.empty = nil
	}
	return n
}

// awaitEnding, once closeAll ran, waits until the ending connections left
// (their exchanges reported) or deadline (on monoNow's clock) passes, and
// then closes what is left of them. It reports whether there were any.
func (s *tunnelSet) awaitEnding(deadline int64) bool {
	s.mu.Lock()
	empty := s.empty
	s.mu.Unlock()
	if empty == nil {
		return false
	}
	if testHookDrainWaits != nil {
		testHookDrainWaits()
	}
	t := time.NewTimer(time.Duration(deadline - monoNow()))
	select {
	case <-empty:
	case <-t.C:
	}
	t.Stop()
	s.mu.Lock()
	for c := range s.conns {
		c.Close() // its answer is whole: nothing is cut
	}
	s.mu.Unlock()
	return true
}

// tunnel completes a protocol switch: it hands the caller the upstream's 101
// response and then copies bytes both ways until both sides ended their
// sending or either side breaks; a side that half-closes still gets the
// rest of the other's. timeouts' TunnelIdle and TunnelHalfClosed bound it.
// It returns the bytes that went through the tunnel each way: up from the
// caller, down from the upstream.
func (p *Proxy) tunnel(w http.ResponseWriter, r *http.Request, res *http.Response, reqUpgrade, service, addr string, timeouts resilience.Timeouts, x *exchange) (up, down int64) {
	resUpgrade := upgradeType(res.Header) // one the caller offered (see forward)
	back, ok := res.Body.(io.ReadWriteCloser)
	if !ok {
		x.fail(w, failure{http.StatusBadGateway, "upstream switched protocols without a writable connection", telemetry.ReasonBadResponse, false, false})
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		x.fail(w, failure{http.StatusInternalServerError, fmt.Sprintf("cannot take over the connection for %q: %v", reqUpgrade, err), telemetry.ReasonOther, false, false})
		return
	}
	defer conn.Close()
	if testHookTunnelHijacked != nil {
		testHookTunnelHijacked()
	}
	// The drain's end closes both sides: a tunnel one side of which
	// half-closed waits on the other alone.
	ends := &tunnelEnds{caller: conn, upstream: back}
	if !p.tunnels.add(ends) {
		// ferry finished draining while this exchange switched: the
		// caller is told so on the connection taken, and the upstream's
		// side closes (the caller of tunnel closes res.Body).
		cw := &connWriter{conn: conn, bw: brw.Writer, h: http.Header{}}
		writeFailure(cw, errDrainOver)
		cw.finish()
		x.status, x.reason, x.err = errDrainOver.status, errDrainOver.kind, errGraceEnded
		return
	}
	// Once the tunnel is over (on its own, or cut), closing it cuts
	// nothing more: it stays tracked, ending, until its exchange was
	// reported (x.end), so that a drain's end waits for that report
	// before telemetry closes.
	reported := x.reported
	x.reported = func() {
		p.tunnels.remove(ends)
		if reported != nil {
			reported()
		}
	}
	defer p.tunnels.ending(ends)

	removeHopHeaders(res.Header, false)
	res.Header["Connection"] = []string{"Upgrade"}
	res.Header["Upgrade"] = []string{resUpgrade}
	head := *res
	head.Body = nil // Write must not copy the body: it is the tunnel
	if err := head.Write(brw); err != nil {
		return
	}
	if err := brw.Flush(); err != nil {
		return
	}
	x.status = http.StatusSwitchingProtocols
	// timeouts.tunnel_idle: a tunnel where nothing moved for that long is
	// closed on both sides.
	var idled atomic.Bool
	idle := startIdleTimer(timeouts.TunnelIdle, func(error) {
		idled.Store(true) // before the close its copies see
		conn.Close()
		back.Close()
	})
	defer idle.stop()
	// A clean end of either side's bytes goes on to the other side as a
	// half-close: its answer may still be coming, and the tunnel lasts
	// until that side ends too (tunnel_idle, tunnel_half_closed and the
	// drain still bound it). A way that breaks (a reset, a failed write)
	// ends both at once, with a reset: the other side must not take the
	// bytes it got for all there were. Once the upstream ended cleanly, a
	// write to it that fails because it is gone is no break: a WebSocket
	// server closes fully after its Close frame, and the caller's answer
	// to it (or its own end) meets a closed connection.
	callerSocket := socketOf(conn)
	ends.sockets = [2]*net.TCPConn{callerSocket, socketOf(x.upConn)}
	upDone, downDone := make(chan tunnelEnd, 1), make(chan tunnelEnd, 1)
	// Bytes the caller sent right after its request sit in brw's buffer;
	// reading from brw forwards them first.
	go tunnelCopy(back, halfCloser(back), brw, idle, &up, upDone, callerSide)
	go tunnelCopy(conn, callerHalfCloser(callerSocket), back, idle, &down, downDone, upstreamSide)
	var (
		broke          tunnelEnd
		over           bool        // what ends a way now is the tunnel's end, not news
		upstreamEnded  bool        // the upstream's side ended cleanly
		halfClosed     *time.Timer // tunnel_half_closed, from the first clean end
		halfClosedC    <-chan time.Time
		halfClosedOver bool // tunnel_half_closed ended it
		// held: the end of the caller's way, put after an end of the
		// upstream's that was there with it (see below).
		held    tunnelEnd
		holding bool
	)
	if h := testHookTunnelEnds; h != nil {
		h(upDone, downDone)
	}
	for open := 2; open > 0; {
		var e tunnelEnd
		fromUpstream := false
		if holding {
			e, holding = held, false
		} else {
			select {
			case e = <-upDone:
				// Both ways may have ended by now: the upstream closed
				// after its last bytes, and the caller's answer to them
				// met the closed connection. The upstream's end is
				// looked at first, or the caller's failed write would
				// read as a break (select picks either when both are
				// ready, which a loaded machine makes likely). A write
				// that met a gone upstream waits for that end: the way
				// back passes the upstream's end on to the caller
				// before it reports it, so the caller's answer can
				// meet the closed connection first.
				var wait time.Duration
				if open == 2 && e.err != nil && e.side == upstreamSide && upstreamGone(e.err) {
					wait = tunnelEndWait
				}
				if d, ok := otherEnd(downDone, wait); ok {
					held, holding = e, true
					e, fromUpstream = d, true
				}
			case e = <-downDone:
				fromUpstream = true
			case <-halfClosedC:
				// The way still open is cut: neither side may take it
				// for a clean end.
				halfClosedC = nil
				if !over {
					halfClosedOver, over = true, true
					ends.reset()
				}
				continue
			}
		}
		open--
		switch {
		case over:
		case errors.Is(e.err, errNoHalfClose):
			// The upstream ended and the caller's connection cannot
			// be half-closed: the tunnel ends both ways, clean.
			over = true
			conn.Close()
			back.Close()
		case e.err == nil:
			upstreamEnded = upstreamEnded || fromUpstream
			if open == 1 && timeouts.TunnelHalfClosed > 0 {
				halfClosed = time.NewTimer(timeouts.TunnelHalfClosed)
				halfClosedC = halfClosed.C
			}
		case upstreamEnded && !fromUpstream && e.side == upstreamSide && (upstreamGone(e.err) || errors.Is(e.err, errors.ErrUnsupported)):
			// The caller's bytes (or its end) met an upstream that
			// ended and closed, or its end cannot be passed on to an
			// upstream that ended: the tunnel's end, clean.
			over = true
			conn.Close()
			back.Close()
		default:
			broke, over = e, true
			ends.reset()
		}
	}
	if halfClosed != nil {
		halfClosed.Stop()
	}
	back.Close()
	var pe *panicError
	if errors.As(broke.err, &pe) && p.Log != nil {
		p.Log.Error("panic in a tunnel", "service", service, "endpoint", addr, "panic", fmt.Sprint(pe.v), "stack", string(pe.stack))
	}
	switch {
	case ends.cut.Load():
		// The drain's grace end cut it: reported as an exchange cut
		// mid-body is, not as a tunnel that ended on its own.
		x.reason, x.err = telemetry.ReasonGraceEnded, errGraceEnded
	case idled.Load():
		// timeouts.tunnel_idle closed it: the end it is set to make.
	case halfClosedOver:
		// timeouts.tunnel_half_closed cut the way still open.
		x.reason, x.err = telemetry.ReasonTimeout, errTunnelHalfClosed
	case broke.err == nil:
	case pe != nil:
		x.reason, x.err = telemetry.ReasonOther, broke.err // ferry's own failure
	case broke.side == callerSide:
		x.reason, x.err = telemetry.ReasonClientCanceled, broke.err
	default:
		x.reason, x.err = telemetry.ReasonBodyBroken, broke.err
	}
	return up, down
}

// testHookTunnelCopy, set by tests only, runs before each read of a
// tunnel's way from the given side.
var testHookTunnelCopy func(from tunnelSide)

// testHookTunnelEnd, set by tests only, runs as a tunnel's way from the
// given side ended, before it reports that.
var testHookTunnelEnd func(from tunnelSide)

// tunnelEndWait bounds how long a tunnel whose caller's bytes met a gone
// upstream waits for the upstream's way to report its end (see tunnel):
// that way's read meets the same close at once.
const tunnelEndWait = time.Second

// otherEnd returns the end done reports, if it is there now or comes
// within wait.
func otherEnd(done <-chan tunnelEnd, wait time.Duration) (tunnelEnd, bool) {
	select {
	case d := <-done:
		return d, true
	default:
	}
	if wait <= 0 {
		return tunnelEnd{}, false
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case d := <-done:
		return d, true
	case <-t.C:
		return tunnelEnd{}, false
	}
}

// testHookTunnelEnds, set by tests only, runs once before a tunnel looks
// at the ends of its two ways.
var testHookTunnelEnds func(up, down <-chan tunnelEnd)

// testHookTunnelHijacked, set by tests only, runs when a tunnel took the
// caller's connection, before it is tracked.
var testHookTunnelHijacked func()

// testHookSwitchAnswered, set by tests only, runs when an upstream's 101
// came back, before anything is done with it.
var testHookSwitchAnswered func()

// offered reports whether the protocol an upstream switched to is one the
// caller offered: a request's Upgrade header may list several, in order of
// preference (RFC 9110 section 7.8), and the server picks one.
func offered(requested, chosen string) bool {
	chosen = strings.TrimSpace(chosen)
	if chosen == "" {
		return false
	}
	for tok := range strings.SplitSeq(requested, ",") {
		if strings.EqualFold(strings.TrimSpace(tok), chosen) {
			return true
		}
	}
	return false
}

// tunnelSide names a side of a tunnel.
type tunnelSide int

const (
	callerSide tunnelSide = iota
	upstreamSide
)

// tunnelEnd is how one way of a tunnel ended: err nil for a clean end
// passed on as a half-close, else the failure and the side it came from.
type tunnelEnd struct {
	side tunnelSide
	err  error
}

// tunnelCopy moves bytes one way, from side src to the other, through a
// pooled buffer, feeding the idle timer (nil: none), and stores how many
// in n before it reports on done. At the source's end it half-closes dst
// with closeWrite.
func tunnelCopy(dst io.Writer, closeWrite func() error, src io.Reader, idle *idleTimer, n *int64, done chan<- tunnelEnd, from tunnelSide) {
	to := upstreamSide
	if from == upstreamSide {
		to = callerSide
	}
	defer func() {
		// A panic on this goroutine (net/http's, nothing's above it)
		// would end the process: it ends the tunnel, broken, instead.
		if v := recover(); v != nil {
			done <- tunnelEnd{from, &panicError{v, debug.Stack()}}
		}
	}()
	bp := bufPool.Get().(*[]byte)
	buf := *bp
	var end tunnelEnd
	for {
		if testHookTunnelCopy != nil {
			testHookTunnelCopy(from)
		}
		nr, rerr := src.Read(buf)
		if nr > 0 {
			idle.touch()
			nw, werr := dst.Write(buf[:nr])
			*n += int64(nw)
			if werr != nil {
				end = tunnelEnd{to, werr}
				break
			}
		}
		if rerr == io.EOF {
			if err := closeWrite(); err != nil {
				end = tunnelEnd{to, err}
			}
			break
		}
		if rerr != nil {
			end = tunnelEnd{from, rerr}
			break
		}
	}
	bufPool.Put(bp)
	if testHookTunnelEnd != nil {
		testHookTunnelEnd(from)
	}
	done <- end
}

// halfCloser half-closes the upstream's connection through the
// Transport's response body, which half-closes the connection it wraps
// when that can.
func halfCloser(back io.ReadWriteCloser) func() error {
	return func() error {
		if cw, ok := back.(interface{ CloseWrite() error }); ok {
			return cw.CloseWrite()
		}
		return errors.ErrUnsupported
	}
}

// errNoHalfClose: the caller's connection is not a TCP socket ferry can
// half-close (TLS, where a close_notify may be taken for the whole
// connection's end, or another kind of connection).
var errNoHalfClose = errors.New("the caller's connection cannot be half-closed")

// callerHalfCloser half-closes the caller's TCP socket; with none, it
// says errNoHalfClose, and the tunnel ends both ways instead.
func callerHalfCloser(socket *net.TCPConn) func() error {
	return func() error {
		if socket == nil {
			return errNoHalfClose
		}
		return socket.CloseWrite()
	}
}

// upstreamGone reports whether err, from a write to (or the half-close
// of) an upstream's connection, says the upstream is no longer there to
// take bytes: it closed (a reset answered the bytes after it), rather
// than ferry's side breaking.
func upstreamGone(err error) bool {
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ENOTCONN)
}

// writerOnly and readerOnly hide ReadFrom/WriteTo so io.CopyBuffer uses the
// pooled buffer instead of allocating its own.
type writerOnly struct{ io.Writer }
type readerOnly struct{ io.Reader }

// tunnelEnds are a tunnel's two connections, closed together; cut is set
// when the drain's end (tunnelSet.closeAll) closed them. sockets are the
// caller's and the upstream's (nil where not known), which reset resets.
type tunnelEnds struct {
	caller, upstream io.Closer
	sockets          [2]*net.TCPConn
	cut              atomic.Bool
}

// reset closes both connections with a reset (RST) rather than a FIN,
// where their sockets are known: a tunnel broken on one side is not passed
// off as ended cleanly on the other.
func (e *tunnelEnds) reset() {
	for _, tc := range e.sockets {
		if tc != nil {
			_ = tc.SetLinger(0)
		}
	}
	e.Close()
}

// socketOf returns the TCP socket under c, through ferry's wrappers; nil
// when there is none.
func socketOf(c net.Conn) *net.TCPConn {
	for {
		switch v := c.(type) {
		case *net.TCPConn:
			return v
		case *prefixConn:
			c = v.Conn
		case *headFixConn:
			c = v.Conn
		default:
			return nil
		}
	}
}

func (e *tunnelEnds) Close() error {
	e.upstream.Close()
	return e.caller.Close()
}

// errSwitchedBeforeBody: net/http's Transport ended the write of an upgrade
// request without its body (an upstream that switched protocols and asked
// for the connection's close, with the body awaiting its 100 Continue).
var errSwitchedBeforeBody = errors.New("switched protocols before the request's body was sent")

// switchBody follows the write of an upgrade request's body by net/http's
// Transport. An upstream may answer 101 as soon as the request's head is
// in, and the Transport then hands the response over while it is still
// writing the body, from the caller's connection, to the upstream's. The
// tunnel must not begin before the body went out whole: taking the
// caller's connection over (Hijack) would leave that write reading a
// connection that is no longer the request's (net/http's server panics
// on such a read), and the caller's bytes after the body must follow it,
// not overtake it. done is closed when the write ended (the trace's
// WroteRequest), err is its error.
type switchBody struct {
	once    sync.Once
	done    chan struct{}
	err     error
	chunked bool     // the body has no length: the Transport frames it in chunks
	conn    net.Conn // the upstream connection, as GotConn gave it
	// flushed, when not nil, is closed once the Transport's last bytes
	// (a chunked body's end, which it buffers) went out.
	flushed <-chan struct{}
}

// wroteRequest is the trace's WroteRequest: it runs when the Transport's
// Request.write returned, on the Transport's writing goroutine, before
// that goroutine flushes what it buffered. A body of known length is on
// the connection by then (the Transport sends the head first, then copies
// such a body straight to the connection); a chunked body's last chunk
// and final CRLF are still buffered, and go out in the one write of that
// flush, which flushed awaits.
func (s *switchBody) wroteRequest(i httptrace.WroteRequestInfo) {
	s.once.Do(func() {
		s.err = i.Err
		if i.Err == nil && s.chunked {
			if hf, ok := s.conn.(*headFixConn); ok {
				s.flushed = hf.nextWrite()
			}
		}
		close(s.done)
	})
}

// await waits until the body went out whole, or returns why it did not:
// the caller's body broke, the write to the upstream failed, the exchange
// ended (its context's cause: a caller gone, body_idle, overall). s nil
// (no body) returns nil at once.
func (s *switchBody) await(ctx context.Context, body *requestBody) error {
	if s == nil {
		return nil
	}
	select {
	case <-s.done:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	switch {
	case body.broken():
		if be := body.fault.Load(); be != nil {
			return be
		}
		return errBodyTooLarge
	case s.err != nil:
		return s.err
	case !body.ended.Load():
		return errSwitchedBeforeBody
	}
	if s.flushed != nil {
		select {
		case <-s.flushed:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	return nil
}
