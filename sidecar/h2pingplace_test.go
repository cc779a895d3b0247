package sidecar

import (
	"bytes"
	"testing"
)

// The pinger's PING never goes where HTTP/2 allows no frame: between the
// client's connection preface and its SETTINGS (RFC 9113 §3.4), or inside a
// header block, between a HEADERS frame without END_HEADERS and the
// CONTINUATION that ends it (§6.10: any other frame there is a connection
// error PROTOCOL_ERROR, failing every stream on the connection). net/http's
// client writes a request head larger than the upstream's frame size as a
// HEADERS frame and CONTINUATION frames, each its own write when its
// buffer was empty, so the PING can come due between them.
func TestH2CPingKeepsOutOfHeaderBlocksAndBeforeSettings(t *testing.T) {
	preface := []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	frame := pingTestFrame
	const endHeaders = 0x4
	var stream []byte
	for _, f := range [][]byte{
		preface,
		frame(0x4, 0, 12),          // SETTINGS
		frame(0x1, 0, 40),          // HEADERS, the block goes on
		frame(0x9, 0, 40),          // CONTINUATION, it goes on
		frame(0x9, endHeaders, 10), // CONTINUATION, END_HEADERS
		frame(0x0, 1, 20),          // DATA
		frame(0x1, endHeaders|1, 5),
	} {
		stream = append(stream, f...)
	}
	for _, cut := range []int{1, 7, 9, 24, 33, 45, 49, 58, 98, 107, 200} {
		for owedAt := 0; owedAt < len(stream); owedAt += 3 {
			out := writeWithPingDue(t, stream, cut, owedAt)
			if !bytes.HasPrefix(out, preface) {
				t.Fatalf("cut %d, PING due at %d: the preface is not first", cut, owedAt)
			}
			var rest []byte
			pings, frames, inBlock := 0, 0, false
			for i := len(preface); i < len(out); {
				n := int(out[i])<<16 | int(out[i+1])<<8 | int(out[i+2])
				typ, flags := out[i+3], out[i+4]
				if typ == 0x6 && n == 8 {
					pings++
					if frames == 0 {
						t.Fatalf("cut %d, PING due at %d: the PING went between the preface and the client's SETTINGS", cut, owedAt)
					}
					if inBlock {
						t.Fatalf("cut %d, PING due at %d: the PING went inside a header block, before the CONTINUATION that ends it", cut, owedAt)
					}
				} else {
					frames++
					if typ == 0x1 || typ == 0x9 {
						inBlock = flags&endHeaders == 0
					}
					rest = append(rest, out[i:i+h2FrameHeaderLen+n]...)
				}
				i += h2FrameHeaderLen + n
			}
			if pings != 1 || !bytes.Equal(rest, stream[len(preface):]) {
				t.Fatalf("cut %d, PING due at %d: %d PINGs, the client's frames intact: %v", cut, owedAt, pings, bytes.Equal(rest, stream[len(preface):]))
			}
		}
	}
}
