package sidecar

import (
	"encoding/binary"
	"net"
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
type frameCapConn struct {
	net.Conn
	hdr      [h2FrameHeaderLen]byte
	hn       int  // bytes of hdr read so far
	left     int  // payload bytes left of the current frame
	settings bool // the current payload is SETTINGS parameters
	// param holds the bytes of a SETTINGS parameter a read ended inside of,
	// not yet handed on: they may need rewriting once the rest arrives.
	param   [h2SettingLen]byte
	pn      int
	pending []byte // a completed param, to hand on before reading more
}

func (c *frameCapConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if len(c.pending) > 0 {
			n := copy(p, c.pending)
			c.pending = c.pending[n:]
			return n, nil
		}
		if c.pn > 0 {
			n, err := c.Conn.Read(c.param[c.pn:])
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
		d := c.scan(p[:n])
		if d == 0 && n > 0 && err == nil {
			continue // all of it began a parameter
		}
		return d, err
	}
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
