package sidecar

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"iter"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/net/http/httpguts"
)

// Upstream response heads that net/http's reader would read wrongly for a
// proxy, put right before it reads them. Three things in a head matter to
// ferry that net/http's reader loses or refuses:
//
//   - the fields a Connection field names ("Connection: close, X-Hop") are
//     hop-by-hop, but the reader drops a Connection field that says close
//     (the close becomes the response's Close), and with it the names;
//   - a response framed both ways (Transfer-Encoding and Content-Length) is
//     read chunked, but its connection stays in the pool, where RFC 9112
//     section 6.3 has it distrusted: such a message may be a smuggling
//     attempt or a response split (an answer that has no body whatever its
//     fields say, to HEAD, a 204 or a 304, is not framed by either, but an
//     upstream that sends both is not trusted with another exchange
//     either);
//   - a Trailer field announcing a field that must not be a trailer
//     ("Trailer: Content-Length") fails the whole response ("bad trailer
//     key"), though its body is whole: ferry drops such trailers
//     (dropForbiddenTrailers), and drops their announcement here.
//
// ferry's own client (splice.go) has the head in its buffer and reads it
// with net/http's reader when it is not of the plainest kind: it rewrites
// the head there (prepareHead). net/http's Transport, which carries the
// requests with bodies, reads its connections itself: their bytes pass
// through headFixConn, which holds each response head back until it is
// whole and hands it on rewritten.

// headFacts is what scanHead found in a response head.
type headFacts struct {
	status     int      // the status code; 0 when the status line has none
	http10     bool     // the status line says HTTP/1.0
	conn       [][]byte // the values of its Connection fields, when one says close
	named      bool     // a field that a Connection field names is present
	te, cl     bool     // Transfer-Encoding, Content-Length present
	badTrailer bool     // a Trailer field announces a forbidden trailer
	// head: the request was HEAD (set by the caller of scanHead, which
	// sees only the response).
	head bool
}

// noBody reports a response that has no body whatever its framing fields
// say (RFC 9112 section 6.3, rule 1): an answer to HEAD, a 1xx, a 204 or a
// 304. Its Content-Length frames nothing; it tells the size of the
// representation (RFC 9110 section 8.6).
func (f *headFacts) noBody() bool {
	return f.head || f.status < 200 || f.status == http.StatusNoContent || f.status == http.StatusNotModified
}

// framedTwice reports a head with both Transfer-Encoding and
// Content-Length.
func (f *headFacts) framedTwice() bool { return f.te && f.cl }

// needsFix reports whether fixHead would change the head (closing aside).
func (f *headFacts) needsFix() bool { return f.named || f.badTrailer }

// headField is one field of a head: its name (nil when the line has no
// colon), its value, and all of its bytes with continuation lines and line
// ends.
type headField struct{ name, value, raw []byte }

// headFields yields the fields of a head after its status line, up to its
// empty line or its last complete line.
func headFields(head []byte) iter.Seq[headField] {
	return func(yield func(headField) bool) {
		i := bytes.IndexByte(head, '\n')
		if i < 0 {
			return
		}
		rest := head[i+1:]
		for {
			end := bytes.IndexByte(rest, '\n')
			if end < 0 || end == 0 || (end == 1 && rest[0] == '\r') {
				return // an incomplete line, or the empty line
			}
			n := end + 1
			for n < len(rest) && (rest[n] == ' ' || rest[n] == '\t') {
				e := bytes.IndexByte(rest[n:], '\n')
				if e < 0 {
					break
				}
				n += e + 1
			}
			f := headField{raw: rest[:n]}
			if name, value, ok := bytes.Cut(f.raw, []byte(":")); ok {
				f.name, f.value = name, value
			}
			if !yield(f) {
				return
			}
			rest = rest[n:]
		}
	}
}

// headStatus returns the status code of a head's status line, or 0.
func headStatus(head []byte) int {
	rest, ok := bytes.CutPrefix(head, []byte("HTTP/1."))
	if !ok || len(rest) < 5 || rest[1] != ' ' {
		return 0
	}
	code := 0
	for _, c := range rest[2:5] {
		if c < '0' || c > '9' {
			return 0
		}
		code = code*10 + int(c-'0')
	}
	return code
}

