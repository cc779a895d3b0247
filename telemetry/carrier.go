package telemetry

import (
	"context"
	"net/http"
	"slices"
	"strings"

	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// headerCarrier is propagation.HeaderCarrier without its allocations: the
// propagators ask for their fields in lower case ("traceparent"), which
// http.Header's Get and Set canonicalize into a new string on every call.
// The canonical forms of the fields of ferry's propagators are computed
// once (fieldKeys). It is one map, so that passing it as a
// TextMapCarrier allocates nothing (an interface holds it directly).
type headerCarrier struct {
	h http.Header
}

// fieldKeys maps the fields ferry's propagators (tracecontext, baggage,
// b3, b3multi) ask for, and the B3 fields b3Decision and b3Deferred read,
// to their canonical header keys: a cache of http.CanonicalHeaderKey.
var fieldKeys = canonicalFields([]string{"traceparent", "tracestate", "baggage",
	"b3", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags"})

// canonicalFields maps each of fields to its canonical header key.
func canonicalFields(fields []string) map[string]string {
	m := make(map[string]string, len(fields))
	for _, f := range fields {
		m[f] = http.CanonicalHeaderKey(f)
	}
	return m
}

func (c headerCarrier) key(k string) string {
	if ck, ok := fieldKeys[k]; ok {
		return ck
	}
	return http.CanonicalHeaderKey(k)
}

// Get returns key's value; a field sent on several lines reads as one
// value, the lines joined with commas as RFC 9110 section 5.3 combines
// them (http.Header.Get would return the first line alone). A list field
// (tracestate) keeps every line's members; a field that holds one value
// (traceparent, b3) sent twice reads as no valid value, so the caller's
// trace is not continued from whichever line came first.
func (c headerCarrier) Get(key string) string { return c.field(c.key(key)) }

// field is Get of a canonical key.
func (c headerCarrier) field(ck string) string {
	switch v := c.h[ck]; len(v) {
	case 0:
		return ""
	case 1:
		return v[0]
	default:
		return strings.Join(v, ",")
	}
}

// Values returns every value of key, as http.Header.Values.
func (c headerCarrier) Values(key string) []string { return c.h[c.key(key)] }

// Set replaces key's values with value, as http.Header.Set.
func (c headerCarrier) Set(key, value string) { c.h[c.key(key)] = []string{value} }

// Keys lists the header's keys in lower case, as HeaderCarrier.Keys.
func (c headerCarrier) Keys() []string {
	keys := make([]string, 0, len(c.h))
	for k := range c.h {
		keys = append(keys, strings.ToLower(k))
	}
	return keys
}

// readKeys lists, canonical, the fields prop reads from a carrier that
// holds none, which are all it reads from one that holds none of them:
// such a carrier gives it nothing else to go on. Fields() is not that list
// (B3's single-header form reads the multi-header fields too). all is
// true when prop asks for every key, or extracts something from nothing.
func readKeys(prop propagation.TextMapPropagator) (keys []string, all bool) {
	rec := &keyRecorder{seen: map[string]bool{}}
	ctx := prop.Extract(context.Background(), rec)
	if rec.all || trace.SpanContextFromContext(ctx).IsValid() || baggage.FromContext(ctx).Len() > 0 {
		return nil, true
	}
	for k := range rec.seen {
		keys = append(keys, http.CanonicalHeaderKey(k))
	}
	slices.Sort(keys)
	return slices.Compact(keys), false
}

// keyRecorder is an empty carrier that records the keys asked for.
type keyRecorder struct {
	seen map[string]bool
	all  bool
}

func (r *keyRecorder) Get(key string) string      { r.seen[key] = true; return "" }
func (r *keyRecorder) Values(key string) []string { r.seen[key] = true; return nil }
func (r *keyRecorder) Set(string, string)         {}
func (r *keyRecorder) Keys() []string             { r.all = true; return nil }
