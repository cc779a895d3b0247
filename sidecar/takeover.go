package sidecar

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Zero-copy uploads. net/http's server hands a handler the caller's body as
// its own reader, never the socket, so a body read through it is copied
// through user space. For a large Content-Length upload over plain
// HTTP/1.1 toward an HTTP/1.1 upstream, ferry takes the caller's connection
// over (Hijack), moves the body socket to socket with splice(2) (through
// net.TCPConn.ReadFrom), and answers on that connection itself with a
// response it frames the way net/http would (Content-Length or chunked,
// trailers), then closes it: the response says "Connection: close", so the
// caller's next request opens a new connection, a cost that is small next
// to the upload it follows. (The lane reads its own requests' bodies from
// the socket: this is for the uploads it hands to net/http's server, such
// as those with an absolute-form target.)

// uploadSpliceMin is the smallest request body that takes the zero-copy
// upload path. Below it the connection the caller loses costs more than
// the copy saves.
const uploadSpliceMin = 1 << 20

// uploadSegment is how much of an upload one ReadFrom moves; the body idle
// timer is fed between segments (and watches the move, see watchMove). Smaller segments cost more: 256 KiB took
// 0.36-0.38 CPU-s per GiB where 1 MiB takes 0.28-0.30, the L4 relay's cost.
const uploadSegment = spliceSegment

// splicedUp counts request body bytes moved kernel to kernel; copiedUp
// those copyInto moved from a caller's socket through a buffer.
var splicedUp, copiedUp atomic.Int64

// takeOverEligible reports whether a request's body can go socket to
// socket: plain HTTP/1.1, not 1.0 (no TLS, no upgrade, no Expect other than
// 100-continue), a Content-Length body of at least uploadSpliceMin, an
// upstream spoken to in HTTP/1.1 by ferry's own client, and a server
// connection that can be taken over.
func takeOverEligible(w http.ResponseWriter, r *http.Request, up *upstream) bool {
	if r.ProtoMajor != 1 || r.ProtoMinor != 1 || r.TLS != nil || r.ContentLength < uploadSpliceMin ||
		len(r.TransferEncoding) > 0 || requestUpgrade(r.Header) != "" {
		return false
	}
	if e := r.Header["Expect"]; e != nil && (len(e) != 1 || !strings.EqualFold(e[0], "100-continue")) {
		return false
	}
	if _, ok := up.transportFor(r, false).(*fastH1); !ok {
		return false
	}
	_, ok := w.(http.Hijacker)
	return ok
}

// takeOver hijacks the caller's connection and returns the writer that
// answers on it and the caller's body as read from the socket. It returns
// nils when the connection cannot be taken (then nothing changed), and
// answered when it had to refuse the exchange on the taken connection.
func (p *Proxy) takeOver(w http.ResponseWriter, r *http.Request) (cw *connWriter, body *socketBody, answered bool) {
	conn, brw, err := w.(http.Hijacker).Hijack()
	if err != nil {
		return nil, nil, false
	}
	bufs := []*bufio.Reader{brw.Reader}
	var tc *net.TCPConn // nil: not a plain socket; answer on it without splice
	var handed *prefixConn
	if pc, ok := conn.(*prefixConn); ok {
		handed = pc
		// Handed over by the lane: what the lane buffered follows what
		// net/http buffered. The socket is read directly from now on;
		// closing it still goes through pc, which gives back the
		// connection's limits.max_connections slot.
		tc, _ = pc.Conn.(*net.TCPConn)
		conn = slotConn{pc.Conn, pc}
		bufs = append(bufs, pc.r)
	} else {
		tc, _ = conn.(*net.TCPConn)
	}
	cw = &connWriter{conn: conn, tc: tc, bw: bufio.NewWriterSize(conn, 4<<10), h: http.Header{}, head: r.Method == http.MethodHead}
	if !p.tunnels.add(cw) {
		// The drain is over: nothing new may start.
		writeFailure(cw, errDrainOver)
		cw.end()
		return nil, nil, true
	}
	// Once the answer went out whole, the drain's end cuts nothing here:
	// the connection is no tunnel to cut (still tracked until the
	// exchange was reported, see forward), nor is the handler call net/http
	// runs for it an exchange in flight (see handedWhole).
	cw.answered = new(atomic.Bool)
	cw.onWhole = func() {
		p.tunnels.ending(cw)
		if handed != nil {
			handed.answer()
		}
	}
	body = &socketBody{bufs: bufs, conn: conn, tc: tc}
	body.expect.Store(r.Header["Expect"] != nil)
	body.left.Store(r.ContentLength)
	cw.body = body
	return cw, body, false
}

