package sidecar

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrymesh/ferry/internal/shutdownbounds"
	"github.com/ferrymesh/ferry/telemetry"
)

// The HTTP/1.1 lane. ferry's proxy listeners serve plain HTTP/1.1 requests
// themselves instead of through net/http's server, which spends about as
// much CPU per small request as the proxying itself: a goroutine and a read
// per request to notice a caller going away, textproto parsing with its
// allocations, a context tree, a chunking writer. The lane reads a request
// head from a pooled buffer, and only when every byte of it is of the
// plainest kind (see parseHead) serves it, with the connWriter; a request
// whose body has a Content-Length is read straight from the socket (so an
// upload can be spliced upstream), a chunked one decoded from the lane's
// buffer (chunkedIn), and the connection stays open.
//
// Anything else hands the connection over, with the bytes read so far, to
// net/http's server, which then serves it to the end as before: HTTP/2
// (the h2c preface), upgrades, Expect (but 100-continue for an upstream
// ferry's client serves), announced trailers, codings other than chunked
// alone, both framings at once or unusual framing, HTTP/1.0 with either,
// or without a Host, heads larger than the lane's buffer or
// limits.max_header_bytes,
// and every malformed input, so each refusal keeps net/http's exact answer
// (and is reported as a request: refusals.go). The lane never answers a
// request it did not fully understand.

// laneBufSize is the lane's read buffer per connection: the largest request
// head it serves itself.
const laneBufSize = 8 << 10

// watchDelay is how long a request runs before the lane starts watching
// its connection for the caller going away. Short exchanges never pay for
// the watch. The lane's sweep (see sweepWatches) looks at the requests in
// progress every watchTick, so a watch starts between watchDelay and
// watchDelay+watchTick into its request.
const (
	watchDelay = 20 * time.Millisecond
	watchTick  = watchDelay / 2
)

var (
	laneReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, laneBufSize) }}
	laneWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}
)

// laneServed counts requests the lane served itself, laneHanded
// connections it handed to net/http, laneWatches watches started,
// laneParked connections idle without their buffers now (see idleHold),
// laneReused requests served in their connection's last laneHead,
// laneMade lane requests' contexts that made their inner one (see
// laneContext), laneBuffered request bodies ferry's client sent from the
// lane's buffer with their head (see bufferedUpload). For tests.
var laneServed, laneHanded, laneWatches, laneParked, laneReused, laneMade, laneBuffered atomic.Int64

// lane is the server of one proxy listener.
type lane struct {
	h          http.Handler
	fallback   *http.Server // serves handed-over connections
	handoff    *handoffListener
	readHeader time.Duration
	idle       time.Duration
	maxHeader  int
	log        *slog.Logger
	name       string
	// tel reports the requests answered before any handler saw them
	// (see refusals.go); nil: not reported.
	tel *telemetry.Telemetry

	mu      sync.Mutex
	ln      net.Listener
	conns   map[*laneConn]struct{}
	closing atomic.Bool
	// ended: Close began, the grace period being over. A request whose
	// head was still arriving when Close looked (no exchange to cut) is
	// cut as it starts (see watch).
	ended atomic.Bool
	// answerWait bounds Close's wait for the exchanges it cut to answer.
	answerWait time.Duration
	// cut cancels the contexts of every request net/http serves for the
	// lane, with the cause Close gives.
	cut context.CancelCauseFunc
	// handedBusy counts the handed-over connections net/http has not
	// reported idle since they were handed over or it last reported them
	// active (an h2c one: with a stream open); handlers, the handler
	// calls of net/http's in progress (one for a request pipelined behind
	// the last, which net/http does not report active). With the lane's
	// busy connections, they are the exchanges a drain's end would cut.
	// An HTTP/1.x exchange whose answer went out whole counts in neither
	// (see handedWhole), and its handler call, still ending, in
	// handedAnswered.
	handedBusy     atomic.Int64
	handlers       atomic.Int64
	handedAnswered atomic.Int64

	// slots holds a token per connection served (limits.max_connections);
	// nil: no bound. stopped is closed by Shutdown and Close, to end
	// Serve's wait for a slot. roomWanted: a caller waits for a slot, and
	// a connection going idle signals idled (see room.go).
	slots      chan struct{}
	stopped    chan struct{}
	stopOnce   sync.Once
	roomWanted atomic.Bool
	idled      chan struct{}

	// watchers are the connections whose request in progress may need
	// its watch started (see watch); one goroutine, sweepWatches, looks
	// at them every watchTick while there are any (sweeping). wspare is
	// the sweep's other list, reused.
	wlmu     sync.Mutex
	watchers []*laneConn
	wspare   []*laneConn
	sweeping bool
}

// limit bounds the connections the lane serves at once to n (0: none).
func (l *lane) limit(n int) {
	if n > 0 {
		l.slots = make(chan struct{}, n)
	}
}

// release gives back the slot of a connection that ended.
func (l *lane) release() {
	if l.slots != nil {
		<-l.slots
	}
}

func (l *lane) stop() {
	l.closing.Store(true)
	l.stopOnce.Do(func() { close(l.stopped) })
}

func newLane(name string, h http.Handler, fallback *http.Server, log *slog.Logger) *lane {
	fallback.ConnContext = connContext
	watchAnswers(fallback)
	base, cut := context.WithCancelCause(context.Background())
	fallback.BaseContext = func(net.Listener) context.Context { return base }
	maxHeader := fallback.MaxHeaderBytes
	if maxHeader <= 0 {
		maxHeader = http.DefaultMaxHeaderBytes
	}
	l := &lane{
		h: h, fallback: fallback, handoff: newHandoffListener(),
		readHeader: fallback.ReadHeaderTimeout, idle: fallback.IdleTimeout, maxHeader: maxHeader,
		log: log, name: name, conns: map[*laneConn]struct{}{}, cut: cut,
		answerWait: shutdownbounds.ReportWait, stopped: make(chan struct{}), idled: make(chan struct{}, 1),
	}
	l.countHanded()
	widenH2Heads(fallback) // after every hook above: see h2head.go
	return l
}

// countHanded keeps handedBusy and handlers as net/http serves the
// handed-over connections.
func (l *lane) countHanded() {
	prev := l.fallback.ConnState
	l.fallback.ConnState = func(c net.Conn, s http.ConnState) {
		if pc, ok := c.(*prefixConn); ok {
			switch s {
			case http.StateActive:
				pc.setBusy(true)
			case http.StateIdle, http.StateHijacked, http.StateClosed:
				pc.setBusy(false)
			}
		}
		if prev != nil {
			prev(c, s)
		}
	}
	h := l.fallback.Handler
	l.fallback.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if pc, ok := r.Context().Value(handedConnKey{}).(*prefixConn); ok && r.ProtoMajor == 1 {
			// One request at a time: the connection keeps its call.
			pc.change(func() { pc.call, pc.answered = true, false })
			defer pc.change(func() { pc.call = false })
		} else {
			l.handlers.Add(1)
			defer l.handlers.Add(-1)
		}
		h.ServeHTTP(w, r)
	})
}

// handedWhole records that the answer to r, a request net/http serves on
// an HTTP/1.x connection the lane handed over, went out whole: the
// handler wrote all of the Content-Length body it announced, or the
// answer has no body, and flushed (here: an answer without a body has
// its head go out now, not as the handler returns). The caller has all of it, whatever the exchange
// still does before it ends (its span, metrics and access log line, then
// net/http's bookkeeping until it reports the connection idle), and
// closing the connection now cuts nothing: the exchange no longer counts
// in flight for a drain's end (exchangesOpen), which waits for its
// handler call to end all the same (awaitAnswered). A chunked answer is
// never whole here (net/http writes its last chunk after the handler
// returns), nor one over HTTP/2 (END_STREAM goes out then too). One on a
// connection taken over from net/http is ferry's own writer's to mark
// (connWriter.whole: see takeOver).
func handedWhole(w http.ResponseWriter, r *http.Request) {
	if _, own := w.(*connWriter); own || r.ProtoMajor != 1 {
		return // the lane's own (see connWriter.whole) or taken over; HTTP/2
	}
	pc, ok := r.Context().Value(handedConnKey{}).(*prefixConn)
	if !ok || http.NewResponseController(w).Flush() != nil {
		return
	}
	if pc.answer() && testHookAnswered != nil {
		testHookAnswered()
	}
}

// answer records that the answer of the HTTP/1.x handler call running on
// the connection went out whole; it reports whether it was not so yet.
func (c *prefixConn) answer() bool {
	now := false
	c.change(func() {
		now = !c.answered && c.call
		c.answered = c.answered || c.call
	})
	return now
}

