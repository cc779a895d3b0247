package sidecar

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/telemetry"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2HeadConn is one raw HTTP/2 connection to ferry, for tests that need
// several streams on it and the frames exactly as sent.
type h2HeadConn struct {
	t   *testing.T
	c   net.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	buf bytes.Buffer
}

func dialH2Head(t *testing.T, addr string) *h2HeadConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	h := &h2HeadConn{t: t, c: c, fr: http2.NewFramer(c, c)}
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	h.fr.MaxHeaderListSize = 16 << 20
	h.enc = hpack.NewEncoder(&h.buf)
	if err := h.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return h
}

// head writes a request head on stream id in frames of at most 16 KiB
// (HEADERS, then CONTINUATION), with the fields given after the pseudo
// ones.
func (h *h2HeadConn) head(id uint32, method, path string, end bool, fields ...[2]string) {
	h.t.Helper()
	h.buf.Reset()
	for _, f := range append([][2]string{{":method", method}, {":scheme", "http"}, {":authority", "svc"}, {":path", path}}, fields...) {
		h.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	block := h.buf.Bytes()
	const frame = 16 << 10
	first := block[:min(len(block), frame)]
	block = block[len(first):]
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndStream: end, EndHeaders: len(block) == 0}); err != nil {
		h.t.Fatal(err)
	}
	for len(block) > 0 {
		n := min(len(block), frame)
		if err := h.fr.WriteContinuation(id, n == len(block), block[:n]); err != nil {
			h.t.Fatal(err)
		}
		block = block[n:]
	}
}

// answer reads frames until stream id's answer ended, and returns its
// status and body; a reset of the stream or a GOAWAY fails the test.
func (h *h2HeadConn) answer(id uint32) (int, string) {
	h.t.Helper()
	status, body, reset := h.read(id)
	if reset != nil {
		h.t.Fatalf("stream %d reset %v, want an answer", id, *reset)
	}
	return status, body
}

// read reads stream id's answer to its end: its status, its body, and the
// code of a reset that ended it instead (nil for none); a GOAWAY fails the
// test.
func (h *h2HeadConn) read(id uint32) (int, string, *http2.ErrCode) {
	h.t.Helper()
	status := 0
	var body bytes.Buffer
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			h.t.Fatalf("stream %d: reading frames: %v (status so far %d)", id, err, status)
		}
		if ackControl(h.fr, f) || f.Header().StreamID != id && f.Header().StreamID != 0 {
			continue
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			if status == 0 {
				fmt.Sscan(f.PseudoValue("status"), &status)
			}
			if f.StreamEnded() {
				return status, body.String(), nil
			}
		case *http2.DataFrame:
			body.Write(f.Data())
			if len(f.Data()) > 0 {
				h.fr.WriteWindowUpdate(0, uint32(len(f.Data())))
			}
			if f.StreamEnded() {
				return status, body.String(), nil
			}
		case *http2.RSTStreamFrame:
			code := f.ErrCode
			return status, body.String(), &code
		case *http2.GoAwayFrame:
			h.t.Fatalf("GOAWAY %v (%q) while waiting for stream %d's answer: the connection ended with every stream on it", f.ErrCode, f.DebugData(), id)
		}
	}
}

// TestH2CHeadOverLimitCostsOnlyItsStream proves an h2c caller's request
// head over limits.max_header_bytes is answered 431 on its own stream,
// counted and logged as header_too_large, while the other streams on the
// connection (one with its upload still open, one opened after) are
// served, for heads just over the limit and far over it.
func TestH2CHeadOverLimitCostsOnlyItsStream(t *testing.T) {
	leakCheck(t)
	addr := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, "ok "+string(b))
	}))
	sc, _, logs := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound:
  listen: 127.0.0.1:0
  routes: [ { service: svc } ]
services:
  svc: { endpoints: [%s] }
limits: { max_header_bytes: 16384 }
`, addr))
	for i, size := range []int{20 << 10, 64 << 10, 512 << 10} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			h := dialH2Head(t, sc.Addr("outbound"))
			h.head(1, "POST", "/upload", false)
			var big [][2]string
			for n := 0; n < size; n += 4 << 10 {
				big = append(big, [2]string{fmt.Sprintf("x-big-%d", n), strings.Repeat("b", 4<<10)})
			}
			h.head(3, "GET", "/big", true, big...)
			if status, body := h.answer(3); status != http.StatusRequestHeaderFieldsTooLarge {
				t.Fatalf("a %d-byte head: got %d %q, want 431", size, status, body)
			}
			if err := h.fr.WriteData(1, true, []byte("rest")); err != nil {
				t.Fatal(err)
			}
			if status, body := h.answer(1); status != 200 || body != "ok rest" {
				t.Fatalf("the upload open beside the %d-byte head: got %d %q, want 200 \"ok rest\"", size, status, body)
			}
			h.head(5, "GET", "/after", true)
			if status, body := h.answer(5); status != 200 || body != "ok " {
				t.Fatalf("a request after the %d-byte head: got %d %q, want 200 \"ok \"", size, status, body)
			}
			want := 3 * (i + 1)
			waitFor(t, "the access log lines", 5*time.Second, func() bool { return len(accessLines(t, logs)) >= want })
			n431 := 0
			for _, l := range accessLines(t, logs) {
				if l["status"] == float64(431) {
					n431++
					if l["reason"] != telemetry.ReasonHeaderTooLarge {
						t.Errorf("431's access log reason %v, want %s", l["reason"], telemetry.ReasonHeaderTooLarge)
					}
				}
			}
			if n431 != i+1 {
				t.Errorf("%d access log lines with status 431, want %d", n431, i+1)
			}
		})
	}
}
