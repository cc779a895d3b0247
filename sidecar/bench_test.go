package sidecar

import (
	"context"
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
				body := payload.NewReader(sz.size)
				b.ReportAllocs()
				b.SetBytes(sz.size)
				for b.Loop() {
					body.Reset(sz.size)
					req, err := http.NewRequest(http.MethodPost, base+"/upload", io.NopCloser(body))
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

// browserHead is the head of a request as a browser sends it, cookies and
// all: the lane reads it, checks its line ends and parses it.
const browserHead = "GET /api/v2/orders?page=3&sort=-created HTTP/1.1\r\n" +
	"Host: orders.internal:8080\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36\r\n" +
	"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n" +
	"Accept-Language: en-GB,en;q=0.9\r\n" +
	"Accept-Encoding: gzip, deflate, br, zstd\r\n" +
	"Referer: https://shop.example.com/account/orders\r\n" +
	"Cookie: session=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08; theme=dark; consent=1\r\n" +
	"Traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n" +
	"X-Request-Id: 3e1f4c1a-8d7b-4b6e-9f2a-2c7d1e5b9a10\r\n" +
	"Cache-Control: no-cache\r\n" +
	"\r\n"

// BenchmarkLaneHead is the lane's work on a whole head before serving it:
// the line-end check readHead makes, then parseHead.
func BenchmarkLaneHead(b *testing.B) {
	for _, tc := range []struct{ name, head string }{
		{"wrk", "GET /?size=1024 HTTP/1.1\r\nHost: 127.0.0.1:19901\r\n\r\n"},
		{"browser", browserHead},
	} {
		b.Run(tc.name, func(b *testing.B) {
			head := []byte(tc.head)
			lh := new(laneHead) // the head's parse, not its allocation
			b.ReportAllocs()
			b.SetBytes(int64(len(head)))
			for b.Loop() {
				if bareLF(head) || parseHead(head, context.Background(), lh) == nil {
					b.Fatal("refused")
				}
			}
		})
	}
}
