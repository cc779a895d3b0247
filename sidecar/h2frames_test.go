package sidecar

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// frameLog records what peers sent on HTTP/2 connections: the largest
// DATA frame, the SETTINGS_MAX_FRAME_SIZE advertised, the PINGs (not
// acknowledgements), and how many connections ended.
type frameLog struct {
	mu         sync.Mutex
	maxData    uint32
	dataFrames int
	advertised uint32 // 0: not seen
	pings      int
	ended      int
	err        error
}

func (l *frameLog) pingsEnded() (pings, ended int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pings, l.ended
}

func (l *frameLog) snapshot() (maxData uint32, frames int, advertised uint32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.maxData, l.dataFrames, l.advertised
}

// read parses frames from r until it ends (after the client preface when
// preface is set).
func (l *frameLog) read(r io.Reader, preface bool) {
	defer func() {
		l.mu.Lock()
		l.ended++
		l.mu.Unlock()
	}()
	if preface {
		if _, err := io.ReadFull(r, make([]byte, len(http2.ClientPreface))); err != nil {
			return
		}
	}
	fr := http2.NewFramer(nil, r)
	fr.SetMaxReadFrameSize(1 << 24)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrClosedPipe) {
				l.mu.Lock()
				l.err = err
				l.mu.Unlock()
			}
			io.Copy(io.Discard, r)
			return
		}
		l.mu.Lock()
		switch f := f.(type) {
		case *http2.DataFrame:
			l.maxData = max(l.maxData, f.Header().Length)
			l.dataFrames++
		case *http2.PingFrame:
			if !f.IsAck() {
				l.pings++
			}
		case *http2.SettingsFrame:
			if v, ok := f.Value(http2.SettingMaxFrameSize); ok && !f.IsAck() {
				l.advertised = v
			}
		}
		l.mu.Unlock()
	}
}

// teeListener hands the server connections whose incoming bytes also go to
// a frameLog.
type teeListener struct {
	net.Listener
	log *frameLog
}

func (l teeListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	go l.log.read(pr, true)
	return &teeConn{Conn: c, w: pw}, nil
}

type teeConn struct {
	net.Conn
	w *io.PipeWriter
}

func (c *teeConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.w.Write(p[:n])
	if err != nil {
		c.w.CloseWithError(err)
	}
	return n, err
}

func (c *teeConn) Close() error {
	c.w.Close()
	return c.Conn.Close()
}

// ferry advertises its frame cap to its callers (net/http's client, as a
// caller, holds a buffer the size of ferry's frame limit, up to 512 KiB,
// for every upload in flight) and to upstreams. An upload through it to an
// upstream allowing 1 MiB frames arrives whole. (ferry's own buffer per
// upload, sized by the upstream's limit as frameCapConn rewrites it, is
// what TestMemoryBoundedPerH2CUpload measures: the DATA frames ferry sends
// are no larger than what it read from the caller either way.)
func TestH2CFramesCapped(t *testing.T) {
	log := &frameLog{}
	addr := h2cOrigin(t, nil, func(ln net.Listener) net.Listener { return teeListener{ln, log} },
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n, err := io.Copy(io.Discard, r.Body)
			fmt.Fprintf(w, "%d %v", n, err)
		}))
	_, base := ferryWithProtocol(t, "h2c", addr)
	const size = 4 << 20
	body := io.MultiReader(bytes.NewReader(make([]byte, size))) // no length: sent as it comes
	res, err := h2cFor(t).Post(base+"/upload", "application/octet-stream", body)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if want := fmt.Sprintf("%d <nil>", size); string(got) != want {
		t.Fatalf("origin read %q, want %q", got, want)
	}
	waitFor(t, "the origin's frames parsed", 5*time.Second, func() bool {
		_, frames, _ := log.snapshot()
		return frames > 0
	})
	maxData, frames, advertised := log.snapshot()
	t.Logf("%d DATA frames, largest %d bytes; ferry advertised %d", frames, maxData, advertised)
	if log.err != nil {
		t.Fatalf("parsing ferry's frames: %v", log.err)
	}
	if advertised == 0 || advertised > h2MaxFrame {
		t.Errorf("ferry advertised SETTINGS_MAX_FRAME_SIZE %d to the upstream, want 16384..%d", advertised, h2MaxFrame)
	}

	// What the outbound listener tells its callers.
	c, err := net.Dial("tcp", base[len("http://"):])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, http2.ClientPreface)
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	f, err := fr.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok {
		t.Fatalf("first frame from ferry %T, want SETTINGS", f)
	}
	if v, ok := sf.Value(http2.SettingMaxFrameSize); !ok || v > h2MaxFrame {
		t.Errorf("ferry's listener advertised SETTINGS_MAX_FRAME_SIZE %d (sent: %v), want at most %d", v, ok, h2MaxFrame)
	}
}

