package telemetry

import (
	"bytes"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
)

// Go runtime and process metrics under the names client_golang's Go and
// process collectors used (a subset): runtime/metrics and /proc/self, read
// once per scrape.

// runtimeSamples are the runtime/metrics read at each scrape, in this order.
var runtimeSamples = []string{
	"/sched/goroutines:goroutines",
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/unused:bytes",
	"/memory/classes/heap/free:bytes",
	"/memory/classes/heap/released:bytes",
	"/memory/classes/heap/stacks:bytes",
	"/memory/classes/os-stacks:bytes",
	"/memory/classes/total:bytes",
	"/gc/heap/allocs:bytes",
	"/gc/heap/allocs:objects",
	"/gc/heap/frees:objects",
	"/gc/heap/tiny/allocs:objects",
	"/gc/heap/objects:objects",
	"/gc/heap/goal:bytes",
	"/gc/gogc:percent",
	"/gc/gomemlimit:bytes",
	"/sched/gomaxprocs:threads",
}

const (
	rtGoroutines = iota
	rtHeapObjects
	rtHeapUnused
	rtHeapFree
	rtHeapReleased
	rtStacks
	rtOSStacks
	rtTotal
	rtAllocBytes
	rtAllocObjects
	rtFreeObjects
	rtTinyAllocs
	rtObjects
	rtGoal
	rtGOGC
	rtMemLimit
	rtGOMAXPROCS
)

type runtimeStats struct {
	samples []metrics.Sample
	proc    procStats
}

func (s *runtimeStats) v(i int) float64 {
	switch v := s.samples[i].Value; v.Kind() {
	case metrics.KindUint64:
		return float64(v.Uint64())
	case metrics.KindFloat64:
		return v.Float64()
	}
	return 0
}

