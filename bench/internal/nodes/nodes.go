// Package nodes holds the processes the benchmark puts around the proxies
// under test: the origin, the stdlib reverse-proxy baseline, the L4
// splice relay and the two HTTP/1.1 floors (a goroutine per connection,
// and epoll loops). They live apart from the harness so their binary carries
// nothing else (no OpenTelemetry, no plotting) into their memory figures.
package nodes

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"time"
)

// bodyBlock is the repeating unit of every generated body: 64 KiB of
// seeded pseudo-random bytes, the same in every process.
var bodyBlock = func() []byte {
	b := make([]byte, 64<<10)
	r := rand.NewChaCha8([32]byte{'f', 'e', 'r', 'r', 'y', 'b', 'e', 'n', 'c', 'h'})
	_, _ = r.Read(b)
	return b
}()

// Block returns a copy of the 64 KiB unit every body repeats.
func Block() []byte { return append([]byte(nil), bodyBlock...) }

// bodyReader yields n bytes of the repeating block.
type bodyReader struct{ left, off int64 }

// NewBody returns a reader of n bytes of the repeating block.
func NewBody(n int64) io.Reader { return &bodyReader{left: n} }

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && b.left > 0 {
		in := b.off % int64(len(bodyBlock))
		c := copy(p[n:], bodyBlock[in:])
		if int64(c) > b.left {
			c = int(b.left)
		}
		n += c
		b.off += int64(c)
		b.left -= int64(c)
	}
	return n, nil
}

// drainBufs holds the buffers OriginHandler reads request bodies into.
var drainBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// OriginHandler serves GET /?size=N (N bytes with Content-Length) and
// drains any request body, answering with the byte count it read.
func OriginHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost || r.Method == http.MethodPut {
			// A pooled buffer: a small upload must not cost the origin
			// 256 KiB of fresh memory, which made it the bottleneck of a
			// small-POST load.
			bp := drainBufs.Get().(*[]byte)
			defer drainBufs.Put(bp)
			buf := *bp
			var n int64
			for {
				c, err := r.Body.Read(buf)
				n += int64(c)
				if err == io.EOF {
					break
				}
				if err != nil {
					http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
					return
				}
			}
			w.Header().Set("Content-Type", "text/plain")
			fmt.Fprintf(w, "%d", n)
			return
		}
		size := int64(1024)
		if s := r.URL.Query().Get("size"); s != "" {
			v, err := strconv.ParseInt(s, 10, 64)
			if err != nil || v < 0 {
				http.Error(w, "bad size "+strconv.Quote(s), http.StatusBadRequest)
				return
			}
			size = v
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		for size > 0 {
			chunk := bodyBlock
			if int64(len(chunk)) > size {
				chunk = chunk[:size]
			}
			if _, err := w.Write(chunk); err != nil {
				return
			}
			size -= int64(len(chunk))
		}
	})
}

// ServeOrigin serves OriginHandler on listen.
func ServeOrigin(listen string) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("origin: listen %s: %w", listen, err)
	}
	srv := &http.Server{Handler: OriginHandler(), ReadHeaderTimeout: 10 * time.Second}
	return srv.Serve(ln)
}

// StdProxy is the baseline: net/http/httputil.ReverseProxy to upstream
// with a transport that keeps enough idle upstream connections for 256
// callers.
func StdProxy(upstream string) (*httputil.ReverseProxy, error) {
	u, err := url.Parse("http://" + upstream)
	if err != nil {
		return nil, fmt.Errorf("stdproxy: upstream %q: %w", upstream, err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = 1024
	tr.MaxIdleConnsPerHost = 1024
	tr.ForceAttemptHTTP2 = false
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.SetXForwarded()
		},
		Transport: tr,
	}, nil
}

// Serve serves h on listen.
func Serve(listen string, h http.Handler) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", listen, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	return srv.Serve(ln)
}

// ServeL4Relay accepts TCP connections and relays bytes to upstream with
// io.Copy between *net.TCPConn values, which Go turns into splice(2).
func ServeL4Relay(listen, upstream string) error {
	return acceptEach("l4relay", listen, func(c net.Conn) { relay(c.(*net.TCPConn), upstream) })
}

