package sidecar

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// HTTP/2 flow control: net/http gives a connection's window back only as a
// stream's buffered data is read, so a connection window smaller than the
// sum of its streams' windows lets a few stalled streams stop every other
// stream on it. ferry's streams are bounded one by one; the connection
// must not couple them.

// Each stalled stream below may have its own window's worth in flight on
// ferry (256 KiB) plus a relay buffer and the far side's window; the
// thresholds sit under that and far over what a 4 MiB connection window
// shared by all would leave each.
const (
	// 40 responses of 272 KiB: 10.6 MiB, against at most 4 MiB plus 40
	// relay buffers and caller windows (7.75 MiB) when coupled, about
	// 352 KiB each when not.
	slowReaders   = 40
	slowReadBytes = 272 << 10
	// 80 uploads each taken to 304 KiB by the caller's client: when
	// coupled, at most 4 MiB plus 80 times the origin's 64 KiB window and
	// the client's 64 KiB buffer and a 16 KiB chunk (195 KiB each); when
	// not, ferry's 256 KiB window and the origin's 64 KiB at least
	// (344-410 KiB seen).
	stalledUploads    = 80
	stalledUploadTook = 304 << 10
)

// Callers that stop reading their responses hold at most their own
// streams' windows on ferry's pooled h2c upstream connection: the other
// callers' responses on that connection still arrive.
func TestH2CSlowReadersDoNotStallUpstreamConnection(t *testing.T) {
	var sent atomic.Int64 // slow responses the origin got out whole
	addr := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fast" {
			io.WriteString(w, "fast")
			return
		}
		chunk := make([]byte, 16<<10)
		for n := 0; n < slowReadBytes; n += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
		w.(http.Flusher).Flush()
		sent.Add(1)
		<-r.Context().Done()
	}))
	_, base := ferryWithProtocol(t, "h2c", addr)

	// Slow callers: 64 KiB windows, bodies never read.
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	slow := &http.Client{Transport: &http.Transport{Protocols: p, HTTP2: &http.HTTP2Config{
		MaxReceiveBufferPerStream: 64 << 10, MaxReceiveBufferPerConnection: 1 << 30,
	}}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	t.Cleanup(slow.CloseIdleConnections)
	for range slowReaders {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/slow", nil)
		res, err := slow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
	}
	deadline := time.Now().Add(10 * time.Second)
	for sent.Load() < slowReaders {
		if time.Now().After(deadline) {
			t.Fatalf("the origin got %d of %d slow responses out: the callers that do not read hold the whole upstream connection", sent.Load(), slowReaders)
		}
		time.Sleep(5 * time.Millisecond)
	}

	fast := h2cFor(t)
	fctx, fcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer fcancel()
	req, _ := http.NewRequestWithContext(fctx, http.MethodGet, base+"/fast", nil)
	res, err := fast.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || string(body) != "fast" {
		t.Fatalf("another caller's answer, beside %d stalled streams: %q, %v", slowReaders, body, err)
	}
}

// Uploads an upstream does not take hold at most their own streams'
// windows on the caller's connection to ferry: another request on that
// connection still gets its body through.
func TestH2CStalledUploadsDoNotStallCallerConnection(t *testing.T) {
	release := make(chan struct{})
	addr := h2cOrigin(t, &http.HTTP2Config{
		MaxReceiveBufferPerStream: 64 << 10, MaxReceiveBufferPerConnection: 1 << 30,
	}, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/echo" {
			io.Copy(w, r.Body)
			return
		}
		select { // takes nothing of the body
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer close(release)
	_, base := ferryWithProtocol(t, "h2c", addr)

	c := h2cFor(t) // one connection for all
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var taken [stalledUploads]atomic.Int64 // body bytes the caller's client took
	for i := range stalledUploads {
		go func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/hold", &countingZeros{n: &taken[i]})
			if res, err := c.Do(req); err == nil {
				res.Body.Close()
			}
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		behind := 0
		for i := range taken {
			if taken[i].Load() < stalledUploadTook {
				behind++
			}
		}
		if behind == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d uploads could not send %d bytes: the stalled ones hold the whole caller connection", behind, stalledUploads, stalledUploadTook)
		}
		time.Sleep(5 * time.Millisecond)
	}

	fctx, fcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer fcancel()
	req, _ := http.NewRequestWithContext(fctx, http.MethodPost, base+"/echo", strings.NewReader("through"))
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || string(body) != "through" {
		t.Fatalf("an upload beside %d stalled ones on the same connection: %q, %v", stalledUploads, body, err)
	}
}