// registerRuntimeMetrics adds the go_* and process_* families to r.
func registerRuntimeMetrics(r *registry) {
	s := &runtimeStats{samples: make([]metrics.Sample, len(runtimeSamples))}
	for i, name := range runtimeSamples {
		s.samples[i].Name = name
	}
	r.prepare = append(r.prepare, func() {
		metrics.Read(s.samples)
		s.proc = readProcStats()
	})
	sum := func(idx ...int) func() float64 {
		return func() float64 {
			var t float64
			for _, i := range idx {
				t += s.v(i)
			}
			return t
		}
	}
	for _, m := range []struct {
		name, help string
		kind       metricKind
		value      func() float64
	}{
		{"go_goroutines", "Number of goroutines that currently exist.", kindGauge, sum(rtGoroutines)},
		{"go_gc_gogc_percent", "Heap size target percentage configured by GOGC.", kindGauge, sum(rtGOGC)},
		{"go_gc_gomemlimit_bytes", "Go runtime memory limit configured by GOMEMLIMIT.", kindGauge, sum(rtMemLimit)},
		{"go_sched_gomaxprocs_threads", "The current runtime.GOMAXPROCS setting.", kindGauge, sum(rtGOMAXPROCS)},
		{"go_memstats_alloc_bytes", "Total number of bytes allocated in heap until now, even if released already.", kindCounter, sum(rtAllocBytes)},
		{"go_memstats_mallocs", "Total number of heap objects allocated.", kindCounter, sum(rtAllocObjects, rtTinyAllocs)},
		{"go_memstats_frees", "Total number of heap objects frees.", kindCounter, sum(rtFreeObjects, rtTinyAllocs)},
		{"go_memstats_heap_alloc_bytes", "Number of heap bytes allocated and currently in use.", kindGauge, sum(rtHeapObjects)},
		{"go_memstats_heap_idle_bytes", "Number of heap bytes waiting to be used.", kindGauge, sum(rtHeapReleased, rtHeapFree)},
		{"go_memstats_heap_inuse_bytes", "Number of heap bytes that are in use.", kindGauge, sum(rtHeapObjects, rtHeapUnused)},
		{"go_memstats_heap_objects", "Number of currently allocated objects.", kindGauge, sum(rtObjects)},
		{"go_memstats_heap_released_bytes", "Number of heap bytes released to OS.", kindGauge, sum(rtHeapReleased)},
		{"go_memstats_heap_sys_bytes", "Number of heap bytes obtained from system.", kindGauge, sum(rtHeapObjects, rtHeapUnused, rtHeapFree, rtHeapReleased)},
		{"go_memstats_next_gc_bytes", "Number of heap bytes when next garbage collection will take place.", kindGauge, sum(rtGoal)},
		{"go_memstats_stack_inuse_bytes", "Number of bytes obtained from system for stack allocator in non-CGO environments.", kindGauge, sum(rtStacks)},
		{"go_memstats_stack_sys_bytes", "Number of bytes obtained from system for stack allocator.", kindGauge, sum(rtStacks, rtOSStacks)},
		{"go_memstats_sys_bytes", "Number of bytes obtained from system.", kindGauge, sum(rtTotal)},
	} {
		r.collected(m.name, m.help, m.kind, func(emit func(float64, ...string)) { emit(m.value()) })
	}
	r.collected("go_info", "Information about the Go environment.", kindGauge,
		func(emit func(float64, ...string)) { emit(1, runtime.Version()) }, "version")

	proc := func(name, help string, kind metricKind, value func(p *procStats) (float64, bool)) {
		r.collected(name, help, kind, func(emit func(float64, ...string)) {
			if v, ok := value(&s.proc); ok {
				emit(v)
			}
		})
	}
	proc("go_threads", "Number of OS threads created.", kindGauge,
		func(p *procStats) (float64, bool) { return p.threads, p.ok })
	proc("process_cpu_seconds", "Total user and system CPU time spent in seconds.", kindCounter,
		func(p *procStats) (float64, bool) { return p.cpuSeconds, p.ok })
	proc("process_resident_memory_bytes", "Resident memory size in bytes.", kindGauge,
		func(p *procStats) (float64, bool) { return p.rss, p.ok })
	proc("process_virtual_memory_bytes", "Virtual memory size in bytes.", kindGauge,
		func(p *procStats) (float64, bool) { return p.vsize, p.ok })
	proc("process_start_time_seconds", "Start time of the process since unix epoch in seconds.", kindGauge,
		func(p *procStats) (float64, bool) { return p.start, p.ok && p.start > 0 })
	proc("process_open_fds", "Number of open file descriptors.", kindGauge,
		func(p *procStats) (float64, bool) { return p.openFDs, p.openFDs >= 0 })
	proc("process_max_fds", "Maximum number of open file descriptors.", kindGauge,
		func(p *procStats) (float64, bool) { return p.maxFDs, p.maxFDs > 0 })
}

// procStats are the process figures from /proc/self (Linux); ok is false
// elsewhere.
type procStats struct {
	ok                            bool
	cpuSeconds, rss, vsize, start float64
	threads, openFDs, maxFDs      float64
}

// Linux reports CPU times and start time in clock ticks of 1/100 s
// (USER_HZ, fixed for user space).
const userHZ = 100

func readProcStats() procStats {
	p := procStats{openFDs: -1}
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		p.openFDs = float64(len(fds))
	}
	if b, err := os.ReadFile("/proc/self/limits"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
				if f := strings.Fields(rest); len(f) > 0 {
					p.maxFDs, _ = strconv.ParseFloat(f[0], 64)
				}
			}
		}
	}
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return p
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is field 3, so fields[i] is field i+3.
	end := bytes.LastIndexByte(b, ')')
	if end < 0 {
		return p
	}
	f := strings.Fields(string(b[end+1:]))
	field := func(n int) float64 {
		if n-3 >= len(f) {
			return 0
		}
		v, _ := strconv.ParseFloat(f[n-3], 64)
		return v
	}
	if len(f) < 22 {
		return p
	}
	p.ok = true
	p.cpuSeconds = (field(14) + field(15)) / userHZ
	p.threads = field(20)
	p.vsize = field(23)
	p.rss = field(24) * float64(os.Getpagesize())
	if bt := bootTime(); bt > 0 {
		p.start = bt + field(22)/userHZ
	}
	return p
}

// bootTime is the btime line of /proc/stat, in Unix seconds.
func bootTime() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return 0
}
