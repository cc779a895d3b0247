package telemetry

import (
	"sync"
	"sync/atomic"
)

// maxCachedLabelSets bounds each label cache; past it handles are looked up
// in the family per call (and fold into its overflow series).
const maxCachedLabelSets = cardinalityLimit

// labelCache keeps the series handle of each label tuple so the hot path
// neither joins label values nor takes a lock. Reads are lock-free from an
// immutable map; a new tuple copies the map under a mutex (rare: label
// values come from bounded sets).
type labelCache[K comparable] struct {
	m     atomic.Pointer[map[K]*series]
	mu    sync.Mutex
	build func(K) *series
	// resets counts reset's calls (under mu): a handle built before one
	// may be of a series the family dropped, and is not cached.
	resets uint64
}

func newLabelCache[K comparable](build func(K) *series) *labelCache[K] {
	c := &labelCache[K]{build: build}
	empty := map[K]*series{}
	c.m.Store(&empty)
	return c
}

func (c *labelCache[K]) get(k K) *series {
	if s, ok := (*c.m.Load())[k]; ok {
		return s
	}
	c.mu.Lock()
	resets := c.resets
	c.mu.Unlock()
	// Built without the lock (the family takes its own); a reset
	// meanwhile (a scrape that dropped series) may have dropped this one.
	s := c.build(k)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.resets != resets {
		s = c.build(k) // the series in the family now; the family's lock is not held by reset's callers
	}
	cur := *c.m.Load()
	if len(cur) >= maxCachedLabelSets {
		return s
	}
	next := make(map[K]*series, len(cur)+1)
	for kk, v := range cur {
		next[kk] = v
	}
	next[k] = s
	c.m.Store(&next)
	return s
}

// SeriesMemo remembers the metric series a request ended in, for the
// requests one caller connection makes one after another: the next with
// the same labels adds to the same series without hashing its label
// strings into the caches' maps. A memo is used by one goroutine at a
// time; the zero value is empty.
type SeriesMemo struct {
	requests memo[requestLabels]
	duration memo[durationLabels]
	bytesIn  memo[bytesLabels]
	bytesOut memo[bytesLabels]
}

// memo is one remembered look-up: the series the cache's map m held for
// k.
type memo[K comparable] struct {
	m *map[K]*series
	k K
	s *series
}

// getVia is get, through e (nil: none). The remembered series is the
// answer while the cache's map is the one it came from: any change of the
// map (a series added, a reset that dropped series) makes a new one, and
// the next call looks up again.
func (c *labelCache[K]) getVia(k K, e *memo[K]) *series {
	if e == nil {
		return c.get(k)
	}
	if m := c.m.Load(); e.m == m && e.s != nil && e.k == k {
		return e.s
	}
	s := c.get(k)
	if m := c.m.Load(); (*m)[k] == s {
		e.m, e.k, e.s = m, k, s
	} else {
		e.s = nil // not cached (a full cache, or a reset meanwhile)
	}
	return s
}

// reset forgets every cached handle: the family dropped series, whose
// handles must not be written to any more (a handle fetched before reset
// may still take one last add, lost with its series).
func (c *labelCache[K]) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.resets++
	empty := map[K]*series{}
	c.m.Store(&empty)
}

type requestLabels struct{ listener, service, endpoint, class, reason string }
type durationLabels struct{ listener, service, class string }
type bytesLabels struct{ listener, service, direction string }

// requestMetricLabels holds the series caches of the per-request metrics.
type requestMetricLabels struct {
	requests *labelCache[requestLabels]
	duration *labelCache[durationLabels]
	bytes    *labelCache[bytesLabels]
	listener *labelCache[string]
}

func newRequestMetricLabels(m *Metrics) requestMetricLabels {
	return requestMetricLabels{
		requests: newLabelCache(func(k requestLabels) *series {
			return m.requests.with(k.listener, k.service, k.endpoint, k.class, k.reason)
		}),
		duration: newLabelCache(func(k durationLabels) *series {
			return m.duration.with(k.listener, k.service, k.class)
		}),
		bytes: newLabelCache(func(k bytesLabels) *series {
			return m.bodyBytes.with(k.listener, k.service, k.direction)
		}),
		listener: newLabelCache(func(l string) *series { return m.inFlight.with(l) }),
	}
}
