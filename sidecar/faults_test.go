package sidecar

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/internal/localnet/localnettest"
)

// Faults, each through a real ferry on loopback: the upstream dies, hangs
// or refuses; the caller is slow or never finishes its headers. Every test
// ends with the documented answer, no goroutine left behind (goleak) and
// no file descriptor left open (/proc/self/fd).

// fdCount is the number of open file descriptors of this process.
func fdCount() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

// fdCheck fails the test if it ends with more open file descriptors than it
// started with. Register it before anything that opens sockets, so it runs
// after their cleanups. It collects garbage while it waits: splice(2)
// borrows pipes from a runtime pool that only a GC (and the pipes'
// finalizers) closes.
func fdCheck(t *testing.T) {
	t.Helper()
	if fdCount() < 0 {
		t.Skip("no /proc/self/fd on this system")
	}
	base := fdCount()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for fdCount() > base {
			if time.Now().After(deadline) {
				t.Errorf("file descriptors: %d at the start, %d at the end:\n%s", base, fdCount(), fdList())
				return
			}
			runtime.GC()
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func fdList() string {
	ents, _ := os.ReadDir("/proc/self/fd")
	var b strings.Builder
	for _, e := range ents {
		target, _ := os.Readlink("/proc/self/fd/" + e.Name())
		fmt.Fprintf(&b, "  %s -> %s\n", e.Name(), target)
	}
	return b.String()
}

// faultCheck is leakCheck plus fdCheck.
func faultCheck(t *testing.T) {
	t.Helper()
	leakCheck(t)
	fdCheck(t)
}

// faultOrigin is a raw upstream whose every connection runs serve.
type faultOrigin struct{ *rawServer }

func startFaultOrigin(t *testing.T, serve func(c net.Conn, br *bufio.Reader)) *faultOrigin {
	t.Helper()
	return &faultOrigin{startRawServer(t, func(c net.Conn) { serve(c, bufio.NewReader(c)) })}
}

// reset closes c with an RST instead of a FIN.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// faultFerry starts a ferry whose outbound listener leads to addr over
// HTTP/1.1 whatever the caller speaks, and returns the outbound base URL.
func faultFerry(t *testing.T, addr, extra string) string {
	t.Helper()
	return "http://" + ferryBoth(t, addr, extra).Addr("outbound")
}

// settingsYAML is config text that sets the given timeouts (YAML flow
// mapping entries, possibly empty) and turns circuit breakers and outlier
// ejection off: these tests assert the status of each failure itself, not
// that of a breaker opened by the previous ones.
func settingsYAML(timeouts string) string {
	return "defaults: { breaker: { consecutive_failures: 0 }, outlier: { consecutive_5xx: 0 }, timeouts: { " + timeouts + " } }"
}

// faultClients are the two ways a caller reaches ferry; their idle
// connections close when the test ends.
func faultClients(t *testing.T) map[string]*http.Client {
	t.Helper()
	cs := map[string]*http.Client{"h1": h1Client(), "h2c": h2cClient()}
	t.Cleanup(func() {
		for _, c := range cs {
			c.CloseIdleConnections()
		}
	})
	return cs
}

// The upstream dies after part of a download: the caller sees the status,
// then a broken body (never a clean, shorter one), and nothing is left open.
func TestFaultUpstreamKilledMidDownload(t *testing.T) {
	faultCheck(t)
	const sent = 100000
	kills := map[string]func(c net.Conn){"fin": func(c net.Conn) { c.Close() }, "rst": reset}
	for _, framing := range []string{"content-length", "chunked"} {
		for kind, kill := range kills {
			o := startFaultOrigin(t, func(c net.Conn, br *bufio.Reader) {
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				if framing == "chunked" {
					fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n", sent, bytes.Repeat([]byte("d"), sent))
				} else {
					fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n%s", bytes.Repeat([]byte("d"), sent))
				}
				kill(c)
			})
			url := faultFerry(t, o.addr(), settingsYAML(""))
			for proto, client := range faultClients(t) {
				t.Run(framing+"/"+kind+"/"+proto, func(t *testing.T) {
					res, err := client.Get(url + "/download")
					if err != nil {
						t.Fatal(err)
					}
					n, err := io.Copy(io.Discard, res.Body)
					res.Body.Close()
					if res.StatusCode != 200 {
						t.Fatalf("status %d", res.StatusCode)
					}
					if err == nil {
						t.Fatalf("read %d bytes and a clean end; want a broken body", n)
					}
					if n > sent {
						t.Fatalf("read %d bytes, the upstream sent %d", n, sent)
					}
				})
			}
		}
	}
}

// endless is an upload body that never ends on its own.
type endless struct{ n atomic.Int64 }

func (e *endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'u'
	}
	e.n.Add(int64(len(p)))
	return len(p), nil
}

// The upstream dies part-way through an upload it has not answered: the
// caller gets 502 naming the upstream.
func TestFaultUpstreamKilledMidUpload(t *testing.T) {
	faultCheck(t)
	for kind, kill := range map[string]func(c net.Conn){"fin": func(c net.Conn) { c.Close() }, "rst": reset} {
		o := startFaultOrigin(t, func(c net.Conn, br *bufio.Reader) {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.CopyN(io.Discard, req.Body, 64<<10)
			kill(c)
		})
		url := faultFerry(t, o.addr(), settingsYAML(""))
		for proto, client := range faultClients(t) {
			t.Run(kind+"/"+proto, func(t *testing.T) {
				for _, length := range []int64{-1, 64 << 20} { // chunked, then declared
					body := &endless{}
					var r io.Reader = body
					if length > 0 {
						r = io.LimitReader(body, length)
					}
					req, _ := http.NewRequest("POST", url+"/upload", r)
					req.ContentLength = length
					res, err := client.Do(req)
					if err != nil {
						t.Fatalf("length %d: %v (sent %d bytes)", length, err, body.n.Load())
					}
					msg, _ := io.ReadAll(res.Body)
					res.Body.Close()
					if res.StatusCode != http.StatusBadGateway || !strings.Contains(res.Header.Get("X-Ferry-Error"), o.addr()) {
						t.Fatalf("length %d: got %d %q (X-Ferry-Error %q), want 502 naming %s", length, res.StatusCode, msg, res.Header.Get("X-Ferry-Error"), o.addr())
					}
				}
			})
		}
	}
}

// The upstream sends headers and a little body, then hangs with the
// connection open: timeouts.body_idle breaks the caller's body and ferry
// closes the upstream connection.
func TestFaultUpstreamHangsAfterHeaders(t *testing.T) {
	faultCheck(t)
	hung := make(chan struct{}, 4)
	o := startFaultOrigin(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
		hung <- struct{}{}
		// Hang until ferry gives up and closes the connection.
		io.Copy(io.Discard, br)
	})
	url := faultFerry(t, o.addr(), settingsYAML("body_idle: 300ms"))
	for proto, client := range faultClients(t) {
		t.Run(proto, func(t *testing.T) {
			before := o.ended.Load()
			start := time.Now()
			res, err := client.Get(url + "/hang")
			if err != nil {
				t.Fatal(err)
			}
			recv(t, hung, 5*time.Second, "origin to hang")
			b, err := io.ReadAll(res.Body)
			res.Body.Close()
			if err == nil || string(b) != "0123456789" {
				t.Fatalf("read %q, err %v: want the 10 bytes sent, then a broken body", b, err)
			}
			if d := time.Since(start); d < 300*time.Millisecond || d > 5*time.Second {
				t.Fatalf("body broke after %v, want about timeouts.body_idle (300ms)", d)
			}
			waitFor(t, "ferry to close the hung upstream connection", 5*time.Second, func() bool { return o.ended.Load() > before })
		})
	}
}