// acceptEach serves every connection accepted on listen with serve, on a
// goroutine of its own, until accepting fails.
func acceptEach(name, listen string, serve func(net.Conn)) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("%s: listen %s: %w", name, listen, err)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return fmt.Errorf("%s: accept: %w", name, err)
		}
		go serve(c)
	}
}

func relay(down *net.TCPConn, upstream string) {
	defer down.Close()
	uc, err := net.DialTimeout("tcp", upstream, 5*time.Second)
	if err != nil {
		return
	}
	up := uc.(*net.TCPConn)
	defer up.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = io.Copy(up, down)
		_ = up.CloseWrite()
	}()
	_, _ = io.Copy(down, up)
	_ = down.CloseWrite()
	wg.Wait()
}

// ServeH1Floor accepts connections and relays HTTP/1.1 exchanges to
// upstream doing only what framing needs: no header is parsed beyond
// Content-Length, nothing is allocated per request, each caller
// connection has one upstream connection. It is the floor of a Go proxy
// with a goroutine per connection, against which ferry's per-request work
// is measured; it is not a proxy anyone should run (no chunked bodies, no
// hop-by-hop handling, no errors answered).
func ServeH1Floor(listen, upstream string) error {
	return acceptEach("h1floor", listen, func(c net.Conn) { floorConn(c, upstream) })
}

func floorConn(down net.Conn, upstream string) {
	defer down.Close()
	up, err := net.DialTimeout("tcp", upstream, 5*time.Second)
	if err != nil {
		return
	}
	defer up.Close()
	dbuf, ubuf := make([]byte, 32<<10), make([]byte, 32<<10)
	var dn, un int // bytes buffered (read ahead) from each side
	for {
		var ok bool
		if dn, ok = floorMessage(down, up, dbuf, dn); !ok {
			return
		}
		if un, ok = floorMessage(up, down, ubuf, un); !ok {
			return
		}
	}
}

// floorMessage moves one message (head, then Content-Length bytes of body)
// from src to dst through buf, of which the first n bytes were read
// before; it returns how many bytes past the message are left in buf.
func floorMessage(src, dst net.Conn, buf []byte, n int) (int, bool) {
	end := -1
	for {
		if end = bytes.Index(buf[:n], crlfcrlf); end >= 0 {
			break
		}
		if n == len(buf) {
			return 0, false // a head larger than the buffer
		}
		m, err := src.Read(buf[n:])
		if err != nil {
			return 0, false
		}
		n += m
	}
	end += 4
	body := contentLength(buf[:end])
	msg := int64(end) + body
	if int64(n) >= msg {
		// The whole message is buffered: one write.
		if _, err := dst.Write(buf[:msg]); err != nil {
			return 0, false
		}
		return copy(buf, buf[msg:n]), true
	}
	if _, err := dst.Write(buf[:n]); err != nil {
		return 0, false
	}
	left := msg - int64(n)
	for left > 0 {
		m, err := src.Read(buf[:min(int64(len(buf)), left)])
		if err != nil {
			return 0, false
		}
		if _, err := dst.Write(buf[:m]); err != nil {
			return 0, false
		}
		left -= int64(m)
	}
	return 0, true
}

// contentLength is the Content-Length of a message head, 0 when none.
func contentLength(head []byte) int64 {
	const key = "\r\ncontent-length:"
	for i := 0; i+len(key) <= len(head); i++ {
		if head[i] != '\r' || !asciiEqualFold(head[i:i+len(key)], key) {
			continue
		}
		var v int64
		for _, c := range head[i+len(key):] {
			switch {
			case c == ' ' || c == '\t':
			case c >= '0' && c <= '9':
				v = v*10 + int64(c-'0')
			default:
				return v
			}
		}
	}
	return 0
}

func asciiEqualFold(b []byte, s string) bool {
	for i := range len(s) {
		c := b[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

var crlfcrlf = []byte("\r\n\r\n")
