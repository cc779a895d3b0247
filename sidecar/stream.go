package sidecar

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// bufSize is the size of each pooled relay buffer. A stream holds at most
// one of these per direction, whatever the body size.
const bufSize = 32 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// idleTimer cancels an exchange when no body byte moved in either direction
// for d. Reads only store a timestamp; the timer re-arms itself, so the hot
// path never resets a timer. A lane connection keeps one for all its
// exchanges (reused), armed between them until it fires with nothing to
// watch: an exchange then arms nothing (see lazyTimer).
type idleTimer struct {
	last   atomic.Int64 // monoNow() of the last activity
	paused atomic.Bool
	// responding: the response has begun (resume); the upload's end no
	// longer pauses the watch, which now guards the response.
	responding atomic.Bool
	reused     bool

	mu     sync.Mutex
	d      time.Duration
	lt     lazyTimer
	cancel context.CancelCauseFunc // the exchange's; nil between exchanges
	// first is the attempt's connection (or response body) while the
	// body's first byte is awaited (guardFirst): the timer then cuts that
	// attempt, closing it, and not the exchange, which another endpoint
	// may still answer. firstCut says it did.
	first    io.Closer
	firstCut bool
	// moves are the kernel-to-kernel body moves in progress (see
	// watchMove), by direction: a move reports nothing until a segment
	// ends, so the timer asks the kernel whether bytes moved meanwhile.
	moves [2]moveWatch
}

// Directions of a body move, indexing idleTimer.moves.
const (
	moveDown = iota // the response body, upstream to caller
	moveUp          // the request body, caller to upstream
)

// moveWatch is one kernel-to-kernel move the idle timer looks into: the
// sockets it moves bytes between, and what they had moved when the timer
// last looked (see socketFlow). Bytes arriving at src, taken from its
// queue, or acknowledged by dst's peer are activity: one side sending, the
// other reading. (The move's pipe holds up to a segment: while it writes
// that out to a slow reader, src does not change.)
type moveWatch struct {
	src, dst         *net.TCPConn // dst nil: not known
	srcSeen, dstSeen flow
}

// flow is what a socket moved so far (see socketFlow).
type flow struct {
	received, acked uint64
	queued          int
}

func newIdleTimer(reused bool) *idleTimer {
	it := &idleTimer{reused: reused}
	it.lt.f = it.fire
	return it
}

// startIdleTimer starts a timer of one exchange's own; nil when d <= 0.
func startIdleTimer(d time.Duration, cancel context.CancelCauseFunc) *idleTimer {
	if d <= 0 {
		return nil
	}
	it := newIdleTimer(false)
	it.begin(d, cancel)
	return it
}

// begin watches an exchange, which cancel ends, from now.
func (it *idleTimer) begin(d time.Duration, cancel context.CancelCauseFunc) {
	it.beginAt(d, cancel, 0)
}

// beginAt is begin for a caller that read now (see monoOr) a moment ago.
func (it *idleTimer) beginAt(d time.Duration, cancel context.CancelCauseFunc, now int64) {
	now = monoOr(now)
	it.last.Store(now)
	it.paused.Store(false)
	it.responding.Store(false)
	it.mu.Lock()
	it.d, it.cancel = d, cancel
	it.moves = [2]moveWatch{}
	it.lt.armByAt(monoAdd(now, d), now)
	it.mu.Unlock()
}