// The upstream accepts and never answers: timeouts.response_header answers
// 504 and the upstream connection is closed.
func TestFaultUpstreamHangsBeforeHeaders(t *testing.T) {
	faultCheck(t)
	o := startFaultOrigin(t, func(c net.Conn, br *bufio.Reader) { io.Copy(io.Discard, br) })
	url := faultFerry(t, o.addr(), settingsYAML("response_header: 300ms"))
	for proto, client := range faultClients(t) {
		t.Run(proto, func(t *testing.T) {
			before := o.ended.Load()
			res, err := client.Get(url + "/silent")
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != http.StatusGatewayTimeout || !strings.Contains(res.Header.Get("X-Ferry-Error"), "timeouts.response_header") {
				t.Fatalf("got %d %q, want 504 naming timeouts.response_header", res.StatusCode, res.Header.Get("X-Ferry-Error"))
			}
			waitFor(t, "ferry to close the silent upstream connection", 5*time.Second, func() bool { return o.ended.Load() > before })
		})
	}
}

// Nothing listens at the endpoint: 502 naming it.
func TestFaultConnectionRefused(t *testing.T) {
	faultCheck(t)
	dead := localnettest.RefusedAddr(t)
	url := faultFerry(t, dead, settingsYAML(""))
	for proto, client := range faultClients(t) {
		t.Run(proto, func(t *testing.T) {
			for range 3 { // nothing accumulates over repeated failures
				res, err := client.Get(url + "/x")
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				reason := res.Header.Get("X-Ferry-Error")
				if res.StatusCode != http.StatusBadGateway || !strings.Contains(reason, dead) || !strings.Contains(reason, "refused") {
					t.Fatalf("got %d %q, want 502 naming %s and the refusal", res.StatusCode, reason, dead)
				}
			}
		})
	}
}

