package telemetry

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"reflect"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
)

// ferry's tracer provider: the OpenTelemetry SDK's sampling and span data
// model (spans end as sdktrace.ReadOnlySpan and go to an
// sdktrace.SpanProcessor), without the SDK's per-span machinery that a
// proxy making two spans per request pays for: attribute normalisation on
// every SetAttributes, a de-duplication map built at every End, a second
// copy of the span for the processors. The spans of ferry's helpers keep
// their attributes as raw values (proxySpan, spanattrs.go), without
// duplicates; attributes set through the public SetAttributes are
// de-duplicated at End as the SDK does (the last value of a key wins, in
// the place of its first).
//
// Limits are the SDK's, from the same OTEL_*_LIMIT variables (spanlimits.go):
// by default 128 attributes per span, 128 events and 128 links (the oldest
// dropped first), 128 attributes per event and link; what goes over is
// counted as dropped. Processors get OnEnd only: ferry's processors (the
// queue, tests' recorders) do nothing at start.

// tracerProvider makes ferry's tracers. Shutdown and ForceFlush go to the
// processor; spans that end after Shutdown are dropped.
type tracerProvider struct {
	embedded.TracerProvider
	sampler sdktrace.Sampler
	known   knownSampler // what sampler is, when one of those; set before use
	proc    sdktrace.SpanProcessor
	res     *resource.Resource
	limits  spanLimits
	stopped atomic.Bool

	mu      sync.Mutex
	tracers map[instrumentation.Scope]*tracer
}

func newTracerProvider(sampler sdktrace.Sampler, proc sdktrace.SpanProcessor, res *resource.Resource, limits spanLimits) *tracerProvider {
	return &tracerProvider{sampler: sampler, proc: proc, res: res, limits: limits, tracers: map[instrumentation.Scope]*tracer{}}
}

// Tracer returns the tracer of one instrumentation scope.
func (p *tracerProvider) Tracer(name string, opts ...trace.TracerOption) trace.Tracer {
	c := trace.NewTracerConfig(opts...)
	scope := instrumentation.Scope{Name: name, Version: c.InstrumentationVersion(), SchemaURL: c.SchemaURL(), Attributes: c.InstrumentationAttributes()}
	p.mu.Lock()
	defer p.mu.Unlock()
	t, ok := p.tracers[scope]
	if !ok {
		t = &tracer{p: p, scope: scope}
		p.tracers[scope] = t
	}
	return t
}

// knownSampler names the samplers ferry builds whose decision depends on
// the parent's span context alone: the SDK's AlwaysSample, NeverSample
// and ParentBased of either with its default delegates. decide makes
// their decision without their two lookups of the parent in its context
// and the copies of SamplingParameters (TestKnownSamplersDecide compares
// it with theirs).
type knownSampler uint8

const (
	samplerOther     knownSampler = iota // any other: asked
	samplerOn                            // always_on
	samplerOff                           // always_off
	samplerParentOn                      // parentbased_always_on
	samplerParentOff                     // parentbased_always_off
)

// decide writes into res, zero, the sampler's result for a span under a
// parent whose span context is psc (invalid for a root): no attributes,
// the parent's tracestate, and the decision. ParentBased's delegates for
// a parent, remote or local, are AlwaysSample for a sampled one and
// NeverSample for one that is not.
func (k knownSampler) decide(res *sdktrace.SamplingResult, psc *trace.SpanContext) {
	on := k == samplerOn
	if k == samplerParentOn || k == samplerParentOff {
		if psc.IsValid() {
			on = psc.IsSampled()
		} else {
			on = k == samplerParentOn
		}
	}
	res.Decision = sdktrace.Drop
	if on {
		res.Decision = sdktrace.RecordAndSample
	}
	res.Tracestate = psc.TraceState()
}

// ForceFlush exports the spans the processor holds.
func (p *tracerProvider) ForceFlush(ctx context.Context) error { return p.proc.ForceFlush(ctx) }

// Shutdown stops the processor; later spans are not processed.
func (p *tracerProvider) Shutdown(ctx context.Context) error {
	if p.stopped.Swap(true) {
		return nil
	}
	return p.proc.Shutdown(ctx)
}