func (it *idleTimer) fire() {
	it.mu.Lock()
	it.lt.fired()
	cancel := it.cancel
	if cancel == nil {
		it.mu.Unlock()
		return
	}
	now := monoNow()
	due := monoAdd(it.last.Load(), it.d)
	if it.paused.Load() {
		due = monoAdd(now, it.d) // the upstream thinks: look again later
	}
	watching := it.watching()
	if watching && it.moved() {
		// A move still going on moved bytes since the last look, at
		// most a look's interval ago: the body is not idle, whatever
		// its slow pace.
		it.last.Store(now)
		due = monoAdd(now, it.d)
	}
	if now < due {
		if watching {
			// Look again soon: bytes that stop moving after this look
			// are seen to have stopped by the next.
			due = min(due, monoAdd(now, it.lookEvery()))
		}
		it.lt.armByAt(due, now)
		it.mu.Unlock()
		return
	}
	if c := it.first; c != nil {
		// The attempt goes, the exchange stays: its idle time starts
		// again for whatever comes next (a retry, or its failure).
		it.first, it.firstCut = nil, true
		it.last.Store(now)
		it.lt.armByAt(monoAdd(now, it.d), now)
		it.mu.Unlock()
		c.Close()
		return
	}
	it.cancel = nil
	it.mu.Unlock()
	cancel(errBodyIdle)
}

// moveLooks is how many times per body_idle the timer looks at the
// sockets of a move in progress (see watchMove). It takes bytes it finds
// moved for activity at the time of the look, up to a look's interval
// after they moved, so a move that stalls is cut at most 1/moveLooks of
// body_idle late (plus the timer's own lateness), never early. Looked at
// once per body_idle, a move that stalled just after a look was seen
// moving at the next and cut a second body_idle later: at twice its
// value.
const moveLooks = 8

// lookEvery is the interval between two looks at a move in progress.
func (it *idleTimer) lookEvery() time.Duration {
	return max(it.d/moveLooks, time.Millisecond)
}

// watching reports whether a body move is in progress (called with mu
// held).
func (it *idleTimer) watching() bool {
	return it.moves[moveDown] != (moveWatch{}) || it.moves[moveUp] != (moveWatch{})
}

// moved reports whether a body move in progress moved bytes (see
// moveWatch) since the timer last looked (called with mu held).
func (it *idleTimer) moved() bool {
	moved := false
	for i := range it.moves {
		m := &it.moves[i]
		if m.src != nil {
			if f, ok := socketFlow(m.src); ok && f != m.srcSeen {
				m.srcSeen, moved = f, true
			}
		}
		if m.dst != nil {
			if f, ok := socketFlow(m.dst); ok && f.acked != m.dstSeen.acked {
				m.dstSeen, moved = f, true
			}
		}
	}
	return moved
}

// watchMove makes the timer, while one direction's body moves from src to
// dst (either nil when not known), take bytes moving through them for
// activity. A kernel-to-kernel move touches the timer only once a segment
// (up to spliceSegment bytes) ended, and a write to a slow reader returns
// only once the kernel has room for much of it (see relay): a slow but
// steady body can take longer than body_idle to do either. Where the
// kernel does not count a socket's bytes, those alone keep the timer.
func (it *idleTimer) watchMove(dir int, src, dst *net.TCPConn) {
	if it == nil {
		return
	}
	var m moveWatch
	var ok bool
	if src != nil {
		if m.srcSeen, ok = socketFlow(src); ok {
			m.src = src
		}
	}
	if dst != nil {
		if m.dstSeen, ok = socketFlow(dst); ok {
			m.dst = dst
		}
	}
	if m.src == nil && m.dst == nil {
		return
	}
	it.mu.Lock()
	it.moves[dir] = m
	if it.cancel != nil {
		// Looked at every lookEvery from now (see fire), not first at
		// the deadline the timer had.
		now := monoNow()
		it.lt.armByAt(monoAdd(now, it.lookEvery()), now)
	}
	it.mu.Unlock()
}

// unwatchMove ends watchMove.
func (it *idleTimer) unwatchMove(dir int) {
	if it != nil {
		it.mu.Lock()
		it.moves[dir] = moveWatch{}
		it.mu.Unlock()
	}
}

// guardFirst makes the timer, while the first byte of a response body is
// awaited, cut the attempt by closing c instead of the exchange.
func (it *idleTimer) guardFirst(c io.Closer) {
	if it != nil {
		it.mu.Lock()
		it.first, it.firstCut = c, false
		it.mu.Unlock()
	}
}