// Uploads over h2c in flight at once cost a bounded, small amount each,
// behind an upstream that allows 1 MiB frames as net/http's server does:
// net/http's client (in ferry, and in the caller) holds a buffer sized by
// the peer's frame limit for each, which ferry's cap keeps at 64 KiB
// instead of 512 KiB. What else is in flight is bounded by flow control:
// ferry's 256 KiB per stream and the origin's, set here to 64 KiB.
func TestMemoryBoundedPerH2CUpload(t *testing.T) {
	const streams = 12
	started := make(chan struct{}, streams)
	release := make(chan struct{})
	addr := h2cOrigin(t, &http.HTTP2Config{
		MaxReceiveBufferPerStream: 64 << 10, MaxReceiveBufferPerConnection: 8 << 20,
	}, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/warm" {
			return
		}
		// One byte read: both ferry's client and the caller's are sending
		// the body, their buffers made.
		if _, err := io.ReadFull(r.Body, make([]byte, 1)); err != nil {
			t.Errorf("origin: %v", err)
		}
		started <- struct{}{}
		<-release
	}))
	_, base := ferryWithProtocol(t, "h2c", addr)
	c := h2cFor(t)
	// Both connections made, and the peers' SETTINGS known (before them a
	// client assumes 16 KiB frames).
	for range 2 {
		res, err := c.Post(base+"/warm", "text/plain", strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runtime.GC() // twice: buffers pooled by earlier tests are gone
	m := watchMemory()
	for range streams {
		go func() {
			// Endless and of no stated length: the windows fill whatever
			// their size.
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/upload", zeros{})
			if res, err := c.Do(req); err == nil {
				res.Body.Close()
			}
		}()
	}
	for range streams {
		recv(t, started, 10*time.Second, "an upload at the origin")
	}
	runtime.GC()
	live, _ := readMem()
	growth := int64(live) - int64(m.baseHeap)
	close(m.stop)
	<-m.done
	cancel()
	close(release)
	t.Logf("%d uploads in flight: live heap grew %.2f MiB (%.0f KiB each)", streams, float64(growth)/float64(mib), float64(growth)/streams/1024)
	if bound := 8 * mib; growth > bound {
		t.Errorf("%d uploads in flight grew the live heap %d bytes, bound %d", streams, growth, bound)
	}
}

// zeros reads as an endless run of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// h2cOrigin starts an h2c-only origin with the given HTTP/2 settings (nil:
// net/http's), serving through wrap's listener when wrap is not nil.
func h2cOrigin(t testing.TB, conf *http.HTTP2Config, wrap func(net.Listener) net.Listener, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if wrap != nil {
		ln = wrap(ln)
	}
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: p, HTTP2: conf, Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return addr
}

// settingsFrame is a SETTINGS frame carrying params as they go on the wire.
func settingsFrame(params ...[2]uint32) []byte {
	b := make([]byte, 9, 9+6*len(params))
	binary.BigEndian.PutUint32(b, uint32(6*len(params))<<8|uint32(http2.FrameSettings))
	for _, p := range params {
		b = binary.BigEndian.AppendUint16(b, uint16(p[0]))
		b = binary.BigEndian.AppendUint32(b, p[1])
	}
	return b
}

// dataFrame is a DATA frame on stream 1 with n payload bytes of fill.
func dataFrame(n int, fill byte) []byte {
	b := make([]byte, 9+n)
	binary.BigEndian.PutUint32(b, uint32(n)<<8|uint32(http2.FrameData))
	binary.BigEndian.PutUint32(b[5:], 1)
	for i := range b[9:] {
		b[9+i] = fill
	}
	return b
}

// The cap rewrites only MAX_FRAME_SIZE values above it, in every SETTINGS
// frame however the reads split it, and passes every other byte as it
// came.
func TestFrameCapConnRewritesMaxFrameSize(t *testing.T) {
	in := bytes.Join([][]byte{
		settingsFrame([2]uint32{uint32(http2.SettingMaxConcurrentStreams), 100}, [2]uint32{uint32(http2.SettingMaxFrameSize), 1 << 20}, [2]uint32{uint32(http2.SettingInitialWindowSize), 1 << 20}),
		dataFrame(300, 0x05), // payload bytes that look like a SETTINGS param are left alone
		settingsFrame([2]uint32{uint32(http2.SettingMaxFrameSize), 16384}),
		{0, 0, 0, byte(http2.FrameSettings), byte(http2.FlagSettingsAck), 0, 0, 0, 0},
		settingsFrame([2]uint32{uint32(http2.SettingMaxFrameSize), 1<<24 - 1}, [2]uint32{uint32(http2.SettingMaxFrameSize), 40000}),
		dataFrame(0, 0),
	}, nil)
	want := bytes.Join([][]byte{
		settingsFrame([2]uint32{uint32(http2.SettingMaxConcurrentStreams), 100}, [2]uint32{uint32(http2.SettingMaxFrameSize), h2MaxFrame}, [2]uint32{uint32(http2.SettingInitialWindowSize), 1 << 20}),
		dataFrame(300, 0x05),
		settingsFrame([2]uint32{uint32(http2.SettingMaxFrameSize), 16384}),
		{0, 0, 0, byte(http2.FrameSettings), byte(http2.FlagSettingsAck), 0, 0, 0, 0},
		settingsFrame([2]uint32{uint32(http2.SettingMaxFrameSize), h2MaxFrame}, [2]uint32{uint32(http2.SettingMaxFrameSize), 40000}),
		dataFrame(0, 0),
	}, nil)
	for _, chunk := range []int{1, 2, 3, 5, 6, 7, 9, 11, 13, 64, len(in)} {
		for _, bufLen := range []int{1, 4, 8, 100, 4096} {
			t.Run(fmt.Sprintf("chunk=%d/buf=%d", chunk, bufLen), func(t *testing.T) {
				c := &frameCapConn{Conn: &chunkConn{data: in, chunk: chunk}}
				var got []byte
				buf := make([]byte, bufLen)
				for {
					n, err := c.Read(buf)
					got = append(got, buf[:n]...)
					if err == io.EOF {
						break
					}
					if err != nil {
						t.Fatal(err)
					}
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("got\n%x\nwant\n%x", got, want)
				}
			})
		}
	}
}

// chunkConn is a net.Conn whose reads deliver data at most chunk bytes at
// a time, then io.EOF.
type chunkConn struct {
	net.Conn
	data  []byte
	chunk int
}

func (c *chunkConn) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.data[:min(c.chunk, len(c.data))])
	c.data = c.data[n:]
	return n, nil
}