// socketBody is a request body read from the caller's socket: what the
// connection's readers already buffered, in order, then the socket itself,
// left bytes in all.
type socketBody struct {
	bufs   []*bufio.Reader
	conn   net.Conn
	tc     *net.TCPConn // nil when the connection is not a plain socket
	raw    *rawSock     // the lane's direct reader of conn; nil for a taken-over one
	left   atomic.Int64 // body bytes not yet taken from the caller
	expect atomic.Bool  // the caller waits for 100 Continue before sending the body
	// chunks decodes a chunked body (the lane's); left is chunkedLeft
	// until its end. nil: a body of known length.
	chunks *chunkedIn
}

// goAhead tells a caller that sent Expect: 100-continue to send its body,
// once; the response has not started, so nothing else is on the wire.
func (s *socketBody) goAhead() error {
	if !s.expect.Swap(false) {
		return nil
	}
	_, err := io.WriteString(s.conn, "HTTP/1.1 100 Continue\r\n\r\n")
	return err
}

func (s *socketBody) Read(p []byte) (int, error) {
	if s.expect.Load() {
		// Read by a transport that asks nobody first (ferry's client
		// tells the caller itself, see exchangeUpload): the caller is
		// told to send as the body is first wanted, as net/http's
		// server tells it.
		if err := s.goAhead(); err != nil {
			return 0, err
		}
	}
	if s.chunks != nil {
		n, err := s.chunks.read(p)
		if err == io.EOF {
			s.left.Store(0)
		}
		return n, err
	}
	left := s.left.Load()
	if left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > left {
		p = p[:left]
	}
	var n int
	var err error
	if br := s.buffered(); br != nil {
		n, err = br.Read(p[:min(len(p), br.Buffered())])
	} else {
		n, err = s.conn.Read(p)
	}
	s.left.Add(-int64(n))
	if err == io.EOF {
		err = io.ErrUnexpectedEOF // the caller closed before its Content-Length
	}
	return n, err
}

// buffered returns the first reader still holding buffered bytes, or nil.
func (s *socketBody) buffered() *bufio.Reader {
	for _, br := range s.bufs {
		if br.Buffered() > 0 {
			return br
		}
	}
	return nil
}

// Close leaves the socket alone: the connection writer closes it.
func (s *socketBody) Close() error { return nil }

// spliceable reports whether the body can move kernel to kernel.
func (b *requestBody) spliceable() bool {
	if b == nil {
		return false
	}
	s, ok := b.rc.(*socketBody)
	return ok && s.tc != nil
}

// spliceInto moves the rest of a caller's body read from its socket (a
// taken-over connection's or the lane's) into dst: the bytes already
// buffered by write, the rest socket to socket (less than spliceMin
// through a buffer, see copyInto). The error is a *bodyReadError when the
// caller's side failed (it closed early or reset), else the failure of
// the move. Once it started, the body is
// torn: a failed splice may have taken bytes from the caller it could not
// deliver, so it is never replayed.
func (b *requestBody) spliceInto(dst *net.TCPConn) error {
	s := b.rc.(*socketBody)
	if s.chunks != nil {
		return b.moveChunks(dst)
	}
	if err := b.sendBuffered(dst); err != nil {
		return err
	}
	if left := s.left.Load(); left > 0 && left < spliceMin {
		return b.copyInto(dst, s)
	}
	if s.left.Load() > 0 {
		b.idle.watchMove(moveUp, s.tc, dst)
		defer b.idle.unwatchMove(moveUp)
	}
	for s.left.Load() > 0 {
		seg := min(s.left.Load(), uploadSegment)
		n, err := dst.ReadFrom(&io.LimitedReader{R: s.tc, N: seg})
		s.left.Add(-n)
		b.n.Add(n)
		splicedUp.Add(n)
		if testHookUploadSegment != nil {
			testHookUploadSegment(s.left.Load())
		}
		b.idle.touch()
		switch {
		case err == nil && n < seg:
			return b.callerFailed(io.ErrUnexpectedEOF)
		case err != nil && peerGone(s.tc):
			return b.callerFailed(err)
		case err != nil:
			return &errSplice{err}
		}
	}
	b.idle.pause()
	return nil
}

