package main

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The helper servers the harness runs, each in its own process (the
// `origin`, `stdproxy` and `l4relay` subcommands), so the CPU and memory
// read from /proc for a proxy are the proxy's alone.

// bodyBlock is the repeating unit of every generated body: 64 KiB of
// seeded pseudo-random bytes, the same in every process.
var bodyBlock = func() []byte {
	b := make([]byte, 64<<10)
	r := rand.NewChaCha8([32]byte{'f', 'e', 'r', 'r', 'y', 'b', 'e', 'n', 'c', 'h'})
	_, _ = r.Read(b)
	return b
}()

// bodyReader yields n bytes of the repeating block.
type bodyReader struct{ left, off int64 }

func newBody(n int64) *bodyReader { return &bodyReader{left: n} }

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

// originHandler serves GET /?size=N (N bytes with Content-Length) and
// drains any request body, answering with the byte count it read.
func originHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost || r.Method == http.MethodPut {
			buf := make([]byte, 256<<10)
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

func serveOrigin(listen string) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("origin: listen %s: %w", listen, err)
	}
	srv := &http.Server{Handler: originHandler(), ReadHeaderTimeout: 10 * time.Second}
	return srv.Serve(ln)
}

// serveStdProxy is the baseline: net/http/httputil.ReverseProxy with a
// transport that keeps enough idle upstream connections for 256 callers.
// With otlpEndpoint set, the handler and the transport are wrapped in
// otelhttp and every span is exported there (for scale in the tracing
// comparison).
func serveStdProxy(listen, upstream, otlpEndpoint string) error {
	u, err := url.Parse("http://" + upstream)
	if err != nil {
		return fmt.Errorf("stdproxy: upstream %q: %w", upstream, err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = 1024
	tr.MaxIdleConnsPerHost = 1024
	tr.ForceAttemptHTTP2 = false
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.SetXForwarded()
		},
		Transport: tr,
	}
	var h http.Handler = rp
	if otlpEndpoint != "" {
		if h, err = withOTel(rp, otlpEndpoint); err != nil {
			return fmt.Errorf("stdproxy: %w", err)
		}
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("stdproxy: listen %s: %w", listen, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	return srv.Serve(ln)
}

// serveL4Relay accepts TCP connections and relays bytes to upstream with
// io.Copy between *net.TCPConn values, which Go turns into splice(2).
func serveL4Relay(listen, upstream string) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("l4relay: listen %s: %w", listen, err)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return fmt.Errorf("l4relay: accept: %w", err)
		}
		go relay(c.(*net.TCPConn), upstream)
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

// otlpSink is a local OTLP/HTTP trace receiver that discards what it gets:
// 200 with an empty ExportTraceServiceResponse to POST /v1/traces.
type otlpSink struct {
	requests, bytes atomic.Int64
	srv             *http.Server
	addr            string
}

func startOTLPSink() (*otlpSink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("otlp sink: listen: %w", err)
	}
	s := &otlpSink{addr: ln.Addr().String()}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		s.requests.Add(1)
		s.bytes.Add(n)
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	})
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Printf("otlp sink: %v\n", err)
		}
	}()
	return s, nil
}

func (s *otlpSink) close() { _ = s.srv.Close() }