// unguardFirst ends guardFirst and reports whether the timer cut the
// attempt (closed its connection) meanwhile.
func (it *idleTimer) unguardFirst() bool {
	if it == nil {
		return false
	}
	it.mu.Lock()
	cut := it.firstCut
	it.first, it.firstCut = nil, false
	it.mu.Unlock()
	return cut
}

// touch records activity.
func (it *idleTimer) touch() {
	if it != nil {
		it.last.Store(monoNow())
	}
}

// pause stops idle accounting, while the upstream thinks (the response
// header timeout covers that phase).
func (it *idleTimer) pause() {
	if it != nil && !it.responding.Load() {
		it.paused.Store(true)
	}
}

// rewind watches a new attempt as the first was before its response:
// pause, which resume made a no-op, holds again (the response header
// timeout rules the wait for the attempt's head), now when it has nothing
// to upload, else at the upload's end.
func (it *idleTimer) rewind(nothingToUpload bool) {
	if it != nil {
		it.responding.Store(false)
		if nothingToUpload {
			it.paused.Store(true)
		}
	}
}

// resume restarts idle accounting from now. The timer needs no reset:
// while an exchange is watched it is armed for no later than d after its
// last look.
func (it *idleTimer) resume() {
	if it != nil {
		it.touch()
		it.responding.Store(true)
		it.paused.Store(false)
	}
}

// stop ends the watch of the exchange. A timer of its own is stopped; a
// reused one stays armed until it fires with nothing to watch.
func (it *idleTimer) stop() {
	if it != nil {
		it.mu.Lock()
		it.cancel = nil
		it.moves = [2]moveWatch{}
		if !it.reused {
			it.lt.stop()
		}
		it.mu.Unlock()
	}
}

// release stops a reused timer for good: its connection ended.
func (it *idleTimer) release() {
	it.mu.Lock()
	it.cancel = nil
	it.lt.stop()
	it.mu.Unlock()
}

// requestBody wraps the caller's request body on its way upstream: it counts
// bytes (a retry is only safe while none was sent), enforces the body limit
// and feeds the idle timer. The transport reads it from its own goroutine.
type requestBody struct {
	rc io.ReadCloser
	n  atomic.Int64 // bytes read from the caller
	// withheld: the bytes of the read that crossed the limit, read from
	// the caller but never passed on upstream.
	withheld atomic.Int64
	reading  atomic.Bool // a Read is in progress
	failed   atomic.Bool // a Read failed before the end of the body
	ended    atomic.Bool // a Read saw the end of the body
	torn     atomic.Bool // a spliced move started: the body cannot be sent again
	limit    int64       // 0 = none
	// trailerLimit: an HTTP/2 caller's trailers, in trailer, are held to
	// limits.max_header_bytes as its head is (see h2HeadOver); 0 = none.
	trailerLimit int
	idle         *idleTimer
	cancel       context.CancelCauseFunc
	hold         atomic.Pointer[attemptBody] // the current attempt's (see attempt)
	trailer      http.Header                 // the caller's request trailers, filled at the body's end; nil: none
	// up is the upstream socket net/http's HTTP/1.1 Transport writes the
	// body to (see sendsTo); watched: the idle timer watches it.
	up      atomic.Pointer[net.TCPConn]
	watched atomic.Bool
	// held is a copy of what was read of the body while it is no larger
	// than replayHold, kept while it goes to an h2c upstream that may
	// refuse its stream unprocessed (see keepForReplay); heldOK says held
	// is all of it.
	heldMu sync.Mutex
	held   []byte
	heldOK bool

	// fault: the error of the Read that failed, when the caller's body
	// broke (not for the limit, which failed it too).
	fault atomic.Pointer[bodyReadError]
	// stopped: ferry or its transport ended the body's reads (Close,
	// unblock), as they do when the upstream broke or the exchange ended;
	// a Read that fails afterwards failed for that. callerBroke: a Read
	// failed before that, of the caller's own doing (bad framing, its
	// connection cut mid-body).
	stopped     atomic.Bool
	callerBroke atomic.Bool
}