// sendBuffered writes to w what of a body read from the caller's socket
// its readers already hold, taking it from the caller: the body is torn
// from then on (see spliceInto).
func (b *requestBody) sendBuffered(w io.Writer) error {
	b.torn.Store(true)
	s := b.rc.(*socketBody)
	for br := s.buffered(); s.left.Load() > 0 && br != nil; br = s.buffered() {
		buf, _ := br.Peek(int(min(int64(br.Buffered()), s.left.Load())))
		n, err := w.Write(buf)
		br.Discard(n)
		s.left.Add(-int64(n))
		b.n.Add(int64(n))
		if err != nil {
			return err
		}
	}
	return nil
}

// callerFailed records err, the caller's side of a body move failing, as
// requestBody.Read records a broken body: the exchange's failure is then
// the caller's (brokenByCaller), not the upstream's, even once the
// upstream's answer has begun and its relay breaks for the move closing
// the upstream connection.
func (b *requestBody) callerFailed(err error) *bodyReadError {
	be := &bodyReadError{err}
	b.fault.Store(be)
	if !b.stopped.Load() {
		b.callerBroke.Store(true)
	}
	b.failed.Store(true)
	return be
}

// takeNow appends to the upstream's deferred bytes (up.pend, the head
// about to go out) what of a body shorter than spliceMin the caller's
// socket holds now, read with one read(2) that does not wait: a body that
// came right after its head then goes with it in one write, and the
// body's goroutine finds nothing left to move. An error is left for that
// goroutine's read to meet again (a socket at its end stays there).
func (b *requestBody) takeNow(up *rawSock) {
	s := b.rc.(*socketBody)
	left := s.left.Load()
	if s.raw == nil || left <= 0 || left >= spliceMin || s.buffered() != nil || s.chunks != nil {
		return
	}
	if testHookTakeNow != nil {
		testHookTakeNow(s.tc, left)
	}
	start := len(up.pend)
	up.pend = slices.Grow(up.pend, int(left))
	n, _ := s.raw.readNow(up.pend[start : start+int(left)])
	if n > 0 {
		up.pend = up.pend[:start+n]
		s.left.Add(-int64(n))
		b.n.Add(int64(n))
		b.idle.touch()
		takenNow.Add(int64(n))
	}
}

// takenNow counts body bytes takeNow sent with their head; testHookTakeNow,
// set by tests only, runs before its read (tc: the caller's socket, left:
// the body bytes still to come).
var (
	takenNow        atomic.Int64
	testHookTakeNow func(tc *net.TCPConn, left int64)
)

// copyInto moves the rest of a body, less than spliceMin, from the caller's
// socket into dst through a pooled buffer: for so few bytes a pipe's two
// splices per segment cost more than a read and a write. Its errors are
// spliceInto's: a *bodyReadError when the caller's side failed.
func (b *requestBody) copyInto(dst *net.TCPConn, s *socketBody) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for s.left.Load() > 0 {
		n, err := s.Read(buf)
		if n > 0 {
			b.n.Add(int64(n))
			b.idle.touch()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
			copiedUp.Add(int64(n))
		}
		switch {
		case err == io.ErrUnexpectedEOF || err != nil && peerGone(s.tc):
			// The caller closed before its Content-Length, or reset.
			return b.callerFailed(err)
		case err != nil:
			// Ended by ferry (stopSplice's read deadline): the caller
			// did nothing wrong.
			return err
		}
	}
	b.idle.pause()
	return nil
}

// Test seams of the body move, nil outside tests: testHookUploadSegment
// runs on the move's goroutine after each segment, before it feeds the
// idle timer (left: what is still to come); testHookAwaitMove runs on the
// exchange's goroutine when, the response closed, it must wait for a
// move still running.
var (
	testHookUploadSegment func(left int64)
	testHookAwaitMove     func()
)

