package sidecar

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
)

// Chunked uploads on the lane. A request whose body is chunked (many
// clients send a body of unknown length so: a stream, curl -T -, Go's
// client with a reader it cannot measure) is served by the lane like one
// with a Content-Length: its body is decoded from the caller's socket
// (chunkedIn) and ferry's client sends it on in chunks of its own
// (requestBody.moveChunks), with the caller's trailers after the last.
// Handed to net/http's server and Transport instead, a 1 KiB chunked POST
// cost about 161 thousand instructions (callgrind, 4 keep-alive
// connections), and a GiB uploaded about a second of CPU, the Transport
// flushing every chunk it was handed.
//
// A body cut short, or framed wrongly, is never passed off as whole: the
// last chunk goes upstream only after the caller's own last chunk and
// trailer section were read, and a failure closes the upstream connection
// mid-body.

// chunkedLeft is a chunked body's socketBody.left until its end: some of
// it is still to come from the caller, how much is not known.
const chunkedLeft = math.MaxInt64

// chunkedIn decodes a chunked request body from the lane's reader: its
// chunks through net/http's decoder (which refuses what net/http's server
// refuses: bare LFs, oversized lines, too much non-data), then its trailer
// section into trailer.
type chunkedIn struct {
	br      *bufio.Reader
	trailer http.Header // the request's Trailer: the caller's trailers go here
	cr      io.Reader   // the decoder over big, made at the first read that needs it
	// big is a larger reader over br for a body that streams (see
	// chunkReaders); giveBack takes what it read past the body's end (a
	// pipelined request's first bytes) for the connection's next reads.
	big      *bufio.Reader
	giveBack func([]byte)
	// ready is the body takeInHand decoded whole, not yet read; inHand
	// says takeInHand found it (the body ends when ready is read).
	ready  []byte
	inHand bool
	snap   *chunkSnap // ready's storage, back to its pool at the end
	err    error      // the error reads return from now on (io.EOF at the end)
}

// chunkSnap is takeInHand's room: a reader over a copy of what the lane
// has buffered, and the decoded body.
type chunkSnap struct {
	src bytes.Reader
	br  *bufio.Reader
	out []byte
}

var chunkSnaps = sync.Pool{New: func() any {
	return &chunkSnap{br: bufio.NewReaderSize(nil, laneBufSize), out: make([]byte, laneBufSize)}
}}

// chunkReaders hold the readers a streaming chunked body is decoded from:
// each read of the caller's socket takes up to chunkReadSize, however
// small the caller's chunks, where the lane's 8 KiB buffer and the
// chunks' own sizes (curl sends 16 KiB) made a read and an upstream write
// per chunk: a GiB took about 1.2 s of CPU.
const chunkReadSize = 64 << 10

var chunkReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, chunkReadSize) }}

// chunkBufs hold moveChunks's chunks: up to 0xffff bytes of data (what
// chunkRoom has room to announce), framed.
var chunkBufs = sync.Pool{New: func() any { b := make([]byte, chunkRoom+0xffff+2); return &b }}

// chunkedUp counts chunked request bodies sent by ferry's client (see
// moveChunks); chunkedInHand those of them whose whole body went with
// the head (see takeInHand). For tests.
var chunkedUp, chunkedInHand atomic.Int64

// read reads the decoded body: as much as p holds of what is at hand,
// waiting for the caller only when nothing is.
func (c *chunkedIn) read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	var n int
	var err error
	if c.inHand {
		n = copy(p, c.ready)
		c.ready = c.ready[n:]
		if len(c.ready) == 0 {
			err = io.EOF
			chunkSnaps.Put(c.snap)
			c.snap, c.ready = nil, nil
		}
	} else {
		if c.cr == nil {
			c.big = chunkReaders.Get().(*bufio.Reader)
			c.big.Reset(c.br)
			c.cr = httputil.NewChunkedReader(c.big)
		}
		n, err = c.cr.Read(p)
		if err == io.EOF {
			hdr, terr := readTrailerSection(c.big, "the caller's", callerTrailerMax)
			if terr != nil {
				err = terr
			} else {
				mergeTrailer(&c.trailer, hdr)
				c.endBig()
			}
		}
	}
	c.err = err
	return n, err
}

// endBig gives what big read past the body's end back to the connection
// and big back to its pool. Nothing reads big after its body's end.
func (c *chunkedIn) endBig() {
	if n := c.big.Buffered(); n > 0 {
		rest, _ := c.big.Peek(n)
		if c.giveBack != nil {
			c.giveBack(rest)
		}
	}
	c.big.Reset(nil)
	chunkReaders.Put(c.big)
	c.big = nil
}