// countingZeros is an endless body of zeros that counts what was read.
type countingZeros struct{ n *atomic.Int64 }

func (z *countingZeros) Read(p []byte) (int, error) {
	clear(p)
	z.n.Add(int64(len(p)))
	return len(p), nil
}

// silencer relays TCP connections to addr until silence is called: from
// then on the connections it carries pass nothing on either way and stay
// open, as behind a dead host or a dropped route. Connections made after
// relay as before.
type silencer struct {
	mu    sync.Mutex
	quiet []*atomic.Bool // one per connection made so far
}

func startSilencer(t *testing.T, addr string) (*silencer, string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &silencer{}
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				continue
			}
			quiet := new(atomic.Bool)
			s.mu.Lock()
			conns = append(conns, c, up)
			s.quiet = append(s.quiet, quiet)
			s.mu.Unlock()
			pipe := func(dst, src net.Conn) {
				buf := make([]byte, 32<<10)
				for {
					n, err := src.Read(buf)
					if quiet.Load() {
						return // passes nothing on again, closes nothing
					}
					dst.Write(buf[:n])
					if err != nil {
						dst.Close()
						return
					}
				}
			}
			go pipe(up, c)
			go pipe(c, up)
		}
	}()
	return s, ln.Addr().String()
}

// silence makes every connection made so far go quiet.
func (s *silencer) silence() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, q := range s.quiet {
		q.Store(true)
	}
}

// An h2c upstream connection that goes quiet (its host died, its route
// dropped: no reset, no close) is found dead by a ping and dropped, so the
// requests after it go out on a new connection instead of waiting out
// response_header, one after another, on the dead one.
func TestH2CQuietUpstreamConnectionDropped(t *testing.T) {
	defer setH2Ping(t, 100*time.Millisecond, 200*time.Millisecond)()
	addr := h2cOrigin(t, nil, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello")
	}))
	sil, via := startSilencer(t, addr)
	_, base := ferryWithProtocol(t, "h2c", via)
	c := h2cFor(t)
	get := func() (int, string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/", nil)
		res, err := c.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		return res.StatusCode, string(b), err
	}
	if code, body, err := get(); err != nil || code != 200 || body != "hello" {
		t.Fatalf("first request: %d %q %v", code, body, err)
	}
	sil.silence()
	// Whatever the request in flight as the connection is found dead gets
	// (a retry on a new connection, or a 502), the ones after it are
	// answered.
	start := time.Now()
	code, body, err := get()
	t.Logf("the request in flight as the connection went quiet: %d %q %v after %v", code, body, err, time.Since(start).Round(time.Millisecond))
	for i := range 3 {
		if code, body, err := get(); err != nil || code != 200 || body != "hello" {
			t.Fatalf("request %d after the upstream connection went quiet: %d %q %v", i+1, code, body, err)
		}
	}
}

// setH2Ping sets the upstream connections' ping timings for a test and
// returns what restores them.
func setH2Ping(t *testing.T, after, timeout time.Duration) func() {
	a, o := h2PingAfter, h2PingTimeout
	h2PingAfter, h2PingTimeout = after, timeout
	return func() { h2PingAfter, h2PingTimeout = a, o }
}
