package telemetry

import (
	"context"
	"net/http"
	"net/url"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
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
	ctx   context.Context
	span  trace.Span
	ended atomic.Bool
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
	ctx, span := q.t.tracer.Start(q.ctx, method, clientKind)
	if span.IsRecording() {
		span.SetAttributes(clientAttributes(q, out, method, info)...)
	}
	return &Attempt{q: q, ctx: ctx, span: span}
}

// Context carries the client span.
func (a *Attempt) Context() context.Context { return a.ctx }

// Span is the client span.
func (a *Attempt) Span() trace.Span { return a.span }

// Inject writes the propagation headers for the upstream into h: a new
// traceparent whose parent is this client span (plus tracestate, baggage or
// B3 headers as configured). The sidecar must delete the caller's
// propagation headers (Telemetry.PropagationHeaders) before calling it.
// With tracing off the caller's own context is re-emitted unchanged, so
// ferry stays transparent to the trace.
func (a *Attempt) Inject(h http.Header) {
	a.q.t.propagator.Inject(a.ctx, propagation.HeaderCarrier(h))
}

// SetStatus records the upstream's response status when headers arrive, so
// the span carries it even if the body later breaks.
func (a *Attempt) SetStatus(code int) {
	if a.span.IsRecording() {
		a.span.SetAttributes(semconv.HTTPResponseStatusCode(code))
	}
}

// End finishes the attempt's span. Only the first call counts.
func (a *Attempt) End(o Outcome) {
	if !a.ended.CompareAndSwap(false, true) {
		return
	}
	if a.span.IsRecording() {
		attrs := []attribute.KeyValue{
			semconv.HTTPRequestBodySize(int(o.BytesOut)),
			semconv.HTTPResponseBodySize(int(o.BytesIn)),
			AttrBytesIn.Int64(o.BytesIn),
			AttrBytesOut.Int64(o.BytesOut),
		}
		if o.Status != 0 {
			attrs = append(attrs, semconv.HTTPResponseStatusCode(o.Status))
		}
		a.span.SetAttributes(attrs...)
		setSpanStatus(a.span, o, o.Status >= 400)
	}
	a.span.End()
}

// clientAttributes are the HTTP client semantic-convention attributes plus
// ferry's own.
func clientAttributes(q *Request, out *http.Request, method string, info AttemptInfo) []attribute.KeyValue {
	attrs := make([]attribute.KeyValue, 0, 14)
	attrs = append(attrs, methodAttributes(method)...)
	attrs = append(attrs,
		AttrListener.String(string(q.listener)),
		AttrService.String(q.service),
		AttrEndpoint.String(info.Endpoint),
		AttrAttempt.Int(info.Attempt),
	)
	if info.BreakerState != "" {
		attrs = append(attrs, AttrBreakerState.String(string(info.BreakerState)))
	}
	if info.Attempt > 1 {
		attrs = append(attrs, semconv.HTTPRequestResendCount(info.Attempt-1))
	}
	if q.route != "" {
		attrs = append(attrs, semconv.HTTPRoute(q.route))
	}
	// server.* is the logical upstream (the URL host); network.peer.* the
	// endpoint actually dialled.
	if out != nil && out.URL != nil {
		host := out.URL.Host
		if host == "" {
			host = out.Host
		}
		if h, p := splitHostPort(host); h != "" {
			attrs = append(attrs, semconv.ServerAddress(h))
			if p > 0 {
				attrs = append(attrs, semconv.ServerPort(p))
			} else if port := defaultPort(out.URL.Scheme); port > 0 {
				attrs = append(attrs, semconv.ServerPort(port))
			}
		}
		u := url.URL{Scheme: out.URL.Scheme, Host: host, Path: out.URL.Path}
		if u.Scheme == "" {
			u.Scheme = "http"
		}
		attrs = append(attrs, semconv.URLFull(u.String()))
	}
	if h, p := splitHostPort(info.Endpoint); h != "" {
		attrs = append(attrs, semconv.NetworkPeerAddress(h))
		if p > 0 {
			attrs = append(attrs, semconv.NetworkPeerPort(p))
		}
	}
	return attrs
}

func defaultPort(scheme string) int {
	switch scheme {
	case "https":
		return 443
	case "http", "":
		return 80
	}
	return 0
}
