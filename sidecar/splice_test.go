package sidecar

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/ferrymesh/ferry/internal/payload"
)

// A large Content-Length download from a plain HTTP/1.1 upstream to a plain
// HTTP/1.1 caller moves kernel to kernel; the bytes and digest are intact.
func TestZeroCopyPathTaken(t *testing.T) {
	up := origin(t, payload.Handler(0))
	_, url := outboundTo(t, "", up)
	c := h1Client()
	const size = 8 << 20
	for i := range 3 { // the second and third reuse the pooled connection
		before := spliced.Load()
		downloadThrough(t, c, url, size)
		moved := spliced.Load() - before
		if moved < size-64<<10 {
			t.Fatalf("download %d: %d of %d bytes moved kernel to kernel", i, moved, size)
		}
	}
}

// Everything else takes the pooled-buffer path: small bodies, bodies of
// unknown length, HTTP/2 callers, uploads.
func TestZeroCopyPathNotTakenElsewhere(t *testing.T) {
	up := origin(t, payload.Handler(0))
	_, url := outboundTo(t, "", up)
	for _, tc := range []struct {
		name   string
		client *http.Client
		path   string
	}{
		{"small", h1Client(), "/f?size=1000"},
		{"chunked", h1Client(), fmt.Sprintf("/f?size=%d&chunked=1", 4<<20)},
		{"h2c caller", h2cClient(), fmt.Sprintf("/f?size=%d", 4<<20)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := spliced.Load()
			res, err := tc.client.Get(url + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			sink := payload.NewSink()
			io.Copy(sink, res.Body)
			res.Body.Close()
			if res.StatusCode != 200 || sink.N() == 0 {
				t.Fatalf("status %d, %d bytes", res.StatusCode, sink.N())
			}
			if got := spliced.Load() - before; got != 0 {
				t.Fatalf("%d bytes went kernel to kernel", got)
			}
			if sink.Digest() != digestOf(sink.N()) {
				t.Fatal("digest mismatch")
			}
		})
	}
}

// An upstream whose response header never ends is cut at 1 MiB: 502, not
// unbounded memory.
func TestZeroCopyClientBoundsResponseHeader(t *testing.T) {
	addr, _ := rawOrigin(t, "HTTP/1.1 200 OK\r\nX-Big: "+strings.Repeat("a", 2<<20)+"\r\n\r\n")
	_, url := outboundTo(t, "defaults: { retry: { max_retries: 0 } }", addr)
	res, body := get(t, h1Client(), url+"/", "")
	if res.StatusCode != http.StatusBadGateway {
		t.Fatalf("got %d %q", res.StatusCode, body)
	}
}