// stopSplice ends a body move in progress whose upstream connection was
// closed, and returns its result: a move waiting for the caller's next
// bytes wakes through a read deadline in the past. A move that took the
// whole body reads the caller no more; the caller's connection is left
// alone then (a lane watch may be reading it).
func (b *requestBody) stopSplice(done <-chan error) error {
	s := b.rc.(*socketBody)
	if s.left.Load() == 0 {
		return <-done
	}
	b.stopped.Store(true) // a read that fails from now on failed for this
	s.conn.SetReadDeadline(time.Unix(1, 0))
	err := <-done
	s.conn.SetReadDeadline(time.Time{})
	return err
}

// peerGone reports whether the peer of c closed or reset it: a splice
// error does not say which of its two sockets failed.
func peerGone(c *net.TCPConn) bool {
	st, err := peekSocket(c)
	return err != nil || st == peekClosed
}

// connWriter is an http.ResponseWriter on an HTTP/1.1 connection ferry
// serves itself (a taken-over connection, or one of the HTTP/1.1 lane). It
// frames the response as net/http's server would for the same handler
// calls: the Content-Length the handler set, else chunked with trailers;
// interim 1xx responses as they come; no body for HEAD, 204 and 304; a Date.
// With keepAlive false, or when the handler says "Connection: close", the
// response says "Connection: close".
//
// To an HTTP/1.0 caller (http10, a lane's) it says "Connection:
// keep-alive" when the connection is kept (the caller asked, and the
// body's end is known), sends no interim responses (RFC 9110 section
// 15.2), and a body of no Content-Length goes as it is, not chunked, its
// end the connection's (untilClose), its trailers dropped; the status
// line says HTTP/1.1, the version ferry speaks (RFC 9110 section 6.2).
type connWriter struct {
	conn      net.Conn
	tc        *net.TCPConn // nil when not a plain socket
	bw        *bufio.Writer
	h         http.Header
	head      bool        // the request was HEAD
	body      *socketBody // the request body, read from the same connection; nil when none
	keepAlive bool        // the connection may carry another request after this one
	lane      *lane       // the lane serving the connection; nil when taken over

	http10 bool // the caller spoke HTTP/1.0

	wrote      bool
	noBody     bool
	chunked    bool
	untilClose bool  // the body goes as it is, ended by the connection's end (http10)
	left       int64 // Content-Length still owed; -1 when chunked or none
	excess     bool  // the handler wrote past its Content-Length (not sent)
	err        error // the first write error: the caller is gone
	ended      atomic.Bool
	// answered is set once the response went out whole (see whole), and
	// then onWhole runs (when not nil: on a taken-over connection).
	answered *atomic.Bool
	onWhole  func()
	// cut cancels the exchange of a taken-over connection (see Close).
	cut context.CancelCauseFunc
}

// whole records that the response went out whole, flushed: the caller
// has all of it, whatever the exchange still does before it ends (its
// span, metrics and access log line; the last of the connection's
// bookkeeping). A drain that ends meanwhile cuts nothing there (see
// lane.exchangesOpen, and tunnelSet.ending for a taken-over connection).
func (w *connWriter) whole() {
	if w.answered != nil && !w.answered.Swap(true) {
		if w.onWhole != nil {
			w.onWhole()
		}
		if testHookAnswered != nil {
			testHookAnswered()
		}
	}
}

// testHookAnswered, set by tests only, runs on the goroutine of an
// exchange of the lane's (a lane connection's, net/http's handler call on
// a handed-over connection: handedWhole, or one on a connection taken over
// from it) when its response went out whole, before the exchange ends.
var testHookAnswered func()

func (w *connWriter) Header() http.Header {
	if w.h == nil {
		w.h = make(http.Header, 8)
	}
	return w.h
}

// adoptHeader makes h the response's header when nothing was set in its
// own yet, sparing a copy; the handler must not use h otherwise after.
func (w *connWriter) adoptHeader(h http.Header) bool {
	if w.wrote || len(w.h) > 0 {
		return false
	}
	w.h = h
	return true
}

