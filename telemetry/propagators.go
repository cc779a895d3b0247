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