// exchangesOpen says whether an exchange is in progress, or may be about
// to begin, on the lane's connections (a busy one: a request running, or
// its head arriving) or on net/http's (see handedBusy). An exchange whose
// answer went out whole is not: the caller has all of it, and closing
// its connection now cuts nothing, though the exchange is still ending
// (see connWriter.whole).
func (l *lane) exchangesOpen() bool {
	if l.handlers.Load() > 0 || l.handedBusy.Load() > 0 { // (whole ones not counted: handedWhole)
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for c := range l.conns {
		if c.state.Load() == connBusy && !c.answered.Load() {
			return true
		}
	}
	return false
}

// Serve accepts connections on ln until Shutdown or Close.
func (l *lane) Serve(ln net.Listener) error {
	l.mu.Lock()
	if l.closing.Load() {
		l.mu.Unlock()
		ln.Close() // as net/http's Serve: the listener is Serve's to close
		return http.ErrServerClosed
	}
	l.ln = ln
	l.handoff.addr = ln.Addr()
	l.mu.Unlock()
	fallbackDone := make(chan struct{})
	go func() {
		defer close(fallbackDone)
		l.fallback.Serve(l.handoff)
	}()
	var delay time.Duration
	var ep limitEpisode
	for {
		// At limits.max_connections the next caller is accepted all the
		// same, and waits here, unserved, while admit makes room (see
		// room.go); the callers after it wait in the kernel's backlog.
		c, err := ln.Accept()
		if err != nil {
			if l.closing.Load() {
				return http.ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				l.handoff.Close()
				<-fallbackDone
				return err
			}
			// Out of file descriptors and the like: back off, as
			// net/http does, rather than spin or stop serving.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			l.log.Warn("accept failed; retrying", "listener", l.name, "error", err.Error(), "in", delay.String())
			time.Sleep(delay)
			continue
		}
		delay = 0
		if !l.admit(&ep) {
			c.Close()
			return http.ErrServerClosed
		}
		go l.serveConn(c)
	}
}

// Shutdown stops accepting, closes idle connections, lets requests in
// progress finish (their connections close after the response), and waits
// for that and for net/http's handed-over connections until ctx ends. A
// ctx that ends with only connections between requests left (none busy)
// is no cut: Shutdown closes them and returns nil.
func (l *lane) Shutdown(ctx context.Context) error {
	l.stop()
	l.mu.Lock()
	if l.ln != nil {
		l.ln.Close()
	}
	l.mu.Unlock()
	fallback := make(chan error, 1)
	go func() { fallback <- l.fallback.Shutdown(ctx) }()
	quiet := l.awaitConns(ctx)
	err := <-fallback
	if quiet && err == nil {
		return nil
	}
	if ctx.Err() != nil && !l.exchangesOpen() {
		// The drain ended (its grace over, or a second signal) with no
		// exchange in flight: what is left are connections between
		// requests, the lane's (closed by awaitConns, not yet gone) and
		// net/http's (h2c ones after their GOAWAY). Closing them cuts
		// nothing; an exchange that began meanwhile is left to Close.
		l.fallback.Close()
		if !l.exchangesOpen() {
			l.awaitAnswered()
			return nil
		}
	}
	if !quiet || err == nil {
		err = ctx.Err()
	}
	return err
}

// awaitAnswered lets the lane's exchanges whose answers went out whole
// end (a drain's end found no other), and net/http's handler calls of
// such exchanges on handed-over connections (see handedWhole): their
// spans and access log lines must be out before ferry's telemetry closes,
// which follows at once when nothing was cut. With the lane closing, each
// connection closes as its exchange ends, and no other request begins. It
// waits up to answerWait, then closes what is left of the lane's.
func (l *lane) awaitAnswered() {
	if testHookDrainWaits != nil {
		testHookDrainWaits()
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.answerWait)
	defer cancel()
	if !l.awaitConns(ctx) {
		l.mu.Lock()
		for c := range l.conns {
			c.c.Close()
		}
		l.mu.Unlock()
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for l.handedAnswered.Load() > 0 {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Close ends everything still open, the drain's grace being over: it
// closes the listener and idle connections, and cancels the exchanges in
// progress (an exchange whose caller pipelined its next request has no
// watch to notice its connection closed). Cancelled before their
// connections close, their cause is the grace period's end, not the caller
// gone (which a watch would take the closed connection for), and each then
// answers its caller: one whose response had not begun with a whole 503,
// one cut mid-body with a broken body. Close lets those answers out, on
// the lane's connections and on net/http's (h2c among them: HTTP/2 frames
// go out after the handler returns), for up to answerWait, then closes
// whatever is left.
func (l *lane) Close() error {
	l.stop()
	l.ended.Store(true)
	l.mu.Lock()
	if l.ln != nil {
		l.ln.Close()
	}
	for c := range l.conns {
		c.wmu.Lock()
		cancel, running := c.wcancel, !c.wstop
		c.wmu.Unlock()
		if cancel != nil && running && !c.answered.Load() {
			cancel(errGraceEnded) // (an answer gone out whole is not cut)
		}
		if c.state.Load() != connBusy {
			c.c.Close()
		}
	}
	l.mu.Unlock()
	l.cut(errGraceEnded)
	ctx, cancel := context.WithTimeout(context.Background(), l.answerWait)
	defer cancel()
	fallback := make(chan struct{})
	go func() {
		defer close(fallback)
		l.fallback.Shutdown(ctx) // net/http's: a second call waits again
	}()
	l.awaitConns(ctx)
	<-fallback
	l.mu.Lock()
	for c := range l.conns {
		c.c.Close()
	}
	l.mu.Unlock()
	return l.fallback.Close()
}

// awaitConns closes each connection it finds idle (between requests: a
// connection whose exchange ends closes itself once the lane is closing)
// until the lane has none left, true, or ctx ends, false.
func (l *lane) awaitConns(ctx context.Context) bool {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		l.mu.Lock()
		for c := range l.conns {
			if c.state.Load() != connBusy {
				c.c.Close()
			}
		}
		n := len(l.conns)
		l.mu.Unlock()
		if n == 0 {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
}

// track adds a new connection, busy, unless the lane is closing.
func (l *lane) track(c *laneConn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closing.Load() {
		return false
	}
	c.state.Store(connBusy)
	l.conns[c] = struct{}{}
	return true
}

func (l *lane) forget(c *laneConn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}

// laneConn is one caller connection served by the lane.
type laneConn struct {
	l *lane
	c net.Conn
	// series remembers the metric series of the connection's last
	// request (see telemetry.SeriesMemo); its requests run one after
	// another on the connection's goroutine.
	series telemetry.SeriesMemo
	// caller is callerOf(remote), worked out once for the
	// X-Forwarded-For of every request.
	caller callerAddr
	tc     *net.TCPConn
	raw    *rawSock // tc's raw reads and writes; nil for other conns
	remote string
	// state: busy, fresh, idle or reaped (see room.go); idleSince, on
	// monoNow's clock, when it last became idle (with a bound only).
	state     atomic.Int32
	idleSince atomic.Int64
	// answered: the response of the request in progress went out whole
	// (see connWriter.whole); cleared as the next request begins.
	answered atomic.Bool

	// rdl is the read deadline last set on c (zero: none). Written by the
	// serving goroutine, or by the watch under wmu while a request runs.
	rdl time.Time

	// stash is a byte the watch read ahead: the start of the next
	// request, served through Read before the socket. given is what a
	// chunked body's reader read past the body's end (see chunkedIn),
	// served before the stash: the watch starts only after that end.
	stash    [1]byte
	hasStash bool
	given    []byte

	// idle is the body_idle timer of the connection's exchanges,
	// deadline their overall timeout's.
	idle     *idleTimer
	deadline deadlineTimer
	// doneMono is the last exchange's doneAt on monoNow's clock, when
	// the wait for the next request may take it for now; else 0.
	doneMono int64

	// The watch of the request in progress.
	wmu      sync.Mutex
	wlisted  bool          // in l.watchers
	wdue     int64         // monoNow() at which the watch may start reading
	wstop    bool          // the request ended: no new watch
	wdone    chan struct{} // closed when a watch in progress returns; nil when none
	wcancel  context.CancelCauseFunc
	wbody    *socketBody
	wpending *bufio.Reader // the connection's reader: pipelined bytes mean the caller is there
}

// Read feeds the connection's bufio.Reader: the bytes given back and the
// stashed byte first.
func (lc *laneConn) Read(p []byte) (int, error) {
	if len(lc.given) > 0 {
		n := copy(p, lc.given)
		lc.given = lc.given[n:]
		return n, nil
	}
	if lc.hasStash && len(p) > 0 {
		p[0] = lc.stash[0]
		lc.hasStash = false
		return 1, nil
	}
	if lc.raw != nil {
		return lc.raw.Read(p)
	}
	return lc.c.Read(p)
}

// giveBack takes bytes read from the connection past a request's body
// (see chunkedIn) for its next reads. The body's reader calls it before
// it reports the body's end, which the serving goroutine waits for before
// it reads on.
func (lc *laneConn) giveBack(b []byte) {
	lc.given = append([]byte(nil), b...)
}

func (lc *laneConn) setReadDeadline(t time.Time) {
	lc.rdl = t
	lc.c.SetReadDeadline(t)
}

// idleHold is how long a connection waiting for its next request keeps
// its read and write buffers (12 KiB). Past it they go back to their
// pools and the wait goes on for one byte into the stash (awaitByte): an
// idle keep-alive connection then costs its goroutine and a few hundred
// bytes. A caller that sends its next request within idleHold, as one
// under load does, never gives them up.
const idleHold = time.Second

// errHeldIdle is awaitRequest's answer when the connection was idle for
// idleHold: its buffers may go back to their pools.
var errHeldIdle = errors.New("idle past idleHold")

// awaitRequest waits up to d (no limit when d <= 0) for the first byte
// of the next request. A shorter deadline left from an earlier wait is
// kept instead of moved on every request, which would cost a timer update
// per request: if it expires first, the wait goes on to its own end. With
// hold, a wait that lasts idleHold ends with errHeldIdle, the rest of it
// left to awaitByte until end (the wait's end on monoNow's clock,
// math.MaxInt64 for none).
//
// now is a monoNow() reading taken a moment ago, or 0 (see monoOr).
func (lc *laneConn) awaitRequest(br *bufio.Reader, d time.Duration, hold bool, now int64) (end int64, err error) {
	end = math.MaxInt64
	if d <= 0 && !hold {
		if !lc.rdl.IsZero() {
			lc.setReadDeadline(time.Time{})
		}
		_, err := br.Peek(1)
		return end, err
	}
	// On the monotonic clock (monoNow), one clock read where time.Now
	// makes two, wall and monotonic: the deadline kept is compared by its
	// monotonic reading, and a time.Time is made only to set a new one.
	now = monoOr(now)
	if d > 0 {
		end = monoAdd(now, d)
	}
	due := end
	if hold {
		due = min(due, monoAdd(now, idleHold))
	}
	if lc.rdl.IsZero() || int64(lc.rdl.Sub(monoBase)) > due {
		lc.setReadDeadline(monoBase.Add(time.Duration(due)))
	}
	for {
		_, err := br.Peek(1)
		if err == nil || !isTimeoutErr(err) {
			return end, err
		}
		now := monoNow()
		if now >= end {
			return end, err
		}
		if now >= due {
			return end, errHeldIdle
		}
		lc.setReadDeadline(monoBase.Add(time.Duration(due)))
	}
}

// awaitByte waits until end (see awaitRequest) for the first byte of the
// next request, with no buffer but the stash.
func (lc *laneConn) awaitByte(end int64) error {
	for {
		if end == math.MaxInt64 {
			lc.setReadDeadline(time.Time{})
		} else {
			lc.setReadDeadline(monoBase.Add(time.Duration(end)))
		}
		n, err := lc.Read(lc.stash[:])
		if n == 1 {
			lc.hasStash = true
			return nil
		}
		if err == nil {
			continue
		}
		if !isTimeoutErr(err) || monoNow() >= end {
			return err
		}
	}
}

// takeBuffers takes a read and a write buffer from their pools for lc.
func (lc *laneConn) takeBuffers() (*bufio.Reader, *bufio.Writer) {
	br := laneReaders.Get().(*bufio.Reader)
	br.Reset(lc)
	bw := laneWriters.Get().(*bufio.Writer)
	if lc.raw != nil {
		bw.Reset(lc.raw)
	} else {
		bw.Reset(lc.c)
	}
	return br, bw
}

func (l *lane) serveConn(c net.Conn) {
	lc := &laneConn{l: l, c: c, remote: c.RemoteAddr().String(), idle: newIdleTimer(true)}
	lc.caller = callerOf(lc.remote)
	lc.tc, _ = c.(*net.TCPConn)
	lc.raw = newRawSock(lc.tc)
	// slotPassed: net/http or a linger owns the connection, and its slot
	// (limits.max_connections), which it gives back when it closes it.
	slotPassed := false
	defer func() {
		if !slotPassed {
			l.release()
		}
	}()
	if !l.track(lc) {
		c.Close()
		return
	}
	br, bw := lc.takeBuffers()
	owned := true  // this goroutine closes the connection at the end
	pooled := true // br goes back to its pool at the end
	defer func() {
		l.forget(lc)
		lc.idle.release()
		lc.deadline.release()
		lc.wmu.Lock()
		lc.wstop = true // the sweep lets go of lc
		lc.wmu.Unlock()
		if bw != nil { // nil: given back while idle (see idleHold)
			bw.Reset(nil)
			laneWriters.Put(bw)
		}
		if owned {
			c.Close()
		}
		if owned && pooled && br != nil {
			br.Reset(nil)
			laneReaders.Put(br)
		}
	}()
	var spare *laneHead // the last request's, when reusable
	crlfLeft := 0       // CR or LF bytes still to skip after a POST (as net/http)
	for first := true; ; first = false {
		if br.Buffered() == 0 {
			// Wait for the next request: the first within the header
			// timeout, later ones as long as idle allows. A connection
			// with no request begun is idle: a drain closes it, and one
			// kept after a request may be closed to make room, unless the
			// last request's watch read the next one's first byte.
			l.setIdle(lc, !first && !lc.hasStash && len(lc.given) == 0)
			wait := l.idle
			if first {
				wait = l.readHeader
			}
			// The first wait, bounded by read_header_timeout, keeps the
			// buffers: a head arriving in parts keeps the deadline set.
			end, err := lc.awaitRequest(br, wait, !first && pooled && bw.Buffered() == 0, lc.doneMono)
			lc.doneMono = 0
			if err == errHeldIdle {
				if !lc.dropWatched() {
					err = lc.awaitByte(end)
				} else {
					br.Reset(nil)
					laneReaders.Put(br)
					bw.Reset(nil)
					laneWriters.Put(bw)
					br, bw = nil, nil
					spare = nil // an idle connection holds as little as it can
					laneParked.Add(1)
					err = lc.awaitByte(end)
					laneParked.Add(-1)
					br, bw = lc.takeBuffers()
				}
			}
			if err != nil {
				return
			}
			if !l.setBusy(lc) {
				return // draining or closed for room: a request not yet begun is not served
			}
		} else if !l.setBusy(lc) {
			return
		}
		if crlfLeft > 0 {
			// RFC 9112 section 2.2: a server ignores empty lines before a
			// request line; net/http skips up to 4 CR or LF bytes after a
			// POST, whose body some clients end with a CRLF.
			buf, _ := br.Peek(min(crlfLeft, br.Buffered()))
			skip := 0
			for skip < len(buf) && (buf[skip] == '\r' || buf[skip] == '\n') {
				skip++
			}
			br.Discard(skip)
			crlfLeft -= skip
			if skip < len(buf) {
				crlfLeft = 0 // the request line begins
			}
			if br.Buffered() == 0 {
				continue
			}
		}
		// A head that arrived whole (the common case) needs no header
		// deadline; one still arriving gets read_header_timeout.
		armed := first
		head, verdict := l.readHead(br, func() {
			if !armed {
				lc.setReadDeadline(deadline(l.readHeader))
				armed = true
			}
		})
		if verdict == headBroken {
			return
		}
		headBy := lc.rdl // the deadline of this head, for a hand-over
		var lh *laneHead
		if verdict == headWhole {
			lh = laneRequest(head, lc.idle, spare)
			if lh != nil && lh.ctx.le.expect && !l.servesExpect(&lh.req) {
				lh.ctx.le.cancel(nil)
				lh = nil
			}
			if lh != nil {
				lh.ctx.le.series, lh.ctx.le.caller, lh.ctx.le.deadline = &lc.series, &lc.caller, &lc.deadline
			}
			spare = nil
		}
		if lh == nil || lh.req.ContentLength != 0 {
			// A body is read without a deadline (body_idle rules);
			// net/http sets its own on a handed-over connection. A
			// bodiless request leaves the connection unread until the
			// next one, which sets its own deadline first.
			lc.setReadDeadline(time.Time{})
		}
		if lh == nil {
			if !first && bytes.HasPrefix(head, []byte("PRI * HTTP/2.0\r\n")) && !bareLF(head) {
				// net/http would take the preface for the start of an
				// HTTP/2 connection: after a request it is not one.
				w := &connWriter{conn: c, tc: lc.tc, bw: bw, h: http.Header{}}
				writeFailure(w, errPreface)
				w.finish()
				l.answered(errPreface.status, errPreface.kind)
				return
			}
			if shortHead(br) {
				// net/http serves h2c here too, and waits for the 14
				// bytes that tell the preface from HTTP/1 (until
				// read_header_timeout): no request is this short.
				w := &connWriter{conn: c, tc: lc.tc, bw: bw, h: http.Header{}}
				writeFailure(w, errShortHead)
				w.finish()
				l.answered(errShortHead.status, errShortHead.kind)
				return
			}
			if l.handOver(c, br, headBy) {
				owned, slotPassed = false, true
			}
			return
		}
		br.Discard(len(head))
		crlfLeft = 0
		if lh.req.Method == http.MethodPost {
			crlfLeft = 4
		}
		next := l.serveOne(lc, br, bw, lh)
		if b := lh.w.body; b != nil && b.left.Load() > 0 {
			// The rest of the body was not read: a transport that gave up
			// on it may still be reading it through br, which is not
			// reused then.
			pooled = false
		}
		switch next {
		case connKeep:
			if lh.reusable() {
				spare = lh
			}
			if testHookKept != nil {
				lc.doneMono = 0 // the hook may wait
				testHookKept()
			}
			continue
		case connLingering:
			owned, slotPassed = false, true
		}
		return
	}
}

// testHookKept, set by tests only, runs on a connection's goroutine when
// an exchange ended with the connection kept for the next request.
var testHookKept func()

func deadline(d time.Duration) time.Time {
	if d <= 0 {
		return time.Time{}
	}
	return time.Now().Add(d)
}

type headVerdict int

const (
	headWhole  headVerdict = iota // a complete head of the plain kind is buffered
	headOther                     // not one for the lane: hand over
	headBroken                    // the caller went away or timed out mid-head
)

// readHead waits until a whole request head is buffered and returns it
// (without consuming it), calling beforeWait before it must wait for more. It gives up on heads larger than the buffer or
// limits.max_header_bytes, and on heads with bare LF line ends, which only
// net/http's parser may judge.
func (l *lane) readHead(br *bufio.Reader, beforeWait func()) ([]byte, headVerdict) {
	limit := min(br.Size(), l.maxHeader)
	for n := 1; ; {
		if n > br.Buffered() {
			beforeWait()
		}
		buf, err := br.Peek(n)
		if err != nil {
			// A head cut short by the caller's end goes to net/http too,
			// which answers it 400.
			if len(buf) > 0 && (errors.Is(err, bufio.ErrBufferFull) || errors.Is(err, io.EOF)) {
				return nil, headOther
			}
			return nil, headBroken
		}
		buf, _ = br.Peek(br.Buffered())
		if i := indexCRLFCRLF(buf); i >= 0 {
			if i+4 > limit {
				return nil, headOther
			}
			// A bare LF or a lone CR before the end is not looked for
			// here: parseHead refuses every head with one (a line must
			// end in CRLF, and a CR is no token, value or target
			// character), which hands it over as headOther would.
			return buf[:i+4], headWhole
		}
		if len(buf) >= limit || bareLF(buf) {
			return nil, headOther
		}
		n = len(buf) + 1
	}
}

// prefaceLine is the first line of the HTTP/2 preface, as much as
// net/http reads before it tells the preface from an HTTP/1 request.
const prefaceLine = "PRI * HTTP/2.0"

// errShortHead answers a whole head shorter than prefaceLine (see
// shortHead).
var errShortHead = failure{status: http.StatusBadRequest, reason: "malformed request: no request line this short is one", kind: telemetry.ReasonMalformedRequest, close: true}

// shortHead reports that br holds a whole head (its blank line came)
// shorter than prefaceLine: never a request, whose shortest line ("G /
// HTTP/1.0") takes 12 bytes and two line ends after it, nor the preface.
func shortHead(br *bufio.Reader) bool {
	buf, _ := br.Peek(br.Buffered())
	if len(buf) >= len(prefaceLine) {
		return false
	}
	return bytes.Contains(buf, []byte("\n\n")) || bytes.Contains(buf, []byte("\n\r\n"))
}

// bareLF reports an LF not preceded by CR, or a CR not followed by LF (a
// CR that ends b may still get its LF). It jumps from LF to LF with
// IndexByte, and then needs only the count of CRs, where a loop over every
// byte was a good part of the cost of a large head.
func bareLF(b []byte) bool {
	lf := 0
	for i := 0; ; i++ {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			break
		}
		i += j
		if i == 0 || b[i-1] != '\r' {
			return true
		}
		lf++
	}
	// Every LF has its CR: any other CR stands alone.
	cr := bytes.Count(b, []byte{'\r'})
	if len(b) > 0 && b[len(b)-1] == '\r' {
		cr--
	}
	return cr != lf
}

// expectJudge is a handler that says, for a request with Expect:
// 100-continue, whether ferry's client will send its body: that client
// asks the upstream first and tells the caller to send only then (see
// fastH1.exchangeUpload). Others, and such requests of a handler without
// it, go to net/http's server.
type expectJudge interface {
	servesExpect(r *http.Request) bool
}

func (l *lane) servesExpect(r *http.Request) bool {
	j, ok := l.h.(expectJudge)
	return ok && j.servesExpect(r)
}

// handOver gives the connection, with what was read of it, to net/http.
// headBy is the deadline the lane gave the head it started reading (zero:
// none): net/http's own read_header_timeout must not start it afresh.
func (l *lane) handOver(c net.Conn, br *bufio.Reader, headBy time.Time) bool {
	laneHanded.Add(1)
	pc := &prefixConn{Conn: c, r: br, headBy: headBy, l: l}
	pc.slot.Store(l.slots != nil)
	pc.setBusy(true) // a request has begun: busy until net/http says idle
	if !l.handoff.deliver(pc) {
		pc.slot.Store(false) // serveConn closes it and gives its slot back
		pc.setBusy(false)
		return false
	}
	return true
}

// framingScan watches the bytes net/http reads from a handed-over
// connection for a block of lines (between empty lines) whose framing RFC
// 9112 section 6.1 calls faulty: one naming both Content-Length and
// Transfer-Encoding, and one whose first line ends in HTTP/1.0 naming
// Transfer-Encoding at all. net/http frames the first by its
// Transfer-Encoding, as it must, and the second by its Content-Length or
// as bodiless (it ignores Transfer-Encoding in HTTP/1.0), but keeps the
// connection open, where the RFC has the server close it after the
// response: whatever the framings disagree on (an HTTP/1.0 chunked body)
// must not be read as a next request. It cannot tell a head from a body,
// so a body with such lines closes its connection too: the safe way to be
// wrong.
type framingScan struct {
	start [len("transfer-encoding:")]byte // the current line's start, lower case
	n     int                             // the current line's length so far
	// end holds the current line's last bytes (a ring, end[n%len]).
	end     [len(" HTTP/1.0\r")]byte
	inBlock bool // the current line is not its block's first
	http10  bool // the block's first line ends in HTTP/1.0
	cl, te  bool // seen in the current block
	faulty  atomic.Bool
}

func (s *framingScan) feed(p []byte) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			s.take(p)
			return
		}
		s.take(p[:i])
		s.lineEnd()
		p = p[i+1:]
	}
}

// take notes bytes of a line (no LF among them): the line's first bytes,
// lower case, and its last ones. Nothing else is looked at, so a body's
// bytes (a chunked upload's, a tunnel's) pass at the speed of
// bytes.IndexByte: looked at one by one, they cost about 26 instructions
// each (callgrind, 1 KiB chunked POSTs).
func (s *framingScan) take(b []byte) {
	for k := 0; k < len(b) && s.n+k < len(s.start); k++ {
		c := b[k]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		s.start[s.n+k] = c
	}
	for k := max(0, len(b)-len(s.end)); k < len(b); k++ {
		s.end[(s.n+k)%len(s.end)] = b[k]
	}
	s.n += len(b)
}

// lineEnd ends the current line at its LF.
func (s *framingScan) lineEnd() {
	line := s.start[:min(s.n, len(s.start))]
	switch {
	case s.n == 0 || s.n == 1 && line[0] == '\r':
		s.cl, s.te, s.http10, s.inBlock = false, false, false, false // the block ends
		s.n = 0
		return
	case !s.inBlock:
		s.http10 = s.endsWith(" HTTP/1.0")
	case bytes.HasPrefix(line, []byte("content-length:")):
		s.cl = true
	case bytes.HasPrefix(line, []byte("transfer-encoding:")):
		s.te = true
	}
	s.inBlock = true
	if s.te && (s.cl || s.http10) {
		s.faulty.Store(true)
	}
	s.n = 0
}

// endsWith reports whether the line read so far ends with suffix, before
// the CR of its CRLF if any (suffix no longer than end, less one).
func (s *framingScan) endsWith(suffix string) bool {
	n := s.n
	if n > 0 && s.end[(n-1)%len(s.end)] == '\r' {
		n--
	}
	if n < len(suffix) {
		return false
	}
	for i := range len(suffix) {
		if s.end[(n-len(suffix)+i)%len(s.end)] != suffix[i] {
			return false
		}
	}
	return true
}

// handedConnKey carries, in the context of a handed-over connection, its
// *prefixConn: a request read after its framingScan saw faulty framing must
// be the connection's last, and one that reaches a handler is not net/http's
// own answer (see refusals.go).
type handedConnKey struct{}

// connContext is net/http's ConnContext for handed-over connections.
func connContext(ctx context.Context, c net.Conn) context.Context {
	if pc, ok := c.(*prefixConn); ok {
		return context.WithValue(ctx, handedConnKey{}, pc)
	}
	return ctx
}

// mustClose reports whether a request of a handed-over connection came
// after a head with faulty framing: framed both ways, or an HTTP/1.0 one
// with Transfer-Encoding (see framingScan).
func mustClose(ctx context.Context) bool {
	pc, ok := ctx.Value(handedConnKey{}).(*prefixConn)
	return ok && pc.scan.faulty.Load()
}

// What becomes of a connection after a request.
type connNext int

const (
	connKeep      connNext = iota // read the next request
	connClose                     // close it now
	connLingering                 // a linger goroutine owns and closes it, and gives back its slot
)

// serveOne serves one parsed request and says what becomes of the
// connection.
func (l *lane) serveOne(lc *laneConn, br *bufio.Reader, bw *bufio.Writer, lh *laneHead) connNext {
	laneServed.Add(1)
	le := &lh.ctx.le
	req, cancel := &lh.req, le.cancel
	defer cancel(nil)
	// The request's one clock reading up to its first wait (see headAt).
	le.headAt = time.Now()
	le.headMono = monoOf(le.headAt)
	req.RemoteAddr = lc.remote
	w := &lh.w
	*w = connWriter{conn: lc.c, tc: lc.tc, bw: bw, head: req.Method == http.MethodHead, keepAlive: !req.Close && !l.closing.Load(), lane: l, answered: &lc.answered, http10: req.ProtoMinor == 0}
	if req.ContentLength != 0 {
		sb := &socketBody{bufs: []*bufio.Reader{br}, conn: lc.c, tc: lc.tc, raw: lc.raw}
		sb.expect.Store(le.expect)
		sb.left.Store(req.ContentLength)
		if req.ContentLength < 0 {
			// Chunked: its trailers go into the request's Trailer, the
			// map the upstream request shares (see Proxy.ServeHTTP).
			req.Trailer = http.Header{}
			sb.chunks = &chunkedIn{br: br, trailer: req.Trailer, giveBack: lc.giveBack}
			sb.left.Store(chunkedLeft)
		}
		req.Body = sb
		w.body = sb
	} else {
		req.Body = http.NoBody
	}
	lc.watch(cancel, w.body, br, le.headMono)
	panicked := l.run(w, req)
	waited := lc.unwatch()
	// The exchange's last reading serves the wait for the next request
	// when nothing could wait since: no watch's read to end, nothing left
	// for finish to write (see doneAt).
	lc.doneMono = 0
	if done := le.doneAt; !done.IsZero() && !waited && w.wrote && !w.chunked && bw.Buffered() == 0 {
		lc.doneMono = monoOf(done)
	}
	if panicked || !w.finish() {
		return connClose // a response cut short: the caller must see it broken
	}
	switch {
	case w.body != nil && w.body.left.Load() > 0:
		// The rest of the body is still coming and nobody reads it. The
		// connection keeps its slot (limits.max_connections) until the
		// linger closes it.
		w.closeThen(l.release)
		return connLingering
	case !w.keepAlive || l.closing.Load():
		return connClose
	}
	return connKeep
}

// laneCancelKey carries the *laneExchange of a lane request's context,
// which is the request's alone: the proxy cancels it with a cause instead of
// deriving a context of its own.
type laneCancelKey struct{}

// laneExchange is a lane request's cancellation: its context's Done
// channel, the function that cancels it with a cause, and one upstream
// connection to close when that happens. ferry's client hooks the
// connection it waits on here instead of with context.AfterFunc, which
// costs a registration in the context tree per request.
type laneExchange struct {
	// ctx is the context that ends exactly when the exchange's does: the
	// lane's, or the one ServeHTTP wraps over it with values only (see
	// laneOwned). Compared by identity: asking a context for its Done
	// channel makes one, an allocation per request.
	ctx    context.Context
	cancel context.CancelCauseFunc // cancels the context, then closes the hooked connection
	hooked atomic.Pointer[net.TCPConn]
	// writer is the caller's writer while a response body is relayed: a
	// write to it that waits ends when the exchange is cancelled (see
	// writeCut).
	writer atomic.Pointer[connWriter]
	// upload is the caller's body while a transport may wait in a Read of
	// it: the exchange's end ends that Read (see hookUpload).
	upload atomic.Pointer[requestBody]
	// home is the laneContext the exchange lives in.
	home *laneContext
	idle *idleTimer // the connection's body_idle timer
	// inform is the caller's writer that ferry's client relays 1xx
	// responses to (see informer); set by the request's goroutine.
	inform http.ResponseWriter
	// headerSent: the first attempt took the request's header as its
	// own (see outgoing), with X-Forwarded-For as it came, forwardedFor.
	headerSent   bool
	forwardedFor []string
	// hopFields: the request's header holds a hop-by-hop field (parseHead
	// says), which outgoing removes; most hold none.
	hopFields bool
	// expect: the header as parsed holds Expect: 100-continue (and the
	// request a body), which the lane serves only when ferry's client
	// sends the body (see servesExpect).
	expect bool
	// userAgent, forwarded: the header as parsed holds a User-Agent, an
	// X-Forwarded-For field (parseHead says). Without one outgoing looks
	// for none; with hopFields it always looks (a field Connection names
	// goes with it).
	userAgent, forwarded bool
	// forwardedOther: the header as parsed holds an X-Forwarded-Proto or
	// X-Forwarded-Host field, which the proxy replaces (see outgoing).
	forwardedOther bool
	// first is the first attempt's upstream request (see outgoing), fwd
	// its X-Forwarded-* values (see setForwarded), tp its traceparent
	// when ferry's client writes it into the head (see Proxy.try).
	first outRequest
	fwd   [3]string
	tp    telemetry.Traceparent
	// tq is room for the request's telemetry when tracing is off (see
	// Telemetry.StartRequestIn).
	tq telemetry.RequestRoom
	// series is the connection's memo of metric series (laneConn.series).
	series *telemetry.SeriesMemo
	// caller is the connection's laneConn.caller.
	caller *callerAddr
	// deadline is the connection's laneConn.deadline.
	deadline *deadlineTimer
	// x is the proxy's record of the exchange (see Proxy.ServeHTTP).
	x exchange
	// res is the exchange's first response when ferry's client reads it
	// (see parseResponse); resTaken once it is.
	res      plainResponse
	resTaken bool
	// buffered: the request's body went upstream whole with its head,
	// taken by ferry's client's round trip and nothing else: from the
	// lane's buffer (see bufferedUpload), or read at hand as the head went
	// (exchangeUpload: takeNow, a chunked body's takeInHand).
	buffered bool
	// escaped: the exchange handed its request or context to something
	// that may keep them past the exchange's end (a transport of
	// net/http's, whose goroutines outlive a round trip): its laneHead is
	// not reused (see reusable).
	escaped bool
	// Clock readings that the exchange's steps take for "now" instead of
	// each reading the clock (see monoOr), on the request's goroutine.
	// headAt is time.Now() as the lane had the request's head, headMono
	// the same on monoNow's clock while it is live: nothing that may wait
	// (a socket's read or write, a dial, a backoff) ran since. The steps
	// before the first attempt waits for its answer take it: the watch,
	// the request's telemetry, body_idle's start, the first pick, the
	// pooled connection's age and its response header timeout (see
	// takeHead). Whatever comes after that wait drops it (0).
	headAt   time.Time
	headMono int64
	// perTryDue is the monoNow() time by which the attempt in progress
	// must have its response head (timeouts.per_try) when ferry's client
	// bounds it itself (see Proxy.try); 0 otherwise.
	perTryDue int64
	// doneAt is time.Now() as the response went out whole, when nothing
	// that may wait follows before the exchange's end (see respondDone):
	// the upstream connection's return to its pool, the request's
	// telemetry and the caller connection's wait for its next request
	// take it. Zero: not taken.
	doneAt time.Time
}

// headNow is the exchange's reading of the clock as its head came, on
// monoNow's clock, while nothing waited since; else 0 (see monoOr). le
// may be nil.
func (le *laneExchange) headNow() int64 {
	if le == nil {
		return 0
	}
	return le.headMono
}

// headTime is headNow as a time.Time; zero when headNow is 0.
func (le *laneExchange) headTime() time.Time {
	if le.headNow() == 0 {
		return time.Time{}
	}
	return le.headAt
}

// takeHead is headNow for a step about to wait (an attempt's round
// trip): it drops the reading, which no step after the wait may take.
func (le *laneExchange) takeHead() int64 {
	now := le.headNow()
	if now != 0 {
		le.headMono = 0
	}
	return now
}

// doneTime is doneAt, zero for none; le may be nil.
func (le *laneExchange) doneTime() time.Time {
	if le == nil {
		return time.Time{}
	}
	return le.doneAt
}

// fire closes the hooked connection, if any, ends a write to the caller
// in progress, and a Read of the caller's body that waits (hookUpload).
func (le *laneExchange) fire() {
	if tc := le.hooked.Swap(nil); tc != nil {
		tc.Close()
	}
	if w := le.writer.Swap(nil); w != nil {
		if w.http10 && w.tc != nil {
			_ = w.tc.SetLinger(0) // as resetCaller: see cutOnCancel
		}
		w.conn.SetWriteDeadline(time.Unix(1, 0))
	}
	if b := le.upload.Swap(nil); b != nil {
		b.unblock(nil)
	}
}

// hookUpload makes the exchange's cancellation end a Read of b, the
// caller's body read from the lane's socket, that waits for bytes (see
// requestBody.unblock), until unhookUpload; at once when the exchange
// ended already. It does for a lane request what afterGuarded does for
// others, without making the lane's context its inner one and registering
// a function in it (ten allocations per upload, by callgrind's count of
// the calls). False when b is not read from the lane's socket.
func (le *laneExchange) hookUpload(b *requestBody) bool {
	if le == nil || le.home == nil {
		return false
	}
	if _, ok := b.rc.(*socketBody); !ok {
		return false
	}
	c := le.home
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.endedLocked() {
		b.unblock(nil)
		return true
	}
	le.upload.Store(b)
	return true
}

// endedLocked reports whether c was cancelled; c.mu is held (Err may take
// it: a cancelled context asked for a value makes its inner one).
func (c *laneContext) endedLocked() bool {
	switch c.state.Load() {
	case lcLive:
		return false
	case lcEnded:
		return true
	}
	return c.inner.Err() != nil
}

// unhookUpload ends hookUpload. A cancellation fires its hooks holding the
// laneContext's lock: once this returns, no unblock of the body is under
// way or to come, as the exchange ends.
func (le *laneExchange) unhookUpload() {
	c := le.home
	c.mu.Lock()
	le.upload.Store(nil)
	c.mu.Unlock()
}

// run calls the handler; a panic ends the connection (and is logged unless
// it is http.ErrAbortHandler, the proxy's way to break a response).
func (l *lane) run(w http.ResponseWriter, r *http.Request) (panicked bool) {
	defer func() {
		if v := recover(); v != nil {
			panicked = true
			if v != http.ErrAbortHandler {
				l.log.Error("panic serving a request", "listener", l.name, "remote", r.RemoteAddr, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			}
		}
	}()
	l.h.ServeHTTP(w, r)
	return false
}

// watch arms the watch for the caller going away while a request runs: a
// caller that closes its connection must cancel the upstream exchange.
// net/http reads the connection during every request for that; the lane
// starts reading only once a request has run for watchDelay with its body
// fully read and no pipelined request buffered.
// now is a monoNow() reading taken a moment ago, or 0 (see monoOr).
//
// No timer is armed per request or per connection: a timer per busy
// connection fired about every watchDelay, each time in a goroutine of
// its own; at 256 busy connections the sweep takes about 5% off ferry's
// CPU per small request (46.2 -> 43.9 µs, medians of 5 wrk rounds). The lane's one sweep looks at every listed
// connection each watchTick instead, and a connection stays listed while
// its requests keep it busy.
func (lc *laneConn) watch(cancel context.CancelCauseFunc, body *socketBody, br *bufio.Reader, now int64) {
	now = monoOr(now)
	lc.wmu.Lock()
	lc.wstop = false
	lc.wcancel, lc.wbody, lc.wpending = cancel, body, br
	lc.wdue = now + int64(watchDelay)
	listed := lc.wlisted
	lc.wlisted = true
	lc.wmu.Unlock()
	if !listed {
		lc.l.listWatcher(lc)
	}
	// Close sets ended before it looks, under wmu, for exchanges to cut:
	// either it saw this one, or this one sees it ended.
	if lc.l.ended.Load() {
		cancel(errGraceEnded)
	}
}

// listWatcher adds lc to the connections the sweep looks at, starting the
// sweep when none runs. lc was not listed; its wlisted is already set.
func (l *lane) listWatcher(lc *laneConn) {
	l.wlmu.Lock()
	l.watchers = append(l.watchers, lc)
	start := !l.sweeping
	l.sweeping = true
	l.wlmu.Unlock()
	if start {
		go l.sweepWatches()
	}
}

// sweepWatches looks at the listed connections every watchTick, starting
// the watches that are due, until a look leaves none listed.
func (l *lane) sweepWatches() {
	for {
		time.Sleep(watchTick)
		l.wlmu.Lock()
		batch := l.watchers
		l.watchers = l.wspare
		l.wlmu.Unlock()
		now := monoNow()
		kept := 0
		for _, lc := range batch {
			if lc.sweep(now) {
				batch[kept] = lc
				kept++
			}
		}
		l.wlmu.Lock()
		l.watchers = append(l.watchers, batch[:kept]...)
		clear(batch)
		l.wspare = batch[:0]
		done := len(l.watchers) == 0
		if done {
			l.sweeping = false
		}
		l.wlmu.Unlock()
		if done {
			return
		}
	}
}

// sweep is the sweep's look at lc at now: it starts the watch of the
// request in progress when that is due, and reports whether lc stays
// listed (a request still to look at again).
func (lc *laneConn) sweep(now int64) bool {
	lc.wmu.Lock()
	switch {
	case lc.wstop || lc.wdone != nil:
		// The request ended (the next one lists lc again), or its watch
		// reads already (the request's end stops it).
	case now < lc.wdue:
		lc.wmu.Unlock()
		return true
	case lc.wbody != nil && lc.wbody.left.Load() > 0:
		// The body is still being read: that read notices a caller
		// gone. Look again later.
		lc.wdue = now + int64(watchDelay)
		lc.wmu.Unlock()
		return true
	case lc.wpending.Buffered() > 0:
		// A pipelined request is waiting: the caller is there.
	default:
		// An idle or header deadline may linger: clear it before unwatch
		// can see this watch (and set its own, to end it).
		lc.setReadDeadline(time.Time{})
		done := make(chan struct{})
		lc.wdone = done
		go lc.watchRead(lc.wcancel, done)
	}
	lc.wlisted = false
	lc.wmu.Unlock()
	return false
}

// dropWatched lets go of what the last request's watch kept (its reader
// among them, so that it can go back to its pool), unless that watch is
// still on (then false).
func (lc *laneConn) dropWatched() bool {
	lc.wmu.Lock()
	defer lc.wmu.Unlock()
	if !lc.wstop && lc.wpending != nil {
		return false
	}
	lc.wcancel, lc.wbody, lc.wpending = nil, nil, nil
	return true
}

// watchRead is a watch's read, until a byte of the next request arrives,
// the caller goes away (cancel) or unwatch ends it; then it closes done.
func (lc *laneConn) watchRead(cancel context.CancelCauseFunc, done chan struct{}) {
	laneWatches.Add(1)
	n, err := lc.c.Read(lc.stash[:])
	lc.wmu.Lock()
	switch {
	case n == 1:
		lc.hasStash = true // the next request has begun
	case err != nil && !isTimeoutErr(err):
		cancel(errCallerGone) // the caller closed or reset its connection
	}
	lc.wdone = nil
	close(done)
	lc.wmu.Unlock()
}

// unwatch ends the watch of the request that just ended, waiting for a
// read in progress to be abandoned; it reports whether it waited so.
func (lc *laneConn) unwatch() (waited bool) {
	lc.wmu.Lock()
	lc.wstop = true // the sweep lets go of lc at its next look
	done := lc.wdone
	lc.wmu.Unlock()
	if done != nil {
		lc.c.SetReadDeadline(time.Unix(1, 0))
		<-done
		lc.setReadDeadline(time.Time{})
	}
	return done != nil
}

func isTimeoutErr(err error) bool {
	// A read or write past its deadline, as net's conns and rawSock
	// return it, is told without errors.As, whose reflection costs about
	// 5,000 instructions, at every watch a request's end cuts short.
	if oe, ok := err.(*net.OpError); ok && oe.Err == os.ErrDeadlineExceeded {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// parseHead parses a request head of the plainest kind, or returns nil:
// "METHOD /origin-form HTTP/1.1" (or HTTP/1.0, with neither
// Transfer-Encoding nor Expect), CRLF line ends, header names of token
// characters, values of visible ASCII, space and tab, one Host, at most one
// Content-Length of plain digits, and none of the fields that change how
// the message is framed or what the connection becomes (Transfer-Encoding,
// Upgrade, Expect, Trailer, HTTP2-Settings, a Connection naming upgrade).
// net/http's server judges everything else. The request and its URL are
// dst's.
func parseHead(head []byte, ctx context.Context, dst *laneHead) *http.Request {
	// One string holds the whole head; the method, target and every
	// header value are parts of it, and the values share one array.
	text := string(head)
	line, rest, ok := cutLine(text)
	if !ok {
		return nil
	}
	sp1 := strings.IndexByte(line, ' ')
	if sp1 <= 0 {
		return nil
	}
	m := line[:sp1]
	for i := 0; i < len(m); i++ {
		if m[i] < 'A' || m[i] > 'Z' {
			return nil
		}
	}
	uri, proto, ok := strings.Cut(line[sp1+1:], " ")
	if !ok || len(uri) == 0 || uri[0] != '/' {
		return nil
	}
	minor := 1
	switch proto {
	case "HTTP/1.1":
	case "HTTP/1.0":
		minor = 0
	default:
		return nil
	}
	for i := 0; i < len(uri); i++ {
		if c := uri[i]; c <= ' ' || c >= 0x7f {
			return nil
		}
	}
	if m == http.MethodConnect || m == "PRI" {
		return nil
	}
	u := &dst.url
	if !plainTarget(uri, u) {
		pu, err := url.ParseRequestURI(uri)
		if err != nil {
			return nil
		}
		u = pu
	}
	// The request is made in place from a blank one whose context is
	// already ctx: http.Request keeps its context unexported, and setting
	// it with WithContext copies the whole request twice more (into a new
	// one, then into dst). A laneHead's context is its own laneContext
	// throughout, so the blank is made once per laneHead.
	if dst.blank.Context() != ctx {
		dst.blank = *(&http.Request{}).WithContext(ctx)
	}
	dst.req = dst.blank
	r := &dst.req
	r.Method, r.URL, r.Proto, r.ProtoMajor, r.ProtoMinor, r.RequestURI = m, u, proto, 1, minor, uri
	hosts, lengths, chunks, expects := 0, 0, 0, 0
	pragma, keepAlive := false, false
	le := &dst.ctx.le
	r.Header = parseFields(rest, dst.hdr, dst.vals[:0], func(key, v string) (keep, ok bool) {
		switch key {
		case "Host":
			// Like net/http: the Host field becomes r.Host only.
			hosts++
			r.Host = v
			return false, true
		case "Content-Length":
			lengths++
			n, ok := parseLength(v)
			if !ok || (len(v) > 1 && v[0] == '0') {
				return false, false
			}
			r.ContentLength = n
		case "Transfer-Encoding":
			// One field saying chunked, as net/http's server takes it
			// (see chunkedIn); any other coding, or a list, is its to
			// refuse.
			chunks++
			return false, len(v) == len("chunked") && strings.EqualFold(v, "chunked")
		case "Expect":
			// 100-continue, once, with a body: ferry's client asks the
			// upstream first (see servesExpect).
			expects++
			return true, len(v) == len("100-continue") && strings.EqualFold(v, "100-continue")
		case "Upgrade", "Trailer", "Http2-Settings":
			return false, false
		case "Connection":
			if hasToken([]string{v}, "upgrade") {
				return false, false
			}
			if hasToken([]string{v}, "close") {
				r.Close = true
			}
			if minor == 0 && hasToken([]string{v}, "keep-alive") {
				keepAlive = true
			}
		case "User-Agent":
			le.userAgent = true
		case "X-Forwarded-For":
			le.forwarded = true
		case "X-Forwarded-Proto", "X-Forwarded-Host":
			le.forwardedOther = true
		case "Pragma":
			pragma = true
		}
		if isHopHeader(key) {
			le.hopFields = true
		}
		return true, true
	})
	if r.Header == nil {
		return nil
	}
	if hosts != 1 || lengths > 1 || chunks > 1 || chunks+lengths > 1 || !plainHost(r.Host) {
		// (A head with both framings is net/http's to answer, and its
		// connection's to close: see framingScan.)
		return nil
	}
	if minor == 0 {
		// An HTTP/1.0 connection closes after the response unless the
		// caller asked to keep it, as net/http's server has it. Transfer-
		// Encoding (which net/http's server ignores in HTTP/1.0, and RFC
		// 9112 section 6.1 has a server read as faulty framing: see
		// framingScan) and Expect (which HTTP/1.0 does not know) are its
		// to judge.
		if chunks+expects > 0 {
			return nil
		}
		r.Close = r.Close || !keepAlive
	}
	if chunks == 1 {
		r.TransferEncoding, r.ContentLength = chunkedOnly, -1
	}
	if expects > 1 || expects == 1 && r.ContentLength == 0 {
		return nil // (net/http's server ignores it without a body)
	}
	le.expect = expects == 1
	// As net/http's server: "Pragma: no-cache" without Cache-Control
	// reads as "Cache-Control: no-cache" too (RFC 9111 section 5.4).
	if pragma {
		if p := r.Header["Pragma"]; len(p) > 0 && p[0] == "no-cache" {
			if _, ok := r.Header["Cache-Control"]; !ok {
				r.Header["Cache-Control"] = []string{"no-cache"}
			}
		}
	}
	return r
}

// cutLine cuts text after its first line, which must end in CRLF: a
// search for one byte, where strings.Cut's for two is a slower one.
func cutLine(text string) (line, rest string, ok bool) {
	nl := strings.IndexByte(text, '\n')
	if nl < 1 || text[nl-1] != '\r' {
		return "", "", false
	}
	return text[:nl-1], text[nl+1:], true
}

// plainTarget parses an origin-form request target as url.ParseRequestURI
// does when its path has only characters that URL keeps as they are (no
// escapes, so no RawPath), and reports whether it could.
func plainTarget(uri string, u *url.URL) bool {
	path, query, hasQuery := strings.Cut(uri, "?")
	for i := 0; i < len(path); i++ {
		if c := path[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-_.~$&+,/:;=@", c) >= 0) {
			return false
		}
	}
	// "/p?" keeps its empty query (ForceQuery); in "/p??" the query is "?".
	*u = url.URL{Path: path, RawQuery: query, ForceQuery: hasQuery && query == ""}
	return true
}

// laneHead is what a lane request needs besides its header and body, in
// one allocation: its context with its exchange, the request with its URL,
// and the response's writer.
//
// A connection serves its next request in the laneHead of its last one
// when nothing but that connection can still reach it (see reusable):
// a fresh allocation of it, cold in the caches, was the request path's
// largest.
type laneHead struct {
	// hdr is the header map of the request served last, which the next
	// one empties and fills (see parseFields).
	hdr http.Header
	// blank is an empty request with the laneHead's context, which each
	// request served in it starts from (see parseHead).
	blank http.Request
	// ctx outlives the exchanges served in this laneHead and is made
	// ready for the next one by hand (see laneRequest): contexts derived
	// from the last exchange's, and its cancel function, may still reach
	// it late.
	ctx laneContext
	laneParts
}

// laneParts is what each request served in a laneHead fills anew: its
// request and (for a plain target) URL are written whole as its head is
// parsed (see parseHead), its writer as it is served (serveOne), its
// values from the start of vals. Nothing zeroes them in between: that was
// a clear of 720 bytes per request.
type laneParts struct {
	req http.Request
	url url.URL
	w   connWriter
	// vals holds the header's values when they are few (see parseFields).
	vals [8]string
}

// reusable says whether the next request on the connection may be served
// in lh, whose exchange ended with the connection kept: nothing read its
// body but ferry's client, within a round trip (there was none, or it was
// a buffered upload, read whole), and nothing that outlives the exchange
// was given its parts. What may still hold its cancel function finds it
// retired (see laneContext.next).
func (lh *laneHead) reusable() bool {
	le := &lh.ctx.le
	if le.escaped {
		return false
	}
	if lh.w.body == nil {
		return lh.req.ContentLength == 0
	}
	return le.buffered && lh.w.body.left.Load() == 0
}

// laneRequest parses head into a request (lh.req) with a context of its
// own, which lh.ctx.le.cancel cancels; nil for a head the lane does not
// serve. The request is served in spare when not nil (see reusable).
func laneRequest(head []byte, idle *idleTimer, spare *laneHead) *laneHead {
	lh := spare
	if lh == nil {
		lh = &laneHead{}
	}
	lc := &lh.ctx
	// First: from here on no cancel function of the last exchange, which
	// a timer or Close may call late, reaches le.
	gen := lc.next()
	if spare != nil {
		lc.le = laneExchange{}
		laneReused.Add(1)
	}
	le := &lc.le
	le.ctx, le.idle, le.home = lc, idle, lc
	le.cancel = func(cause error) { lc.cancel(gen, cause) }
	if parseHead(head, lc, lh) == nil {
		lc.cancel(gen, nil)
		return nil
	}
	lh.hdr = lh.req.Header
	return lh
}

// laneContext is a lane request's context, with the request's
// laneExchange as the value of laneCancelKey. It is a cancelable context
// that makes the context package's one (inner) only when something asks
// for its Done channel or derives a context from it, which most requests
// never do: cancelling it before then allocates nothing (see cancel).
//
// A laneHead serves each of its exchanges in the same laneContext (see
// next). A context derived from the last exchange's that is cancelled
// after its exchange ended looks up its parent here, from its own
// goroutine, while the next exchange starts: it finds either exchange's
// cancelable context, is no child of the new one, and the old one let go
// of its children when it was cancelled. A cancel function of an exchange
// that ended, which a timer or watch may call after it (it takes the
// function under its own lock and calls it after), does nothing: it would
// cancel the next exchange, close its upstream connection or cut its
// writes.
type laneContext struct {
	state atomic.Uint32 // lcLive, lcEnded or lcMade; written under mu
	mu    sync.Mutex
	gen   uint64 // the exchange served now
	inner context.Context
	stop  context.CancelCauseFunc
	cause error // the cancellation's cause while inner is not made
	le    laneExchange
}

const (
	lcLive  = iota // not cancelled, inner not made
	lcEnded        // cancelled before inner was made
	lcMade         // inner made: it answers
)

// next readies c for its next exchange, whose generation it returns: once
// it returned, no cancel function made before cancels c.
func (c *laneContext) next() uint64 {
	c.mu.Lock()
	c.gen++
	gen := c.gen
	c.state.Store(lcLive)
	c.inner, c.stop, c.cause = nil, nil, nil
	c.mu.Unlock()
	return gen
}

// cancel cancels exchange gen's context with cause (context.Canceled when
// nil; the first cause stays), then fires its exchange (see
// laneExchange.fire), if c still serves it. It fires on every such call:
// a connection or writer hooked after an earlier cancel is cut too (see
// closeOnCancel). A waiter that meets the fired connection's close then
// sees the context cancelled.
func (c *laneContext) cancel(gen uint64, cause error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	switch c.state.Load() {
	case lcLive:
		if cause == nil {
			cause = context.Canceled
		}
		c.cause = cause
		c.state.Store(lcEnded)
	case lcMade:
		c.stop(cause)
	}
	c.le.fire()
}

// made returns the inner context, making it (cancelled already with the
// cause, when c was cancelled before) if it is not yet.
func (c *laneContext) made() context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state.Load() != lcMade {
		c.inner, c.stop = context.WithCancelCause(context.Background())
		laneMade.Add(1)
		if c.state.Load() == lcEnded {
			c.stop(c.cause)
		}
		c.cause = nil
		c.state.Store(lcMade)
	}
	return c.inner
}

func (c *laneContext) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c *laneContext) Done() <-chan struct{}       { return c.made().Done() }

func (c *laneContext) Err() error {
	switch c.state.Load() {
	case lcLive:
		return nil
	case lcEnded:
		return context.Canceled
	}
	return c.made().Err()
}

// laneOwned returns the lane exchange whose own context ctx is (or the
// values-only wrapping of it ServeHTTP recorded), or nil: a context derived
// with a deadline or cancellation of its own ends before the exchange's
// and must be watched on its own.
func laneOwned(ctx context.Context) *laneExchange {
	if le, ok := ctx.Value(laneCancelKey{}).(*laneExchange); ok && ctx == le.ctx {
		return le
	}
	return nil
}

// Value answers laneCancelKey with the exchange. A context that is not
// cancelled and has not made its inner one holds no other value: the
// inner one, made from context.Background, holds only the context
// package's own, which it asks for after Done or Err (the cause).
func (c *laneContext) Value(key any) any {
	if _, ok := key.(laneCancelKey); ok {
		return &c.le
	}
	if c.state.Load() == lcLive {
		return nil
	}
	return c.made().Value(key)
}

// parseFields parses header lines of the plainest kind (see scanFields)
// into a header whose values share one array: vals's, when it has room. field sees each canonical
// name and trimmed value first: keep false leaves the field out, ok false
// refuses the whole head (nil).
//
// A spare header (not nil) is emptied and filled instead of a new one.
func parseFields(rest string, spare http.Header, vals []string, field func(key, v string) (keep, ok bool)) http.Header {
	// One more than the header lines: every line ends in CRLF (no bare LF
	// reaches here), and counting one byte is the faster search.
	n := strings.Count(rest, "\n")
	h := spare
	if h == nil {
		h = make(http.Header, n)
	} else {
		clear(h)
	}
	if cap(vals) < n {
		vals = make([]string, 0, n)
	}
	ok := scanFields(rest, func(key, v string) bool {
		keep, ok := field(key, v)
		switch {
		case !ok:
			return false
		case !keep:
		case h[key] != nil:
			h[key] = append(h[key], v)
		default:
			vals = append(vals, v)
			h[key] = vals[len(vals)-1 : len(vals) : len(vals)]
		}
		return true
	})
	if !ok {
		return nil
	}
	return h
}

// scanFields checks header lines of the plainest kind ("Name: value"
// CRLF, the name of token characters, the value of visible ASCII, space
// and tab), up to the empty line that ends rest, and calls field with each
// canonical name and trimmed value; false from field, or a line of another
// kind, ends the scan with false.
func scanFields(rest string, field func(key, v string) bool) bool {
	for len(rest) > 2 {
		// One pass over each line: its end (CRLF; a bare LF ends the
		// scan), the name's characters up to the colon, then the value's.
		nl := strings.IndexByte(rest, '\n')
		if nl < 1 || rest[nl-1] != '\r' {
			return false
		}
		l := rest[:nl-1]
		rest = rest[nl+1:]
		var colon int
		var canonical bool
		if c := strings.IndexByte(l, ':'); c > 0 && commonName(l[:c]) {
			colon, canonical = c, true
		} else if colon, canonical = scanName(l); colon == 0 || colon == len(l) || l[colon] != ':' {
			return false
		}
		v := l[colon+1:]
		for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
			v = v[1:]
		}
		for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
			v = v[:len(v)-1]
		}
		if !printableASCII(v) {
			for i := 0; i < len(v); i++ {
				if c := v[i]; (c < ' ' && c != '\t') || c >= 0x7f {
					return false
				}
			}
		}
		name := l[:colon]
		if !canonical {
			name = canonicalForm(name)
		}
		if !field(name, v) {
			return false
		}
	}
	return true
}

