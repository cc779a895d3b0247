package sidecar

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/ferrymesh/ferry/internal/syncbuf"
)

// Hostile and heavy h2c callers against the outbound listener, which
// net/http's HTTP/2 server runs with ferry's settings (h2Windows: 250
// streams, 256 KiB stream windows, 64 KiB frames). Each caller below
// speaks raw frames; the memory read is the whole process's live heap
// after collections, upstream included.

// h2Caller is a raw HTTP/2 caller with prior knowledge. Its frames go out
// through a buffer: flush sends them.
type h2Caller struct {
	c   net.Conn
	bw  *bufio.Writer
	fr  *http2.Framer
	wmu sync.Mutex // the framer's writes
	hb  bytes.Buffer
	enc *hpack.Encoder
	// goawayDebug is the debug data of the last GOAWAY read.
	goawayDebug string
}

// dialH2 opens a connection to addr, sends the preface and the caller's
// SETTINGS (settings), and reads nothing.
func dialH2(t *testing.T, addr string, settings ...http2.Setting) *h2Caller {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	h := &h2Caller{c: c, bw: bufio.NewWriterSize(c, 64<<10)}
	h.fr = http2.NewFramer(h.bw, bufio.NewReaderSize(c, 64<<10))
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	h.fr.MaxHeaderListSize = 1 << 20
	h.enc = hpack.NewEncoder(&h.hb)
	h.bw.WriteString(http2.ClientPreface)
	h.fr.WriteSettings(settings...)
	if err := h.flush(); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *h2Caller) flush() error { return h.bw.Flush() }

// handshake reads frames until ferry's SETTINGS and acks them: a caller
// that means to send a header block in pieces must not put the ack in the
// middle of it (a protocol error of its own).
func (h *h2Caller) handshake(t *testing.T) {
	t.Helper()
	h.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer h.c.SetReadDeadline(time.Time{})
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading ferry's SETTINGS: %v", err)
		}
		if s, ok := f.(*http2.SettingsFrame); ok && !s.IsAck() {
			h.fr.WriteSettingsAck()
			if err := h.flush(); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
}

// block is the HPACK block of a request's head plus extra fields.
func (h *h2Caller) block(method, path string, extra ...string) []byte {
	h.hb.Reset()
	fields := append([]string{":method", method, ":scheme", "http", ":authority", "svc", ":path", path}, extra...)
	for i := 0; i < len(fields); i += 2 {
		h.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return bytes.Clone(h.hb.Bytes())
}

// request writes a request's HEADERS frame (not flushed).
func (h *h2Caller) request(id uint32, method, path string, endStream bool) error {
	return h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.block(method, path), EndStream: endStream, EndHeaders: true})
}

// answerControl reads frames until the connection ends, acking SETTINGS
// and PINGs, and hands every other frame to on (which may be nil). It
// returns the GOAWAY code seen (or -1) and the read's error.
func (h *h2Caller) answerControl(on func(http2.Frame)) (goaway int, err error) {
	goaway = -1
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			return goaway, err
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				h.wmu.Lock()
				h.fr.WriteSettingsAck()
				h.flush()
				h.wmu.Unlock()
			}
			if on != nil {
				on(f)
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				h.wmu.Lock()
				h.fr.WritePing(true, f.Data)
				h.flush()
				h.wmu.Unlock()
			}
		case *http2.GoAwayFrame:
			goaway = int(f.ErrCode)
			h.goawayDebug = string(f.DebugData())
		default:
			if on != nil {
				on(f)
			}
		}
	}
}

// gcHeap is the live heap after collections.
func gcHeap() int64 { return readConnMem().heap }

// settled polls read until it returns the same value three times in a
// row, 100 ms apart, or d passes; it returns the last value.
// settleWait bounds settled's wait in the stalled-streams test. What moves
// there before everything stalls is mostly what the kernel's socket
// buffers between ferry and the stalled peer take, which they grow (up to
// 4 MiB a socket) as the pace allows: 979 MiB once under heavy load, more
// than 10 s of moving bytes.
const settleWait = time.Minute

func settled(t *testing.T, what string, d time.Duration, read func() int64) int64 {
	t.Helper()
	last, same := read(), 0
	for deadline := time.Now().Add(d); same < 3; {
		if time.Now().After(deadline) {
			t.Fatalf("%s still moving after %v (%d)", what, d, last)
		}
		time.Sleep(100 * time.Millisecond) // polling for a value that stopped moving
		v := read()
		if v == last {
			same++
		} else {
			same, last = 0, v
		}
	}
	return last
}

