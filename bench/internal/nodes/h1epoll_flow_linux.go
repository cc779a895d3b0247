//go:build linux && (amd64 || arm64)

package nodes

import (
	"bytes"
	"syscall"
)

// flowStatus is what one step of a flow ended on.
type flowStatus int

const (
	// flowWait: a read or write would block; an edge on the socket it
	// was made on resumes the flow.
	flowWait flowStatus = iota
	// flowDone: one whole message was relayed; the other direction's turn.
	flowDone
	// flowFail: an error, an end of stream, or a head larger than the
	// buffer; the pair is closed.
	flowFail
)

// flowState is where a flow is within a message.
type flowState uint8

const (
	inHead  flowState = iota // buf[:n] holds the start of a head without its CRLFCRLF
	writing                  // buf[out:end] is on its way to dst
	inBody                   // left bytes of body still to read from src
)

// flow relays the messages of one direction of a connection pair (the
// requests or the responses) through a fixed buffer, as floorMessage does
// with blocking calls: a head up to CRLFCRLF, then Content-Length bytes of
// body, in pieces when the body is longer than the buffer. Bytes read past
// the end of a message (a pipelined request) stay at the front of the
// buffer for the next one.
type flow struct {
	buf      []byte
	n        int       // bytes in buf
	scanned  int       // buf[:scanned] holds no CRLFCRLF start
	out, end int       // writing buf[out:end]
	left     int64     // body bytes not yet read from src
	state    flowState //
}

// step moves the flow on until a call would block, the message is done or
// something fails. canWrite is false while dst is still connecting.
func (f *flow) step(src, dst int, canWrite bool) flowStatus {
	for {
		switch f.state {
		case inHead:
			if i := bytes.Index(f.buf[f.scanned:f.n], crlfcrlf); i >= 0 {
				end := f.scanned + i + 4
				msg := int64(end) + contentLength(f.buf[:end])
				f.out = 0
				if int64(f.n) >= msg {
					f.end, f.left = int(msg), 0
				} else {
					f.end, f.left = f.n, msg-int64(f.n)
				}
				f.state = writing
				continue
			}
			f.scanned = max(0, f.n-3)
			if f.n == len(f.buf) {
				return flowFail // a head larger than the buffer
			}
			m, errno := rawRead(src, f.buf[f.n:])
			switch {
			case errno == syscall.EAGAIN:
				return flowWait
			case errno != 0 || m == 0:
				return flowFail
			}
			f.n += m
		case writing:
			if !canWrite {
				return flowWait
			}
			m, errno := rawSend(dst, f.buf[f.out:f.end])
			switch {
			case errno == syscall.EAGAIN:
				return flowWait
			case errno != 0:
				return flowFail
			}
			if f.out += m; f.out < f.end {
				continue
			}
			if f.left > 0 {
				// Everything buffered was this message's: read the
				// rest of its body into the whole buffer.
				f.n, f.state = 0, inBody
				continue
			}
			f.n = copy(f.buf, f.buf[f.end:f.n])
			f.scanned, f.state = 0, inHead
			return flowDone
		case inBody:
			m, errno := rawRead(src, f.buf[:min(int64(len(f.buf)), f.left)])
			switch {
			case errno == syscall.EAGAIN:
				return flowWait
			case errno != 0 || m == 0:
				return flowFail
			}
			f.left -= int64(m)
			f.n, f.out, f.end, f.state = m, 0, m, writing
		}
	}
}

// epollPair is one caller connection and its upstream connection. Like
// the goroutine floor, it relays strictly in turn: one request, then its
// response, then the next request. A pipelined request waits in the
// request buffer until the response before it has gone out.
type epollPair struct {
	down, up   int
	id         int32 // tells this pair's events from those of an earlier pair on the same fds
	connecting bool  // up's connect(2) has not completed
	toUp       bool  // the request flow's turn
	req, resp  flow
}

// drive runs the pair's flows in turn until one waits (true) or fails
// (false).
func (p *epollPair) drive() bool {
	for {
		var st flowStatus
		if p.toUp {
			st = p.req.step(p.down, p.up, !p.connecting)
		} else {
			st = p.resp.step(p.up, p.down, true)
		}
		switch st {
		case flowWait:
			return true
		case flowFail:
			return false
		}
		p.toUp = !p.toUp
	}
}