// ownedHeaders are written by WriteHeader itself, never from the map.
var ownedHeaders = map[string]bool{"Transfer-Encoding": true, "Connection": true}

func (w *connWriter) WriteHeader(code int) {
	if w.wrote || w.err != nil {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		if w.http10 {
			return // such a caller would take it for the response
		}
		w.writeHead(code, w.h, nil)
		w.flush()
		return
	}
	w.wrote = true
	h := w.h
	w.noBody = w.head || code == http.StatusNoContent || code == http.StatusNotModified
	exclude := ownedHeaders
	w.left = -1
	if cl := h["Content-Length"]; len(cl) > 0 {
		n, err := strconv.ParseInt(cl[0], 10, 64)
		switch {
		case err != nil || n < 0 || len(cl) > 1 || code == http.StatusNoContent || code == http.StatusNotModified:
			exclude = withExcluded(exclude, "Content-Length")
		case !w.noBody:
			w.left = n
		}
	}
	for k := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			exclude = withExcluded(exclude, k)
		}
	}
	if w.keepAlive && (headerHasToken(h, "Connection", "close") || w.lane != nil && w.lane.closing.Load() || w.bodyNotAsked()) {
		w.keepAlive = false
	}
	var extra []string
	switch {
	case w.noBody || w.left >= 0:
	case w.http10:
		w.untilClose, w.keepAlive = true, false
	default:
		w.chunked = true
		extra = append(extra, "Transfer-Encoding: chunked")
	}
	switch {
	case !w.keepAlive:
		extra = append(extra, "Connection: close")
	case w.http10:
		extra = append(extra, "Connection: keep-alive")
	}
	if _, ok := h["Date"]; !ok {
		extra = append(extra, "Date: "+httpDate())
	}
	w.writeHead(code, h, exclude, extra...)
	if w.noBody || w.left == 0 {
		// The response is whole: send it before the handler's bookkeeping.
		if w.flush() == nil {
			w.whole()
		}
	}
}

// bodyNotAsked reports a caller that waits for 100 Continue before it
// sends its body, which it was never told to send: the answer ends its
// connection, as net/http's server ends one (what the caller sends next
// may be the body or the next request).
func (w *connWriter) bodyNotAsked() bool {
	return w.body != nil && w.body.expect.Load()
}

// withExcluded returns a copy of exclude with one more name.
func withExcluded(exclude map[string]bool, name string) map[string]bool {
	m := make(map[string]bool, len(exclude)+1)
	for k, v := range exclude {
		m[k] = v
	}
	m[name] = true
	return m
}

// httpDate is the Date header value, formatted at most once a second.
func httpDate() string {
	now := time.Now().Unix()
	if d := dateCache.Load(); d != nil && d.unix == now {
		return d.text
	}
	d := &cachedDate{unix: now, text: time.Unix(now, 0).UTC().Format(http.TimeFormat)}
	dateCache.Store(d)
	return d.text
}

type cachedDate struct {
	unix int64
	text string
}

var dateCache atomic.Pointer[cachedDate]

// headSlack bounds what writeFields adds to the header lines it writes:
// the status line, Connection, Date and the empty line.
const headSlack = 128

// writeFields writes the head of a final response from an upstream's
// header lines as they came (see rawFields), as WriteHeader would write
// them from their map: the caller's connection's own Connection field and
// a Date when the upstream sent none. False when the head is not plain to
// write that way (a field was set on w, or it was written), and nothing
// is written.
func (w *connWriter) writeFields(code int, f *rawFields) bool {
	if w.wrote || w.err != nil || len(w.h) > 0 || w.head || code < 200 || code == http.StatusNoContent || code == http.StatusNotModified {
		return false
	}
	w.wrote = true
	w.left = f.length
	if w.keepAlive && (w.lane != nil && w.lane.closing.Load() || w.bodyNotAsked()) {
		w.keepAlive = false
	}
	// The head is built in the writer's free space and written with one
	// call, as ferry's client writes an upstream head (writeHead in
	// splice.go): nine buffered writes took about 280 instructions more per
	// small response under callgrind.
	b := appendStatus(w.bw.AvailableBuffer(), code)
	b = append(b, f.lines[:len(f.lines)-2]...) // the empty line ends the head below
	switch {
	case !w.keepAlive:
		b = append(b, "Connection: close\r\n"...)
	case w.http10:
		b = append(b, "Connection: keep-alive\r\n"...)
	}
	if !f.date {
		b = append(b, "Date: "...)
		b = append(b, httpDate()...)
		b = append(b, "\r\n"...)
	}
	b = append(b, "\r\n"...)
	if _, err := w.bw.Write(b); err != nil {
		w.fail(err)
	}
	if w.left == 0 {
		// The response is whole: send it before the handler's bookkeeping.
		if w.flush() == nil {
			w.whole()
		}
	}
	return true
}