// scanHead reads what fixHead and ferry's clients need of a response head
// (a whole one, or its start).
func scanHead(head []byte) headFacts {
	f := headFacts{status: headStatus(head), http10: bytes.HasPrefix(head, []byte("HTTP/1.0 "))}
	for fl := range headFields(head) {
		switch {
		case fl.name == nil:
		case bytes.EqualFold(fl.name, []byte("Connection")):
			f.conn = append(f.conn, fl.value)
		case bytes.EqualFold(fl.name, []byte("Transfer-Encoding")):
			f.te = true
		case bytes.EqualFold(fl.name, []byte("Content-Length")):
			f.cl = true
		case bytes.EqualFold(fl.name, []byte("Trailer")):
			for tok := range bytes.SplitSeq(fl.value, []byte(",")) {
				if tok = bytes.TrimSpace(tok); len(tok) > 0 && forbiddenTrailer(tok) {
					f.badTrailer = true
				}
			}
		}
	}
	if !listsClose(f.conn) {
		// The Connection field stays in the header net/http reads, and
		// removeHopHeaders drops what it names once ferry read it (the
		// Upgrade field of a 101).
		f.conn = nil
	}
	if len(f.conn) > 0 {
		for fl := range headFields(head) {
			if f.isNamed(fl.name) {
				f.named = true
				break
			}
		}
	}
	return f
}

// listsClose reports whether Connection field values hold "close".
func listsClose(values [][]byte) bool {
	for _, v := range values {
		for tok := range bytes.SplitSeq(v, []byte(",")) {
			if bytes.EqualFold(bytes.TrimSpace(tok), []byte("close")) {
				return true
			}
		}
	}
	return false
}

// isNamed reports whether a Connection field of the head names the field
// called name. The framing fields are never taken for hop-by-hop here:
// without them the body would be read otherwise than the upstream framed
// it (removeHopHeaders drops them from the header map later, which
// changes no framing).
func (f *headFacts) isNamed(name []byte) bool {
	if name == nil || bytes.EqualFold(name, []byte("Content-Length")) ||
		bytes.EqualFold(name, []byte("Transfer-Encoding")) || bytes.EqualFold(name, []byte("Connection")) {
		return false
	}
	for _, v := range f.conn {
		for tok := range bytes.SplitSeq(v, []byte(",")) {
			if bytes.EqualFold(bytes.TrimSpace(tok), name) {
				return true
			}
		}
	}
	return false
}

// forbiddenTrailer reports a field name that must not be a trailer, as
// dropForbiddenTrailers has it.
func forbiddenTrailer(name []byte) bool {
	k := http.CanonicalHeaderKey(string(name))
	return !httpguts.ValidTrailerHeader(k) || isHopHeader(k)
}

// fixHead appends to dst the whole head without the fields its Connection
// fields name and without the forbidden names its Trailer fields announce
// (a Trailer field left with none goes). With closeFramedTwice, a final
// response framed both ways says "Connection: close", so that its
// connection is not reused, and loses the framing net/http's reader does
// not use: an HTTP/1.1 head its Content-Length (the body is chunked), an
// HTTP/1.0 head nothing (the reader ignores a Transfer-Encoding of HTTP/1.0
// and reads the Content-Length; without it the body would run to the
// connection's end). A response without a body (noBody) keeps its
// Content-Length, which frames nothing there: net/http's reader keeps it
// too, and an answer to HEAD passes it on. Without closeFramedTwice the
// result is never longer than head (see prepareHead).
func fixHead(dst, head []byte, f *headFacts, closeFramedTwice bool) []byte {
	closeIt := closeFramedTwice && f.framedTwice() && f.status >= 200
	i := bytes.IndexByte(head, '\n')
	dst = append(dst, head[:i+1]...) // the status line
	for fl := range headFields(head) {
		switch {
		case f.isNamed(fl.name):
			continue
		case closeIt && !f.http10 && !f.noBody() && bytes.EqualFold(fl.name, []byte("Content-Length")):
			continue
		case f.badTrailer && fl.name != nil && bytes.EqualFold(fl.name, []byte("Trailer")):
			dst = appendTrailerField(dst, fl)
			continue
		}
		dst = append(dst, fl.raw...)
	}
	if closeIt {
		dst = append(dst, "Connection: close\r\n"...)
	}
	if bytes.HasSuffix(head, []byte("\n\r\n")) {
		return append(dst, '\r', '\n')
	}
	return append(dst, '\n')
}