type tracer struct {
	embedded.Tracer
	p     *tracerProvider
	scope instrumentation.Scope
}

// Start starts a span as the SDK does: the parent from ctx (a new trace
// without one), the sampler's decision, a new span ID.
func (t *tracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if ctx == nil {
		ctx = context.Background()
	}
	c := trace.NewSpanStartConfig(opts...)
	var parent trace.SpanContext
	if c.NewRoot() {
		ctx = trace.ContextWithSpanContext(ctx, parent)
	} else {
		parent = trace.SpanContextFromContext(ctx)
	}
	kind := trace.ValidateSpanKind(c.SpanKind())
	var st proxyStart
	t.sample(&st, &parent, ctx, name, kind, c.Attributes(), c.Links())
	sc := st.spanContext()
	if st.res.Decision == sdktrace.Drop {
		return trace.ContextWithSpanContext(ctx, sc), nonRecordingSpan{sc: sc, p: t.p}
	}
	start := nowOr(c.Timestamp())
	s := &span{t: t, sc: sc, parent: parent, kind: uint8(kind), name: name, start: start}
	for _, l := range c.Links() {
		s.AddLink(l)
	}
	s.SetAttributes(st.res.Attributes...)
	s.SetAttributes(c.Attributes()...)
	return trace.ContextWithSpan(ctx, s), s
}

// proxyStart is the sampler's verdict on a span about to start: what its
// span context is made of (spanContext), filled in place by sample and
// its kin. (Span contexts and sampling results are large: passed and
// returned by value through each call, their copies cost more than the
// decision. The parent's span context is passed by pointer beside it,
// never kept in it: the compiler would then move the caller's copy to
// the heap.)
type proxyStart struct {
	tid   trace.TraceID
	sid   trace.SpanID
	flags trace.TraceFlags        // the span's
	res   sdktrace.SamplingResult // its Tracestate is the span's
	at    time.Time               // when the span starts; zero: now
}

// spanContext is the span context of the span st decided on.
func (st *proxyStart) spanContext() trace.SpanContext {
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: st.tid, SpanID: st.sid, TraceFlags: st.flags, TraceState: st.res.Tracestate})
}

// settle completes st once the sampler has decided: the span's flags,
// the parent's (parentFlags) besides sampled, and a new span ID.
func (st *proxyStart) settle(parentFlags trace.TraceFlags) {
	st.flags = parentFlags &^ trace.FlagsSampled
	if st.res.Decision == sdktrace.RecordAndSample {
		st.flags |= trace.FlagsSampled
	}
	st.sid = newSpanID()
}

// sample asks the sampler about a new span under the span whose span
// context is parent (invalid for a root), in its trace or a new one,
// fills st in and reports whether the span records. ctx holds the parent
// (the sampler's ParentContext; a sampler ferry knows never reads it).
func (t *tracer) sample(st *proxyStart, parent *trace.SpanContext, ctx context.Context, name string, kind trace.SpanKind, attrs []attribute.KeyValue, links []trace.Link) (record bool) {
	if st.tid = parent.TraceID(); !st.tid.IsValid() {
		st.tid = newTraceID()
	}
	if k := t.p.known; k != samplerOther {
		// decide's work without its arguments, which such a sampler
		// does not read.
		k.decide(&st.res, parent)
		st.settle(parent.TraceFlags())
	} else {
		t.decide(st, ctx, parent, parent.TraceFlags(), name, kind, attrs, links)
	}
	return st.res.Decision != sdktrace.Drop
}

// decide asks the sampler about a new span of trace st.tid, the parent in
// sctx (the sampler's ParentContext), whose span context is psc, and
// fills st in (settle).
func (t *tracer) decide(st *proxyStart, sctx context.Context, psc *trace.SpanContext, parentFlags trace.TraceFlags, name string, kind trace.SpanKind, attrs []attribute.KeyValue, links []trace.Link) {
	if k := t.p.known; k != samplerOther {
		k.decide(&st.res, psc)
	} else {
		st.res = t.p.sampler.ShouldSample(sdktrace.SamplingParameters{
			ParentContext: sctx, TraceID: st.tid, Name: name, Kind: kind, Attributes: attrs, Links: links,
		})
	}
	st.settle(parentFlags)
}

