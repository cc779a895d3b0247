package sidecar

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/internal/payload"
)

// Memory bounds are ferry's promise: a body of any size costs a fixed
// amount of memory. These tests move gigabytes through a real ferry on
// loopback, in process, and assert the heap and RSS stay under a hard cap
// while the digests match at both ends.
const (
	gib = int64(1) << 30
	mib = int64(1) << 20

	// maxHeapGrowth bounds live heap growth during one streamed body.
	maxHeapGrowth = 4 * mib
	// maxAllocated bounds everything allocated while moving 1 GiB: it
	// proves no allocation per body byte (1 GiB through 32 KiB buffers
	// would be 32768 buffers, 1 GiB of garbage).
	maxAllocated = 16 * mib
	// maxRSSGrowth bounds the whole process's resident memory growth.
	maxRSSGrowth = 24 * mib
)

func skipHeavy(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("moves gigabytes; skipped with -short")
	}
	if raceEnabled {
		t.Skip("moves gigabytes; runs without -race")
	}
}

var digests sync.Map // size -> sha256 hex

func digestOf(size int64) string {
	if d, ok := digests.Load(size); ok {
		return d.(string)
	}
	d := payload.Digest(size)
	digests.Store(size, d)
	return d
}

// memWatch samples live heap and RSS until stopped and reports the peaks.
type memWatch struct {
	stop                  chan struct{}
	done                  chan struct{}
	baseHeap, peakHeap    uint64
	baseRSS, peakRSS      int64
	baseAllocs, endAllocs uint64
}

var memSamples = []metrics.Sample{
	{Name: "/memory/classes/heap/objects:bytes"},
	{Name: "/gc/heap/allocs:bytes"},
}

func readMem() (heap, allocs uint64) {
	s := make([]metrics.Sample, len(memSamples))
	copy(s, memSamples)
	metrics.Read(s)
	return s[0].Value.Uint64(), s[1].Value.Uint64()
}

func rss() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

func watchMemory() *memWatch {
	runtime.GC()
	m := &memWatch{stop: make(chan struct{}), done: make(chan struct{})}
	m.baseHeap, m.baseAllocs = readMem()
	m.peakHeap = m.baseHeap
	m.baseRSS = rss()
	m.peakRSS = m.baseRSS
	go func() {
		defer close(m.done)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-m.stop:
				return
			case <-tick.C:
			}
			h, _ := readMem()
			m.peakHeap = max(m.peakHeap, h)
			m.peakRSS = max(m.peakRSS, rss())
		}
	}()
	return m
}

func (m *memWatch) finish(t *testing.T, what string) {
	t.Helper()
	close(m.stop)
	<-m.done
	_, m.endAllocs = readMem()
	heapGrowth := int64(m.peakHeap) - int64(m.baseHeap)
	rssGrowth := m.peakRSS - m.baseRSS
	allocated := int64(m.endAllocs - m.baseAllocs)
	t.Logf("%s: peak heap growth %.2f MiB, allocated %.2f MiB, peak RSS growth %.2f MiB (RSS %.1f MiB)",
		what, float64(heapGrowth)/float64(mib), float64(allocated)/float64(mib), float64(rssGrowth)/float64(mib), float64(m.peakRSS)/float64(mib))
	if heapGrowth > maxHeapGrowth {
		t.Errorf("%s: heap grew %d bytes, bound %d", what, heapGrowth, maxHeapGrowth)
	}
	if allocated > maxAllocated {
		t.Errorf("%s: allocated %d bytes, bound %d: something allocates per body byte", what, allocated, maxAllocated)
	}
	if rssGrowth > maxRSSGrowth {
		t.Errorf("%s: RSS grew %d bytes, bound %d", what, rssGrowth, maxRSSGrowth)
	}
}