// replayHold is the most of a request body ferry keeps to send it again on
// a new HTTP/2 stream after the upstream refused the first unprocessed
// (RST_STREAM REFUSED_STREAM, or a GOAWAY whose last stream id is below
// it). net/http's client reads such a small body whole into the stream at
// once, before the upstream can refuse it.
const replayHold = 64 << 10

func (b *requestBody) Read(p []byte) (int, error) {
	b.reading.Store(true)
	defer b.reading.Store(false)
	if b.limit > 0 {
		if rest := b.limit - b.n.Load(); int64(len(p)) > rest+1 {
			p = p[:rest+1]
		}
	}
	n, err := b.rc.Read(p)
	if n > 0 {
		b.heldMu.Lock()
		if b.heldOK {
			if len(b.held)+n <= replayHold {
				b.held = append(b.held, p[:n]...)
			} else {
				b.held, b.heldOK = nil, false
			}
		}
		b.heldMu.Unlock()
		total := b.n.Add(int64(n))
		b.idle.touch()
		if total >= relayWatchAfter && !b.watched.Load() {
			b.watchUpstream()
		}
		if b.limit > 0 && total > b.limit {
			b.withheld.Store(int64(n))
			b.failed.Store(true)
			b.cancel(errBodyTooLarge)
			return 0, errBodyTooLarge
		}
	}
	if err == io.EOF && b.trailerLimit > 0 {
		if n, over := h2TrailersOver(b.trailer, b.trailerLimit); over {
			// net/http's HTTP/2 server read them with h2HeadRoom to
			// spare: they go no further.
			err = fmt.Errorf("%w: %d bytes (as HTTP/2 counts them), limits.max_header_bytes %d", errTrailersTooLarge, n, b.trailerLimit)
		}
	}
	switch {
	case err == io.EOF:
		b.ended.Store(true)
		b.idle.pause()
		if b.trailer != nil {
			// The caller's trailers are in now; the transport reads them
			// once this Read returned.
			dropForbiddenTrailers(b.trailer)
		}
	case err != nil:
		be := &bodyReadError{err}
		b.fault.Store(be)
		if !b.stopped.Load() {
			b.callerBroke.Store(true)
		}
		b.failed.Store(true)
		err = be
	}
	return n, err
}

// sendsTo says that net/http's HTTP/1.1 Transport writes the body to the
// upstream socket tc, for the idle timer to watch (see watchUpstream).
func (b *requestBody) sendsTo(tc *net.TCPConn) {
	b.up.Store(tc)
}

// watchUpstream makes the idle timer, once the body has passed enough
// bytes to fill the socket buffers (relayWatchAfter, as for a response),
// watch the upstream socket net/http's Transport writes it to (see
// watchMove): that Transport reads the body only when its write to the
// upstream returned, and a write to an upstream reading slowly but steadily
// returns only once the kernel has room for much of it, longer than the
// upstream takes to read any one byte. The bytes the upstream acknowledges
// meanwhile are the body moving. The watch lasts until the exchange ends
// (idleTimer.stop): after the body's last byte, what the socket still
// holds goes on moving. A body ferry moves itself (spliceInto), or one
// going to an HTTP/2 upstream, whose flow control paces the writes and
// whose connection carries other streams, has no such socket.
func (b *requestBody) watchUpstream() {
	if tc := b.up.Load(); tc != nil && b.idle != nil {
		b.watched.Store(true)
		b.idle.watchMove(moveUp, nil, tc)
	}
}

// unblock ends a Read of the caller's body that waits for bytes, through
// a read deadline in the past on the caller's side: the lane's socket, or
// the stream or connection behind w.
func (b *requestBody) unblock(w http.ResponseWriter) {
	b.stopped.Store(true)
	if s, ok := b.rc.(*socketBody); ok {
		// Only while some of the body is still to come: a connection whose
		// body was read whole may carry the next request.
		if s.left.Load() > 0 {
			s.conn.SetReadDeadline(time.Unix(1, 0))
		}
		return
	}
	_ = http.NewResponseController(w).SetReadDeadline(time.Unix(1, 0))
}