func skipFlood(t *testing.T) {
	t.Helper()
	if testing.Short() || raceEnabled {
		t.Skip("floods a listener and reads the heap; skipped with -short and -race")
	}
}

// stalledHeadReader is an HTTP/1.1 upstream that reads each request's head
// and then nothing more: the body stays in the sockets.
func stalledHeadReader(t *testing.T) (*rawServer, *atomic.Int64) {
	heads := new(atomic.Int64)
	done := make(chan struct{})
	s := startRawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if line == "\r\n" {
				break
			}
		}
		heads.Add(1)
		<-done
	})
	t.Cleanup(func() { close(done) }) // before the server's close waits for its conns
	return s, heads
}

var _ = errors.New
var _ = fmt.Sprint
var _ = strings.Repeat
var _ = http.MethodGet

// h2Flow is a caller's send windows as the server's SETTINGS and
// WINDOW_UPDATEs set them.
type h2Flow struct {
	mu      sync.Mutex
	conn    int64
	initial int64
	streams map[uint32]int64
	moved   chan struct{} // a window grew
	ready   chan struct{} // the server's SETTINGS came
	once    sync.Once
}

func newH2Flow() *h2Flow {
	return &h2Flow{conn: 65535, initial: 65535, streams: map[uint32]int64{}, moved: make(chan struct{}, 1), ready: make(chan struct{})}
}

func (w *h2Flow) on(f http2.Frame) {
	w.mu.Lock()
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if v, ok := f.Value(http2.SettingInitialWindowSize); ok && !f.IsAck() {
			d := int64(v) - w.initial
			w.initial = int64(v)
			for id := range w.streams {
				w.streams[id] += d
			}
		}
		if !f.IsAck() {
			w.once.Do(func() { close(w.ready) })
		}
	case *http2.WindowUpdateFrame:
		if f.StreamID == 0 {
			w.conn += int64(f.Increment)
		} else if _, ok := w.streams[f.StreamID]; ok {
			w.streams[f.StreamID] += int64(f.Increment)
		}
	}
	w.mu.Unlock()
	select {
	case w.moved <- struct{}{}:
	default:
	}
}

// take reserves up to n bytes of stream id's window and the connection's.
func (w *h2Flow) take(id uint32, n int64) int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	n = min(n, w.conn, w.streams[id])
	if n <= 0 {
		return 0
	}
	w.conn -= n
	w.streams[id] -= n
	return n
}

// h2StreamMemory is what SECURITY.md gives one stalled h2c stream: its
// 256 KiB window and the exchange's own buffers toward the upstream (to an
// HTTP/1.1 one, the Transport's 32 KiB read and write buffers and a 32 KiB
// copy buffer; measured 369 KiB a stream, 90 MiB for 250).
const h2StreamMemory = h2StreamWindow + 144<<10

// checkStreamMemory logs what h2Streams stalled streams of one connection
// moved (total bytes) and grew the live heap (growth), and fails the test
// when the growth is past SECURITY.md's bound.
func checkStreamMemory(t *testing.T, what, moved string, total, growth int64) {
	t.Helper()
	t.Logf("%d %s on one connection: %s %.1f MiB (%.0f KiB a stream), live heap grew %.1f MiB (%.0f KiB a stream)",
		h2Streams, what, moved, float64(total)/float64(mib), float64(total)/h2Streams/1024, float64(growth)/float64(mib), float64(growth)/h2Streams/1024)
	if bound := int64(h2Streams * h2StreamMemory); growth > bound {
		t.Errorf("one caller's %s grew the live heap %d bytes; SECURITY.md's bound is about %d (250 x %d KiB)", what, growth, bound, h2StreamMemory>>10)
	}
}

