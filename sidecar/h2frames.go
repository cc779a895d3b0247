package sidecar

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// h2MaxFrame is the largest HTTP/2 frame ferry sends or accepts. net/http
// allows 1 MiB each way by default, and its client holds, for every request
// body in flight, a buffer as large as the peer's frame limit (up to
// 512 KiB): behind a Go upstream, each h2c upload cost ferry half a
// megabyte. 64 KiB frames move bodies as fast on loopback (BenchmarkProxyPOST,
// BenchmarkProxyGET h2c) for an eighth of the memory.
const h2MaxFrame = 64 << 10

const (
	h2FrameHeaderLen = 9
	h2FrameSettings  = 0x4
	h2FlagAck        = 0x1
	h2SettingMaxSize = 0x5
	h2SettingLen     = 6
)

// frameCapConn is an h2c upstream connection whose SETTINGS frames, as read
// by net/http's client, never allow frames larger than h2MaxFrame: the
// client sizes its upload buffer by the upstream's SETTINGS_MAX_FRAME_SIZE
// and has no setting of its own for it. A smaller limit only makes ferry
// send smaller frames, which every peer accepts; every other byte passes as
// it came. The upstream sends frames and nothing else (RFC 9113 §3.4): the
// connection is parsed frame by frame, skipping payloads other than
// SETTINGS without looking at them.
//
// The first frame must be the upstream's SETTINGS: one whose header begins
// "HTTP/" is an HTTP/1 answer to the connection preface, from an upstream
// that does not speak HTTP/2. The connection then reads as a
// *notHTTP2Error, which classify words for the operator, instead of the
// bytes, in which net/http's client would find only a frame too large.
type frameCapConn struct {
	net.Conn
	peer   *h2cPeer // nil in tests of the frame scan alone
	addr   string   // the endpoint dialled, as peer records it
	framed bool     // the first frame header was read
	err    error    // a *notHTTP2Error, once the upstream answered in HTTP/1
	// firstMu guards first, closed by the reader once it knows what the
	// upstream answered first (framed, or its read failed before), for a
	// write that failed meanwhile (see Write). firstDone: it is closed.
	firstMu   sync.Mutex
	first     chan struct{}
	firstDone bool
	hdr       [h2FrameHeaderLen]byte
	hn        int  // bytes of hdr read so far
	left      int  // payload bytes left of the current frame
	settings  bool // the current payload is SETTINGS parameters
	// param holds the bytes of a SETTINGS parameter a read ended inside of,
	// not yet handed on: they may need rewriting once the rest arrives.
	param   [h2SettingLen]byte
	pn      int
	pending []byte // a completed param, to hand on before reading more
	// ping finds the connection dead (nil when pings are off, and in
	// tests of the frame scan alone).
	ping *h2cPinger
}

// write writes b, through the pinger when there is one (it slips its
// PINGs in between the client's frames).
func (c *frameCapConn) write(b []byte) (int, error) {
	if c.ping == nil {
		return c.Conn.Write(b)
	}
	return c.ping.write(b)
}

// Close closes the connection first: a write stalled on it holds the
// pinger's lock until then.
func (c *frameCapConn) Close() error {
	err := c.Conn.Close()
	if c.ping != nil {
		c.ping.stop()
	}
	return err
}

func (c *frameCapConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if c.err != nil {
			return 0, c.err
		}
		if len(c.pending) > 0 {
			n := copy(p, c.pending)
			c.pending = c.pending[n:]
			return n, nil
		}
		if c.pn > 0 {
			n, err := c.Conn.Read(c.param[c.pn:])
			if n > 0 && c.ping != nil {
				c.ping.read()
			}
			c.pn += n
			if c.pn == h2SettingLen {
				capSetting(c.param[:])
				c.left -= h2SettingLen
				c.pn = 0
				c.pending = c.param[:]
				continue
			}
			if err != nil {
				return 0, err
			}
			continue
		}
		n, err := c.Conn.Read(p)
		if c.ping != nil {
			if n > 0 {
				c.ping.read()
			}
			if err != nil && c.ping.lost.Load() {
				err = errH2CPingLost
			}
		}
		d := c.scan(p[:n])
		if !c.firstDone && (c.framed || err != nil) {
			c.firstKnown()
		}
		if c.err != nil {
			return 0, c.err
		}
		if d == 0 && n > 0 && err == nil {
			continue // all of it began a parameter
		}
		return d, err
	}
}

// Write passes p on. A write that fails because the upstream closed the
// connection (EPIPE, ECONNRESET) before its first frame header was read
// most often met an HTTP/1 upstream that answered the preface and closed:
// a POST's HEADERS and DATA are written as that answer arrives. The
// answer then waits in the receive queue and the connection's reader
// (net/http's read loop) takes it at once: the write waits for that, and
// fails with the *notHTTP2Error the read found, as net/http's client
// reports the write's error to the request.
func (c *frameCapConn) Write(p []byte) (int, error) {
	n, err := c.write(p)
	if err == nil || !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
		return n, err
	}
	t := time.NewTimer(firstAnswerWait)
	defer t.Stop()
	select {
	case <-c.firstChan():
		var nh *notHTTP2Error
		if errors.As(c.err, &nh) {
			return n, c.err
		}
	case <-t.C: // no reader came: the write's own error
	}
	return n, err
}

// firstAnswerWait bounds Write's wait for the reader: the peer closed the
// connection, so a read in progress ends at once, and none may be running
// (net/http writes the preface before it starts reading).
const firstAnswerWait = 2 * time.Second

// firstChan is first, made on first use.
func (c *frameCapConn) firstChan() chan struct{} {
	c.firstMu.Lock()
	defer c.firstMu.Unlock()
	if c.first == nil {
		c.first = make(chan struct{})
	}
	return c.first
}

