package telemetry

import (
	"context"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/trace"
)

// ferry's own metrics registry: a few metric families, each a set of series
// keyed by label values. Recording is an atomic add on a series handle; the
// handle is looked up once per label set (labels.go caches the request
// path's). /metrics renders the families in Prometheus text or OpenMetrics
// (expose.go).

type metricKind uint8

const (
	kindCounter metricKind = iota
	kindGauge
	kindHistogram
)

// overflowLabel marks the one series a family folds new label sets into
// once it holds cardinalityLimit series (the name the OpenTelemetry SDK
// used, so existing queries keep working).
const overflowLabel = "otel_metric_overflow"

// family is one metric: its name as exposed (for counters without _total),
// help text, kind, label names and series.
type family struct {
	name    string
	help    string
	kind    metricKind
	labels  []string  // label names, in the order values are passed
	order   []int     // indexes into labels sorted by name, for exposition
	buckets []float64 // histogram upper bounds, ascending, without +Inf
	limit   int       // series cap, the overflow series included

	mu       sync.RWMutex
	series   map[string]*series
	overflow *series

	// collect, when set, yields the family's values at scrape time instead
	// of stored series (values computed on demand: ages, runtime figures).
	collect func(emit func(v float64, labelValues ...string))
}

// series is one label set's value: an integer for counters and gauges, or
// bucket counts and a sum for histograms. Exemplars are kept for the latest
// sampled measurement (per bucket for histograms).
type series struct {
	values []string // label values, in family.labels order; nil for overflow
	n      atomic.Int64

	buckets  []float64
	counts   []atomic.Uint64 // per bucket (not cumulative), +Inf last
	sumBits  atomic.Uint64
	ex       exemplarSlot
	bucketEx []exemplarSlot

	// For retireIdle, under the family's lock: the count last seen and
	// since when it has not moved (zero: not followed).
	seen      uint64
	idleSince time.Time
}

// exemplar ties a measurement to the sampled span it was made in.
type exemplar struct {
	traceID trace.TraceID
	spanID  trace.SpanID
	value   float64
	at      int64 // Unix nanoseconds
}

// exemplarSlot holds a series' (or bucket's) latest exemplar in place, so
// keeping one allocates nothing. A writer that finds the slot busy (another
// writer, or a scrape reading it) drops its exemplar: they are samples, and
// the hot path must not wait.
type exemplarSlot struct {
	mu  sync.Mutex
	set bool
	ex  exemplar
}

func (e *exemplarSlot) store(ref spanRef, v float64) {
	if !e.mu.TryLock() {
		return
	}
	e.ex = exemplar{traceID: ref.sc.TraceID(), spanID: ref.sc.SpanID(), value: v, at: ref.at}
	e.set = true
	e.mu.Unlock()
}

func (e *exemplarSlot) load() (exemplar, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.ex, e.set
}

// spanRef is the sampled span of a measurement; zero when there is none.
type spanRef struct {
	sc trace.SpanContext
	at int64 // Unix nanoseconds
}

// spanRefFrom returns the sampled span in ctx (ok false when the span is
// missing or not sampled: no exemplar then).
func spanRefFrom(ctx context.Context) (spanRef, bool) { return spanRefAt(ctx, time.Time{}) }

// spanRefAt is spanRefFrom for a measurement made at at (now when zero).
func spanRefAt(ctx context.Context, at time.Time) (spanRef, bool) {
	return spanRefOf(trace.SpanContextFromContext(ctx), at)
}

// spanRefOf is spanRefAt for the span context sc.
func spanRefOf(sc trace.SpanContext, at time.Time) (spanRef, bool) {
	if !sc.IsSampled() || !sc.IsValid() {
		return spanRef{}, false
	}
	return spanRef{sc: sc, at: nowOr(at).UnixNano()}, true
}

func newFamily(name, help string, kind metricKind, labels ...string) *family {
	f := &family{name: name, help: help, kind: kind, labels: labels, limit: cardinalityLimit,
		series: map[string]*series{}}
	f.order = make([]int, len(labels))
	for i := range f.order {
		f.order[i] = i
	}
	sort.SliceStable(f.order, func(a, b int) bool { return labels[f.order[a]] < labels[f.order[b]] })
	return f
}