// uploading reports that the caller's body is still being read: it has
// neither ended nor failed, and may have a Read in progress.
func (b *requestBody) uploading() bool {
	return b != nil && !b.ended.Load() && !b.failed.Load()
}

// unfinished reports that the caller's body did not reach its end, read
// or not, failed or not: its connection may still carry some of it.
func (b *requestBody) unfinished() bool {
	return b != nil && !b.ended.Load()
}

// broken reports that reading the caller's body failed (bad framing, a
// connection cut mid-body).
func (b *requestBody) broken() bool { return b != nil && b.failed.Load() }

// Close closes the caller's body only when that cannot cost a retry: once
// some of it was read (no retry can replay it), or to unblock a Read in
// progress (HTTP/2 transports close the body to end its writer when the
// response ends). A transport closing an unread body after a failed attempt
// leaves it open for the retry; the server closes it when the exchange ends.
func (b *requestBody) Close() error {
	if b.n.Load() > 0 || b.reading.Load() {
		b.stopped.Store(true)
		if h := testHookBodyClose.Load(); h != nil {
			(*h)()
		}
		return b.rc.Close()
	}
	return nil
}

// testHookBodyClose, set by tests only, runs in Close before the caller's
// body is closed: a test holds it to order that close against net/http's.
var testHookBodyClose atomic.Pointer[func()]

// brokenByCaller returns the error of the caller's body, when reading it
// failed of the caller's own doing: before ferry or its transport ended
// the reads (see stopped). A transport closes the body when the upstream
// broke, and the Read in progress then fails too: that is no fault of the
// caller's.
func (b *requestBody) brokenByCaller() *bodyReadError {
	if b == nil || !b.callerBroke.Load() {
		return nil
	}
	return b.fault.Load()
}

// keepForReplay makes the body keep a copy of what is read of it, up to
// replayHold, for replay; only before any of it was read.
func (b *requestBody) keepForReplay() {
	b.heldMu.Lock()
	if b.n.Load() == 0 && !b.torn.Load() {
		b.heldOK = true
	}
	b.heldMu.Unlock()
}

// dropHeld ends keepForReplay: the upstream answered, so it took the
// stream.
func (b *requestBody) dropHeld() {
	if b != nil {
		b.heldMu.Lock()
		b.held, b.heldOK = nil, false
		b.heldMu.Unlock()
	}
}

// replay is a new attempt's hold on the body that sends again what was
// read of it: only a body read whole and kept whole, with no Read of the
// attempt before in progress (the caller's body may have been closed
// meanwhile, which the replay never reads).
func (b *requestBody) replay() (io.ReadCloser, error) {
	if a := b.replayAttempt(); a != nil {
		return a, nil
	}
	return nil, errBodyNotReplayable
}

// replayAttempt is replay's hold for a retry of ferry's, nil when the body
// cannot be sent again that way.
func (b *requestBody) replayAttempt() *attemptBody {
	if !b.replayable() || !b.retire() {
		return nil
	}
	b.heldMu.Lock()
	held := b.held
	b.heldMu.Unlock()
	a := b.attempt()
	a.replaying, a.rest = true, held
	return a
}

// replayable reports whether ferry holds the whole body, read to its end,
// to send it again.
func (b *requestBody) replayable() bool {
	if b == nil {
		return false
	}
	b.heldMu.Lock()
	ok := b.heldOK
	b.heldMu.Unlock()
	return ok && b.ended.Load() && !b.failed.Load() && !b.torn.Load()
}

// sent is how many body bytes were passed on upstream so far: those read
// from the caller, less the read that crossed the limit; 0 for no body.
func (b *requestBody) sent() int64 {
	if b == nil {
		return 0
	}
	return b.n.Load() - b.withheld.Load()
}