// sampleDecided decides on a span of kind under ctx, which holds no span
// context, whose caller sent sampling decision d without IDs (b3Decision):
// the sampler is asked as if under a remote parent of a new trace that
// made decision d, so the parent-based samplers follow it as they would
// a traceparent's sampled flag. The span, recording or not, starts that
// trace with no parent: the caller named no span to be the child of.
func (t *tracer) sampleDecided(st *proxyStart, ctx context.Context, d callerDecision, name string, kind trace.SpanKind) (record bool) {
	st.tid = newTraceID()
	var flags trace.TraceFlags
	if d == callerAccepts {
		flags = trace.FlagsSampled
	}
	parent := trace.NewSpanContext(trace.SpanContextConfig{TraceID: st.tid, SpanID: newSpanID(), TraceFlags: flags, Remote: true})
	if t.p.known == samplerOther {
		ctx = trace.ContextWithSpanContext(ctx, parent)
	}
	t.decide(st, ctx, &parent, 0, name, kind, nil, nil)
	return st.res.Decision != sdktrace.Drop
}

// sampleDeferred decides on a span of kind under parent, the span
// context ctx holds, a remote parent whose caller deferred the sampling
// decision (b3Deferred): the sampler is asked as for a new trace with
// that trace ID, so the parent-based samplers apply their root sampler,
// and the span, recording or not, is the parent's child.
func (t *tracer) sampleDeferred(st *proxyStart, parent *trace.SpanContext, ctx context.Context, name string, kind trace.SpanKind) (record bool) {
	var root trace.SpanContext
	if t.p.known == samplerOther {
		ctx = trace.ContextWithSpanContext(ctx, root)
	}
	st.tid = parent.TraceID()
	t.decide(st, ctx, &root, parent.TraceFlags(), name, kind, nil, nil)
	if st.res.Tracestate.Len() == 0 {
		st.res.Tracestate = parent.TraceState()
	}
	return st.res.Decision != sdktrace.Drop
}

// proxySpan is a span of ferry's request and attempt helpers: the span and
// its attributes' raw values (spanattrs.go) in one allocation (with the
// Request or Attempt, tracedRequest and tracedAttempt).
type proxySpan struct {
	span
	pa proxyAttrs
}

// startProxy starts ps, a recording span st decided on under the span
// whose span context is parent, and returns ctx carrying it. ps is zero,
// freshly allocated: only the fields a span starts with are written
// (assigning a whole span would write all 320 bytes of it again, through
// the write barriers).
func (t *tracer) startProxy(ctx context.Context, ps *proxySpan, st *proxyStart, parent *trace.SpanContext, name string, kind trace.SpanKind) context.Context {
	t.initProxy(ps, st, parent, name, kind)
	return trace.ContextWithSpan(ctx, &ps.span)
}

// initProxy is startProxy without the context.
func (t *tracer) initProxy(ps *proxySpan, st *proxyStart, parent *trace.SpanContext, name string, kind trace.SpanKind) {
	sp := &ps.span
	sp.t, sp.kind, sp.name, sp.start = t, uint8(kind), name, nowOr(st.at)
	sp.sc, sp.parent = st.spanContext(), *parent
	sp.pa = &ps.pa
	if len(st.res.Attributes) > 0 {
		ps.span.SetAttributes(st.res.Attributes...)
	}
}

// nonRecording is the span and context of a span the sampler dropped.
func (t *tracer) nonRecording(ctx context.Context, st *proxyStart) (context.Context, trace.Span) {
	sc := st.spanContext()
	return trace.ContextWithSpanContext(ctx, sc), nonRecordingSpan{sc: sc, p: t.p}
}

// newTraceID and newSpanID are random and never zero (the SDK's default
// generator does the same).
func newTraceID() trace.TraceID {
	var id trace.TraceID
	for !id.IsValid() {
		binary.NativeEndian.PutUint64(id[:8], rand.Uint64())
		binary.NativeEndian.PutUint64(id[8:], rand.Uint64())
	}
	return id
}