// The upstream resets the connection, on accept or after reading the
// request: 502 naming it.
func TestFaultUpstreamReset(t *testing.T) {
	faultCheck(t)
	for _, when := range []string{"on-accept", "after-request"} {
		o := startFaultOrigin(t, func(c net.Conn, br *bufio.Reader) {
			if when == "after-request" {
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
			}
			reset(c)
		})
		url := faultFerry(t, o.addr(), settingsYAML(""))
		for proto, client := range faultClients(t) {
			t.Run(when+"/"+proto, func(t *testing.T) {
				res, err := client.Get(url + "/x")
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != http.StatusBadGateway || !strings.Contains(res.Header.Get("X-Ferry-Error"), o.addr()) {
					t.Fatalf("got %d %q, want 502 naming %s", res.StatusCode, res.Header.Get("X-Ferry-Error"), o.addr())
				}
			})
		}
	}
}

// sysctlMax reads the last field of a /proc/sys file (the maximum of
// tcp_rmem and tcp_wmem).
func sysctlMax(path string, def int64) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return def
	}
	f := strings.Fields(string(b))
	n, err := strconv.ParseInt(f[len(f)-1], 10, 64)
	if err != nil {
		return def
	}
	return n
}

// A caller that stops reading holds the upstream back through ferry
// (backpressure): what the upstream managed to write beyond what the caller
// read is bounded by socket buffers, ferry's heap does not grow, and when
// the caller hangs up ferry stops the upstream.
func TestFaultSlowClientBackpressure(t *testing.T) {
	faultCheck(t)
	var written atomic.Int64
	stopped := make(chan error, 4)
	o := startFaultOrigin(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")
		buf := bytes.Repeat([]byte("s"), 64<<10)
		for {
			n, err := c.Write(buf)
			written.Add(int64(n))
			if err != nil {
				stopped <- err
				return
			}
		}
	})
	url := faultFerry(t, o.addr(), settingsYAML(""))
	// Loopback can queue up to the kernel maxima in each of the two
	// connections' send and receive buffers.
	sockets := 2 * (sysctlMax("/proc/sys/net/ipv4/tcp_wmem", 4<<20) + sysctlMax("/proc/sys/net/ipv4/tcp_rmem", 6<<20))
	bound := sockets + 4*mib
	for proto, client := range faultClients(t) {
		t.Run(proto, func(t *testing.T) {
			written.Store(0)
			res, err := client.Get(url + "/firehose")
			if err != nil {
				t.Fatal(err)
			}
			read, err := io.CopyN(io.Discard, res.Body, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			runtime.GC()
			heap0, _ := readMem()
			// The caller stops reading; wait for the upstream to stall.
			var last int64 = -1
			stable := 0
			waitFor(t, "the upstream to stall", 20*time.Second, func() bool {
				time.Sleep(50 * time.Millisecond)
				n := written.Load()
				if n == last {
					stable++
				} else {
					stable = 0
				}
				last = n
				return stable >= 4
			})
			runtime.GC()
			heap1, _ := readMem()
			ahead := written.Load() - read
			t.Logf("%s: caller read %d bytes, upstream wrote %d (%.1f MiB ahead; bound %.1f MiB); live heap %+.2f MiB while stalled",
				proto, read, written.Load(), float64(ahead)/float64(mib), float64(bound)/float64(mib), float64(int64(heap1)-int64(heap0))/float64(mib))
			if ahead > bound {
				t.Errorf("upstream got %d bytes ahead of the caller, bound %d: ferry is buffering", ahead, bound)
			}
			if growth := int64(heap1) - int64(heap0); growth > maxHeapGrowth {
				t.Errorf("live heap grew %d bytes while the caller stalled, bound %d", growth, maxHeapGrowth)
			}
			res.Body.Close()
			// The caller hung up: ferry must stop the upstream.
			if err := recv(t, stopped, 10*time.Second, "the upstream write to fail after the caller left"); err == nil {
				t.Fatal("upstream write ended without error")
			}
		})
	}
}