// firstKnown closes first (called by the reader, once).
func (c *frameCapConn) firstKnown() {
	c.firstDone = true
	close(c.firstChan())
}

// scan follows the frames in b, rewriting SETTINGS parameters in place,
// and returns how many of its bytes may be handed on; any others are the
// start of a parameter, kept in c.param.
func (c *frameCapConn) scan(b []byte) int {
	i := 0
	for i < len(b) {
		switch {
		case c.left == 0: // a frame header
			k := copy(c.hdr[c.hn:], b[i:])
			c.hn += k
			i += k
			if c.hn < h2FrameHeaderLen {
				continue
			}
			c.hn = 0
			if !c.framed {
				c.framed = true
				if string(c.hdr[:5]) == "HTTP/" {
					e := &notHTTP2Error{peer: c.peer, answer: statusLine(c.hdr[:], b[i:])}
					c.err = e
					c.peer.answered(c.addr, e)
					return i
				}
				c.peer.answered(c.addr, nil)
			}
			c.left = int(c.hdr[0])<<16 | int(c.hdr[1])<<8 | int(c.hdr[2])
			// A malformed SETTINGS length passes as it is, for the client
			// to refuse.
			c.settings = c.hdr[3] == h2FrameSettings && c.hdr[4]&h2FlagAck == 0 && c.left%h2SettingLen == 0
		case !c.settings:
			k := min(c.left, len(b)-i)
			c.left -= k
			i += k
		case len(b)-i >= h2SettingLen:
			capSetting(b[i : i+h2SettingLen])
			c.left -= h2SettingLen
			i += h2SettingLen
		default:
			c.pn = copy(c.param[:], b[i:])
			return i
		}
	}
	return i
}

// capSetting lowers a SETTINGS_MAX_FRAME_SIZE parameter above h2MaxFrame to
// it.
func capSetting(p []byte) {
	if binary.BigEndian.Uint16(p) == h2SettingMaxSize && binary.BigEndian.Uint32(p[2:]) > h2MaxFrame {
		binary.BigEndian.PutUint32(p[2:], h2MaxFrame)
	}
}

// h2cPeer is what an upstream's h2c pool knows of why it speaks HTTP/2:
// the config key and the protocol it gives (ProtocolAuto or ProtocolH2C).
//
// It also keeps, per endpoint, whether the last connection made to it was
// answered in HTTP/1: net/http's client reports such a connection's end
// to the request that dialled it only when the request had its stream
// already, and otherwise as "http2: client conn could not be
// established" (see explain).
type h2cPeer struct {
	key      string // "services.<name>.protocol" or "inbound.protocol"
	protocol string

	mu    sync.Mutex
	n     atomic.Int32              // len(notH2), read without mu
	notH2 map[string]*notHTTP2Error // by endpoint address
}

// h2cPeerEndpoints bounds the endpoints an h2cPeer remembers: beyond it,
// a failure is reported as net/http's client words it.
const h2cPeerEndpoints = 1024

// answered records how an endpoint answered a new connection's preface:
// e nil for HTTP/2 frames, else its HTTP/1 answer.
func (p *h2cPeer) answered(addr string, e *notHTTP2Error) {
	if p == nil || e == nil && p.n.Load() == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case e == nil:
		delete(p.notH2, addr)
	case len(p.notH2) < h2cPeerEndpoints:
		if p.notH2 == nil {
			p.notH2 = make(map[string]*notHTTP2Error)
		}
		p.notH2[addr] = e
	}
	p.n.Store(int32(len(p.notH2)))
}

// explain is the error an h2c round trip to addr that failed with err
// reports: the endpoint's HTTP/1 answer when the last connection made to
// it got one (err is then what that connection's end left the request),
// else err.
func (p *h2cPeer) explain(addr string, err error) error {
	if p == nil || p.n.Load() == 0 {
		return err
	}
	var de *dialError
	if errors.As(err, new(*notHTTP2Error)) || errors.As(err, &de) {
		return err
	}
	p.mu.Lock()
	e := p.notH2[addr]
	p.mu.Unlock()
	if e == nil {
		return err
	}
	return e
}

// notHTTP2Error: an h2c upstream answered HTTP/2's connection preface with
// an HTTP/1 response (answer is its status line): it does not speak HTTP/2.
type notHTTP2Error struct {
	peer   *h2cPeer
	answer string
}

func (e *notHTTP2Error) Error() string {
	msg := fmt.Sprintf("does not speak HTTP/2: it answered the HTTP/2 connection preface with %q", e.answer)
	switch {
	case e.peer == nil:
		return msg
	case e.peer.protocol == ProtocolAuto:
		return msg + fmt.Sprintf("; %s is auto, which speaks HTTP/2 (h2c) to the upstream for an HTTP/2 caller: for an upstream that speaks only HTTP/1.1 set %s: http1", e.peer.key, e.peer.key)
	default:
		return msg + fmt.Sprintf("; %s is %s: for an upstream that speaks only HTTP/1.1 set %s: http1", e.peer.key, e.peer.protocol, e.peer.key)
	}
}

// statusLine is the first line of an HTTP/1 answer whose first bytes are
// head and whose following bytes, as far as one read brought them, are
// rest: up to its CR or LF, at most 64 bytes, printable ASCII only.
func statusLine(head, rest []byte) string {
	line := make([]byte, 0, 64)
	for _, s := range [][]byte{head, rest} {
		for _, ch := range s {
			if ch == '\r' || ch == '\n' || len(line) == cap(line) {
				return string(line)
			}
			if ch < 0x20 || ch > 0x7e {
				ch = '?'
			}
			line = append(line, ch)
		}
	}
	return string(line)
}