// tokenChars holds the characters of an RFC 9110 token.
var tokenChars = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func isTokenChar(c byte) bool { return tokenChars[c] }

// nameChars classifies the bytes of a field name for scanName: 0 for a
// byte that is no token character; else nameToken, with nameLower or
// nameUpper for a letter, and in the high four bits the case that would be
// out of canonical form in the next byte (lower case after '-', upper case
// after anything else).
var nameChars = func() (t [256]uint8) {
	for c := range t {
		if !tokenChars[c] {
			continue
		}
		k := uint8(nameToken)
		switch {
		case 'a' <= c && c <= 'z':
			k |= nameLower
		case 'A' <= c && c <= 'Z':
			k |= nameUpper
		}
		if c == '-' {
			k |= nameLower << 4
		} else {
			k |= nameUpper << 4
		}
		t[c] = k
	}
	return t
}()

const (
	nameToken = 1 << iota
	nameLower
	nameUpper
)

// commonName reports whether name is one of the field names most requests
// and responses carry, in canonical form: one string comparison, where
// scanName looks at each byte (TestCommonNames keeps the list canonical).
func commonName(name string) bool {
	switch name {
	case "Host", "User-Agent", "Accept", "Accept-Encoding", "Accept-Language", "Authorization", "Cache-Control",
		"Connection", "Content-Encoding", "Content-Length", "Content-Type", "Cookie", "Date", "Etag", "Expires",
		"Last-Modified", "Location", "Origin", "Referer", "Server", "Set-Cookie", "Traceparent", "Tracestate",
		"Vary", "X-Forwarded-For", "X-Request-Id":
		return true
	}
	return false
}