// taken is what a retry decision weighs: the bytes read from the caller
// (passed on or not), at least 1 once a spliced move started (it may have
// taken bytes it could not deliver).
func (b *requestBody) taken() int64 {
	if b == nil {
		return 0
	}
	n := b.n.Load()
	if n == 0 && b.torn.Load() {
		return 1
	}
	return n
}

// attemptBody is one attempt's hold on the request body. An attempt's
// transport may go on reading the body after ferry gave the attempt up (an
// early 503 while the body has not come yet): a retry first retires the
// attempt's hold, after which that transport reads nothing more, so no
// byte meant for the retry goes to the attempt given up. A hold with a
// Read in progress cannot be retired: that Read may take bytes the retry
// would then miss, and the retry does not happen.
type attemptBody struct {
	b     *requestBody
	state atomic.Int32 // holdFree, holdReading or holdRetired
	// replaying: the attempt sends rest, the body kept whole, and then
	// ends (see requestBody.replay).
	replaying bool
	rest      []byte
	// trip: the round trip of a request with Expect: 100-continue that
	// net/http's transport makes (see informedTrip.answeredFirst).
	trip *informedTrip
}

const (
	holdFree = iota
	holdReading
	holdRetired
)

// attempt starts a new attempt's hold on the body.
func (b *requestBody) attempt() *attemptBody {
	a := &attemptBody{b: b}
	b.hold.Store(a)
	return a
}

func (a *attemptBody) Read(p []byte) (int, error) {
	if !a.state.CompareAndSwap(holdFree, holdReading) {
		return 0, errAttemptRetired
	}
	defer a.state.Store(holdFree)
	if a.trip != nil && a.trip.answeredFirst() {
		// The upstream answered without asking for the body: none of
		// it is read from the caller (no 100 Continue goes to it, and
		// net/http's server closes its connection after the answer)
		// nor sent; the Read waits for the request to end, as the
		// transport, whose write it holds, closes the upstream's
		// connection once it has the answer and finds the request not
		// yet written.
		<-a.trip.done
		if a.trip.caller != nil {
			// net/http's server, ending the exchange, reads what is
			// left of a body of up to 256 KiB the caller will not send:
			// the read side is shut so that read ends at once (the
			// connection closes after the answer anyway).
			_ = a.trip.caller.CloseRead()
		}
		return 0, errRefusedBeforeBody
	}
	if a.replaying {
		if len(a.rest) == 0 {
			return 0, io.EOF
		}
		n := copy(p, a.rest)
		a.rest = a.rest[n:]
		a.b.idle.touch()
		return n, nil
	}
	return a.b.Read(p)
}

// Close closes the body as requestBody.Close does, unless the attempt was
// retired: the body is the retry's then.
func (a *attemptBody) Close() error {
	if a.state.Load() == holdRetired {
		return nil
	}
	return a.b.Close()
}

// retire ends the current attempt's hold on the body before a retry; false
// when a Read of it is in progress.
func (b *requestBody) retire() bool {
	if b == nil {
		return true
	}
	a := b.hold.Load()
	return a == nil || a.state.CompareAndSwap(holdFree, holdRetired) || a.state.Load() == holdRetired
}

// relayResult says how a body copy ended.
type relayResult struct {
	n        int64
	readErr  error // the source broke (the upstream, for a response)
	writeErr error // the destination broke (the caller, for a response)
	unsent   bool  // the source broke before its first byte: nothing of the response was written
}

// readFirst reads a body's first bytes into buf; an error only when none
// came (a body of announced length that ends at once is cut short).
func readFirst(src io.Reader, buf []byte) (int, error) {
	for {
		n, err := src.Read(buf)
		switch {
		case n > 0:
			return n, nil
		case err == io.EOF:
			return 0, io.ErrUnexpectedEOF
		case err != nil:
			return 0, err
		}
	}
}

