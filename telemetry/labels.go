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