// scanName returns how many token characters s starts with, and whether
// they are in the form textproto.CanonicalMIMEHeaderKey gives a name
// (upper case first and after each '-', lower case elsewhere): both in one
// pass, with a table lookup per byte.
func scanName(s string) (end int, canonical bool) {
	wrong, bad := uint8(nameLower), uint8(0)
	for i := 0; i < len(s); i++ {
		k := nameChars[s[i]]
		if k == 0 {
			return i, bad == 0
		}
		bad |= k & wrong
		wrong = k >> 4
	}
	return len(s), bad == 0
}

// plainHost accepts host[:port] of letters, digits, '-', '.', '_', and a
// bracketed IPv6 literal; net/http judges anything else.
func plainHost(h string) bool {
	if h == "" {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9',
			c == '-', c == '.', c == '_', c == ':', c == '[', c == ']':
		default:
			return false
		}
	}
	return true
}

// commonKeys maps frequent header names in lower case, as some clients
// send them, to their canonical form, without textproto's allocation.
var commonKeys = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{"Accept", "Accept-Encoding", "Accept-Language", "Authorization", "Cache-Control",
		"Connection", "Content-Length", "Content-Type", "Cookie", "Host", "If-Modified-Since", "If-None-Match",
		"Origin", "Referer", "User-Agent", "Traceparent", "Tracestate", "Baggage", "X-Forwarded-For",
		"X-Forwarded-Host", "X-Forwarded-Proto", "X-Request-Id", "B3", "Te", "Upgrade", "Expect", "Transfer-Encoding", "Trailer"} {
		m[strings.ToLower(k)] = k
	}
	return m
}()