// with returns the series of the given label values (one per label name),
// creating it if needed; past the cap every new label set gets the overflow
// series.
func (f *family) with(values ...string) *series {
	// Values are shown as valid UTF-8 (see encoder.label): two that differ
	// only in invalid bytes are one series, not two that read the same.
	// Valid UTF-8 never holds 0xff, so the key is unambiguous too.
	for i, v := range values {
		if !utf8.ValidString(v) {
			values = slices.Clone(values)
			for j := i; j < len(values); j++ {
				values[j] = validUTF8(values[j])
			}
			break
		}
	}
	key := strings.Join(values, "\xff")
	f.mu.RLock()
	s := f.series[key]
	f.mu.RUnlock()
	if s != nil {
		return s
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if s = f.series[key]; s != nil {
		return s
	}
	if len(f.series) >= f.limit-1 {
		if f.overflow == nil {
			f.overflow = f.newSeries(nil)
		}
		return f.overflow
	}
	s = f.newSeries(slices.Clone(values))
	f.series[key] = s
	return s
}

// retain drops the series whose label values keep rejects (the overflow
// series stays).
func (f *family) retain(keep func(values []string) bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for key, s := range f.series {
		if !keep(s.values) {
			delete(f.series, key)
		}
	}
}

// retireIdle drops the series that gone reports and whose count (a
// counter's or gauge's value, a histogram's observations) has not moved
// for after, as seen by the calls of retireIdle at now (one per scrape);
// it reports whether it dropped any. A series gone reports no more is
// followed afresh should it be reported gone again.
func (f *family) retireIdle(now time.Time, after time.Duration, gone func(values []string) bool) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	dropped := false
	for key, s := range f.series {
		if !gone(s.values) {
			s.idleSince = time.Time{}
			continue
		}
		v := s.count()
		switch {
		case s.idleSince.IsZero() || v != s.seen:
			s.seen, s.idleSince = v, now
		case now.Sub(s.idleSince) >= after:
			delete(f.series, key)
			dropped = true
		}
	}
	return dropped
}

// count is a counter or gauge's value, or a histogram's observations.
func (s *series) count() uint64 {
	if s.counts == nil {
		return uint64(s.n.Load())
	}
	var n uint64
	for i := range s.counts {
		n += s.counts[i].Load()
	}
	return n
}

// sum adds up the values of a counter or gauge's series.
func (f *family) sum() int64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var n int64
	for _, s := range f.series {
		n += s.n.Load()
	}
	if f.overflow != nil {
		n += f.overflow.n.Load()
	}
	return n
}

func (f *family) newSeries(values []string) *series {
	s := &series{values: values}
	if f.kind == kindHistogram {
		s.buckets = f.buckets
		s.counts = make([]atomic.Uint64, len(f.buckets)+1)
		s.bucketEx = make([]exemplarSlot, len(f.buckets)+1)
	}
	return s
}

// add adds n to a counter or up-down gauge.
func (s *series) add(n int64) { s.n.Add(n) }

// addSampled adds n and keeps it as the exemplar when the measurement was
// made in a sampled span.
func (s *series) addSampled(n int64, ref spanRef, sampled bool) {
	s.n.Add(n)
	if sampled {
		s.ex.store(ref, float64(n))
	}
}

// set sets a gauge.
func (s *series) set(v int64) { s.n.Store(v) }

// observe records v in a histogram, with an exemplar on its bucket when
// sampled.
func (s *series) observe(v float64, ref spanRef, sampled bool) {
	i := sort.SearchFloat64s(s.buckets, v) // first bound >= v: le semantics
	s.counts[i].Add(1)
	for {
		old := s.sumBits.Load()
		if s.sumBits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			break
		}
	}
	if sampled {
		s.bucketEx[i].store(ref, v)
	}
}

// registry holds the families /metrics shows.
type registry struct {
	mu       sync.Mutex // serialises scrapes
	families []*family  // sorted by exposed name at scrape
	prepare  []func()   // run once per scrape before the families are read
}

func (r *registry) register(f *family) *family {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.families = append(r.families, f)
	sort.SliceStable(r.families, func(a, b int) bool {
		return r.families[a].textName() < r.families[b].textName()
	})
	return f
}

func (r *registry) counter(name, help string, labels ...string) *family {
	return r.register(newFamily(name, help, kindCounter, labels...))
}

func (r *registry) gauge(name, help string, labels ...string) *family {
	return r.register(newFamily(name, help, kindGauge, labels...))
}

func (r *registry) histogram(name, help string, buckets []float64, labels ...string) *family {
	f := newFamily(name, help, kindHistogram, labels...)
	f.buckets = buckets
	return r.register(f)
}

// collected registers a family whose values come from collect at scrape
// time.
func (r *registry) collected(name, help string, kind metricKind, collect func(emit func(float64, ...string)), labels ...string) *family {
	f := newFamily(name, help, kind, labels...)
	f.collect = collect
	return r.register(f)
}

// textName is the family's name in Prometheus text HELP and TYPE lines.
func (f *family) textName() string {
	if f.kind == kindCounter {
		return f.name + "_total"
	}
	return f.name
}

// snapshot returns the family's series sorted by label values (in label
// name order), the overflow series last.
func (f *family) snapshot() []*series {
	f.mu.RLock()
	out := make([]*series, 0, len(f.series)+1)
	for _, s := range f.series {
		out = append(out, s)
	}
	over := f.overflow
	f.mu.RUnlock()
	sort.Slice(out, func(a, b int) bool {
		for _, i := range f.order {
			if va, vb := out[a].values[i], out[b].values[i]; va != vb {
				return va < vb
			}
		}
		return false
	})
	if over != nil {
		out = append(out, over)
	}
	return out
}