// writeStatus writes the status line.
func (w *connWriter) writeStatus(code int) {
	w.bw.Write(appendStatus(w.bw.AvailableBuffer(), code))
}

// appendStatus appends the status line of code to b.
func appendStatus(b []byte, code int) []byte {
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, ' ')
	if text := http.StatusText(code); text != "" {
		b = append(b, text...)
	} else {
		b = append(b, "status code "...)
		b = strconv.AppendInt(b, int64(code), 10)
	}
	return append(b, "\r\n"...)
}

func (w *connWriter) writeHead(code int, h http.Header, exclude map[string]bool, extra ...string) {
	w.writeStatus(code)
	if err := h.WriteSubset(w.bw, exclude); err != nil {
		w.fail(err)
	}
	for _, line := range extra {
		w.bw.WriteString(line)
		w.bw.WriteString("\r\n")
	}
	if _, err := w.bw.WriteString("\r\n"); err != nil {
		w.fail(err)
	}
}

func (w *connWriter) fail(err error) {
	if w.err == nil {
		w.err = err
	}
}

func (w *connWriter) Write(p []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.noBody {
		if w.head {
			return len(p), nil
		}
		return 0, http.ErrBodyNotAllowed
	}
	if len(p) == 0 {
		return 0, nil
	}
	if w.untilClose {
		n, err := w.bw.Write(p)
		if err != nil {
			w.fail(err)
		}
		return n, err
	}
	if w.chunked {
		fmt.Fprintf(w.bw, "%x\r\n", len(p))
		n, err := w.bw.Write(p)
		if err == nil {
			_, err = w.bw.WriteString("\r\n")
		}
		if err != nil {
			w.fail(err)
		}
		return n, err
	}
	short := false
	if int64(len(p)) > w.left {
		p, short = p[:w.left], true
	}
	n, err := w.bw.Write(p)
	w.left -= int64(n)
	if err != nil {
		w.fail(err)
		return n, err
	}
	if w.left == 0 {
		// The body is whole: send it now, not after the handler's
		// bookkeeping (span, metrics, access log), which the caller
		// need not wait for.
		if err := w.flush(); err != nil {
			return n, err
		}
		if !short {
			w.whole()
		}
	}
	if short {
		w.excess = true
		return n, http.ErrContentLength
	}
	return n, nil
}

// ReadFrom moves a Content-Length body from src, kernel to kernel when src
// is a socket (an io.LimitedReader over a *net.TCPConn).
func (w *connWriter) ReadFrom(src io.Reader) (int64, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return 0, w.err
	}
	lr, ok := src.(*io.LimitedReader)
	if w.chunked || w.noBody || w.tc == nil || !ok || lr.N > w.left {
		return io.Copy(writerOnly{w}, src)
	}
	if err := w.flush(); err != nil {
		return 0, err
	}
	n, err := w.tc.ReadFrom(lr)
	w.left -= n
	if err != nil {
		w.fail(err)
	} else if w.left == 0 {
		w.whole()
	}
	return n, err
}

func (w *connWriter) flush() error {
	if w.err != nil {
		return w.err
	}
	if err := w.bw.Flush(); err != nil {
		w.fail(err)
	}
	return w.err
}

// FlushError sends what is buffered (http.ResponseController.Flush).
func (w *connWriter) FlushError() error {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.flush()
}

// Flush implements http.Flusher.
func (w *connWriter) Flush() { _ = w.FlushError() }