// canonicalForm is textproto.CanonicalMIMEHeaderKey of a name of token
// characters that is not in canonical form (scanName says), with the
// common ones looked up without textproto's allocation.
func canonicalForm(name string) string {
	if k, ok := commonKeys[name]; ok {
		return k
	}
	return textproto.CanonicalMIMEHeaderKey(name)
}

// prefixConn is a connection handed to net/http: what the lane already
// read comes first.
type prefixConn struct {
	net.Conn
	r      *bufio.Reader
	scan   framingScan
	headBy time.Time // see handOver; cleared by the first SetReadDeadline
	l      *lane
	// unhandled: net/http reads a request head that no handler took yet,
	// so what it writes now is its own answer (see Write).
	unhandled atomic.Bool
	// slot: the connection holds one of the lane's slots
	// (limits.max_connections), given back at the first Close.
	slot atomic.Bool

	// What net/http is at on the connection, counted in its lane's
	// handedBusy, handlers and handedAnswered (see change). busy: a
	// request in progress, as ConnState says (active until idle); call:
	// an HTTP/1.x handler call running (a request pipelined behind the
	// last is not reported active); answered: that request's answer went
	// out whole (see handedWhole), until the next one begins.
	mu                   sync.Mutex
	busy, call, answered bool

	// resets counts an h2c connection's streams and its caller's
	// premature resets (h2resets.go).
	resets h2Resets
}

