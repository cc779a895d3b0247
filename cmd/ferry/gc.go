package main

import (
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
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