// finish completes the response: a handler that wrote nothing answers 200
// with no body, as with net/http; a chunked body gets its last chunk and
// trailers. It reports whether the response went out whole; one cut short
// (a Content-Length not met, a write error) must end with the connection
// closed as it is, so the caller sees it broken.
func (w *connWriter) finish() bool {
	if !w.wrote && w.err == nil {
		if _, declared := w.Header()["Content-Length"]; !declared {
			w.h["Content-Length"] = []string{"0"}
		}
		w.WriteHeader(http.StatusOK) // a declared length not met stays owed
	}
	// A body longer than its Content-Length went out to that length only:
	// the connection closes after it, as with net/http.
	if w.err != nil || (!w.chunked && !w.untilClose && w.left > 0) || w.excess {
		return false
	}
	if w.chunked {
		w.bw.WriteString("0\r\n")
		for k, vv := range w.h {
			name, ok := strings.CutPrefix(k, http.TrailerPrefix)
			if !ok && w.announced(k) {
				name, ok = k, true // announced in Trailer, set after the head
			}
			if ok {
				for _, v := range vv {
					fmt.Fprintf(w.bw, "%s: %s\r\n", name, sanitizeHeaderValue(v))
				}
			}
		}
		w.bw.WriteString("\r\n")
	}
	if w.flush() != nil {
		return false
	}
	w.whole()
	return true
}

// announced reports whether the response's Trailer field names k.
func (w *connWriter) announced(k string) bool {
	for _, v := range w.h["Trailer"] {
		for name := range strings.SplitSeq(v, ",") {
			if http.CanonicalHeaderKey(strings.TrimSpace(name)) == k {
				return true
			}
		}
	}
	return false
}

// end finishes the response on a taken-over connection and closes it.
func (w *connWriter) end() {
	if w.ended.Swap(true) {
		return
	}
	w.finish()
	w.close()
}

// close closes the connection; when the caller may still be sending a
// body nobody will read, it lingers first: closing at once would reset the
// connection and could destroy the response before the caller read it.
// It half-closes, reads and drops what still comes for a moment, then
// closes (as net/http's server does).
func (w *connWriter) close() { w.closeThen(nil) }

// closeThen is close, and then, once the connection is closed (after the
// linger, if any), calls closed unless it is nil.
func (w *connWriter) closeThen(closed func()) {
	if w.body == nil || w.body.left.Load() == 0 || w.tc == nil {
		w.conn.Close()
		if closed != nil {
			closed()
		}
		return
	}
	w.tc.CloseWrite()
	go func() {
		w.tc.SetReadDeadline(time.Now().Add(lingerFor()))
		io.Copy(io.Discard, readerOnly{w.tc})
		w.conn.Close()
		if closed != nil {
			closed()
		}
	}()
}

// slotConn is a connection the lane handed over (pc) and a handler then
// took for its own, read and written directly: its Close is pc's, which
// gives back the lane's limits.max_connections slot once.
type slotConn struct {
	net.Conn
	pc *prefixConn
}

func (c slotConn) Close() error { return c.pc.Close() }

// lingerTimeout bounds how long a connection whose request body was not
// read whole is drained after its response, before it closes.
const lingerTimeout = 500 * time.Millisecond

// lingerTest, when not 0, replaces lingerTimeout: tests raise it to hold a
// linger open.
var lingerTest atomic.Int64

func lingerFor() time.Duration {
	if d := lingerTest.Load(); d != 0 {
		return time.Duration(d)
	}
	return lingerTimeout
}

// abort closes the connection without completing the response.
func (w *connWriter) abort() {
	if !w.ended.Swap(true) {
		w.conn.Close()
	}
}

// Close implements io.Closer for the drain's end (tunnelSet.closeAll),
// which may end a long upload or an answer mid-body: the exchange is
// cancelled first, with the grace period's end as its cause, so that it
// stops waiting on its upstream and is reported as cut by the drain within
// the report wait, as the lane's exchanges are (see lane.Close).
func (w *connWriter) Close() error {
	if w.cut != nil {
		w.cut(errGraceEnded)
	}
	return w.conn.Close()
}

// SetWriteDeadline sets the connection's write deadline
// (http.ResponseController.SetWriteDeadline).
func (w *connWriter) SetWriteDeadline(t time.Time) error { return w.conn.SetWriteDeadline(t) }