// setBusy records whether net/http is at a request on the connection; a
// request that begins is not answered.
func (c *prefixConn) setBusy(busy bool) {
	c.change(func() {
		c.busy = busy
		if busy {
			c.answered = false
		}
	})
}

// change applies f to the connection's state, and its effect to the
// lane's counters: increments before decrements, so that no count of the
// lane's dips to zero while the connection moves from one to another.
func (c *prefixConn) change(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	busy0, call0, answered0 := c.counts()
	f()
	busy1, call1, answered1 := c.counts()
	add := func(n *atomic.Int64, d int64, up bool) {
		if d != 0 && (d > 0) == up {
			n.Add(d)
		}
	}
	for _, up := range []bool{true, false} {
		add(&c.l.handedAnswered, answered1-answered0, up)
		add(&c.l.handedBusy, busy1-busy0, up)
		add(&c.l.handlers, call1-call0, up)
	}
}

// counts is what the connection's state adds to its lane's handedBusy,
// handlers and handedAnswered.
func (c *prefixConn) counts() (busy, call, answered int64) {
	if c.answered {
		return 0, 0, b2i(c.call)
	}
	return b2i(c.busy), b2i(c.call), 0
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

func (c *prefixConn) Close() error {
	if c.slot.Swap(false) {
		c.l.release()
	}
	return c.Conn.Close()
}

func (c *prefixConn) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if h := testHookHandedRead.Load(); h != nil && n > 0 {
		(*h)()
	}
	c.scan.feed(p[:n])
	if err != nil && !errors.Is(err, net.ErrClosed) {
		c.resets.callerEnded.Store(true)
	}
	return n, err
}

