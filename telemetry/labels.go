package telemetry

import (
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// maxCachedLabelSets bounds each label cache; past it options are built per
// call (the SDK's cardinality limit still applies).
const maxCachedLabelSets = cardinalityLimit

// labelCache keeps the measurement option of each label tuple so the hot
// path neither sorts nor allocates attribute sets. Reads are lock-free from
// an immutable map; a new tuple copies the map under a mutex (rare: label
// values come from bounded sets).
type labelCache[K comparable] struct {
	m     atomic.Pointer[map[K]labelOpts]
	mu    sync.Mutex
	build func(K) []attribute.KeyValue
}

// labelOpts are ready-made option slices: passing them with ... to Add or
// Record does not allocate, a fresh variadic argument would.
type labelOpts struct {
	add    []metric.AddOption
	record []metric.RecordOption
}

func newLabelCache[K comparable](build func(K) []attribute.KeyValue) *labelCache[K] {
	c := &labelCache[K]{build: build}
	empty := map[K]labelOpts{}
	c.m.Store(&empty)
	return c
}

func (c *labelCache[K]) get(k K) labelOpts {
	if opt, ok := (*c.m.Load())[k]; ok {
		return opt
	}
	o := metric.WithAttributeSet(attribute.NewSet(c.build(k)...))
	opt := labelOpts{add: []metric.AddOption{o}, record: []metric.RecordOption{o}}
	c.mu.Lock()
	defer c.mu.Unlock()
	cur := *c.m.Load()
	if len(cur) >= maxCachedLabelSets {
		return opt
	}
	next := make(map[K]labelOpts, len(cur)+1)
	for kk, v := range cur {
		next[kk] = v
	}
	next[k] = opt
	c.m.Store(&next)
	return opt
}

type requestLabels struct{ listener, service, endpoint, class, reason string }
type durationLabels struct{ listener, service, class string }
type bytesLabels struct{ listener, service, direction string }

// requestMetricLabels holds the label caches of the per-request instruments.
type requestMetricLabels struct {
	requests *labelCache[requestLabels]
	duration *labelCache[durationLabels]
	bytes    *labelCache[bytesLabels]
	listener *labelCache[string]
}

func newRequestMetricLabels() requestMetricLabels {
	return requestMetricLabels{
		requests: newLabelCache(func(k requestLabels) []attribute.KeyValue {
			return []attribute.KeyValue{
				attribute.String("listener", k.listener), attribute.String("service", k.service),
				attribute.String("endpoint", k.endpoint), attribute.String("status_class", k.class),
				attribute.String("reason", k.reason),
			}
		}),
		duration: newLabelCache(func(k durationLabels) []attribute.KeyValue {
			return []attribute.KeyValue{
				attribute.String("listener", k.listener), attribute.String("service", k.service),
				attribute.String("status_class", k.class),
			}
		}),
		bytes: newLabelCache(func(k bytesLabels) []attribute.KeyValue {
			return []attribute.KeyValue{
				attribute.String("listener", k.listener), attribute.String("service", k.service),
				attribute.String("direction", k.direction),
			}
		}),
		listener: newLabelCache(func(l string) []attribute.KeyValue {
			return []attribute.KeyValue{attribute.String("listener", l)}
		}),
	}
}
