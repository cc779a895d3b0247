package sidecar

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"

	"github.com/ferrymesh/ferry/internal/payload"
)

// The benchmarks run a real origin, a real ferry and a real client on
// loopback; allocations per op count all three. What matters is that they
// do not grow with the body size: ferry relays through pooled buffers.

var benchBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// benchOrigin serves GET /get?size=N from internal/payload and swallows
// POST /upload bodies, answering 204 once the whole body arrived.
func benchOrigin(b *testing.B) string {
	mux := http.NewServeMux()
	mux.Handle("GET /get", payload.Handler(0))
	mux.HandleFunc("POST /upload", func(w http.ResponseWriter, r *http.Request) {
		bp := benchBufs.Get().(*[]byte)
		n, err := io.CopyBuffer(writerOnly{io.Discard}, readerOnly{r.Body}, *bp)
		benchBufs.Put(bp)
		if err != nil || n != r.ContentLength {
			http.Error(w, fmt.Sprintf("got %d of %d bytes: %v", n, r.ContentLength, err), http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	return origin(b, mux)
}

// benchClient is a keep-alive HTTP/1.1 (or h2c) client whose connections
// close before ferry drains.
func benchClient(b *testing.B, h2 bool) *http.Client {
	c := h1Client()
	if h2 {
		c = h2cClient()
	}
	c.Transport.(*http.Transport).MaxIdleConnsPerHost = 16
	b.Cleanup(c.CloseIdleConnections)
	return c
}

var benchSizes = []struct {
	name string
	size int64
}{{"0B", 0}, {"1KiB", 1 << 10}, {"1MiB", 1 << 20}, {"64MiB", 64 << 20}}

// BenchmarkProxyGET downloads bodies of each size through ferry's outbound
// listener, over HTTP/1.1 and over h2c end to end.
func BenchmarkProxyGET(b *testing.B) {
	addr := benchOrigin(b)
	_, base := outboundTo(b, "", addr)
	for _, proto := range []string{"h1", "h2c"} {
		for _, sz := range benchSizes {
			b.Run(proto+"/"+sz.name, func(b *testing.B) {
				c := benchClient(b, proto == "h2c")
				url := fmt.Sprintf("%s/get?size=%d", base, sz.size)
				bp := benchBufs.Get().(*[]byte)
				defer benchBufs.Put(bp)
				b.ReportAllocs()
				b.SetBytes(sz.size)
				for b.Loop() {
					res, err := c.Get(url)
					if err != nil {
						b.Fatal(err)
					}
					n, err := io.CopyBuffer(writerOnly{io.Discard}, readerOnly{res.Body}, *bp)
					res.Body.Close()
					if err != nil || n != sz.size || res.StatusCode != http.StatusOK {
						b.Fatalf("status %d, %d of %d bytes: %v", res.StatusCode, n, sz.size, err)
					}
				}
			})
		}
	}
}

// BenchmarkProxyPOST uploads bodies through ferry's outbound listener; the
// client streams each from internal/payload.
func BenchmarkProxyPOST(b *testing.B) {
	addr := benchOrigin(b)
	_, base := outboundTo(b, "", addr)
	for _, proto := range []string{"h1", "h2c"} {
		for _, sz := range benchSizes[1:3] {
			b.Run(proto+"/"+sz.name, func(b *testing.B) {
				c := benchClient(b, proto == "h2c")
				b.ReportAllocs()
				b.SetBytes(sz.size)
				for b.Loop() {
					req, err := http.NewRequest(http.MethodPost, base+"/upload", io.NopCloser(payload.NewReader(sz.size)))
					if err != nil {
						b.Fatal(err)
					}
					req.ContentLength = sz.size
					res, err := c.Do(req)
					if err != nil {
						b.Fatal(err)
					}
					msg, _ := io.ReadAll(res.Body)
					res.Body.Close()
					if res.StatusCode != http.StatusNoContent {
						b.Fatalf("status %d: %s", res.StatusCode, msg)
					}
				}
			})
		}
	}
}