// Slowloris: callers that never finish their request headers, on every
// listener, are cut at limits.read_header_timeout and reach no upstream.
func TestFaultSlowloris(t *testing.T) {
	faultCheck(t)
	var reached atomic.Int64
	o := startFaultOrigin(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err == nil {
			reached.Add(1)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		}
	})
	sc := ferryBoth(t, o.addr(), "limits: { read_header_timeout: 300ms }")
	const perListener = 10
	type victim struct {
		name string
		c    net.Conn
	}
	var victims []victim
	// The last victim's read_header_timeout starts when ferry accepts
	// it, after this: no cut may come sooner than 300ms from here.
	var lastDial time.Time
	for _, listener := range []string{"outbound", "inbound", "admin"} {
		for i := range perListener {
			lastDial = time.Now()
			c, err := net.Dial("tcp", sc.Addr(listener))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			// Half the callers dribble header lines, half start an
			// HTTP/2 preface and stop.
			if i%2 == 0 {
				io.WriteString(c, "GET / HTTP/1.1\r\nHost: svc.example\r\n")
			} else {
				io.WriteString(c, "PRI * HTTP/2.0\r\n")
			}
			victims = append(victims, victim{fmt.Sprintf("%s#%d", listener, i), c})
		}
	}
	start := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	var dribblers sync.WaitGroup
	for i, v := range victims {
		if i%2 != 0 {
			continue
		}
		dribblers.Add(1)
		go func(c net.Conn) {
			defer dribblers.Done()
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for n := 0; ; n++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				if _, err := fmt.Fprintf(c, "X-Slow-%d: x\r\n", n); err != nil {
					return
				}
			}
		}(v.c)
	}
	defer func() { cancel(); dribblers.Wait() }()
	for _, v := range victims {
		v.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := io.ReadAll(v.c)
		if isTimeout(err) {
			t.Fatalf("%s: still open after %v", v.name, time.Since(start))
		}
	}
	if d := time.Since(lastDial); d < 300*time.Millisecond {
		t.Fatalf("the last caller was cut %v after it dialled, before read_header_timeout", d)
	}
	t.Logf("%d slow callers cut within %v", len(victims), time.Since(start))
	if n := reached.Load(); n != 0 {
		t.Fatalf("%d slow requests reached the upstream", n)
	}
	// The listeners still serve.
	client := faultClients(t)["h1"]
	for _, listener := range []string{"outbound", "inbound"} {
		res, err := client.Get("http://" + sc.Addr(listener) + "/ok")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("%s after the attack: %d", listener, res.StatusCode)
		}
	}
}

// handlersRunning counts ferry handlers in progress, from the goroutine
// stacks.
func handlersRunning() int {
	buf := make([]byte, 4<<20)
	n := runtime.Stack(buf, true)
	return strings.Count(string(buf[:n]), "sidecar.(*Proxy).ServeHTTP(")
}