// appendTrailerField appends a Trailer field without the names that must
// not be trailers, on one line: its name, a colon, the names kept joined
// by commas, and the field's first line end. That is never longer than the
// field was. Nothing is appended when no name is kept.
func appendTrailerField(dst []byte, fl headField) []byte {
	start := len(dst)
	dst = append(dst, fl.name...)
	dst = append(dst, ':')
	kept := 0
	for tok := range bytes.SplitSeq(fl.value, []byte(",")) {
		if tok = bytes.TrimSpace(tok); len(tok) == 0 || forbiddenTrailer(tok) {
			continue
		}
		if kept > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, tok...)
		kept++
	}
	if kept == 0 {
		return dst[:start]
	}
	if line, _, _ := bytes.Cut(fl.raw, []byte("\n")); bytes.HasSuffix(line, []byte("\r")) {
		dst = append(dst, '\r')
	}
	return append(dst, '\n')
}

// headEnd returns the length of the head at the start of buf up to its
// empty line (CRLF or bare LF line ends), or -1 when it is not all there.
// The first from bytes of buf are known to hold no end: a head that comes
// a few bytes at a time is not searched again from its start each time.
func headEnd(buf []byte, from int) int {
	from = max(from-2, 0) // an end may begin in what was searched
	end := -1
	for _, sep := range [][]byte{[]byte("\n\r\n"), []byte("\n\n")} {
		if i := bytes.Index(buf[from:], sep); i >= 0 && (end < 0 || from+i+len(sep) < end) {
			end = from + i + len(sep)
		}
	}
	return end
}

// prepareHead reads the facts of the response head at the start of br,
// reading until the head is buffered (as far as br's buffer goes), and
// puts the head right in br's buffer when it is all there: fixHead's head
// is never longer, so it is written over the end of the old one, and what
// it is shorter by is discarded. Nothing else holds those bytes: br is the
// connection's own reader, and net/http's reader reads the head from it
// next. The caller then settles the response net/http read (settle).
func prepareHead(br *bufio.Reader) headFacts {
	for searched := 0; ; {
		buf, _ := br.Peek(br.Buffered())
		end := headEnd(buf, searched)
		searched = len(buf)
		if end < 0 && len(buf) < br.Size() {
			if _, err := br.Peek(len(buf) + 1); err == nil {
				continue
			}
		}
		if end < 0 {
			return scanHead(buf) // the head's start: its Connection names
		}
		head := buf[:end]
		f := scanHead(head)
		if f.needsFix() {
			if fixed := fixHead(nil, head, &f, false); len(fixed) <= len(head) {
				copy(head[len(head)-len(fixed):], fixed)
				br.Discard(len(head) - len(fixed))
				f.named = false // gone with their fields
			}
		}
		return f
	}
}

// settle applies to a response net/http read from a head prepareHead saw
// what could not be put right in the head: its connection is not reused
// after a response framed both ways, and when the head was too large to be
// rewritten in the buffer, the fields its Connection named go from the
// header (when net/http dropped the Connection field, which said close;
// removeHopHeaders sees what a Connection field still there names).
func (f *headFacts) settle(res *http.Response) {
	if f.framedTwice() {
		res.Close = true
	}
	if !f.named || !res.Close || res.Header["Connection"] != nil {
		return
	}
	for _, v := range f.conn {
		for tok := range strings.SplitSeq(string(v), ",") {
			if tok = strings.TrimSpace(tok); tok != "" && f.isNamed([]byte(tok)) {
				res.Header.Del(tok)
			}
		}
	}
}