func newSpanID() trace.SpanID {
	var id trace.SpanID
	for !id.IsValid() {
		binary.NativeEndian.PutUint64(id[:], rand.Uint64())
	}
	return id
}

// span is a recording span. Its methods are safe for concurrent use. (Its
// fields are laid out small: with its attributes' raw values and a Request
// or Attempt, it is one allocation per span, 640 and 768 bytes with an
// Attempt and a Request, TestSpanSizeClasses; what few spans have,
// events, links and dropped counts, is in more.)
type span struct {
	embedded.Span
	t      *tracer
	sc     trace.SpanContext
	parent trace.SpanContext
	start  time.Time

	mu    sync.Mutex
	kind  uint8 // a trace.SpanKind, which ValidateSpanKind keeps below 6
	ended bool
	dirty bool // attrs may hold a key twice

	end    time.Time
	name   string
	attrs  []attribute.KeyValue
	status sdktrace.Status
	// more is the span's events, links and dropped counts; nil while it
	// has none.
	more *spanMore

	// pa holds the attributes of a span of ferry's helpers (proxySpan)
	// as raw values; nil for other spans, and once End has turned them
	// into attrs (when limits or SetAttributes call for it).
	pa *proxyAttrs
	// ro is how processors see the span once it has ended.
	ro endedSpan
}

// spanMore is what a span rarely has: events, links, and counts of what
// the limits dropped.
type spanMore struct {
	events                                    []sdktrace.Event
	links                                     []sdktrace.Link
	droppedAttrs, droppedEvents, droppedLinks int
}

// extra is s.more, made when nil. s.mu is held (or s is not yet shared).
func (s *span) extra() *spanMore {
	if s.more == nil {
		s.more = new(spanMore)
	}
	return s.more
}

func (s *span) SpanContext() trace.SpanContext { return s.sc }

func (s *span) IsRecording() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.ended
}

func (s *span) SetName(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ended {
		s.name = name
	}
}

// SetStatus keeps the highest code (Unset < Error < Ok), as the SDK does;
// the description counts only for Error.
func (s *span) SetStatus(code codes.Code, description string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended || s.status.Code > code {
		return
	}
	s.status = sdktrace.Status{Code: code}
	if code == codes.Error {
		s.status.Description = description
	}
}

// SetAttributes adds kvs; a key set again is de-duplicated at End.
func (s *span) SetAttributes(kvs ...attribute.KeyValue) {
	if len(kvs) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ended {
		s.dirty = s.dirty || len(s.attrs) > 0 || len(kvs) > 1
		s.addAttrs(kvs)
	}
}

// adoptAttributes takes kvs over as the span's attributes when it has none
// yet (else adds them). The keys must be distinct and valid (ferry's
// helpers guarantee it): there is nothing to check or de-duplicate. s.mu
// is held.
func (s *span) adoptAttributes(kvs []attribute.KeyValue) {
	if s.attrs == nil && len(kvs) <= limitOr(s.t.p.limits.attributes, len(kvs)) && s.t.p.limits.valueLength < 0 {
		s.attrs = kvs
		return
	}
	s.addAttrs(kvs)
}

// keepRaw reports whether an ending span of ferry's helpers keeps its
// attributes as raw values: nothing else set attributes on it, and the
// limits cut nothing. Else End builds them and applies the limits, as
// for any span. s.mu is held.
func (s *span) keepRaw() bool {
	l := s.t.p.limits
	return s.attrs == nil && s.pa.moreRoutes == nil && l.valueLength < 0 && (l.attributes < 0 || l.attributes >= maxProxyAttrs)
}

func (s *span) addAttrs(kvs []attribute.KeyValue) {
	l := s.t.p.limits
	limit := limitOr(l.attributes, len(s.attrs)+len(kvs))
	if s.attrs == nil {
		s.attrs = make([]attribute.KeyValue, 0, min(len(kvs), limit))
	}
	for _, kv := range kvs {
		if !kv.Valid() {
			s.extra().droppedAttrs++
			continue
		}
		s.attrs = append(s.attrs, l.truncate(kv))
	}
	if len(s.attrs) > limit && s.dirty {
		s.dedupe()
	}
	if n := len(s.attrs) - limit; n > 0 {
		s.extra().droppedAttrs += n
		clear(s.attrs[limit:])
		s.attrs = s.attrs[:limit]
	}
}

