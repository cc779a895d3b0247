package sidecar

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestSlowSteadySplicedDownloadNotCut proves that body_idle cuts a body
// that stopped, never one whose bytes keep moving, on the kernel-to-kernel
// path too: a download of known length large enough to be spliced, sent
// at a steady pace with no gap near body_idle, reaches the caller whole.
// The splice moves the body in segments of up to spliceSegment bytes, and
// a segment that takes longer than body_idle is no silence.
//
// The pace leaves a wide margin (a piece every 50 ms, body_idle 1 s): on a
// machine busy enough to hold the test's origin back for 300 ms, body_idle
// at 300 ms cut the body after its first piece, rightly.
func TestSlowSteadySplicedDownloadNotCut(t *testing.T) {
	const piece, pieces = 16 << 10, 48 // 768 KiB: spliced (more than spliceMin), one segment of about 2.4 s
	up := startRawServer(t, func(c net.Conn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", piece*pieces)
		for i := range pieces {
			if _, err := c.Write(bytes.Repeat([]byte{byte('a' + i%26)}, piece)); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond) // the origin's pace (20x faster than body_idle), not synchronisation
		}
	})
	_, url := outboundTo(t, "defaults: { timeouts: { body_idle: 1s } }", up.addr())
	before := spliced.Load()
	res, err := h1For(t).Get(url + "/slow")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || len(b) != piece*pieces {
		t.Fatalf("read %d of %d bytes, err %v: a steady body was cut", len(b), piece*pieces, err)
	}
	for i := range pieces {
		if b[i*piece] != byte('a'+i%26) || b[(i+1)*piece-1] != byte('a'+i%26) {
			t.Fatalf("piece %d corrupted", i)
		}
	}
	// The move counts its bytes once its splice returned, which may be
	// after the caller read the last of them.
	waitFor(t, "the body to take the kernel-to-kernel path this test is about", 5*time.Second, func() bool { return spliced.Load() != before })
}

// TestSlowSteadySplicedUploadNotCut is TestSlowSteadySplicedDownloadNotCut
// for a request body moved kernel to kernel from the lane's caller to the
// upstream.
func TestSlowSteadySplicedUploadNotCut(t *testing.T) {
	// 640 KiB (spliced: more than spliceMin) at 320 KiB/s: the move takes
	// 2 s, twice body_idle, which is 20 times the caller's pace (see
	// TestSlowSteadyCallerNotCut).
	const piece, pieces = 16 << 10, 40
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%d %v", n, err)
	}))
	_, url := outboundTo(t, "defaults: { timeouts: { body_idle: 1s } }", up)
	c := dialRaw(t, url) // 10 s: the upload takes about 2
	before := splicedUp.Load()
	fmt.Fprintf(c, "POST /up HTTP/1.1\r\nHost: s\r\nContent-Length: %d\r\n\r\n", piece*pieces)
	res := make(chan string, 1)
	go func() {
		r, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			res <- err.Error()
			return
		}
		b, err := io.ReadAll(r.Body)
		res <- fmt.Sprintf("%d %s %v", r.StatusCode, b, err)
	}()
	for range pieces {
		if _, err := c.Write(bytes.Repeat([]byte("u"), piece)); err != nil {
			break // the answer says why
		}
		time.Sleep(50 * time.Millisecond) // the caller's pace (6x faster than body_idle), not synchronisation
	}
	if got, want := recv(t, res, 10*time.Second, "the answer"), fmt.Sprintf("200 %d <nil> <nil>", piece*pieces); got != want {
		t.Fatalf("got %q, want %q: a steady upload was cut", got, want)
	}
	// (The move counts its bytes once its last splice returned, which
	// may be after the upstream answered.)
	waitFor(t, "the body to take the kernel-to-kernel path this test is about", 5*time.Second, func() bool { return splicedUp.Load() != before })
}

// TestSlowSteadyCallerNotCut: as TestSlowSteadySplicedDownloadNotCut, the
// pace being the caller's: the upstream sent the whole body at once, and
// the caller reads it steadily. Moved kernel to kernel, each segment takes
// longer than body_idle (most of it in the move's pipe, written out as the
// caller reads); relayed through the pooled buffer, each write waits for
// the kernel to have room for much of it, as long. On a connection of the
// lane and on ones net/http serves (an HTTP/1.0 request is spliced, one
// with Expect takes the buffer).
func TestSlowSteadyCallerNotCut(t *testing.T) {
	// body_idle 1s, against a read every 50 ms: a caller held up on a
	// busy machine is still far from it (at 300ms, a full package run
	// beside other work cut the buffered case once: since body_idle looks
	// at a move every eighth of its value, a stall between one and two
	// body_idle is cut, as it should be).
	const size = 3 << 20
	const piece = 32 << 10 // per 50 ms: 640 KiB/s, a 1 MiB segment takes ~1.6 s
	up := startRawServer(t, func(c net.Conn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", size)
		c.Write(bytes.Repeat([]byte("d"), size))
	})
	_, url := outboundTo(t, "defaults: { timeouts: { body_idle: 1s } }", up.addr())
	for _, caller := range []struct {
		name, head string
		spliced    bool
	}{
		{"lane", "GET /big HTTP/1.1\r\nHost: s\r\n\r\n", true},
		{"net/http spliced", "GET /big HTTP/1.0\r\nHost: s\r\n\r\n", true},
		{"net/http buffered", "GET /big HTTP/1.1\r\nHost: s\r\nExpect: 100-continue\r\n\r\n", false},
	} {
		t.Run(caller.name, func(t *testing.T) {
			c := dialRaw(t, url) // 10 s: the download takes about 5
			before := spliced.Load()
			io.WriteString(c, caller.head)
			res, err := http.ReadResponse(bufio.NewReaderSize(c, piece), nil)
			if err != nil {
				t.Fatal(err)
			}
			var n int64
			var gap time.Duration // the longest pause between two reads
			last := time.Now()
			for {
				m, err := io.CopyN(io.Discard, res.Body, piece)
				n += m
				gap, last = max(gap, time.Since(last)), time.Now()
				if err != nil {
					if err != io.EOF || n != size {
						t.Fatalf("read %d of %d bytes, err %v (longest pause between reads %v): a steadily read body was cut", n, size, err, gap)
					}
					break
				}
				time.Sleep(50 * time.Millisecond) // the caller's pace, not synchronisation
			}
			if moved := spliced.Load() > before; moved != caller.spliced {
				t.Fatalf("moved kernel to kernel: %v, want %v", moved, caller.spliced)
			}
		})
	}
}
