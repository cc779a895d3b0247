package sidecar

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The memory a caller connection costs ferry while it does nothing: an
// idle HTTP/1.1 keep-alive connection (the lane's), an idle h2c
// connection (net/http's HTTP/2 server), and a slowloris connection, its
// request head half sent. Each test opens connCount connections to the
// outbound listener and reads the live heap and goroutine stacks before
// and after, minus what the same connections cost on a listener that
// only accepts and holds them (the sockets' own Go objects, both ends).

const connCount = 2000

type connMem struct{ heap, stacks, goroutines int64 }

func readConnMem() connMem {
	for range 2 {
		runtime.GC()
	}
	s := []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/stacks:bytes"},
		{Name: "/sched/goroutines:goroutines"},
	}
	metrics.Read(s)
	return connMem{int64(s[0].Value.Uint64()), int64(s[1].Value.Uint64()), int64(s[2].Value.Uint64())}
}

// perConn is the cost per connection of what open did, less base bytes.
// The connections stay open until the test ends.
func perConn(t *testing.T, what string, base int64, open func() []net.Conn) (int64, []net.Conn) {
	t.Helper()
	before := readConnMem()
	conns := open()
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	// The server side settles: its goroutines parked, heads read.
	stable, last := 0, int64(-1)
	for deadline := time.Now().Add(10 * time.Second); stable < 3 && time.Now().Before(deadline); {
		g := int64(runtime.NumGoroutine())
		if g == last {
			stable++
		} else {
			stable = 0
		}
		last = g
		time.Sleep(20 * time.Millisecond) // polling the goroutine count
	}
	after := readConnMem()
	heap := (after.heap - before.heap) / int64(len(conns))
	stacks := (after.stacks - before.stacks) / int64(len(conns))
	t.Logf("%s: %d connections: heap %+d B/conn (%+d B/conn over the bare sockets), goroutine stacks %+d B/conn, goroutines %+.2f/conn",
		what, len(conns), heap, heap-base, stacks, float64(after.goroutines-before.goroutines)/float64(len(conns)))
	return heap - base + stacks, conns
}

func dialAll(t *testing.T, addr string, greet func(net.Conn) error) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, 0, connCount)
	for range connCount {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			t.Fatal(err)
		}
		conns = append(conns, c)
		if greet != nil {
			if err := greet(c); err != nil {
				for _, c := range conns {
					c.Close()
				}
				t.Fatal(err)
			}
		}
	}
	return conns
}

// bareSockets is what connCount connections cost on a listener that only
// accepts and keeps them.
func bareSockets(t *testing.T) int64 {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan []net.Conn, 1)
	go func() {
		var held []net.Conn
		for len(held) < connCount {
			c, err := ln.Accept()
			if err != nil {
				break
			}
			held = append(held, c)
		}
		accepted <- held
	}()
	before := readConnMem()
	conns := dialAll(t, ln.Addr().String(), nil)
	held := <-accepted
	after := readConnMem()
	for _, c := range append(conns, held...) {
		c.Close()
	}
	per := (after.heap - before.heap) / connCount
	t.Logf("bare sockets: %d connections, both ends: heap %+d B/conn", connCount, per)
	return per
}

func skipConnMemory(t *testing.T) {
	t.Helper()
	if testing.Short() || raceEnabled {
		t.Skip("opens thousands of connections; skipped with -short and -race")
	}
}

// idleH1 sends one request and reads its response, leaving the
// connection idle in keep-alive.
func idleH1(c net.Conn) error {
	if _, err := io.WriteString(c, "GET /x HTTP/1.1\r\nHost: svc\r\n\r\n"); err != nil {
		return err
	}
	res, err := http.ReadResponse(bufio.NewReaderSize(c, 512), nil)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return err
}

// idleH2C opens an h2c connection with prior knowledge, makes one request
// and reads its response to the end, leaving the connection idle.
func idleH2C(c net.Conn) error {
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "svc"}, {":path", "/x"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		return err
	}
	fr := http2.NewFramer(c, bufio.NewReaderSize(c, 512))
	fr.WriteSettings()
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true})
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return err
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.DataFrame:
			if f.StreamEnded() {
				return nil
			}
		case *http2.HeadersFrame:
			if f.StreamEnded() {
				return nil
			}
		}
	}
}

// halfHead sends the first lines of a request head and stops.
func halfHead(c net.Conn) error {
	_, err := io.WriteString(c, "GET /x HTTP/1.1\r\nHost: svc\r\n")
	return err
}

func connMemFerry(t *testing.T) string {
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	sc, _ := outboundTo(t, "limits: { read_header_timeout: 5m, idle_timeout: 5m }\n", up)
	return sc.Addr("outbound")
}

func TestConnMemoryIdleH1(t *testing.T) {
	skipConnMemory(t)
	base := bareSockets(t)
	addr := connMemFerry(t)
	warm, err := net.Dial("tcp", addr) // warm the pools and the upstream connection
	if err != nil {
		t.Fatal(err)
	}
	defer warm.Close()
	if err := idleH1(warm); err != nil {
		t.Fatal(err)
	}
	per, conns := perConn(t, "idle HTTP/1.1 keep-alive", base, func() []net.Conn {
		conns := dialAll(t, addr, idleH1)
		// Past idleHold the lane gives their buffers back.
		for deadline := time.Now().Add(idleHold + 10*time.Second); laneParked.Load() < connCount; {
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d idle connections gave their buffers back", laneParked.Load(), connCount)
			}
			time.Sleep(10 * time.Millisecond) // polling laneParked
		}
		return conns
	})
	t.Logf("idle HTTP/1.1 keep-alive: %d B/conn with stacks", per)
	// The lane's own state, an idle timer and a parked goroutine; its
	// 8 KiB read and 4 KiB write buffers held, it was 20 KiB.
	if per > maxIdleConnBytes {
		t.Errorf("an idle keep-alive connection costs %d bytes, bound %d", per, maxIdleConnBytes)
	}
	// The next request on each is served as before.
	for _, c := range conns {
		if err := idleH1(c); err != nil {
			t.Fatal(err)
		}
	}
}

const maxIdleConnBytes = 8 << 10

// An idle h2c connection (net/http's HTTP/2 server: two goroutines, its
// framer's buffers) and a slowloris one (the lane holds the half head in
// its buffer until read_header_timeout) keep what they cost; the bounds
// only catch a regression from the figures the README gives.
func TestConnMemoryIdleH2CAndSlowloris(t *testing.T) {
	skipConnMemory(t)
	for _, tc := range []struct {
		what  string
		greet func(net.Conn) error
		bound int64
	}{
		{"idle h2c", idleH2C, 48 << 10},
		{"slowloris (half a head)", halfHead, 24 << 10},
	} {
		t.Run(tc.what, func(t *testing.T) {
			base := bareSockets(t)
			addr := connMemFerry(t)
			per, _ := perConn(t, tc.what, base, func() []net.Conn { return dialAll(t, addr, tc.greet) })
			t.Logf("%s: %d B/conn with stacks", tc.what, per)
			if per > tc.bound {
				t.Errorf("%s: %d bytes per connection, bound %d", tc.what, per, tc.bound)
			}
		})
	}
}

// scrape returns the value of one series on ferry's /metrics ("" if absent).
func scrape(t *testing.T, sc *Sidecar, series string) string {
	t.Helper()
	res, err := http.Get("http://" + sc.Addr("admin") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	for _, line := range bytes.Split(b, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte(series+" ")); ok {
			return string(v)
		}
	}
	return ""
}
