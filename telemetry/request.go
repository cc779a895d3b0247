package telemetry

import (
	"context"
	"net/http"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// Listener names the listener a request arrived on.
type Listener string

// ferry's two proxy listeners.
const (
	Outbound Listener = "outbound" // the local app calling the mesh
	Inbound  Listener = "inbound"  // the mesh calling the local app
)

// Span attribute keys ferry adds to the HTTP semantic conventions.
const (
	AttrListener     = attribute.Key("ferry.listener")
	AttrService      = attribute.Key("ferry.service")
	AttrEndpoint     = attribute.Key("ferry.endpoint")
	AttrAttempt      = attribute.Key("ferry.attempt")
	AttrBreakerState = attribute.Key("ferry.breaker_state")
	AttrReason       = attribute.Key("ferry.reason")
	AttrBytesIn      = attribute.Key("ferry.bytes_in")
	AttrBytesOut     = attribute.Key("ferry.bytes_out")
	AttrAttempts     = attribute.Key("ferry.attempts")
	AttrFromState    = attribute.Key("ferry.breaker_from")
	AttrToState      = attribute.Key("ferry.breaker_to")
)

// Span start options, built once.
var (
	serverKind = trace.WithSpanKind(trace.SpanKindServer)
	clientKind = trace.WithSpanKind(trace.SpanKindClient)
)

// Span event names.
const (
	EventRetry             = "ferry.retry"
	EventBreakerTransition = "ferry.breaker_transition"
	EventEjection          = "ferry.ejection"
)

// Outcome is how a request or an attempt ended, reported by the sidecar
// when the last body byte went (or the first error).
type Outcome struct {
	// Status is the status code sent to the caller (Request) or received
	// from the upstream (Attempt); 0 when there was none. A proxy-made
	// failure answered to a gRPC call as a 200 carrying grpc-status is
	// reported with the failure's status.
	Status int
	// BytesIn is the request body bytes received from the caller and
	// passed on upstream (Request; a body refused over a size limit counts
	// what was passed on before the read that crossed the limit, not that
	// read) or the response body bytes received from the upstream
	// (Attempt).
	BytesIn int64
	// BytesOut is the response body bytes sent to the caller (Request) or
	// the request body bytes sent to the upstream (Attempt).
	BytesOut int64
	// Reason is set for proxy-made failures (a Reason constant); it marks
	// the span as an error even when Status looks fine (a body broken after
	// a 200 was sent).
	Reason string
	// Err is the underlying error, if any, recorded on the span.
	Err error
	// GRPC says the exchange is a gRPC (or gRPC-Web) call that ended with
	// the gRPC status GRPCStatus: the grpc-status the caller got (Request:
	// from the upstream's trailers or gRPC-Web trailer frame, the head of a
	// trailers-only answer, or ferry's own failure answer) or the upstream
	// sent (Attempt). The
	// spans carry it (rpc.* attributes), and it decides their status as
	// gRPC's semantic conventions do; the access log shows it as
	// grpc_status. False for every other exchange, and for a gRPC call
	// whose status never reached the caller (a reset stream).
	GRPC       bool
	GRPCStatus int
}

// Request tracks one incoming request: its server span, in-flight gauge,
// metrics and access log line. Create it with Telemetry.StartRequest and
// finish it with End exactly when the last response body byte went.
type Request struct {
	t        *Telemetry
	ctx      context.Context
	span     trace.Span
	listener Listener
	method   string
	start    time.Time

	route    string
	service  string
	endpoint string
	attempts int
	ended    atomic.Bool
	// dropOthers has a bit set for each of t.others whose headers the
	// caller sent naming the trace the server span continues: they name
	// the caller's span, and go from every attempt (see Attempt.Inject).
	// (Beside ended, where it costs no room: RequestRoom is 256 bytes.)
	dropOthers uint8

	// The server span when it records (its attributes gather in it as
	// raw values, spanattrs.go); nil otherwise.
	ps *proxySpan

	// carrier is the request's and its attempts' propagation carrier.
	carrier headerCarrier
	// first is the room for the first attempt when tracing is off (see
	// StartAttempt): the RequestRoom's. nil with tracing on, whose
	// Requests are allocated without it.
	first *Attempt
	// inFlight is the in-flight gauge's series it counts in.
	inFlight *series
	// series: where End looks its metric series up (see UseSeriesMemo);
	// nil: the caches' maps.
	series *SeriesMemo
}

// UseSeriesMemo makes End look the request's metric series up through m,
// a memo of the caller connection's (see SeriesMemo), which no other
// goroutine uses while the request may end.
func (q *Request) UseSeriesMemo(m *SeriesMemo) { q.series = m }

// StartRequest starts the server span for r on listener l, continuing the
// trace found in r's headers (per the configured propagators) or starting a
// new one, and counts the request in flight. The returned context carries
// the span; use it for everything done on behalf of the request.
func (t *Telemetry) StartRequest(r *http.Request, l Listener) (context.Context, *Request) {
	return t.StartRequestIn(nil, r, l, time.Time{})
}

// RequestRoom is the memory of a Request and of its first Attempt when
// tracing is off (StartRequestIn). Its zero value is room for one
// request; it must not be copied, and is zeroed before it serves another.
type RequestRoom struct {
	q     Request
	first Attempt
}

// StartRequestIn is StartRequest with the Request and its first Attempt
// in in, a zero RequestRoom of the caller's that is used for nothing else
// and never copied, when tracing is off (with tracing on, the Request
// comes with its span); nil allocates it. at is when the request started,
// a time.Now() reading the caller took a moment ago (its server took it
// as the request's head was in): the request's duration and its span
// start there. Zero: now.
func (t *Telemetry) StartRequestIn(in *RequestRoom, r *http.Request, l Listener, at time.Time) (context.Context, *Request) {
	at = nowOr(at)
	if t.prov == nil {
		// Tracing off: the no-op tracer's span would be the caller's
		// span context as it arrived (or none), which ctx holds already.
		// The Request is allocated first: its carrier, passed to the
		// propagator as a pointer, costs no allocation of its own.
		if in == nil {
			in = new(RequestRoom)
		}
		q := &in.q
		q.first = &in.first
		q.t, q.listener, q.method, q.carrier = t, l, r.Method, headerCarrier{r.Header}
		ctx := r.Context()
		if t.carriesFields(r.Header) {
			ctx = t.propagator.Extract(ctx, &q.carrier)
		}
		q.start = at
		q.ctx, q.span = ctx, trace.SpanFromContext(ctx)
		q.inFlight = t.metrics.requestStarted(l)
		return q.ctx, q
	}
	// Tracing on: whether the Request carries a recording span (and is
	// allocated with it) depends on the context extracted first.
	ctx := r.Context()
	d := undecided
	// parent is the caller's span context when ferry extracted it itself
	// (extractOwn), kept out of ctx; invalid otherwise. Once the sampler
	// is asked, it is the server span's parent's (invalid for a root).
	var parent trace.SpanContext
	switch fields := t.carriesFields(r.Header); {
	case fields && t.ownExtract:
		ctx, parent = extractOwn(ctx, t.propParts, headerCarrier{r.Header})
		if parent.IsValid() && t.prov.known == samplerOther {
			// A sampler ferry does not know reads the parent from its
			// context.
			ctx = trace.ContextWithRemoteSpanContext(ctx, parent)
		}
	case fields:
		c := headerCarrier{r.Header}
		ctx = t.propagator.Extract(ctx, c)
		// A B3 sampling decision sent without IDs leaves the B3
		// propagator no span context to carry it: ferry reads it
		// (b3Decision), and the sampler hears it as a parent's.
		if t.readsB3 {
			if sc := trace.SpanContextFromContext(ctx); !sc.IsValid() {
				d = b3Decision(c)
			} else if !sc.IsSampled() && b3Deferred(c, sc) {
				d = callerDefers
			}
		}
	}
	var q *Request
	name := spanMethod(r.Method)
	st := proxyStart{at: at}
	var record bool
	switch d {
	case undecided:
		if !parent.IsValid() {
			parent = trace.SpanContextFromContext(ctx)
		}
		record = t.own.sample(&st, &parent, ctx, name, trace.SpanKindServer, nil, nil)
	case callerDefers:
		parent = trace.SpanContextFromContext(ctx)
		record = t.own.sampleDeferred(&st, &parent, ctx, name, trace.SpanKindServer)
	default:
		record = t.own.sampleDecided(&st, ctx, d, name, trace.SpanKindServer)
	}
	if !record {
		q = &Request{t: t, listener: l, method: r.Method, start: at}
		q.ctx, q.span = t.own.nonRecording(ctx, &st)
	} else {
		tq := &tracedRequest{Request: Request{t: t, listener: l, method: r.Method}}
		q = &tq.Request
		q.ps = &tq.ps
		q.ctx = t.own.startProxy(ctx, q.ps, &st, &parent, name, trace.SpanKindServer)
		q.span, q.start = &q.ps.span, q.ps.start
		q.ps.pa.setServer(r, l)
	}
	if parent.IsValid() {
		for i := range t.others {
			if t.others[i].namesTrace(r.Header, parent.TraceID()) {
				q.dropOthers |= 1 << i
			}
		}
	}
	// The in-flight gauge gets no span context: Prometheus shows no
	// exemplars on gauges, so offering one per request would be wasted.
	q.inFlight = t.metrics.requestStarted(l)
	return q.ctx, q
}

// carriesFields reports whether h holds any field the propagators read
// (readKeys). Without one there is nothing to extract
// (TestExtractNeedsFields), and the propagators' lookups, a map access and
// a canonicalization apiece, are spared.
func (t *Telemetry) carriesFields(h http.Header) bool {
	if t.readAll {
		return true
	}
	if len(h) == 0 {
		return false
	}
	for _, k := range t.readKeys {
		if _, ok := h[k]; ok {
			return true
		}
	}
	return false
}

// tracedRequest is a Request and its recording server span, allocated
// together (768 bytes, a size class of Go's allocator,
// TestSpanSizeClasses).
type tracedRequest struct {
	Request
	ps proxySpan
}

// spanMethod is method as span names show it: "HTTP" for a method the
// HTTP semantic conventions do not name (any token is a method; the
// attributes keep it as http.request.method_original).
func spanMethod(method string) string {
	if knownMethod(method) {
		return method
	}
	return "HTTP"
}

// Context is the request context carrying the server span.
func (q *Request) Context() context.Context { return q.ctx }

// Start is when the request started (StartRequest).
func (q *Request) Start() time.Time { return q.start }

// Span is the server span (non-recording when tracing is off or the trace
// is not sampled).
func (q *Request) Span() trace.Span { return q.span }

// SetRoute records the matched route (a configured route name or pattern,
// never a raw path) and the service it leads to. Call it once routing is
// done; it renames the span to "METHOD route".
func (q *Request) SetRoute(route, service string) {
	q.route, q.service = route, service
	if q.ps != nil {
		q.ps.SetName(q.t.spanNames.name(q.method, route))
		q.ps.pa.setRoute(route, service)
	}
}

// Retry records that attempt (1-based: the attempt about to be made) is a
// retry, with why: a span event and ferry_retries_total.
func (q *Request) Retry(attempt int, reason string) {
	if q.ps != nil {
		q.span.AddEvent(EventRetry, trace.WithAttributes(AttrAttempt.Int(attempt), AttrReason.String(reason)))
	}
	q.t.metrics.Retry(q.ctx, q.service, reason)
}

// BreakerTransition records a breaker state change seen while serving the
// request: a span event plus the breaker metrics.
func (q *Request) BreakerTransition(endpoint string, from, to BreakerState) {
	if q.ps != nil {
		q.span.AddEvent(EventBreakerTransition, trace.WithAttributes(AttrEndpoint.String(endpoint),
			AttrFromState.String(string(from)), AttrToState.String(string(to))))
	}
	q.t.metrics.BreakerTransition(q.service, endpoint, to)
}

// Ejection records that endpoint was ejected as an outlier while serving the
// request: a span event plus ferry_ejections_total.
func (q *Request) Ejection(endpoint, reason string) {
	if q.ps != nil {
		q.span.AddEvent(EventEjection, trace.WithAttributes(AttrEndpoint.String(endpoint), AttrReason.String(reason)))
	}
	q.t.metrics.Ejection(q.service)
}

// nowOr is t, a time.Now() reading its caller took a moment ago, or a
// fresh reading when t is zero (none taken).
func nowOr(t time.Time) time.Time {
	if t.IsZero() {
		return time.Now()
	}
	return t
}

// End finishes the request: server span status and end, metrics, access log.
// Call it when the last response body byte went (or the exchange failed).
// Only the first call counts.
func (q *Request) End(o Outcome) { q.EndAt(o, time.Time{}) }

// EndAt is End for a caller that read the clock (time.Now) as the last
// response body byte went, as now, with nothing waited on since: the
// request ends then. Zero: now.
func (q *Request) EndAt(o Outcome, now time.Time) {
	if !q.ended.CompareAndSwap(false, true) {
		return
	}
	now = nowOr(now)
	elapsed := now.Sub(q.start)
	if q.ps != nil {
		q.endSpanAttributes(o)
	}

	// The exemplars' span is the request's, which q.ctx carries: its
	// span context is read from it directly, not looked up in q.ctx.
	var sc trace.SpanContext
	if q.ps != nil {
		sc = q.ps.sc
	} else {
		sc = q.span.SpanContext()
	}
	q.t.metrics.requestEnded(sc, q.listener, q.service, q.endpoint, o, elapsed, now, q.series)
	if q.ps != nil {
		q.ps.endAt(now)
	} else {
		q.span.End()
	}
	q.t.logRequest(q, o, elapsed, now, sc)
	q.t.metrics.requestDone(q.inFlight)
}

// Answered reports a request answered with status before any handler saw
// it: a head that could not be served (too large, malformed: a 4xx or 5xx
// with the reason), or one the HTTP server answers itself ("OPTIONS *").
// It counts in ferry_requests_total with no service and endpoint, and gets
// an access log line with the status and reason and no method or route
// (at WARN when reason is set). It gets no span, duration or in-flight
// count: nothing of the request was read that could carry a trace
// context, nor when it began.
func (t *Telemetry) Answered(l Listener, status int, reason string) {
	t.metrics.requestAnswered(l, status, reason)
	q := Request{t: t, listener: l, ctx: context.Background()}
	q.span = trace.SpanFromContext(q.ctx)
	t.logRequest(&q, Outcome{Status: status, Reason: reason}, 0, time.Now(), trace.SpanContext{})
}