// testHookHandedRead, set by tests only, runs after each Read of a
// handed-over connection that returned bytes, before net/http sees them:
// a test holds it to order that read against net/http's own work.
var testHookHandedRead atomic.Pointer[func()]

// SetReadDeadline keeps the first deadline net/http sets, the one for the
// head it goes on reading, no later than the lane's for that head.
func (c *prefixConn) SetReadDeadline(t time.Time) error {
	if by := c.headBy; !by.IsZero() {
		c.headBy = time.Time{}
		if t.IsZero() || t.After(by) {
			t = by
		}
	}
	return c.Conn.SetReadDeadline(t)
}

// CloseWrite half-closes, so net/http can close a connection whose request
// it refused without resetting its answer away.
func (c *prefixConn) CloseWrite() error {
	if tc, ok := c.Conn.(*net.TCPConn); ok {
		return tc.CloseWrite()
	}
	return nil
}

// ReadFrom lets net/http's response writer reach the socket's ReadFrom,
// and so splice(2).
func (c *prefixConn) ReadFrom(r io.Reader) (int64, error) {
	if tc, ok := c.Conn.(*net.TCPConn); ok {
		return tc.ReadFrom(r)
	}
	return io.Copy(writerOnly{c.Conn}, r)
}

// handoffListener is the net.Listener through which net/http's server
// receives the lane's handed-over connections.
type handoffListener struct {
	addr   net.Addr
	ch     chan net.Conn
	done   chan struct{}
	closed sync.Once
}

func newHandoffListener() *handoffListener {
	return &handoffListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (h *handoffListener) deliver(c net.Conn) bool {
	select {
	case h.ch <- c:
		return true
	case <-h.done:
		return false
	}
}

func (h *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-h.ch:
		return c, nil
	case <-h.done:
		return nil, net.ErrClosed
	}
}

func (h *handoffListener) Close() error {
	h.closed.Do(func() { close(h.done) })
	return nil
}

func (h *handoffListener) Addr() net.Addr {
	if h.addr == nil {
		return &net.TCPAddr{}
	}
	return h.addr
}

// testHookDrainWaits, set by tests only, runs when a drain that ended
// with no exchange to cut waits for the lane's exchanges whose answers
// went out whole to end, and when a drain's end waits for such exchanges
// on taken-over connections (tunnelSet.awaitEnding).
var testHookDrainWaits func()