// headFixConn is an upstream connection of net/http's HTTP/1.1 Transport
// whose response heads are put right (fixHead) before the Transport reads
// them. expectHead arms it as a request takes the connection (the
// Transport's GotConn): the next bytes read start the response head, to
// a HEAD request or not. The
// head is held back until it is whole (up to maxResponseHeader; a larger
// one passes as it came), then handed on rewritten, with the bytes after
// it; 1xx heads are rewritten too and the wait goes on for the final one.
// Every other byte passes as it came.
type headFixConn struct {
	net.Conn
	mu     sync.Mutex
	armed  bool   // the bytes read next are (the rest of) a response head
	isHead bool   // the head answers a HEAD request
	head   []byte // the head read so far
	// searched: how much of head is known to hold no end (see headEnd)
	searched int
	out      []byte // bytes to hand on before reading more, from off
	off      int
	err      error // the read error to return once out is handed on
	// wrote, when set, is closed after the next Write (see nextWrite).
	wrote atomic.Pointer[chan struct{}]
}

// expectHead arms c for the response head of a request that took it;
// isHead says the request was HEAD.
func (c *headFixConn) expectHead(isHead bool) {
	c.mu.Lock()
	c.armed, c.isHead = true, isHead
	c.head, c.searched = c.head[:0], 0
	c.mu.Unlock()
}

func (c *headFixConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		c.mu.Lock()
		if c.off < len(c.out) || c.err != nil {
			n := copy(p, c.out[c.off:])
			c.off += n
			var err error
			if c.off == len(c.out) {
				c.out, c.off = c.out[:0], 0
				if cap(c.out) > 4<<10 {
					c.out = nil // a large head's buffer is not kept for the next
				}
				err, c.err = c.err, nil
			}
			c.mu.Unlock()
			return n, err
		}
		c.mu.Unlock()
		// Not under the lock: the Transport's reader waits here while the
		// connection is idle, and expectHead comes meanwhile.
		n, err := c.Conn.Read(p)
		c.mu.Lock()
		if !c.armed {
			c.mu.Unlock()
			return n, err
		}
		c.head = append(c.head, p[:n]...)
		c.take()
		if err != nil {
			// What is held passes as it came, for the Transport to
			// judge with the error.
			c.armed = false
			c.out, c.head = append(c.out, c.head...), c.head[:0]
			c.err = err
		}
		c.mu.Unlock()
	}
}

// take moves the whole heads at the start of c.head, rewritten, to c.out,
// and after the final head the bytes that follow it, disarming c.
func (c *headFixConn) take() {
	for c.armed {
		end := headEnd(c.head, c.searched)
		if end < 0 {
			c.searched = len(c.head)
			if len(c.head) > maxResponseHeader {
				c.armed = false
				c.out, c.head = append(c.out, c.head...), c.head[:0]
			}
			break
		}
		c.searched = 0
		head := c.head[:end]
		f := scanHead(head)
		f.head = c.isHead
		if f.needsFix() || f.framedTwice() {
			c.out = fixHead(c.out, head, &f, true)
		} else {
			c.out = append(c.out, head...)
		}
		// What follows moves to the buffer's start, which is kept.
		c.head = c.head[:copy(c.head, c.head[end:])]
		if f.status >= 200 || f.status == http.StatusSwitchingProtocols || f.status < 100 {
			c.armed = false
			c.out = append(c.out, c.head...)
			c.head = c.head[:0]
		}
	}
	if !c.armed && cap(c.head) > 4<<10 {
		c.head = nil // a large head's buffer is not kept for the next
	}
}

// Write writes to the socket; a channel nextWrite gave is closed once it
// returned.
func (c *headFixConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if c.wrote.Load() != nil {
		if ch := c.wrote.Swap(nil); ch != nil {
			close(*ch)
		}
	}
	return n, err
}

// nextWrite returns a channel closed once the connection's next Write
// returned: the Transport's flush of what it buffered of a request (see
// switchBody).
func (c *headFixConn) nextWrite() <-chan struct{} {
	ch := make(chan struct{})
	c.wrote.Store(&ch)
	return ch
}

// ReadFrom keeps the socket's own ReadFrom for what the Transport writes.
func (c *headFixConn) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(c.Conn, r)
}

// CloseWrite half-closes the socket: a tunnel after 101 Switching
// Protocols passes the end of the caller's side on through the Transport's
// response body, which half-closes the connection it wraps when that can.
func (c *headFixConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}
