package sidecar

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
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
// to the upload it follows.

// uploadSpliceMin is the smallest request body that takes the zero-copy
// upload path. Below it the connection the caller loses costs more than
// the copy saves.
const uploadSpliceMin = 1 << 20

// uploadSegment is how much of an upload one ReadFrom moves; the body idle
// timer is fed between segments. Smaller segments cost more: 256 KiB took
// 0.36-0.38 CPU-s per GiB where 1 MiB takes 0.28-0.30, the L4 relay's cost.
const uploadSegment = spliceSegment

// splicedUp counts request body bytes moved kernel to kernel.
var splicedUp atomic.Int64

// takeOverEligible reports whether a request's body can go socket to
// socket: plain HTTP/1.1 (no TLS, no upgrade, no Expect other than
// 100-continue), a Content-Length body of at least uploadSpliceMin, an
// upstream spoken to in HTTP/1.1 by ferry's own client, and a server
// connection that can be taken over.
func takeOverEligible(w http.ResponseWriter, r *http.Request, up *upstream) bool {
	if r.ProtoMajor != 1 || r.TLS != nil || r.ContentLength < uploadSpliceMin ||
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
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		// Not a plain socket after all: answer on it, without splice.
		tc = nil
	}
	cw = &connWriter{conn: conn, tc: tc, bw: bufio.NewWriterSize(conn, 4<<10), h: http.Header{}, head: r.Method == http.MethodHead}
	if !p.tunnels.add(cw) {
		// The drain is over: nothing new may start.
		writeFailure(cw, failure{status: http.StatusServiceUnavailable, reason: "ferry is shutting down", close: true})
		cw.end()
		return nil, nil, true
	}
	body = &socketBody{br: brw.Reader, conn: conn, tc: tc, expect: r.Header["Expect"] != nil}
	body.left.Store(r.ContentLength)
	cw.body = body
	return cw, body, false
}

// socketBody is a taken-over caller's request body: what net/http's reader
// already buffered, then the socket itself, left bytes in all.
type socketBody struct {
	br     *bufio.Reader
	conn   net.Conn
	tc     *net.TCPConn // nil when the connection is not a plain socket
	left   atomic.Int64 // body bytes not yet taken from the caller
	expect bool         // the caller waits for 100 Continue before sending the body
}

// goAhead tells a caller that sent Expect: 100-continue to send its body,
// once; the response has not started, so nothing else is on the wire.
func (s *socketBody) goAhead() error {
	if !s.expect {
		return nil
	}
	s.expect = false
	_, err := io.WriteString(s.conn, "HTTP/1.1 100 Continue\r\n\r\n")
	return err
}

