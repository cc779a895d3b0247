package main

import (
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"time"
)

// The garbage collector's target adapts to ferry's live heap unless GOGC
// is set. Relaying a small request allocates a few KiB that die with it,
// and ferry's live heap is small, so at Go's default (collect when the
// heap doubled, at least 4 MiB) the collector runs dozens of times a
// second under load. After each collection ferry sets the target so that
// the heap may grow by at least gcHeadroom before the next one: GOGC =
// 100 x gcHeadroom / live heap, within [100, gcMaxPercent]. A small heap
// is collected a fraction as often (about 13% less CPU per small request
// at c=32); a large one, with many streams in flight, keeps Go's default,
// so memory under heavy concurrency does not grow with the target.
const (
	gcHeadroom   = 16 << 20
	gcMaxPercent = 400
)

// gcPercentFor is the GOGC that gives live bytes of heap gcHeadroom to
// grow, within [100, gcMaxPercent].
func gcPercentFor(live uint64) int {
	if live == 0 {
		return gcMaxPercent
	}
	p := uint64(100) * gcHeadroom / live
	return int(min(max(p, 100), gcMaxPercent))
}

// memoryLimitShare is the part of the container's memory limit given to
// the Go runtime as its soft limit (GOMEMLIMIT) unless GOMEMLIMIT is set:
// near it the collector works harder instead of letting the heap grow to
// GOGC's target and the container be killed.
const memoryLimitShare = 0.9

// cgroupMemoryFiles hold the container's memory limit: cgroup v2, then v1.
var cgroupMemoryFiles = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// gcSettings is what tuneGC chose: whether the target adapts (false: GOGC
// is set) and the soft memory limit in bytes (0: left as set).
type gcSettings struct {
	adapt       bool
	memoryLimit int64
}

// tuneGC applies ferry's collector defaults where the environment does not
// set its own.
func tuneGC() gcSettings {
	s := chooseGC(os.Getenv, os.ReadFile)
	if s.adapt {
		debug.SetGCPercent(gcPercentFor(liveHeap()))
		watchGC(func() { debug.SetGCPercent(gcPercentFor(liveHeap())) })
	}
	if s.memoryLimit > 0 {
		debug.SetMemoryLimit(s.memoryLimit)
	}
	return s
}

// liveHeap is the heap the last collection kept.
func liveHeap() uint64 {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(sample)
	if sample[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return sample[0].Value.Uint64()
}

// watchGC calls f after every garbage collection, for the life of the
// process: an object left unreachable on purpose is cleaned up by each
// cycle, and its cleanup leaves the next one.
func watchGC(f func()) {
	sentinel := new([64]byte) // not a tiny allocation: its own object
	runtime.AddCleanup(sentinel, func(struct{}) {
		f()
		watchGC(f)
	}, struct{}{})
}

// chooseGC decides tuneGC's settings from the environment and the cgroup
// files.
func chooseGC(getenv func(string) string, readFile func(string) ([]byte, error)) gcSettings {
	var s gcSettings
	s.adapt = getenv("GOGC") == ""
	if getenv("GOMEMLIMIT") == "" {
		for _, f := range cgroupMemoryFiles {
			b, err := readFile(f)
			if err != nil {
				continue
			}
			// "max" (v2) or a huge number (v1) mean no limit.
			n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
			if err == nil && n > 0 && n < math.MaxInt64/2 {
				s.memoryLimit = int64(float64(n) * memoryLimitShare)
			}
			break
		}
	}
	return s
}

// After a burst, the heap ferry grew for it stays mapped: the collector
// runs only as ferry allocates (and at least every two minutes), and the
// runtime gives free memory back to the system slowly, keeping what its
// target allows (16 MiB of headroom, above). A sidecar that served 256
// connections for a few seconds would sit at three or four times its idle
// memory long after, on the pod's account. So ferry looks at its heap
// every trimInterval: after trimQuietIntervals in a row that allocated
// next to nothing (no traffic to speak of), when the heap holds
// trimMinFree or more that is free but still mapped or allocated since the
// last collection, that memory goes back to the system at once (two
// collections, since what sits in a sync.Pool survives one, then
// debug.FreeOSMemory's release). Idle on with little to give, it does
// nothing; the next burst's end trims again.
//
// The quiet stretch is longer than the upstream pool's sweep period plus
// the idle time after which a pooled connection gives its buffers back
// (sidecar: poolSweepInterval, 5 s, and poolParkAfter, 1 s): the sweep
// that parks the burst's connections has run before the trim, whose
// collections free their buffers.
const (
	trimInterval       = 5 * time.Second
	trimQuietIntervals = 2
	trimIdleAlloc      = 1 << 20 // bytes an interval may allocate and still be idle (probes and scrapes)
	trimMinFree        = 8 << 20 // memory worth a trim
)

// heapReading is what the trimmer reads of the heap: bytes allocated
// since the process began, free heap memory not yet given back, and heap
// memory allocated since the last collection (live or not, until the
// next one tells).
type heapReading struct{ allocs, free, since uint64 }

func readHeap() heapReading {
	s := []metrics.Sample{
		{Name: "/gc/heap/allocs:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/gc/heap/live:bytes"},
	}
	metrics.Read(s)
	var v [4]uint64
	for i := range s {
		if s[i].Value.Kind() == metrics.KindUint64 {
			v[i] = s[i].Value.Uint64()
		}
	}
	r := heapReading{allocs: v[0], free: v[1]}
	if v[2] > v[3] {
		r.since = v[2] - v[3]
	}
	return r
}

// idleTrimmer decides from one reading per interval when to trim.
type idleTrimmer struct {
	last  heapReading
	read  bool // last is set
	quiet int  // idle intervals in a row
}

// due takes the reading at the end of an interval and reports whether
// ferry has been idle for trimQuietIntervals and the heap holds enough to
// give back.
func (t *idleTrimmer) due(r heapReading) bool {
	prev, had := t.last, t.read
	t.last, t.read = r, true
	if !had || r.allocs-prev.allocs >= trimIdleAlloc {
		t.quiet = 0
		return false
	}
	t.quiet++
	return t.quiet >= trimQuietIntervals && r.free+r.since >= trimMinFree
}

// trimWhenIdle reads the heap every interval and calls trim when due;
// stop ends it and waits until it has.
func trimWhenIdle(every time.Duration, read func() heapReading, trim func()) (stop func()) {
	quit, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		tick := time.NewTicker(every)
		defer tick.Stop()
		var t idleTrimmer
		t.due(read())
		for {
			select {
			case <-quit:
				return
			case <-tick.C:
			}
			if t.due(read()) {
				trim()
				t.last = read() // the next interval counts from here
			}
		}
	}()
	return func() {
		close(quit)
		<-exited
	}
}
