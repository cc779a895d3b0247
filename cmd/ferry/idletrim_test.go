package main

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestIdleTrimmerDue(t *testing.T) {
	const mib = 1 << 20
	var it idleTrimmer
	steps := []struct {
		name string
		r    heapReading
		want bool
	}{
		{"first reading: no interval yet", heapReading{allocs: 100 * mib, free: 30 * mib}, false},
		{"busy interval, much free", heapReading{allocs: 200 * mib, free: 30 * mib}, false},
		{"idle interval, much free", heapReading{allocs: 200*mib + 1000, free: 30 * mib}, true},
		{"idle, little free (just trimmed)", heapReading{allocs: 200*mib + 2000, free: 1 * mib}, false},
		{"idle, still little free", heapReading{allocs: 200*mib + 3000, free: 1 * mib}, false},
		{"a trickle under the idle bound, much free", heapReading{allocs: 200*mib + 3000 + trimIdleAlloc - 1, free: trimMinFree}, true},
		{"just over the idle bound", heapReading{allocs: 200*mib + 3000 + 2*trimIdleAlloc, free: 20 * mib}, false},
		{"idle, just under the free bound", heapReading{allocs: 200*mib + 3000 + 2*trimIdleAlloc, free: trimMinFree - 1}, false},
	}
	for _, s := range steps {
		if got := it.due(s.r); got != s.want {
			t.Errorf("%s: due %v, want %v", s.name, got, s.want)
		}
	}
}

// The loop trims once at the end of a burst, not again while ferry stays
// idle with the memory already given back, and again after the next
// burst; stop ends it.
func TestTrimWhenIdleOncePerBurst(t *testing.T) {
	const mib = 1 << 20
	var mu sync.Mutex
	var allocs uint64 = 50 * mib
	free := uint64(2 * mib)
	var reads, trims atomic.Int64
	burst := func() {
		mu.Lock()
		allocs += 100 * mib
		free = 40 * mib
		mu.Unlock()
	}
	read := func() heapReading {
		reads.Add(1)
		mu.Lock()
		defer mu.Unlock()
		return heapReading{allocs: allocs, free: free}
	}
	trim := func() {
		trims.Add(1)
		mu.Lock()
		free = 1 * mib
		mu.Unlock()
	}
	waitReads := func(n int64) {
		deadline := time.Now().Add(10 * time.Second)
		for reads.Load() < n {
			if time.Now().After(deadline) {
				t.Fatalf("only %d heap readings in 10s", reads.Load())
			}
			time.Sleep(time.Millisecond)
		}
	}
	stop := trimWhenIdle(time.Millisecond, read, trim)
	burst()
	waitReads(reads.Load() + 20)
	if n := trims.Load(); n != 1 {
		t.Fatalf("%d trims after one burst and idle intervals, want 1", n)
	}
	burst()
	waitReads(reads.Load() + 20)
	if n := trims.Load(); n != 2 {
		t.Fatalf("%d trims after two bursts, want 2", n)
	}
	stop()
	after := reads.Load()
	time.Sleep(5 * time.Millisecond) // nothing may read after stop returned
	if reads.Load() != after {
		t.Fatal("the heap was read after stop returned")
	}
}