// dedupe keeps one attribute per key: the last value, where the key first
// appeared.
func (s *span) dedupe() {
	seen := make(map[attribute.Key]int, len(s.attrs))
	out := s.attrs[:0]
	for _, kv := range s.attrs {
		if i, ok := seen[kv.Key]; ok {
			out[i] = kv
			continue
		}
		seen[kv.Key] = len(out)
		out = append(out, kv)
	}
	clear(s.attrs[len(out):])
	s.attrs = out
	s.dirty = false
}

func (s *span) AddEvent(name string, opts ...trace.EventOption) {
	c := trace.NewEventConfig(opts...)
	l := s.t.p.limits
	e := sdktrace.Event{Name: name, Time: c.Timestamp()}
	e.Attributes, e.DroppedAttributeCount = l.limitAttrs(c.Attributes(), l.eventAttributes)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return
	}
	m := s.extra()
	m.events = appendEvicting(m.events, e, l.events, &m.droppedEvents)
}

func (s *span) AddLink(l trace.Link) {
	if !l.SpanContext.IsValid() && len(l.Attributes) == 0 && l.SpanContext.TraceState().Len() == 0 {
		return
	}
	lim := s.t.p.limits
	sl := sdktrace.Link{SpanContext: l.SpanContext}
	sl.Attributes, sl.DroppedAttributeCount = lim.limitAttrs(l.Attributes, lim.linkAttributes)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return
	}
	m := s.extra()
	m.links = appendEvicting(m.links, sl, lim.links, &m.droppedLinks)
}

// appendEvicting appends x to a list of at most limit entries (none below
// zero), dropping (and counting) the oldest when it is full, as the SDK
// does.
func appendEvicting[T any](list []T, x T, limit int, dropped *int) []T {
	switch {
	case limit == 0:
		*dropped++
		return list
	case limit > 0 && len(list) >= limit:
		n := len(list) - limit + 1
		copy(list, list[n:])
		list = list[:limit-1]
		*dropped += n
	}
	return append(list, x)
}

// RecordError adds an "exception" event, as the SDK does.
func (s *span) RecordError(err error, opts ...trace.EventOption) {
	if err == nil {
		return
	}
	opts = append(opts, trace.WithAttributes(semconv.ExceptionType(errorType(err)), semconv.ExceptionMessage(err.Error())))
	if c := trace.NewEventConfig(opts...); c.StackTrace() {
		buf := make([]byte, 2048)
		opts = append(opts, trace.WithAttributes(semconv.ExceptionStacktrace(string(buf[:runtime.Stack(buf, false)]))))
	}
	s.AddEvent(semconv.ExceptionEventName, opts...)
}

// errorType is the exception.type of err: package path and type name.
func errorType(err error) string {
	t := reflect.TypeOf(err)
	if t.PkgPath() == "" && t.Name() == "" {
		return t.String()
	}
	return t.PkgPath() + "." + t.Name()
}

// End ends the span and hands it to the processor. Only the first call
// counts.
func (s *span) End(opts ...trace.SpanEndOption) {
	end := time.Now()
	if c := trace.NewSpanEndConfig(opts...); !c.Timestamp().IsZero() {
		s.finish(c.Timestamp())
		return
	}
	s.endAt(end)
}

// endAt is End at the time end (a time taken at the end, never before the
// start).
func (s *span) endAt(end time.Time) {
	if end.Before(s.start) {
		end = s.start
	}
	s.finish(end)
}

func (s *span) finish(end time.Time) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended = true
	if pa := s.pa; pa != nil {
		switch {
		case !pa.done:
			s.pa = nil // ended before its helper ended it: none of its attributes
		case !s.keepRaw():
			s.pa = nil
			s.adoptAttributes(pa.keyValues())
		}
	}
	if s.dirty {
		s.dedupe()
	}
	s.end = end
	s.ro.s = s
	s.mu.Unlock()
	if s.t.p.stopped.Load() {
		return
	}
	s.t.p.proc.OnEnd(&s.ro)
}

