package linewriter

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"
)

// stuck is a destination that takes nothing until released.
type stuck struct {
	release chan struct{}
	mu      sync.Mutex
	got     bytes.Buffer
}

func (s *stuck) Write(p []byte) (int, error) {
	<-s.release
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got.Write(p)
}

// Writes return at once while the destination takes nothing; what does not
// fit is dropped and counted; once the destination takes bytes again, what
// was kept reaches it whole and in order, and Close waits for it.
func TestWriterNeverWaitsOnItsDestination(t *testing.T) {
	dst := &stuck{release: make(chan struct{})}
	w := New(dst, 100)
	written := make(chan struct{})
	go func() {
		defer close(written)
		for i := range 50 {
			fmt.Fprintf(w, "line %02d\n", i) // 8 bytes each
		}
	}()
	select {
	case <-written:
	case <-time.After(5 * time.Second):
		t.Fatal("writes waited on a destination that takes nothing")
	}
	// The drain holds one batch in its stuck write; the buffer holds up to
	// 100 bytes more: 12 lines at least, the rest dropped.
	if d := w.Dropped(); d < 50-2*12 || d > 50-12 {
		t.Fatalf("%d of 50 lines dropped", d)
	}
	close(dst.release)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
	got := dst.got.String()
	if n := int64(bytes.Count([]byte(got), []byte("\n"))); n != 50-w.Dropped() {
		t.Fatalf("%d lines reached the destination, %d dropped, of 50:\n%s", n, w.Dropped(), got)
	}
	if got[:8] != "line 00\n" {
		t.Fatalf("first line %q", got[:8])
	}
	if n, _ := w.Write([]byte("late\n")); n != 5 || w.Dropped() == 0 {
		t.Fatal("a write after Close")
	}
}

// Close gives up at its context's end when the destination stays stuck.
func TestWriterCloseBounded(t *testing.T) {
	dst := &stuck{release: make(chan struct{})}
	defer close(dst.release)
	w := New(dst, 100)
	w.Write([]byte("x\n"))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := w.Close(ctx); err == nil {
		t.Fatal("Close returned nil with the destination stuck")
	}
}

// fullDisk takes bytes until its room runs out, then writes what fits and
// fails as a full disk does, until freed.
type fullDisk struct {
	mu     sync.Mutex
	got    bytes.Buffer
	room   int
	writes int
}

func (d *fullDisk) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.writes++
	if d.room < 0 || len(p) <= d.room {
		if d.room >= 0 {
			d.room -= len(p)
		}
		return d.got.Write(p)
	}
	n := d.room
	d.got.Write(p[:n])
	d.room = 0
	return n, syscall.ENOSPC
}

func (d *fullDisk) free() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.room = -1
}

func (d *fullDisk) written() (int, string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.writes, d.got.String()
}

// The lines a destination refuses (a full disk) are dropped and counted,
// as those a full buffer cannot take are; a line the disk cut part-way is
// ended before the next one goes out, so that the next line is never read
// as its rest. They were lost uncounted (ferry_access_log_dropped_total
// stayed 0 with every line gone), and the next line after the disk had
// room again was appended to the cut one.
func TestWriterCountsTheLinesItsDestinationRefuses(t *testing.T) {
	dst := &fullDisk{room: 12}
	w := New(dst, 100)
	step := func(line string, writes int, dropped int64) {
		t.Helper()
		w.Write([]byte(line))
		await(t, fmt.Sprintf("%q written (%d writes, %d dropped)", line, writes, dropped), func() bool {
			n, _ := dst.written()
			return n == writes && w.Dropped() == dropped
		})
	}
	step("aaaa\n", 1, 0)       // 7 bytes of room left
	step("bbbbbbbbbb\n", 2, 1) // cut after 7 bytes
	step("cccc\n", 3, 2)       // the disk is full: nothing goes
	dst.free()
	step("dddd\n", 5, 2) // the cut line's end, then the line
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, got := dst.written(); got != "aaaa\nbbbbbbb\ndddd\n" {
		t.Fatalf("the destination got %q", got)
	}
}

// A gathering Writer writes the lines of a batch together: the first line
// starts the batch, which goes out in one write when it fills half the
// buffer (here, long before its hour is up), and Close writes what is
// gathering at once rather than at the batch's end.
func TestGatheringWriterWritesABatchAtOnce(t *testing.T) {
	dst := &fullDisk{room: -1}
	w := NewGathering(dst, 1000, time.Hour)
	line := func(i int) { fmt.Fprintf(w, "line %03d\n", i) } // 9 bytes each
	for i := range 55 {
		line(i) // 495 bytes: under half the bound
	}
	if n, got := dst.written(); n != 0 {
		t.Fatalf("a batch under half the bound was written before its time: %d writes, %q", n, got)
	}
	line(55) // 504 bytes
	await(t, "the half-full batch written", func() bool { n, _ := dst.written(); return n > 0 })
	n, got := dst.written()
	if want := 56; n != 1 || bytes.Count([]byte(got), newline) != want {
		t.Fatalf("%d writes for %d lines, want one write of %d", n, bytes.Count([]byte(got), newline), want)
	}
	for i := 56; i < 60; i++ {
		line(i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Close(ctx); err != nil {
		t.Fatalf("Close waited for the batch's hour: %v", err)
	}
	n, got = dst.written()
	if n != 2 || bytes.Count([]byte(got), newline) != 60 || got[len(got)-9:] != "line 059\n" || w.Dropped() != 0 {
		t.Fatalf("after Close: %d writes, %d dropped, %q", n, w.Dropped(), got)
	}
}

// A batch that never fills goes out when its gathering time is up, and the
// next line starts a batch of its own.
func TestGatheringWriterWritesWhenTheTimeIsUp(t *testing.T) {
	dst := &fullDisk{room: -1}
	w := NewGathering(dst, 1<<20, 5*time.Millisecond)
	defer w.Close(context.Background())
	w.Write([]byte("one\n"))
	await(t, "the first batch written", func() bool { n, _ := dst.written(); return n == 1 })
	w.Write([]byte("two\n"))
	await(t, "the second batch written", func() bool { n, _ := dst.written(); return n == 2 })
	if _, got := dst.written(); got != "one\ntwo\n" {
		t.Fatalf("the destination got %q", got)
	}
}
