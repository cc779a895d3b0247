package main

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestIdleTrimmerDue(t *testing.T) {
	const mib = 1 << 20
	if trimQuietIntervals != 2 {
		t.Fatalf("the steps below assume two quiet intervals, not %d", trimQuietIntervals)
	}
	var it idleTrimmer
	a := uint64(100 * mib) // allocated so far
	steps := []struct {
		name        string
		alloc       uint64 // in the interval
		free, since uint64
		want        bool
	}{
		{"first reading: no interval yet", 0, 30 * mib, 0, false},
		{"busy, much free", 100 * mib, 30 * mib, 0, false},
		{"one quiet interval, much free", 1000, 30 * mib, 0, false},
		{"two quiet intervals, much free", 1000, 30 * mib, 0, true},
		{"quiet on, little free (just trimmed)", 1000, 1 * mib, 0, false},
		{"quiet on, still little", 1000, 1 * mib, 0, false},
		{"busy again", 50 * mib, 20 * mib, 0, false},
		{"quiet: a trickle under the bound", trimIdleAlloc - 1, 20 * mib, 0, false},
		{"quiet again, free and uncollected add up to the bound", trimIdleAlloc - 1, trimMinFree / 2, trimMinFree / 2, true},
		{"just over the idle bound: busy", trimIdleAlloc, 20 * mib, 0, false},
		{"quiet", 0, 20 * mib, 0, false},
		{"quiet, just under the bound", 0, trimMinFree - 1 - mib, mib, false},
		{"quiet, uncollected alone over the bound", 0, 0, trimMinFree, true},
	}
	for _, s := range steps {
		a += s.alloc
		if got := it.due(heapReading{allocs: a, free: s.free, since: s.since}); got != s.want {
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