// takeInHand reports whether what the lane's buffer holds settles the
// body, which can then go upstream with its head with no goroutine to move
// it: all of it is there, its last chunk and trailer section included (a
// small body sent with its head, or right after it), and is taken from the
// buffer to be read from memory; or its chunks are framed wrongly, which
// its reads then report (nothing of it goes). It decodes a copy of the
// buffered bytes with the decoder read uses; a body it finds neither
// whole nor broken there (it goes on past the buffer's end, or its
// trailer section does not end there) is left untouched for read to meet
// as it comes.
func (c *chunkedIn) takeInHand() bool {
	n := c.br.Buffered()
	if c.cr != nil || c.inHand || c.err != nil || n == 0 {
		return false
	}
	buf, _ := c.br.Peek(n)
	// A whole body ends with its trailer section's empty line.
	if !bytes.Contains(buf, []byte("\r\n\r\n")) {
		return false
	}
	snap := chunkSnaps.Get().(*chunkSnap)
	out, hdr, used, err := snap.decode(buf)
	switch {
	case err == io.ErrUnexpectedEOF:
		chunkSnaps.Put(snap)
		return false
	case err != nil:
		chunkSnaps.Put(snap)
		c.err = err
		return true
	}
	mergeTrailer(&c.trailer, hdr)
	c.br.Discard(used)
	c.inHand = true
	if len(out) == 0 {
		chunkSnaps.Put(snap)
		c.err = io.EOF
		return true
	}
	c.ready, c.snap = out, snap
	return true
}

// decode decodes buf, the lane's buffered bytes, as a chunked body with
// the decoder read uses: the body (in s.out), its trailer fields and how
// many bytes of buf they took. io.ErrUnexpectedEOF: buf does not hold all
// of it (it ends first, or its trailer section does not end in it, or is
// too long: read meets that as it comes); another error: its chunks are
// framed wrongly. s holds nothing of buf when it returns.
func (s *chunkSnap) decode(buf []byte) (out []byte, hdr textproto.MIMEHeader, used int, err error) {
	s.src.Reset(buf)
	s.br.Reset(&s.src)
	defer func() {
		s.br.Reset(nil)
		s.src.Reset(nil)
	}()
	cr := httputil.NewChunkedReader(s.br)
	out = s.out[:0]
	for {
		if len(out) == cap(out) {
			return nil, nil, 0, io.ErrUnexpectedEOF // (never: a body is shorter than its coding)
		}
		m, err := cr.Read(out[len(out):cap(out)])
		out = out[:len(out)+m]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, 0, err
		}
	}
	if hdr, err = readTrailerSection(s.br, "the caller's", callerTrailerMax); err != nil {
		return nil, nil, 0, io.ErrUnexpectedEOF
	}
	return out, hdr, len(buf) - s.src.Len() - s.br.Buffered(), nil
}

// callerTrailerMax bounds a caller's trailer section as net/http's server
// bounds it: by its 4 KiB read buffer ("suspiciously long trailer").
const callerTrailerMax = 4 << 10

// chunkRoom is the room moveChunks keeps before a chunk's data for its
// size line: four hex digits and CRLF, for chunks under 64 KiB.
const chunkRoom = 6

// moveChunks sends the rest of a chunked body to w (the upstream socket,
// or its writer while the head is being built), framed in chunks of its
// own: what each read of the caller's body brings (all it has at hand, up
// to a buffer) becomes one chunk, then the last chunk and the caller's
// trailers follow its end. Nothing more goes once the body breaks: the
// upstream must see it cut, never ended. The errors are spliceInto's: a
// *bodyReadError when the caller's side failed, errBodyTooLarge past
// limits.max_body_bytes, else the failure of a write.
func (b *requestBody) moveChunks(w io.Writer) error {
	b.torn.Store(true)
	if tc, ok := w.(*net.TCPConn); ok {
		b.idle.watchMove(moveUp, nil, tc)
		defer b.idle.unwatchMove(moveUp)
	}
	bp := chunkBufs.Get().(*[]byte)
	defer chunkBufs.Put(bp)
	buf := *bp
	for {
		n, err := b.Read(buf[chunkRoom : len(buf)-2])
		if n > 0 {
			var hex [8]byte
			size := strconv.AppendInt(hex[:0], int64(n), 16)
			start := chunkRoom - 2 - len(size)
			copy(buf[start:], size)
			buf[chunkRoom-2], buf[chunkRoom-1] = '\r', '\n'
			buf[chunkRoom+n], buf[chunkRoom+n+1] = '\r', '\n'
			if _, werr := w.Write(buf[start : chunkRoom+n+2]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			_, werr := w.Write(appendLastChunk(buf[:0], b.trailer))
			return werr
		}
		if err != nil {
			var be *bodyReadError
			if errors.As(err, &be) && b.brokenByCaller() == nil {
				// Ended by ferry (stopSplice's read deadline): the
				// caller did nothing wrong.
				return be.err
			}
			return err
		}
	}
}

// appendLastChunk appends the last chunk and the trailer section: the
// caller's trailers, those a request may carry (see requestBody.Read), in
// the order of their names.
func appendLastChunk(b []byte, trailer http.Header) []byte {
	b = append(b, "0\r\n"...)
	if len(trailer) > 0 {
		keys := make([]string, 0, len(trailer))
		for k := range trailer {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			for _, v := range trailer[k] {
				b = appendField(b, k, v)
			}
		}
	}
	return append(b, "\r\n"...)
}