// A caller that stops reading a response, and neither reads on nor hangs
// up, is cut by body_idle or overall like an upstream that stalls: the
// upstream's connection closes and so does the exchange, on ferry's own
// HTTP/1.1 lane (a spliced Content-Length body and a chunked one), on a
// connection net/http serves, and over h2c. Closing the upstream's side
// alone left ferry writing to the caller for as long as the caller
// pleased, with its goroutine, buffers and connection.
func TestFaultStalledCallerCutByTimeouts(t *testing.T) {
	faultCheck(t)
	for _, timeouts := range []string{"body_idle: 300ms", "connect: 200ms, response_header: 200ms, body_idle: 1h, overall: 500ms"} {
		stopped := make(chan error, 1)
		o := startFaultOrigin(t, func(c net.Conn, br *bufio.Reader) {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			chunk := bytes.Repeat([]byte("s"), 64<<10)
			if req.URL.Path == "/chunked" {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
				chunk = append(append([]byte("fff0\r\n"), chunk[:0xfff0]...), "\r\n"...)
			} else {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n")
			}
			for {
				if _, err := c.Write(chunk); err != nil {
					stopped <- err
					return
				}
			}
		})
		url := faultFerry(t, o.addr(), settingsYAML(timeouts))
		callers := []struct{ name, head string }{
			{"lane-length", "GET /length HTTP/1.1\r\nHost: x\r\n\r\n"},
			{"lane-chunked", "GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n"},
			{"lane-http1.0-close-delimited", "GET /chunked HTTP/1.0\r\nHost: x\r\n\r\n"},
			{"net/http", "GET /length HTTP/1.0\r\n\r\n"}, // no Host: handed over
			{"h2c", ""},
		}
		for _, caller := range callers {
			t.Run(timeouts+"/"+caller.name, func(t *testing.T) {
				if caller.head == "" {
					client := faultClients(t)["h2c"]
					res, err := client.Get(url + "/length")
					if err != nil {
						t.Fatal(err)
					}
					defer res.Body.Close()
				} else {
					c := dialRaw(t, url)
					io.WriteString(c, caller.head)
					if _, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil {
						t.Fatal(err)
					}
				}
				// The caller reads no more and stays.
				recv(t, stopped, 10*time.Second, "the upstream's connection to close")
				deadline := time.Now().Add(5 * time.Second)
				for handlersRunning() > 0 {
					if time.Now().After(deadline) {
						t.Fatalf("the exchange still runs 5s after its upstream was cut (%s): ferry is still writing to a caller that stopped reading", timeouts)
					}
					time.Sleep(10 * time.Millisecond)
				}
			})
		}
	}
}

// An HTTP/1.1 upstream's response head is bounded at 1 MiB whichever of
// ferry's clients reads it (its own for bodiless requests and large
// uploads, net/http's Transport for other bodies): a larger one is a 502
// that says so, a smaller one is relayed.
func TestFaultUpstreamResponseHeadLimit(t *testing.T) {
	faultCheck(t)
	o := startFaultOrigin(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			n, _ := strconv.Atoi(strings.TrimPrefix(req.URL.Path, "/"))
			body := "ok"
			if req.Method == http.MethodHead {
				body = ""
			}
			if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nX-Big: %s\r\nContent-Length: 2\r\n\r\n%s", strings.Repeat("b", n), body); err != nil {
				return
			}
		}
	})
	url := faultFerry(t, o.addr(), settingsYAML(""))
	bodies := map[string]func() io.Reader{
		"GET":          nil,
		"HEAD":         nil,
		"POST":         func() io.Reader { return strings.NewReader("small body") },
		"POST-spliced": func() io.Reader { return bytes.NewReader(make([]byte, 100<<10)) },
	}
	for proto, client := range faultClients(t) {
		for kind, body := range bodies {
			for _, size := range []int{512 << 10, 2 << 20} {
				t.Run(fmt.Sprintf("%s/%s/%d", proto, kind, size), func(t *testing.T) {
					method, _, _ := strings.Cut(kind, "-")
					var rd io.Reader
					if body != nil {
						rd = body()
					}
					req, _ := http.NewRequest(method, fmt.Sprintf("%s/%d", url, size), rd)
					res, err := client.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					io.Copy(io.Discard, res.Body)
					res.Body.Close()
					reason := res.Header.Get("X-Ferry-Error")
					if size < 1<<20 {
						if res.StatusCode != 200 || len(res.Header.Get("X-Big")) != size {
							t.Fatalf("got %d %q with an X-Big of %d bytes, want 200 and %d", res.StatusCode, reason, len(res.Header.Get("X-Big")), size)
						}
						return
					}
					if res.StatusCode != http.StatusBadGateway || !strings.Contains(reason, "response headers exceeded 1048576 bytes") {
						t.Fatalf("got %d %q, want 502 saying the response headers exceeded 1048576 bytes", res.StatusCode, reason)
					}
				})
			}
		}
	}
}
