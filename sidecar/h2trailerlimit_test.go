package sidecar

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/telemetry"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// An h2c caller's request trailers are a header block as its head is, and
// limits.max_header_bytes bounds them too. net/http's HTTP/2 server held
// them to the limit it was given, but it is now given 1 MiB more than
// limits.max_header_bytes so that ferry answers an oversized head on its
// stream (h2head.go), and ferry checked the head alone: trailers up to
// 1 MiB over the limit were read, kept while the body streamed, and sent
// on to the upstream whole. An HTTP/1.1 caller's trailers are held to
// net/http's reader buffer (4 KiB), their body failing beyond it. Here a
// 64 KiB trailer must not reach the upstream (limit 16384); one well
// within the limit still does. The caller gets 431 header_too_large, as
// for a head over the limit.
func TestH2CRequestTrailersHeldToTheHeaderLimit(t *testing.T) {
	var got atomic.Int64 // the size of the x-t trailer the upstream got; -1: none
	addr := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		got.Store(int64(len(r.Trailer.Get("X-T"))))
		io.WriteString(w, "ok")
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
	for _, size := range []int{1 << 10, 64 << 10} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			got.Store(-1)
			h := dialH2Head(t, sc.Addr("outbound"))
			h.head(1, "POST", "/up", false, [2]string{"trailer", "x-t"})
			if err := h.fr.WriteData(1, false, []byte("hi")); err != nil {
				t.Fatal(err)
			}
			// The trailers: a header block of regular fields alone, in
			// 16 KiB frames.
			h.buf.Reset()
			h.enc.WriteField(hpack.HeaderField{Name: "x-t", Value: strings.Repeat("t", size)})
			block := h.buf.Bytes()
			first := block[:min(len(block), 16<<10)]
			block = block[len(first):]
			if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first, EndStream: true, EndHeaders: len(block) == 0}); err != nil {
				t.Fatal(err)
			}
			for len(block) > 0 {
				n := min(len(block), 16<<10)
				if err := h.fr.WriteContinuation(1, n == len(block), block[:n]); err != nil {
					t.Fatal(err)
				}
				block = block[n:]
			}
			status := h.outcome(1)
			if size <= 1<<10 {
				if status != 200 {
					t.Fatalf("a %d-byte trailer: the caller got %d, want 200", size, status)
				}
				waitFor(t, "the upstream's answer", 5*time.Second, func() bool { return got.Load() >= 0 })
				if n := got.Load(); n != int64(size) {
					t.Fatalf("a %d-byte trailer: the upstream got %d bytes of it, want all", size, n)
				}
				return
			}
			if n := got.Load(); n > 0 {
				t.Fatalf("a %d-byte trailer (limits.max_header_bytes 16384): the upstream got it (%d bytes), the caller %d; want it refused", size, n, status)
			}
			if status != http.StatusRequestHeaderFieldsTooLarge {
				t.Fatalf("a %d-byte trailer (limits.max_header_bytes 16384): the caller got %d, want 431", size, status)
			}
			waitFor(t, "the access log lines", 5*time.Second, func() bool { return len(accessLines(t, logs)) >= 2 })
			if l := accessLines(t, logs)[1]; l["status"] != float64(431) || l["reason"] != telemetry.ReasonHeaderTooLarge {
				t.Fatalf("the refused trailer's access log line: status %v reason %v, want 431 %s", l["status"], l["reason"], telemetry.ReasonHeaderTooLarge)
			}
		})
	}
}

// outcome reads frames until stream id ends, by an answer (its status) or
// a reset of the stream (0); a GOAWAY fails the test.
func (h *h2HeadConn) outcome(id uint32) int {
	h.t.Helper()
	status, _, _ := h.read(id)
	return status
}