// One h2c caller connection with all its 250 streams stalled costs ferry a
// bounded heap: uploads an upstream does not read hold the stream window
// each (256 KiB, exactly: 64,000 KiB in net/http's server buffers) plus
// the exchange's buffers toward the HTTP/1.1 upstream (about 100 KiB);
// downloads the caller does not read hold at most ferry's client stream
// window each toward the h2c upstream (256 KiB) plus the relay's buffers.
// What the test's own upstream holds counts too (a 4 KiB chunk a stream).
func TestH2CStalledStreamsMemoryPerConnection(t *testing.T) {
	skipFlood(t)
	t.Run("uploads", func(t *testing.T) {
		up, heads := stalledHeadReader(t)
		sc, _ := ferryWithProtocol(t, "http1", up.addr())
		before := gcHeap()
		h := dialH2(t, sc.Addr("outbound"))
		flow := newH2Flow()
		go h.answerControl(flow.on)
		recv(t, flow.ready, 5*time.Second, "ferry's SETTINGS")
		flow.mu.Lock()
		for i := range h2Streams {
			flow.streams[uint32(2*i+1)] = flow.initial
		}
		flow.mu.Unlock()
		h.wmu.Lock()
		for i := range h2Streams {
			if err := h.request(uint32(2*i+1), http.MethodPost, "/up", false); err != nil {
				t.Fatal(err)
			}
		}
		h.flush()
		h.wmu.Unlock()
		var sent atomic.Int64
		stop := make(chan struct{})
		writerDone := make(chan struct{})
		chunk := make([]byte, 16<<10)
		go func() {
			defer close(writerDone)
			for {
				moved := false
				h.wmu.Lock()
				for i := range h2Streams {
					id := uint32(2*i + 1)
					for {
						n := flow.take(id, int64(len(chunk)))
						if n == 0 {
							break
						}
						if err := h.fr.WriteData(id, false, chunk[:n]); err != nil {
							h.wmu.Unlock()
							return
						}
						sent.Add(n)
						moved = true
					}
				}
				err := h.flush()
				h.wmu.Unlock()
				if err != nil {
					return
				}
				if !moved {
					select {
					case <-flow.moved:
					case <-stop:
						return
					}
				}
			}
		}()
		defer func() { close(stop); <-writerDone }()
		waitFor(t, "every upload's head at the upstream", 10*time.Second, func() bool { return heads.Load() == h2Streams })
		total := settled(t, "bytes the caller got to send", settleWait, sent.Load)
		checkStreamMemory(t, "stalled uploads", "caller sent", total, gcHeap()-before)
	})
	t.Run("downloads", func(t *testing.T) {
		var written atomic.Int64
		addr := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			chunk := make([]byte, 4<<10)
			for {
				n, err := w.Write(chunk)
				written.Add(int64(n))
				if err != nil {
					return
				}
			}
		}))
		sc, _ := ferryWithProtocol(t, "h2c", addr)
		before := gcHeap()
		// Windows as large as allowed, and nothing read: ferry's writes
		// stop only at the sockets.
		h := dialH2(t, sc.Addr("outbound"), http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
		h.fr.WriteWindowUpdate(0, 1<<31-1-65535)
		for i := range h2Streams {
			if err := h.request(uint32(2*i+1), http.MethodGet, "/down", true); err != nil {
				t.Fatal(err)
			}
		}
		if err := h.flush(); err != nil {
			t.Fatal(err)
		}
		total := settled(t, "bytes the upstream got to write", settleWait, written.Load)
		checkStreamMemory(t, "unread downloads", "upstream wrote", total, gcHeap()-before)
	})
}

// floodOrigin counts the requests it gets by path, and how many of those
// to /rr (which it holds until ferry cancels them) were in flight at once.
// logs is the log of the ferry in front of it.
type floodOrigin struct {
	mu        sync.Mutex
	paths     map[string]int
	rr, rrMax int
	logs      *syncbuf.Buffer
}

func (o *floodOrigin) seen(path string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.paths[path]
}

