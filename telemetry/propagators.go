package telemetry

import (
	"context"
	"slices"
	"strings"

	"go.opentelemetry.io/contrib/propagators/autoprop"
	"go.opentelemetry.io/otel/propagation"
)

// newPropagator composes the propagators names lists (validated by
// resolve) as autoprop does, with ferry's traceContext for tracecontext.
func newPropagator(names []string) (propagation.TextMapPropagator, error) {
	if slices.Contains(names, "none") {
		return autoprop.TextMapPropagator("none")
	}
	props := make([]propagation.TextMapPropagator, 0, len(names))
	for _, name := range names {
		if name == "tracecontext" {
			props = append(props, traceContext{})
			continue
		}
		p, err := autoprop.TextMapPropagator(name)
		if err != nil {
			return nil, err
		}
		props = append(props, p)
	}
	if len(props) == 1 {
		return props[0], nil
	}
	return propagation.NewCompositeTextMapPropagator(props...), nil
}

// traceparentLen is the length of a version 00 traceparent:
// version "-" trace-id "-" parent-id "-" trace-flags.
const traceparentLen = 2 + 1 + 32 + 1 + 16 + 1 + 2

// traceContext is the W3C Trace Context propagator, with a version 00
// traceparent held to its 55 characters. The OpenTelemetry propagator
// takes one with a dash after the flags and nothing more
// ("00-<trace-id>-<parent-id>-01-") for valid; the specification allows
// the extra fields of a later version only, so ferry starts a new trace
// and reads no tracestate, as for any invalid traceparent. The rest of the
// rules (lower-case hex, IDs not all zeros, no version ff, a later
// version at least 55 characters with its flags at the end or before a
// dash; and, the propagator's own, no version 00 flag beyond sampled and
// random) are the OpenTelemetry propagator's (TestTraceparentRules).
type traceContext struct{ propagation.TraceContext }

// Extract is TraceContext.Extract, ctx unchanged for a version 00
// traceparent longer than traceparentLen.
func (tc traceContext) Extract(ctx context.Context, carrier propagation.TextMapCarrier) context.Context {
	if tp := carrier.Get("traceparent"); len(tp) > traceparentLen && strings.HasPrefix(tp, "00") {
		return ctx
	}
	return tc.TraceContext.Extract(ctx, carrier)
}

// callerDecision is a sampling decision a caller sent without a trace to
// continue: B3's sampling state sent alone.
type callerDecision uint8

const (
	undecided     callerDecision = iota
	callerDenies                 // "b3: 0", "X-B3-Sampled: 0"
	callerAccepts                // "b3: 1" or "d", "X-B3-Sampled: 1", "X-B3-Flags: 1"
)

// b3Decision reads the B3 sampling state sent without IDs from c, in the
// order the B3 propagator reads the fields: the single b3 header, then
// the multiple headers (where debug, X-B3-Flags: 1, wins over
// X-B3-Sampled). The OpenTelemetry B3 propagator extracts nothing from
// it: with no IDs there is no span context to carry the decision. Multiple
// headers that carry any ID are no decision alone: valid, the propagator
// continues their trace; invalid, it refuses them.
func b3Decision(c headerCarrier) callerDecision {
	switch c.Get("b3") {
	case "0":
		return callerDenies
	case "1", "d":
		return callerAccepts
	}
	if c.Get("X-B3-Traceid") != "" || c.Get("X-B3-Spanid") != "" || c.Get("X-B3-Parentspanid") != "" {
		return undecided
	}
	if c.Get("X-B3-Flags") == "1" {
		return callerAccepts
	}
	switch strings.ToLower(c.Get("X-B3-Sampled")) {
	case "0", "false":
		return callerDenies
	case "1", "true":
		return callerAccepts
	}
	return undecided
}