// download fetches size bytes through url and checks count and digest.
func downloadThrough(t *testing.T, c *http.Client, url string, size int64) {
	t.Helper()
	res, err := c.Get(fmt.Sprintf("%s/file?size=%d", url, size))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.ContentLength != size {
		t.Fatalf("Content-Length %d, want %d", res.ContentLength, size)
	}
	sink := payload.NewSink()
	n, err := io.CopyBuffer(sink, res.Body, make([]byte, 64<<10))
	if err != nil || n != size {
		t.Fatalf("read %d of %d bytes: %v", n, size, err)
	}
	if got, want := sink.Digest(), digestOf(size); got != want {
		t.Fatalf("sha256 %s, want %s", got, want)
	}
}

func TestMemoryFlatOnGigabyteDownload(t *testing.T) {
	skipHeavy(t)
	up := origin(t, payload.Handler(0))
	_, url := outboundTo(t, "", up)
	c := h1Client()
	digestOf(gib)
	downloadThrough(t, c, url, mib) // warm the pools and connections
	m := watchMemory()
	start := time.Now()
	downloadThrough(t, c, url, gib)
	took := time.Since(start)
	m.finish(t, "1 GiB download")
	t.Logf("1 GiB download through ferry: %.2fs, %.0f MiB/s", took.Seconds(), float64(gib)/float64(mib)/took.Seconds())
}

func TestMemoryFlatOnGigabyteUpload(t *testing.T) {
	skipHeavy(t)
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sink := payload.NewSink()
		n, err := io.CopyBuffer(sink, r.Body, make([]byte, 64<<10))
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		fmt.Fprintf(w, "%d %s", n, sink.Digest())
	}))
	_, url := outboundTo(t, "", up)
	c := h1Client()
	want := fmt.Sprintf("%d %s", gib, digestOf(gib))
	m := watchMemory()
	start := time.Now()
	req, _ := http.NewRequest("POST", url+"/upload", payload.NewReader(gib))
	req.ContentLength = gib
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(res.Body)
	res.Body.Close()
	took := time.Since(start)
	m.finish(t, "1 GiB upload")
	if string(got) != want {
		t.Fatalf("origin received %q, want %q", got, want)
	}
	t.Logf("1 GiB upload through ferry: %.2fs, %.0f MiB/s", took.Seconds(), float64(gib)/float64(mib)/took.Seconds())
}

// Twenty sequential 100 MiB downloads: memory after the first stays where
// it was (no growth per request, nothing retained).
func TestMemoryDoesNotGrowOverRepeatedDownloads(t *testing.T) {
	skipHeavy(t)
	up := origin(t, payload.Handler(0))
	_, url := outboundTo(t, "", up)
	c := h1Client()
	const size = 100 * mib
	digestOf(size)
	var heaps []uint64
	var rsses []int64
	for i := range 20 {
		downloadThrough(t, c, url, size)
		runtime.GC()
		h, _ := readMem()
		heaps = append(heaps, h)
		rsses = append(rsses, rss())
		_ = i
	}
	var maxHeap uint64
	var maxRSS int64
	for i := 1; i < len(heaps); i++ {
		maxHeap = max(maxHeap, heaps[i])
		maxRSS = max(maxRSS, rsses[i])
	}
	heapGrowth := int64(maxHeap) - int64(heaps[0])
	rssGrowth := maxRSS - rsses[0]
	t.Logf("live heap after download 1: %.2f MiB, largest after 2..20: %.2f MiB (growth %+.3f MiB); RSS %.1f -> max %.1f MiB (growth %+.2f MiB)",
		float64(heaps[0])/float64(mib), float64(maxHeap)/float64(mib), float64(heapGrowth)/float64(mib),
		float64(rsses[0])/float64(mib), float64(maxRSS)/float64(mib), float64(rssGrowth)/float64(mib))
	if heapGrowth > mib {
		t.Errorf("live heap grew %d bytes over 19 more downloads, bound 1 MiB", heapGrowth)
	}
	if rssGrowth > 4*mib {
		t.Errorf("RSS grew %d bytes over 19 more downloads, bound 4 MiB", rssGrowth)
	}
}