func (s *span) TracerProvider() trace.TracerProvider { return s.t.p }

// endedSpan is how processors see a span once it has ended: no copy of it,
// since an ended span changes no more. The embedded interface is nil; it
// only supplies ReadOnlySpan's unexported method (the SDK's tracetest
// snapshots do the same); every method is defined below. It lives in the
// span (span.ro), so handing it over allocates nothing.
type endedSpan struct {
	sdktrace.ReadOnlySpan
	s *span
}

func (e *endedSpan) Name() string                                { return e.s.name }
func (e *endedSpan) SpanContext() trace.SpanContext              { return e.s.sc }
func (e *endedSpan) Parent() trace.SpanContext                   { return e.s.parent }
func (e *endedSpan) SpanKind() trace.SpanKind                    { return trace.SpanKind(e.s.kind) }
func (e *endedSpan) StartTime() time.Time                        { return e.s.start }
func (e *endedSpan) EndTime() time.Time                          { return e.s.end }
func (e *endedSpan) Links() []sdktrace.Link                      { return e.s.more0().links }
func (e *endedSpan) Events() []sdktrace.Event                    { return e.s.more0().events }
func (e *endedSpan) Status() sdktrace.Status                     { return e.s.status }
func (e *endedSpan) InstrumentationScope() instrumentation.Scope { return e.s.t.scope }
func (e *endedSpan) Resource() *resource.Resource                { return e.s.t.p.res }
func (e *endedSpan) DroppedAttributes() int                      { return e.s.more0().droppedAttrs }
func (e *endedSpan) DroppedLinks() int                           { return e.s.more0().droppedLinks }
func (e *endedSpan) DroppedEvents() int                          { return e.s.more0().droppedEvents }
func (e *endedSpan) ChildSpanCount() int                         { return 0 }

// noMore is the spanMore of a span that has none.
var noMore spanMore

// more0 is s.more, or an empty one: for an ended span, which changes no
// more.
func (s *span) more0() *spanMore {
	if s.more == nil {
		return &noMore
	}
	return s.more
}

// Attributes are the span's attributes; those of ferry's helpers' spans
// are built on the first call (the OTLP encoder never asks).
func (e *endedSpan) Attributes() []attribute.KeyValue {
	s := e.s
	if s.pa == nil {
		return s.attrs
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.attrs == nil {
		s.attrs = s.pa.keyValues()
	}
	return s.attrs
}

// InstrumentationLibrary is the scope, for the interface's older callers.
func (e *endedSpan) InstrumentationLibrary() instrumentation.Library { //nolint:staticcheck // the interface asks for it
	return instrumentation.Library(e.s.t.scope) //nolint:staticcheck // the interface asks for it
}

// nonRecordingSpan carries the context of a span the sampler dropped.
type nonRecordingSpan struct {
	embedded.Span
	sc trace.SpanContext
	p  *tracerProvider
}

func (n nonRecordingSpan) SpanContext() trace.SpanContext        { return n.sc }
func (nonRecordingSpan) IsRecording() bool                       { return false }
func (nonRecordingSpan) SetStatus(codes.Code, string)            {}
func (nonRecordingSpan) SetAttributes(...attribute.KeyValue)     {}
func (nonRecordingSpan) End(...trace.SpanEndOption)              {}
func (nonRecordingSpan) RecordError(error, ...trace.EventOption) {}
func (nonRecordingSpan) AddEvent(string, ...trace.EventOption)   {}
func (nonRecordingSpan) AddLink(trace.Link)                      {}
func (nonRecordingSpan) SetName(string)                          {}
func (n nonRecordingSpan) TracerProvider() trace.TracerProvider  { return n.p }

var (
	_ trace.TracerProvider  = (*tracerProvider)(nil)
	_ trace.Tracer          = (*tracer)(nil)
	_ trace.Span            = (*span)(nil)
	_ trace.Span            = nonRecordingSpan{}
	_ sdktrace.ReadOnlySpan = (*endedSpan)(nil)
)