// floodFerry starts a floodOrigin and a ferry in front of it whose
// callers' idle connections close after idle.
func floodFerry(t *testing.T, idle time.Duration) (*Sidecar, *floodOrigin) {
	o := &floodOrigin{paths: map[string]int{}, logs: new(syncbuf.Buffer)}
	addr := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		o.paths[r.URL.Path]++
		if r.URL.Path == "/rr" {
			o.rr++
			o.rrMax = max(o.rrMax, o.rr)
		}
		o.mu.Unlock()
		if r.URL.Path == "/rr" {
			<-r.Context().Done()
			o.mu.Lock()
			o.rr--
			o.mu.Unlock()
			return
		}
		io.WriteString(w, "ok "+r.URL.Path)
	}))
	sc := startSidecar(t, mustParse(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound:
  listen: 127.0.0.1:0
  routes: [ { service: svc } ]
services:
  svc: { endpoints: [%s] }
limits: { idle_timeout: %v }
telemetry: { access_log: "off" }
`, addr, idle)), Options{Log: slog.New(slog.NewTextHandler(o.logs, nil))})
	return sc, o
}

// otherCaller makes one request on a connection of its own and fails the
// test unless ferry answers it.
func otherCaller(t *testing.T, sc *Sidecar, what string) error {
	c := h2cClient()
	defer c.CloseIdleConnections()
	c.Timeout = 5 * time.Second
	res, err := c.Get("http://" + sc.Addr("outbound") + "/other")
	if err != nil {
		return fmt.Errorf("another caller %s: %v", what, err)
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || res.StatusCode != 200 || string(b) != "ok /other" {
		return fmt.Errorf("another caller %s: %d %q %v", what, res.StatusCode, b, err)
	}
	return nil
}

// flood runs a hostile caller: send writes its frames (each call some,
// flushed by the caller) until it returns false, a write fails (ferry
// closed the connection) or max frames went out. Meanwhile another caller
// is served, repeatedly; the live heap is read at the end, the flooding
// connection still open if ferry left it so.
type floodRun struct {
	frames   int
	writeErr error
	goaway   int   // GOAWAY code ferry sent, -1 none
	readErr  error // how the flooding connection's reading ended (nil: still open)
	growth   int64
	others   int
	took     time.Duration
}

func runFlood(t *testing.T, sc *Sidecar, h *h2Caller, read bool, max int, send func(i int) error) floodRun {
	t.Helper()
	before := gcHeap()
	var r floodRun
	r.goaway = -1
	readDone := make(chan struct{})
	if read {
		go func() {
			defer close(readDone)
			r.goaway, r.readErr = h.answerControl(nil)
		}()
	}
	stopOthers := make(chan struct{})
	othersDone := make(chan error, 1)
	go func() {
		n := 0
		defer func() { r.others = n }()
		for {
			if err := otherCaller(t, sc, "during the flood"); err != nil {
				othersDone <- err
				return
			}
			n++
			select {
			case <-stopOthers:
				othersDone <- nil
				return
			default:
			}
		}
	}()
	start := time.Now()
	h.c.SetWriteDeadline(start.Add(8 * time.Second))
	for r.frames < max {
		h.wmu.Lock()
		err := send(r.frames)
		if err == nil {
			err = h.flush()
		}
		h.wmu.Unlock()
		if err != nil {
			r.writeErr = err
			break
		}
		r.frames++
	}
	r.took = time.Since(start)
	if read {
		select {
		case <-readDone:
		case <-time.After(5 * time.Second):
		}
	}
	r.growth = gcHeap() - before
	close(stopOthers)
	if err := <-othersDone; err != nil {
		t.Error(err)
	}
	if err := otherCaller(t, sc, "after the flood"); err != nil {
		t.Error(err)
	}
	return r
}

func (r floodRun) String() string {
	return fmt.Sprintf("%d sends in %v, write error %v, GOAWAY %d, read ended %v, live heap %+.2f MiB, other caller served %d times during",
		r.frames, r.took.Round(time.Millisecond), r.writeErr, r.goaway, r.readErr, float64(r.growth)/float64(mib), r.others)
}

// Floods net/http's HTTP/2 server is meant to withstand, through ferry's
// settings. For each: ferry stays up, its live heap does not grow past
// floodHeap, the flooding connection is closed (after a GOAWAY, or when
// ferry's writes back to it stall), another caller is served throughout,
// and no flooded request reaches the upstream beyond what is said.
func TestH2CFloods(t *testing.T) {
	skipFlood(t)
	const floodHeap = 16 * mib
	check := func(t *testing.T, what string, r floodRun) {
		t.Helper()
		if r.growth > floodHeap {
			t.Errorf("%s: live heap grew %d bytes, bound %d", what, r.growth, floodHeap)
		}
		if r.others == 0 {
			t.Errorf("%s: no other caller was served during the flood", what)
		}
	}
	t.Run("rapid reset", func(t *testing.T) {
		// CVE-2023-44487: HEADERS then RST_STREAM, 20000 times, as fast
		// as the socket takes them. net/http runs at most 250 handlers a
		// connection (SETTINGS_MAX_CONCURRENT_STREAMS) and closes it with
		// ENHANCE_YOUR_CALM when more than 1000 wait to start; ferry's
		// handlers end as soon as the stream is reset, so none wait. A
		// request whose handler started before its reset was read goes
		// upstream, so ferry counts the streams the caller resets within
		// a second (h2resets.go) and closes the connection once they are
		// more than half of at least prematureResetStreams: the upstream
		// sees at most that many plus the handlers running at once,
		// however fast ferry reads, and the caller's sending fails long
		// before its 20000 pairs went out.
		const streams = 20000
		sc, o := floodFerry(t, 2*time.Second)
		h := dialH2(t, sc.Addr("outbound"))
		r := runFlood(t, sc, h, true, streams, func(i int) error {
			id := uint32(2*i + 1)
			if err := h.request(id, http.MethodGet, "/rr", true); err != nil {
				return err
			}
			return h.fr.WriteRSTStream(id, http2.ErrCodeCancel)
		})
		o.mu.Lock()
		got, peak := o.paths["/rr"], o.rrMax
		o.mu.Unlock()
		t.Logf("rapid reset: %v; %d of %d reset requests reached the upstream, at most %d at once", r, got, streams, peak)
		check(t, "rapid reset", r)
		if r.readErr == nil {
			t.Errorf("rapid reset: the connection is still open after the flood (GOAWAY %d)", r.goaway)
		}
		if r.goaway == int(http2.ErrCodeNo) {
			// Closed idle, the flood over. (ferry closes it without a
			// GOAWAY; net/http may have sent ENHANCE_YOUR_CALM first, when
			// handlers were slow to start and over 1000 waited.)
			t.Errorf("rapid reset: GOAWAY NO_ERROR; want the connection closed for its premature resets, not idle")
		}
		if peak > h2Streams {
			t.Errorf("rapid reset: %d reset requests at the upstream at once; at most %d (the connection's streams)", peak, h2Streams)
		}
		if bound := prematureResetStreams + h2Streams; got > bound {
			t.Errorf("rapid reset: %d of %d reset requests reached the upstream; at most %d (%d streams, then those running at once)", got, streams, bound, prematureResetStreams)
		}
		if r.goaway == int(http2.ErrCodeEnhanceYourCalm) {
			// net/http closed the connection itself, its handlers slow
			// to start (a busy machine) and too many waiting: fewer than
			// prematureResetStreams may have ended, and ferry closed
			// nothing (TestH2CMostlyPrematureCallerIsClosed makes sure
			// ferry's own defence closes one).
			return
		}
		if n := scrape(t, sc, `ferry_connections_closed_total{listener="outbound",reason="premature_resets"}`); n != "1" {
			t.Errorf("rapid reset: ferry_connections_closed_total{reason=premature_resets} = %q, want 1", n)
		}
		var warned []string
		for _, line := range strings.Split(o.logs.String(), "\n") {
			if strings.Contains(line, "premature") {
				warned = append(warned, line)
			}
		}
		var carried int
		if len(warned) == 1 {
			_, after, _ := strings.Cut(warned[0], " streams=")
			fmt.Sscan(after, &carried)
		}
		if len(warned) != 1 || !strings.Contains(warned[0], "caller="+h.c.LocalAddr().String()) ||
			carried < prematureResetStreams || carried > prematureResetStreams+h2Streams {
			t.Errorf("rapid reset: want one warning naming the caller %s and at least %d streams (at most %d more), got %q", h.c.LocalAddr(), prematureResetStreams, h2Streams, warned)
		}
	})
	t.Run("continuation flood", func(t *testing.T) {
		// CVE-2023-45288: a header block that never ends. net/http stops
		// at the header list limit (max_header_bytes, 64 KiB, plus its
		// slack) with GOAWAY PROTOCOL_ERROR.
		sc, o := floodFerry(t, 2*time.Second)
		h := dialH2(t, sc.Addr("outbound"))
		h.handshake(t)
		var frag bytes.Buffer
		hpack.NewEncoder(&frag).WriteField(hpack.HeaderField{Name: "x-flood", Value: strings.Repeat("a", 16<<10), Sensitive: true})
		r := runFlood(t, sc, h, true, 100000, func(i int) error {
			if i == 0 {
				return h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: h.block(http.MethodGet, "/cont"), EndStream: true})
			}
			return h.fr.WriteContinuation(1, false, frag.Bytes())
		})
		t.Logf("continuation flood: %v (%.1f MiB sent)", r, float64(r.frames)*16/1024)
		check(t, "continuation flood", r)
		if r.goaway != int(http2.ErrCodeProtocol) || r.writeErr == nil {
			t.Errorf("continuation flood: GOAWAY %d, write error %v; want PROTOCOL_ERROR and the connection closed", r.goaway, r.writeErr)
		}
		if n := o.seen("/cont"); n != 0 {
			t.Errorf("continuation flood: the upstream saw the request %d times", n)
		}
	})
	t.Run("empty continuation flood", func(t *testing.T) {
		// Empty CONTINUATION frames never reach the header list limit;
		// each costs ferry a frame read and nothing kept. With no stream
		// open the connection is idle: closed at limits.idle_timeout
		// (2s here), GOAWAY NO_ERROR, then 1s for the caller to go.
		sc, o := floodFerry(t, 2*time.Second)
		h := dialH2(t, sc.Addr("outbound"))
		h.handshake(t)
		r := runFlood(t, sc, h, true, 1<<30, func(i int) error {
			if i == 0 {
				return h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: h.block(http.MethodGet, "/cont"), EndStream: true})
			}
			for range 1000 {
				if err := h.fr.WriteContinuation(1, false, nil); err != nil {
					return err
				}
			}
			return nil
		})
		t.Logf("empty continuation flood: %v", r)
		check(t, "empty continuation flood", r)
		if r.goaway != int(http2.ErrCodeNo) || r.writeErr == nil {
			t.Errorf("empty continuation flood: GOAWAY %d, write error %v; want NO_ERROR (idle) and the connection closed", r.goaway, r.writeErr)
		}
		if n := o.seen("/cont"); n != 0 {
			t.Errorf("empty continuation flood: the upstream saw the request %d times", n)
		}
	})
	for _, tc := range []struct {
		name  string
		idle  time.Duration
		frame func(h *h2Caller) error
	}{
		// net/http acks a run of SETTINGS frames with one ack (a flag,
		// not a queue): the flood costs ferry a frame read each and
		// nothing kept, and the connection, with no stream open, is
		// closed idle (2s here).
		{"settings flood", 2 * time.Second, func(h *h2Caller) error {
			return h.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 100})
		}},
		// Each PING asks for an ack the caller never reads: net/http
		// closes the connection once more than 10000 wait to go out (the
		// sockets' buffers full first), long before idle_timeout (1m).
		{"ping flood", time.Minute, func(h *h2Caller) error { return h.fr.WritePing(false, [8]byte{1}) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc, _ := floodFerry(t, tc.idle)
			h := dialH2(t, sc.Addr("outbound"))
			r := runFlood(t, sc, h, false, 1<<30, func(int) error {
				for range 1000 {
					if err := tc.frame(h); err != nil {
						return err
					}
				}
				return nil
			})
			t.Logf("%s: %v (%d thousand frames)", tc.name, r, r.frames)
			check(t, tc.name, r)
			if r.writeErr == nil || isTimeout(r.writeErr) {
				t.Errorf("%s: the caller's writes ended with %v; want the connection closed", tc.name, r.writeErr)
			}
		})
	}
	t.Run("hpack bomb", func(t *testing.T) {
		// One 4 KiB field into the dynamic table, then referenced 2000
		// times: 6 KiB on the wire, 8 MiB decoded. net/http stops
		// decoding at the header list limit and answers 431; the request
		// goes nowhere.
		sc, o := floodFerry(t, 2*time.Second)
		h := dialH2(t, sc.Addr("outbound"))
		var b bytes.Buffer
		b.Write(h.block(http.MethodGet, "/bomb"))
		b.WriteByte(0x40) // literal with incremental indexing, new name
		b.WriteByte(6)
		b.WriteString("x-bomb")
		v := strings.Repeat("b", 4000)
		b.Write([]byte{0x7f, byte((len(v)-127)%128 | 0x80), byte((len(v) - 127) / 128)})
		b.WriteString(v)
		b.Write(bytes.Repeat([]byte{0x80 | 62}, 2000)) // the newest entry of the dynamic table
		status := make(chan string, 1)
		go h.answerControl(func(f http2.Frame) {
			if hf, ok := f.(*http2.MetaHeadersFrame); ok && hf.StreamID == 1 {
				status <- hf.PseudoValue("status")
			}
		})
		r := runFlood(t, sc, h, false, 1, func(int) error {
			return h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b.Bytes(), EndStream: true, EndHeaders: true})
		})
		got := recv(t, status, 5*time.Second, "the answer to the bomb")
		t.Logf("hpack bomb: %v; answered %s", r, got)
		check(t, "hpack bomb", r)
		if got != "431" {
			t.Errorf("hpack bomb: answered %s, want 431", got)
		}
		if n := o.seen("/bomb"); n != 0 {
			t.Errorf("hpack bomb: the upstream saw the request %d times", n)
		}
	})
}
