package sidecar

import (
	"crypto/rand"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// h2cPinger finds an h2c upstream connection dead: once h2PingAfter passed
// without a byte read from it, it sends the upstream a PING and closes the
// connection if nothing was read within h2PingTimeout after. It does what
// net/http's HTTP/2 client does with HTTP2Config.SendPingTimeout, which
// ferry leaves unset: that client never stops its read-idle timer when a
// connection ends, so every connection it closed stayed referenced, with
// its buffers (a frame read buffer of up to h2MaxFrame, header tables, a
// bufio reader and writer) and its Transport, until the timer fired
// h2PingAfter (5 minutes) later. Under churn (reloads retiring pools,
// upstreams closing or restarting) ferry's heap held every h2c connection
// closed in the last 5 minutes. This one's timers stop when the connection
// is closed.
//
// The PING goes out between two of the client's frames, where HTTP/2
// allows one: h2cPinger follows the frames the client writes (after its
// 24-byte connection preface) and holds the PING until a frame ends when a
// write stopped inside one, until the client's first frame (its SETTINGS,
// which must follow the preface) ended, and until a header block ended
// (a HEADERS or PUSH_PROMISE frame without END_HEADERS is followed by
// CONTINUATION frames up to one with END_HEADERS, and no other frame may
// come between them: the upstream would end the connection). The
// upstream's PING ACK reaches the client, which ignores an ACK it did not
// ask for.
type h2cPinger struct {
	conn  *frameCapConn
	reads atomic.Uint64 // Reads that returned bytes
	lost  atomic.Bool   // the connection was closed for want of an answer
	done  atomic.Bool   // stop ran
	idle  *time.Timer   // h2PingAfter after the last read
	after time.Duration
	wait  time.Duration

	mu       sync.Mutex // held by each write to the connection
	closed   bool
	preface  int // bytes of the client's connection preface still to come
	whdr     [h2FrameHeaderLen]byte
	whn      int  // bytes of the current frame header written so far
	wleft    int  // payload bytes of the current frame still to be written
	started  bool // the client's first frame (its SETTINGS) began
	inBlock  bool // a header block began and its END_HEADERS did not come yet
	owed     bool // a PING waits for the current frame to end
	deadline *time.Timer
}

const h2ClientPrefaceLen = 24 // "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// startPinger makes c ping its upstream as described above; after 0 turns
// it off.
func (c *frameCapConn) startPinger(after, wait time.Duration) {
	if after <= 0 {
		return
	}
	p := &h2cPinger{conn: c, after: after, wait: wait, preface: h2ClientPrefaceLen}
	c.ping = p
	p.idle = time.AfterFunc(after, p.fire)
}

// errH2CPingLost is how an h2c upstream connection the pinger closed
// reads: the exchanges on it fail saying why.
var errH2CPingLost = errors.New("h2c upstream connection closed: nothing read from it within the ping timeout after a PING")

// read notes that the upstream sent bytes.
func (p *h2cPinger) read() {
	p.reads.Add(1)
	p.idle.Reset(p.after)
	if p.done.Load() {
		// A read that raced the close must not leave the timer armed:
		// it would hold the connection until it fired.
		p.idle.Stop()
	}
}

// fire runs once nothing was read for p.after: it sends a PING (or owes
// one until the frame being written ends) and closes the connection unless
// a byte arrives within p.wait.
func (p *h2cPinger) fire() {
	seen := p.reads.Load()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.deadline = time.AfterFunc(p.wait, func() {
		if p.reads.Load() == seen {
			p.lost.Store(true)
			p.conn.Close()
		}
	})
	p.mu.Unlock()
	// Writing may wait on a stalled upstream: the deadline above closes
	// the connection, which ends the write.
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	if !p.atBoundary() {
		p.owed = true
		return
	}
	p.sendLocked()
}

// sendLocked writes a PING frame; p.mu is held, at a frame boundary.
func (p *h2cPinger) sendLocked() {
	var f [h2FrameHeaderLen + 8]byte
	f[2] = 8   // length
	f[3] = 0x6 // PING
	rand.Read(f[h2FrameHeaderLen:])
	p.owed = false
	p.conn.Conn.Write(f[:])
}

// write passes b on to the connection, following its frames, and sends an
// owed PING at the first frame boundary.
func (p *h2cPinger) write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.owed {
		p.follow(b, false)
		return p.conn.Conn.Write(b)
	}
	k := p.follow(b, true)
	n, err := p.conn.Conn.Write(b[:k])
	if err != nil || !p.atBoundary() {
		return n, err
	}
	p.sendLocked()
	p.follow(b[k:], false)
	m, err := p.conn.Conn.Write(b[k:])
	return n + m, err
}

// atBoundary: a frame may be written now.
func (p *h2cPinger) atBoundary() bool {
	return p.started && !p.inBlock && p.whn == 0 && p.wleft == 0
}

// HTTP/2 frame types and the flag that end a header block.
const (
	h2FrameHeaders      = 0x1
	h2FramePushPromise  = 0x5
	h2FrameContinuation = 0x9
	h2FlagEndHeaders    = 0x4
)

// follow reads the frame headers in b, the client's bytes about to be
// written, and returns how many of them it followed: all of them, or, with
// stop, those up to the first frame boundary.
func (p *h2cPinger) follow(b []byte, stop bool) int {
	i := 0
	for i < len(b) {
		switch {
		case p.preface > 0:
			k := min(p.preface, len(b)-i)
			p.preface -= k
			i += k
		case p.wleft > 0:
			k := min(p.wleft, len(b)-i)
			p.wleft -= k
			i += k
		default:
			k := copy(p.whdr[p.whn:], b[i:])
			p.whn += k
			i += k
			if p.whn < h2FrameHeaderLen {
				continue
			}
			p.whn = 0
			p.started = true
			p.wleft = int(p.whdr[0])<<16 | int(p.whdr[1])<<8 | int(p.whdr[2])
			switch p.whdr[3] {
			case h2FrameHeaders, h2FramePushPromise, h2FrameContinuation:
				p.inBlock = p.whdr[4]&h2FlagEndHeaders == 0
			}
		}
		if stop && p.atBoundary() {
			return i
		}
	}
	return i
}

// stop ends the pinger's timers; the connection is closed.
func (p *h2cPinger) stop() {
	p.done.Store(true)
	p.idle.Stop()
	p.mu.Lock()
	p.closed = true
	if p.deadline != nil {
		p.deadline.Stop()
	}
	p.mu.Unlock()
}
