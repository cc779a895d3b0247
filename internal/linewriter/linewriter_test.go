package linewriter

import (
	"bytes"
	"context"
	"fmt"
	"sync"
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
