package telemetry

import (
	"context"
	"net/http"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// AttemptInfo describes one upstream attempt.
type AttemptInfo struct {
	// Endpoint is the upstream "host:port" picked for this attempt.
	Endpoint string
	// Attempt is 1 for the first try, 2 for the first retry, ...
	Attempt int
	// BreakerState is the endpoint's breaker state when it was picked
	// (empty when unknown).
	BreakerState BreakerState
}

// Attempt is the client span of one upstream attempt, a child of the
// request's server span.
type Attempt struct {
	q     *Request
	ctx   context.Context // a recording attempt's is made by Context
	span  trace.Span
	ended atomic.Bool

	// The client span when it records (its attributes gather in it as
	// raw values, spanattrs.go); nil otherwise.
	ps     *proxySpan
	status int // from SetStatus
}

// StartAttempt starts the client span for one upstream attempt of the
// request out (the request the sidecar is about to send; its method and URL
// are read, nothing is changed). Call Inject to propagate it, and End at the
// attempt's last body byte or failure.
func (q *Request) StartAttempt(out *http.Request, info AttemptInfo) *Attempt {
	q.attempts++
	q.endpoint = info.Endpoint
	method := q.method
	if out != nil && out.Method != "" {
		method = out.Method
	}
	var a *Attempt
	if q.t.prov == nil {
		// Tracing off: as in StartRequest; the first attempt is in the
		// Request's RequestRoom, one allocation fewer.
		a = q.first
		if q.attempts > 1 || a == nil {
			a = &Attempt{}
		}
		a.q, a.ctx, a.span = q, q.ctx, q.span
	} else {
		// The parent is the server span, the one q.ctx carries: its
		// span context is taken from it, not looked up in q.ctx.
		var st proxyStart
		var nr trace.SpanContext
		parent := &nr
		if q.ps != nil {
			parent = &q.ps.sc
		} else {
			nr = q.span.SpanContext()
		}
		if !q.t.own.sample(&st, parent, q.ctx, spanMethod(method), trace.SpanKindClient, nil, nil) {
			a = &Attempt{q: q}
			a.ctx, a.span = q.t.own.nonRecording(q.ctx, &st)
		} else {
			ta := &tracedAttempt{Attempt: Attempt{q: q}}
			a = &ta.Attempt
			a.ps = &ta.ps
			q.t.own.initProxy(a.ps, &st, parent, spanMethod(method), trace.SpanKindClient)
			a.span = &a.ps.span
			a.ps.pa.setClient(q, out, method, info)
		}
	}
	return a
}

// tracedAttempt is an Attempt and its recording client span, allocated
// together (640 bytes, a size class of Go's allocator,
// TestSpanSizeClasses).
type tracedAttempt struct {
	Attempt
	ps proxySpan
}

// Context carries the client span. A recording attempt's is made on the
// first call (the sidecar never asks for it, and Inject only for a
// propagator ferry does not write itself): the same context every call.
func (a *Attempt) Context() context.Context {
	if a.ps == nil {
		return a.ctx
	}
	a.ps.mu.Lock()
	defer a.ps.mu.Unlock()
	if a.ctx == nil {
		a.ctx = trace.ContextWithSpan(a.q.ctx, &a.ps.span)
	}
	return a.ctx
}

// Span is the client span.
func (a *Attempt) Span() trace.Span { return a.span }

// Inject writes the propagation headers for the upstream into h: a new
// traceparent whose parent is this client span (plus tracestate, baggage or
// B3 headers as configured), and deletes a caller's trace context headers
// of a format the propagators do not read (traceparent and tracestate, or
// B3's) that name the trace the request's server span continues: they
// name the caller's span, and an upstream that read them would record its
// span as a sibling of ferry's server span. The sidecar must delete the caller's
// propagation headers (Telemetry.PropagationHeaders) before calling it.
// With tracing off it writes nothing, and PropagationHeaders lists none:
// ferry is no hop of the trace, and the caller's headers go on as they
// came. (Re-emitting the context the propagators read from them would not
// be the same: B3 says "do not sample" for a caller that sent no B3 header
// or a sampling decision alone, and a later traceparent version or a
// tracestate member the parser refuses would be rewritten or lost.)
func (a *Attempt) Inject(h http.Header) { a.inject(h, nil) }

// InjectHead is Inject for a client that writes the request head itself:
// a traceparent that goes alone (without tracestate) is written into tp
// instead of h, and ok reports it; the client then writes it into the
// head as the field "Traceparent", or puts it in h should it hand the
// request to another client. Everything else goes into h as Inject writes
// it. (A traceparent in h is a value allocated and a map assignment per
// request, and the head writer's map walk a key longer.)
func (a *Attempt) InjectHead(h http.Header, tp *Traceparent) (ok bool) { return a.inject(h, tp) }

func (a *Attempt) inject(h http.Header, tp *Traceparent) (wrote bool) {
	if a.q.t.prov == nil {
		return false
	}
	a.q.carrier.h = h
	// The attempt's span is the one its context carries. (A recording
	// one's span context is read in place, without the interface call.)
	var sc trace.SpanContext
	if a.ps != nil {
		sc = a.ps.sc
	} else {
		sc = a.span.SpanContext()
	}
	wrote = injectParts(a.q.t.propParts, h, &a.q.carrier, a, a.q.ctx, sc, tp)
	if a.q.t.readsB3 {
		settleB3(h, sc.IsSampled())
	}
	if d := a.q.dropOthers; d != 0 {
		for i := range a.q.t.others {
			if d&(1<<i) != 0 {
				for _, k := range a.q.t.others[i].drop {
					delete(h, k)
				}
			}
		}
	}
	return wrote
}

// SetStatus records the upstream's response status when headers arrive, so
// the span carries it even if the body later breaks.
func (a *Attempt) SetStatus(code int) {
	a.status = code
}

// End finishes the attempt's span. Only the first call counts.
func (a *Attempt) End(o Outcome) { a.EndAt(o, time.Time{}) }

// EndAt is End for a caller that read the clock (time.Now) as the
// attempt's answer went out whole, as now: the span ends then, as its
// request's does when given the same reading (Request.EndAt), and so
// within it. Zero: now.
func (a *Attempt) EndAt(o Outcome, now time.Time) {
	if !a.ended.CompareAndSwap(false, true) {
		return
	}
	if a.ps != nil {
		a.endSpanAttributes(o)
		a.ps.endAt(nowOr(now))
		return
	}
	a.span.End()
}
