package sidecar

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// startFerry loads config text (listeners may use port 0), starts a sidecar
// and stops it when the test ends.
func startFerry(t testing.TB, yamlText string) *Sidecar {
	t.Helper()
	cfg, err := ParseConfig([]byte(yamlText))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yamlText)
	}
	if cfg.Telemetry.AccessLog == "" {
		cfg.Telemetry.AccessLog = "off" // tests that read it use tracedFerry
	}
	return startSidecar(t, cfg, Options{})
}

// startSidecar starts a sidecar built from cfg and opts and stops it when
// the test ends.
func startSidecar(t testing.TB, cfg *Config, opts Options) *Sidecar {
	t.Helper()
	sc, err := New(cfg, opts)
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	if err := sc.Start(); err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		sc.Shutdown(ctx)
	})
	return sc
}

// outboundTo starts a ferry whose outbound listener routes every request to
// one service with the given endpoints, and returns it with the outbound
// base URL.
func outboundTo(t testing.TB, extra string, endpoints ...string) (*Sidecar, string) {
	t.Helper()
	sc := startFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound:
  listen: 127.0.0.1:0
  routes: [ { service: svc } ]
services:
  svc: { endpoints: [%s] }
%s`, strings.Join(endpoints, ", "), extra))
	return sc, "http://" + sc.Addr("outbound")
}

// origin starts an upstream HTTP server (HTTP/1.1 and h2c) on loopback.
func origin(t testing.TB, h http.Handler) string {
	t.Helper()
	return originOn(t, "127.0.0.1:0", h)
}

// originOn is origin listening at addr.
func originOn(t testing.TB, addr string, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: p}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// h1Client is a plain HTTP/1.1 client that never uses a proxy from the
// environment and never asks for compression.
func h1Client() *http.Client {
	return &http.Client{Transport: &http.Transport{Proxy: nil, DisableCompression: true}}
}

// h2cClient speaks HTTP/2 with prior knowledge over cleartext.
func h2cClient() *http.Client {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Proxy: nil, DisableCompression: true, Protocols: p}}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// recv waits for a value on ch or fails the test after d.
func recv[T any](t testing.TB, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("timed out after %v waiting for %s", d, what)
		var zero T
		return zero
	}
}

// bodyCounter counts upstream response bodies opened and closed, to prove
// every upstream body is closed on every path.
type bodyCounter struct{ opened, closed atomic.Int64 }

type trackingTransport struct {
	base http.RoundTripper
	c    *bodyCounter
}

func (tt *trackingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	res, err := tt.base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	tt.c.opened.Add(1)
	if rwc, ok := res.Body.(io.ReadWriteCloser); ok {
		res.Body = &trackedRWC{ReadWriteCloser: rwc, c: tt.c}
	} else {
		res.Body = &trackedBody{ReadCloser: res.Body, c: tt.c}
	}
	return res, nil
}

type trackedBody struct {
	io.ReadCloser
	c    *bodyCounter
	once sync.Once
}

func (b *trackedBody) Close() error {
	b.once.Do(func() { b.c.closed.Add(1) })
	return b.ReadCloser.Close()
}

type trackedRWC struct {
	io.ReadWriteCloser
	c    *bodyCounter
	once sync.Once
}

func (b *trackedRWC) Close() error {
	b.once.Do(func() { b.c.closed.Add(1) })
	return b.ReadWriteCloser.Close()
}

// track makes every upstream of sc count its response bodies. Call it
// before the first request.
func track(sc *Sidecar) *bodyCounter {
	c := new(bodyCounter)
	for _, up := range sc.allUpstreams() {
		up.h1 = &trackingTransport{base: up.h1, c: c}
		up.h2c = &trackingTransport{base: up.h2c, c: c}
	}
	return c
}

// rawServer is a loopback TCP server that runs serve on every connection.
// Its cleanup stops accepting, closes every connection and waits for the
// serve calls to return, so tests end with nothing left behind.
type rawServer struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	ended atomic.Int64 // serve calls returned
}

func startRawServer(t testing.TB, serve func(c net.Conn)) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{ln: ln, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns[c] = struct{}{}
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer s.ended.Add(1)
				defer func() {
					c.Close()
					s.mu.Lock()
					delete(s.conns, c)
					s.mu.Unlock()
				}()
				serve(c)
			}()
		}
	}()
	t.Cleanup(s.close)
	return s
}

func (s *rawServer) addr() string { return s.ln.Addr().String() }

// open is how many connections are still being served.
func (s *rawServer) open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (s *rawServer) close() {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// listening reports whether this process holds a listening TCP socket on
// addr's port: the sockets the kernel lists in LISTEN state on that port
// (/proc/net/tcp and tcp6), matched by inode against this process's open
// descriptors. Unlike a dial, it cannot be answered by another process
// that bound the same port the moment ferry let it go, which a loaded
// machine running other tests does now and then.
func listening(t testing.TB, addr string) bool {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			// sl local_address rem_address st ... uid timeout inode
			fs := strings.Fields(line)
			if len(fs) < 10 || fs[3] != "0A" {
				continue
			}
			_, hexPort, _ := strings.Cut(fs[1], ":")
			if n, err := strconv.ParseUint(hexPort, 16, 16); err == nil && int(n) == port {
				inodes[fs[9]] = true
			}
		}
	}
	if len(inodes) == 0 {
		return false
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		link, err := os.Readlink("/proc/self/fd/" + fd.Name())
		if err != nil {
			continue
		}
		if ino, ok := strings.CutPrefix(link, "socket:["); ok && inodes[strings.TrimSuffix(ino, "]")] {
			return true
		}
	}
	return false
}