// testHookRelayWrote, set by tests only, runs in relay after each write
// of a gRPC response's bytes to the caller (and its flush), once frames
// stepped over them: before the relay says the write is over (over
// false), and after (over true). n is the bytes relayed so far.
var testHookRelayWrote atomic.Pointer[func(frames *grpcFrames, n int64, over bool)]

// relayWatchAfter is how much of a body relay passes on before the idle
// timer watches the caller's socket: less fits the socket's buffers, and
// a small response pays no system call for the watch.
const relayWatchAfter = 256 << 10

// relay copies a response body to the caller through a pooled buffer and
// flushes after every write, so each piece reaches the caller as soon as the
// upstream sent it: event streams, gRPC messages and the first bytes of a
// slow download alike. A flush with nothing buffered costs nothing, and
// writes of more than the server's small write buffer bypass it anyway, so
// bulk transfers pay no extra system calls. buf is the relay's buffer, of
// which the first nr bytes were read from src already. dst is w's socket
// (nil when not known): once the body is large enough to fill its buffers,
// the idle timer watches it (see watchMove), as a write to a slow reader
// waits until the kernel has room for much of it, longer than the reader
// takes to read any one byte.
//
// frames, for a gRPC response (nil for any other), follows the messages
// relayed: a read that brings bytes after the exchange ended and spared
// the caller's stream (see grpcFrames) passes nothing on, and ends the
// relay as the upstream's break. A read that brings none leaves the
// relay waiting as far as the cut is concerned: it writes nothing more,
// whichever of the upstream's read and the cut saw the exchange end
// first. From a write that left the caller whole messages to the next
// write the relay counts as waiting, and the cut lets a write that ends
// at a message boundary finish (see grpcFrames.spare).
//
// web, for a gRPC-Web response (nil for any other), is shown the bytes
// relayed, for the status of its trailer frame (see grpcWebStatus).
//
// seen says that src's first bytes (nr being 0) are in its buffer since
// before the idle timer last recorded activity (resume), and nothing
// waited since: reading them moves no byte the timer has not seen
// moving, and does not touch it (a clock read).
func relay(w http.ResponseWriter, rc *http.ResponseController, src io.Reader, dst *net.TCPConn, idle *idleTimer, buf []byte, nr int, frames *grpcFrames, web *grpcWebStatus, seen bool) relayResult {
	var res relayResult
	var rerr error
	watched := false
	defer func() {
		if watched {
			idle.unwatchMove(moveDown)
		}
	}()
	for {
		touch := true
		if nr == 0 {
			if frames != nil {
				frames.wait()
			}
			touch = !seen
			nr, rerr = src.Read(buf)
		}
		seen = false
		if nr > 0 {
			endsWhole := false // the bytes end at a message boundary
			if frames != nil {
				head, _ := frames.step(buf[:nr])
				endsWhole = head == 0
				if !frames.begin(endsWhole) {
					if rerr == nil || rerr == io.EOF {
						rerr = errSparedRead
					}
					res.readErr = rerr
					return res
				}
			}
			if touch {
				idle.touch()
			}
			if !watched && res.n >= relayWatchAfter && dst != nil && idle != nil {
				idle.watchMove(moveDown, nil, dst)
				watched = true
			}
			nw, werr := w.Write(buf[:nr])
			res.n += int64(nw)
			if werr == nil && nw < nr {
				werr = io.ErrShortWrite
			}
			if werr == nil {
				werr = rc.Flush()
			}
			if frames != nil {
				frames.advance(buf[:nw])
				if h := testHookRelayWrote.Load(); h != nil {
					(*h)(frames, res.n, false)
				}
				frames.wrote(endsWhole, werr == nil)
				if h := testHookRelayWrote.Load(); h != nil {
					(*h)(frames, res.n, true)
				}
			}
			if web != nil {
				web.observe(buf[:nw])
			}
			if werr != nil {
				res.writeErr = werr
				return res
			}
		}
		if rerr == io.EOF {
			return res
		}
		if rerr != nil {
			res.readErr = rerr
			return res
		}
		nr = 0
	}
}
