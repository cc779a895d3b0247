package linewriter

import (
	"context"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

// Writes racing Close are kept or dropped, never a panic: the wake-up a
// Write sends after it let go of the lock must not go to a channel that
// Close closed meanwhile.
func TestWriteRacingCloseDoesNotPanic(t *testing.T) {
	line := []byte("line\n")
	for range 2000 {
		w := New(io.Discard, 1<<20)
		var wg sync.WaitGroup
		var writes atomic.Int64
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for w.Dropped() == 0 {
					w.Write(line)
					writes.Add(1)
				}
			}()
		}
		for writes.Load() < 50 {
			runtime.Gosched()
		}
		w.Close(context.Background())
		wg.Wait()
	}
}