// FuzzFrameCapConn: however the upstream's bytes are split across reads,
// and however small the reader's buffer, frameCapConn hands on exactly
// what a whole-stream rewrite gives: every byte as it came except
// SETTINGS_MAX_FRAME_SIZE values above the cap in SETTINGS frames.
func FuzzFrameCapConn(f *testing.F) {
	f.Add(bytes.Join([][]byte{
		settingsFrame([2]uint32{uint32(http2.SettingMaxFrameSize), 1 << 20}),
		dataFrame(20, 0), settingsFrame(),
		settingsFrame([2]uint32{uint32(http2.SettingInitialWindowSize), 1 << 20}, [2]uint32{uint32(http2.SettingMaxFrameSize), 1<<24 - 1}),
	}, nil), []byte{1, 7, 3}, uint16(5))
	f.Add(append(settingsFrame([2]uint32{5, 70000}), 0, 0), []byte{13}, uint16(1))
	f.Add([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"), []byte{3, 1}, uint16(4))
	f.Fuzz(func(t *testing.T, in, chunks []byte, bufLen uint16) {
		if len(chunks) == 0 || bufLen == 0 {
			return
		}
		want := capFramesWhole(in)
		cc := &cyclicConn{data: in, chunks: chunks}
		c := &frameCapConn{Conn: cc}
		var got []byte
		var err error
		buf := make([]byte, bufLen)
		for err == nil {
			var n int
			n, err = c.Read(buf)
			got = append(got, buf[:n]...)
		}
		if len(in) >= h2FrameHeaderLen && bytes.HasPrefix(in, []byte("HTTP/")) {
			// An HTTP/1 answer: it reads as what it is, and no more than
			// the part of its first line a read handed on before.
			if _, ok := err.(*notHTTP2Error); !ok || len(got) >= h2FrameHeaderLen || !bytes.HasPrefix(in, got) {
				t.Fatalf("an HTTP/1 answer read as %q then %v", got, err)
			}
			return
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("got\n%x\nwant\n%x", got, want)
		}
	})
}

// capFramesWhole is the reference: the frames of a whole stream walked at
// once, MAX_FRAME_SIZE values above the cap lowered, and the stream cut
// before a SETTINGS parameter it ends inside of.
func capFramesWhole(in []byte) []byte {
	out := bytes.Clone(in)
	for i := 0; i+9 <= len(out); {
		n := int(out[i])<<16 | int(out[i+1])<<8 | int(out[i+2])
		typ, flags := out[i+3], out[i+4]
		i += 9
		if typ != 0x4 || flags&0x1 != 0 || n%6 != 0 {
			i += n
			continue
		}
		for end := i + n; i < end; i += 6 {
			if i+6 > len(out) {
				return out[:i]
			}
			if binary.BigEndian.Uint16(out[i:]) == 5 && binary.BigEndian.Uint32(out[i+2:]) > h2MaxFrame {
				binary.BigEndian.PutUint32(out[i+2:], h2MaxFrame)
			}
		}
	}
	return out
}

// cyclicConn is a net.Conn whose reads deliver data in chunks of the sizes
// in chunks, cycling (at least a byte each), then io.EOF.
type cyclicConn struct {
	net.Conn
	data   []byte
	chunks []byte
	i      int
}

func (c *cyclicConn) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	k := max(1, int(c.chunks[c.i%len(c.chunks)]))
	c.i++
	n := copy(p, c.data[:min(k, len(c.data))])
	c.data = c.data[n:]
	return n, nil
}

// An HTTP/1 answer to the connection preface reads as a *notHTTP2Error
// carrying its status line, however its bytes are split across reads
// (the line as far as the read that completed the first 9 bytes brought it).
func TestFrameCapConnHTTP1Answer(t *testing.T) {
	in := []byte("HTTP/1.1 505 HTTP Version Not Supported\r\nConnection: close\r\n\r\n")
	for _, tc := range []struct {
		chunk int
		want  string
	}{
		{len(in), "HTTP/1.1 505 HTTP Version Not Supported"},
		{20, "HTTP/1.1 505 HTTP Ve"},
		{4, "HTTP/1.1 505"},
		{1, "HTTP/1.1 "},
	} {
		c := &frameCapConn{Conn: &chunkConn{data: bytes.Clone(in), chunk: tc.chunk}, peer: &h2cPeer{key: "services.s.protocol", protocol: ProtocolAuto}}
		var err error
		for err == nil {
			_, err = c.Read(make([]byte, 64))
		}
		var nh *notHTTP2Error
		if !errors.As(err, &nh) {
			t.Fatalf("chunks of %d: read error %v, want a notHTTP2Error", tc.chunk, err)
		}
		if nh.answer != tc.want {
			t.Errorf("chunks of %d: status line %q, want %q", tc.chunk, nh.answer, tc.want)
		}
		if _, err := c.Read(make([]byte, 64)); err != nh {
			t.Errorf("chunks of %d: a read after the error gave %v, want it again", tc.chunk, err)
		}
	}
}

// net/http's client reports the end of a connection the upstream answered
// in HTTP/1 to the request that dialled it only when that request had its
// stream already, and otherwise as "client conn could not be
// established": explain gives such a failure the endpoint's answer, while
// the last connection to the endpoint was answered so.
func TestH2CPeerExplainsAFailedConnection(t *testing.T) {
	p := &h2cPeer{key: "services.s.protocol", protocol: ProtocolH2C}
	lost := errors.New("http2: client conn could not be established")
	if err := p.explain("10.0.0.1:80", lost); err != lost {
		t.Fatalf("nothing recorded: explain gave %v", err)
	}
	e := &notHTTP2Error{peer: p, answer: "HTTP/1.1 400 Bad Request"}
	p.answered("10.0.0.1:80", e)
	if err := p.explain("10.0.0.1:80", lost); err != e {
		t.Errorf("after an HTTP/1 answer: explain gave %v, want %v", err, e)
	}
	if err := p.explain("10.0.0.2:80", lost); err != lost {
		t.Errorf("another endpoint: explain gave %v", err)
	}
	dial := &dialError{addr: "10.0.0.1:80", err: errors.New("connection refused")}
	if err := p.explain("10.0.0.1:80", dial); err != dial {
		t.Errorf("a connect failure: explain gave %v", err)
	}
	p.answered("10.0.0.1:80", nil) // the endpoint now speaks HTTP/2
	if err := p.explain("10.0.0.1:80", lost); err != lost {
		t.Errorf("after an HTTP/2 answer: explain gave %v", err)
	}
	if p.n.Load() != 0 {
		t.Errorf("%d endpoints still recorded", p.n.Load())
	}
}