func (s *socketBody) Read(p []byte) (int, error) {
	left := s.left.Load()
	if left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > left {
		p = p[:left]
	}
	var n int
	var err error
	if s.br.Buffered() > 0 {
		n, err = s.br.Read(p[:min(len(p), s.br.Buffered())])
	} else {
		n, err = s.conn.Read(p)
	}
	s.left.Add(-int64(n))
	if err == io.EOF {
		err = io.ErrUnexpectedEOF // the caller closed before its Content-Length
	}
	return n, err
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

// spliceInto moves the rest of a taken-over caller's body into dst: the
// bytes net/http already buffered by write, the rest socket to socket. The
// error is a *bodyReadError when the caller's side failed (it closed early
// or reset), else the failure of the move. Once it started, the body is
// torn: a failed splice may have taken bytes from the caller it could not
// deliver, so it is never replayed.
func (b *requestBody) spliceInto(dst *net.TCPConn) error {
	b.torn.Store(true)
	s := b.rc.(*socketBody)
	for s.left.Load() > 0 && s.br.Buffered() > 0 {
		buf, _ := s.br.Peek(int(min(int64(s.br.Buffered()), s.left.Load())))
		n, err := dst.Write(buf)
		s.br.Discard(n)
		s.left.Add(-int64(n))
		b.n.Add(int64(n))
		if err != nil {
			return err
		}
	}
	for s.left.Load() > 0 {
		seg := min(s.left.Load(), uploadSegment)
		n, err := dst.ReadFrom(&io.LimitedReader{R: s.tc, N: seg})
		s.left.Add(-n)
		b.n.Add(n)
		splicedUp.Add(n)
		b.idle.touch()
		switch {
		case err == nil && n < seg:
			b.failed.Store(true)
			return &bodyReadError{io.ErrUnexpectedEOF}
		case err != nil && peerGone(s.tc):
			b.failed.Store(true)
			return &bodyReadError{err}
		case err != nil:
			return &errSplice{err}
		}
	}
	b.idle.pause()
	return nil
}

// stopSplice ends a body move in progress whose upstream connection was
// closed, and returns its result: a move waiting for the caller's next
// bytes wakes through a read deadline in the past.
func (b *requestBody) stopSplice(done <-chan error) error {
	s := b.rc.(*socketBody)
	s.conn.SetReadDeadline(time.Unix(1, 0))
	err := <-done
	s.conn.SetReadDeadline(time.Time{})
	return err
}

// peerGone reports whether the peer of c closed or reset it: a splice
// error does not say which of its two sockets failed.
func peerGone(c *net.TCPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return true
	}
	gone := false
	var one [1]byte
	err = rc.Control(func(fd uintptr) {
		n, _, err := syscall.Recvfrom(int(fd), one[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		gone = (err == nil && n == 0) || (err != nil && err != syscall.EAGAIN && err != syscall.EWOULDBLOCK)
	})
	return err != nil || gone
}

// connWriter is an http.ResponseWriter on a taken-over HTTP/1.1
// connection. It frames the response as net/http's server would for the
// same handler calls: the Content-Length the handler set, else chunked with
// trailers; interim 1xx responses as they come; no body for HEAD, 204 and
// 304. It always closes the connection after the response.
type connWriter struct {
	conn net.Conn
	tc   *net.TCPConn // nil when not a plain socket
	bw   *bufio.Writer
	h    http.Header
	head bool        // the request was HEAD
	body *socketBody // the request body, read from the same connection

	wrote   bool
	noBody  bool
	chunked bool
	left    int64 // Content-Length still owed; -1 when chunked or none
	err     error // the first write error: the caller is gone
	ended   atomic.Bool
}

func (w *connWriter) Header() http.Header { return w.h }

func (w *connWriter) WriteHeader(code int) {
	if w.wrote || w.err != nil {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		w.writeHead(code, w.h)
		w.flush()
		return
	}
	w.wrote = true
	w.noBody = w.head || code == http.StatusNoContent || code == http.StatusNotModified
	h := w.h.Clone()
	for k := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			delete(h, k)
		}
	}
	delete(h, "Transfer-Encoding")
	w.left = -1
	if cl := h.Get("Content-Length"); cl != "" {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil || n < 0 {
			delete(h, "Content-Length")
		} else if !w.noBody {
			w.left = n
		}
	}
	if !w.noBody && w.left < 0 {
		w.chunked = true
		h["Transfer-Encoding"] = []string{"chunked"}
	}
	if code == http.StatusNoContent || code == http.StatusNotModified {
		delete(h, "Content-Length")
	}
	h["Connection"] = []string{"close"}
	if _, ok := h["Date"]; !ok {
		h["Date"] = []string{time.Now().UTC().Format(http.TimeFormat)}
	}
	w.writeHead(code, h)
}

func (w *connWriter) writeHead(code int, h http.Header) {
	text := http.StatusText(code)
	if text == "" {
		text = "status code " + strconv.Itoa(code)
	}
	fmt.Fprintf(w.bw, "HTTP/1.1 %03d %s\r\n", code, text)
	if err := h.Write(w.bw); err != nil {
		w.fail(err)
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
	if short {
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

// end completes the response (the last chunk and trailers) when it was
// whole, then closes the connection. A response never started or cut short
// ends with the connection closed as it is, so the caller sees it broken.
func (w *connWriter) end() {
	if w.ended.Swap(true) {
		return
	}
	if w.wrote && w.err == nil && (w.chunked || w.left <= 0) {
		if w.chunked {
			w.bw.WriteString("0\r\n")
			for k, vv := range w.h {
				if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
					for _, v := range vv {
						fmt.Fprintf(w.bw, "%s: %s\r\n", name, sanitizeHeaderValue(v))
					}
				}
			}
			w.bw.WriteString("\r\n")
		}
		w.bw.Flush()
	}
	if w.body == nil || w.body.left.Load() == 0 || w.tc == nil {
		w.conn.Close()
		return
	}
	// The caller may still be sending a body nobody will read. Closing
	// now would reset the connection and could destroy the response
	// before the caller read it: half-close, read and drop what still
	// comes for a moment, then close (as net/http's server does).
	w.tc.CloseWrite()
	go func() {
		w.tc.SetReadDeadline(time.Now().Add(lingerTimeout))
		io.Copy(io.Discard, readerOnly{w.tc})
		w.tc.Close()
	}()
}

// lingerTimeout bounds how long a connection whose request body was not
// read whole is drained after its response, before it closes.
const lingerTimeout = 500 * time.Millisecond

// abort closes the connection without completing the response.
func (w *connWriter) abort() {
	if !w.ended.Swap(true) {
		w.conn.Close()
	}
}

// Close implements io.Closer for the drain, which may end a long upload.
func (w *connWriter) Close() error { return w.conn.Close() }
