package telemetry

import (
	"context"
	"encoding/binary"
	"math/bits"
	"net/http"
	"slices"
	"strings"
	"unsafe"

	"go.opentelemetry.io/contrib/propagators/autoprop"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// newPropagator composes the propagators names lists (validated by
// resolve) as autoprop does, with ferry's traceContext for tracecontext.
// parts are the propagators composed, in order (none for "none"), which
// Attempt.Inject runs one by one as the composite would.
func newPropagator(names []string) (prop propagation.TextMapPropagator, parts []propagation.TextMapPropagator, err error) {
	if slices.Contains(names, "none") {
		prop, err = autoprop.TextMapPropagator("none")
		return prop, nil, err
	}
	props := make([]propagation.TextMapPropagator, 0, len(names))
	for _, name := range names {
		if name == "tracecontext" {
			props = append(props, traceContext{})
			continue
		}
		p, err := autoprop.TextMapPropagator(name)
		if err != nil {
			return nil, nil, err
		}
		props = append(props, p)
	}
	if len(props) == 1 {
		return props[0], props, nil
	}
	return propagation.NewCompositeTextMapPropagator(props...), props, nil
}

// injectParts writes into h, for an attempt whose span context is sc
// under the request context qctx, what each of parts (newPropagator's)
// writes into a carrier of h in turn, as the composite propagator does.
// Two are ferry's own: tracecontext's fields are written from sc
// (injectTraceContext), and baggage's from the request context's baggage
// (the attempt's context adds only its span to it), each without the
// carrier's lookups and, for tracecontext, with one allocation. The
// others are the propagators' Inject into c, a carrier of h, under the
// attempt a's context. (TestInjectMatchesPropagators compares the two
// for every propagator and context.)
//
// With tp not nil, a traceparent that goes alone (sc has no tracestate) is
// written into tp instead of h, and wrote reports it.
func injectParts(parts []propagation.TextMapPropagator, h http.Header, c *headerCarrier, a *Attempt, qctx context.Context, sc trace.SpanContext, tp *Traceparent) (wrote bool) {
	for _, p := range parts {
		switch p.(type) {
		case traceContext:
			if tp != nil && sc.IsValid() && sc.TraceState().Len() == 0 {
				tp.fill(sc)
				wrote = true
				continue
			}
			injectTraceContext(h, sc)
		case propagation.Baggage:
			if v := baggage.FromContext(qctx).String(); v != "" {
				h["Baggage"] = []string{v}
			}
		default:
			p.Inject(a.Context(), c)
		}
	}
	return wrote
}

// injectTraceContext writes the fields TraceContext.Inject writes for sc
// into h: tracestate when sc has one, and traceparent, version 00 with
// the sampled and random flags alone.
func injectTraceContext(h http.Header, sc trace.SpanContext) {
	if !sc.IsValid() {
		return
	}
	if ts := sc.TraceState().String(); ts != "" {
		h["Tracestate"] = []string{ts}
	}
	h["Traceparent"] = traceparentValue(sc.TraceID(), sc.SpanID(), sc.TraceFlags()&(trace.FlagsSampled|trace.FlagsRandom))
}

// traceparentField is a traceparent header value, the one-line slice and
// the string's bytes in one allocation.
type traceparentField struct {
	v [1]string
	b [traceparentLen]byte
}

// traceparentValue is the header value of a version 00 traceparent:
// "00-{trace-id}-{parent-id}-{flags}" in lower-case hex.
func traceparentValue(tid trace.TraceID, sid trace.SpanID, flags trace.TraceFlags) []string {
	f := new(traceparentField)
	fillTraceparent(&f.b, tid, sid, flags)
	// The bytes are written once, above, and never again: the string may
	// share them.
	f.v[0] = unsafe.String(&f.b[0], len(f.b))
	return f.v[:]
}

// Traceparent is the value of a version 00 traceparent field, as
// Attempt.InjectHead writes it for a client that writes the field into
// the request head itself.
type Traceparent [traceparentLen]byte

// fill writes sc's traceparent into tp, with the sampled and random flags
// alone (as injectTraceContext).
func (tp *Traceparent) fill(sc trace.SpanContext) {
	fillTraceparent((*[traceparentLen]byte)(tp), sc.TraceID(), sc.SpanID(), sc.TraceFlags()&(trace.FlagsSampled|trace.FlagsRandom))
}

// fillTraceparent writes a version 00 traceparent into b.
func fillTraceparent(b *[traceparentLen]byte, tid trace.TraceID, sid trace.SpanID, flags trace.TraceFlags) {
	b[0], b[1], b[2] = '0', '0', '-'
	for i := 0; i < len(tid); i += 4 {
		hex4(b[3+2*i:], binary.BigEndian.Uint32(tid[i:]))
	}
	b[35] = '-'
	hex4(b[36:], binary.BigEndian.Uint32(sid[:4]))
	hex4(b[44:], binary.BigEndian.Uint32(sid[4:]))
	b[52] = '-'
	b[53], b[54] = hexDigits[flags>>4], hexDigits[flags&0xf]
}

const hexDigits = "0123456789abcdef"

// hex4 writes the eight lower-case hex digits of v, most significant
// first, into dst[:8]: every nibble spread into a byte of its own, then
// turned into its digit, all eight at once.
func hex4(dst []byte, v uint32) {
	x := uint64(v)
	x = (x | x<<16) & 0x0000ffff0000ffff
	x = (x | x<<8) & 0x00ff00ff00ff00ff
	x = (x | x<<4) & 0x0f0f0f0f0f0f0f0f // byte i holds nibble i, least significant first
	x = bits.ReverseBytes64(x)          // the most significant nibble first
	// 1 in each byte whose nibble is 10 or more (6 more carries into bit 4).
	letters := (x + 0x0606060606060606) >> 4 & 0x0101010101010101
	x += 0x3030303030303030 + letters*('a'-'0'-10)
	binary.LittleEndian.PutUint64(dst, x)
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

// ownExtraction reports whether ferry extracts what parts (newPropagator's)
// read itself (extractOwn): each is tracecontext or baggage.
func ownExtraction(parts []propagation.TextMapPropagator) bool {
	for _, p := range parts {
		switch p.(type) {
		case traceContext, propagation.Baggage:
		default:
			return false
		}
	}
	return len(parts) > 0
}

// extractOwn is what the composite of parts (tracecontext and baggage
// alone, ownExtraction) extracts from c under ctx, apart: ctx with the
// baggage parts' extraction, and the caller's span context, the last one
// a tracecontext part found valid, which the composite would have put in
// ctx as the remote span (invalid when none was). Keeping it out of ctx
// spares the two allocations of that layer (the context and the span
// holding the span context), which no one would see: the request's
// context gets its server span, recording or not, above it.
func extractOwn(ctx context.Context, parts []propagation.TextMapPropagator, c headerCarrier) (context.Context, trace.SpanContext) {
	var psc trace.SpanContext
	for _, p := range parts {
		if _, ok := p.(traceContext); ok {
			if sc := traceContextOf(c); sc.IsValid() {
				psc = sc
			}
			continue
		}
		if _, ok := c.h["Baggage"]; ok {
			// Without the field, baggage extracts nothing.
			ctx = p.Extract(ctx, c)
		}
	}
	return ctx, psc
}

// traceContextOf is the span context traceContext.Extract puts into a
// context for c's traceparent and tracestate, and invalid when it puts in
// none: a traceparent of lower-case hex fields split by dashes, version
// (not ff), trace-id (not all zeros), parent-id (not all zeros) and flags,
// 2, 32, 16 and 2 digits; for version 00 exactly that (55 characters) with
// no flag beyond sampled and random, for a later version followed by the
// end or a dash and anything. The flags kept are sampled and random; the
// tracestate is read only with a valid traceparent, one that does not
// parse is none. (TestTraceContextOfMatchesPropagator compares the two.)
func traceContextOf(c headerCarrier) trace.SpanContext {
	tp := c.field("Traceparent")
	if len(tp) < traceparentLen || tp[2] != '-' || tp[35] != '-' || tp[52] != '-' {
		return trace.SpanContext{}
	}
	version, ok := hexByte(tp[0], tp[1])
	if !ok || version == 0xff {
		return trace.SpanContext{}
	}
	flags, ok := hexByte(tp[53], tp[54])
	if !ok {
		return trace.SpanContext{}
	}
	if version == 0 {
		if len(tp) != traceparentLen || flags&^byte(trace.FlagsSampled|trace.FlagsRandom) != 0 {
			return trace.SpanContext{}
		}
	} else if len(tp) > traceparentLen && tp[traceparentLen] != '-' {
		return trace.SpanContext{}
	}
	var scc trace.SpanContextConfig
	for i := range scc.TraceID {
		if scc.TraceID[i], ok = hexByte(tp[3+2*i], tp[4+2*i]); !ok {
			return trace.SpanContext{}
		}
	}
	for i := range scc.SpanID {
		if scc.SpanID[i], ok = hexByte(tp[36+2*i], tp[37+2*i]); !ok {
			return trace.SpanContext{}
		}
	}
	if !scc.TraceID.IsValid() || !scc.SpanID.IsValid() {
		return trace.SpanContext{}
	}
	scc.TraceFlags = trace.TraceFlags(flags) & (trace.FlagsSampled | trace.FlagsRandom)
	// A tracestate that does not parse is dropped, the traceparent kept.
	scc.TraceState, _ = trace.ParseTraceState(c.field("Tracestate"))
	scc.Remote = true
	return trace.NewSpanContext(scc)
}

// hexByte is the byte the two lower-case hex digits hi and lo spell.
func hexByte(hi, lo byte) (byte, bool) {
	h, ok1 := hexDigit(hi)
	l, ok2 := hexDigit(lo)
	return h<<4 | l, ok1 && ok2
}

func hexDigit(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// callerDecision is a sampling decision a caller sent without a trace to
// continue: B3's sampling state sent alone.
type callerDecision uint8

const (
	undecided     callerDecision = iota
	callerDenies                 // "b3: 0", "X-B3-Sampled: 0"
	callerAccepts                // "b3: 1" or "d", "X-B3-Sampled: 1", "X-B3-Flags: 1"
	callerDefers                 // IDs without a sampling state (b3Deferred)
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

// b3Deferred reports whether the B3 fields in c continue the trace of sc
// (the span context extracted) with no sampling state: "b3: {trace}-{span}"
// or X-B3-TraceId and X-B3-SpanId without X-B3-Sampled or X-B3-Flags.
// B3 calls that deferring the decision to the receiver, and ferry is the
// receiver: its sampler decides as for a new trace (sampleDeferred). The
// parent-based samplers would otherwise read the span context's unset
// sampled flag as the caller's "no", record nothing, and pass the
// deferral on, so an upstream that decides to record would name as its
// parent a span of ferry's nobody recorded.
func b3Deferred(c headerCarrier, sc trace.SpanContext) bool {
	tid, sid := sc.TraceID().String(), sc.SpanID().String()
	if parts := strings.Split(c.Get("b3"), "-"); len(parts) >= 2 && sameB3ID(parts[0], tid) && parts[1] == sid {
		// The single header carried the trace (the propagator reads it
		// first); one it refused leaves the multiple headers to say.
		return len(parts) == 2
	}
	// X-B3-Flags other than 1 (debug) is no decision: the propagator
	// ignores it.
	return sameB3ID(c.Get("X-B3-Traceid"), tid) && c.Get("X-B3-Spanid") == sid &&
		c.Get("X-B3-Sampled") == "" && c.Get("X-B3-Flags") != "1"
}

// sameB3ID reports whether a B3 trace ID (16 or 32 hex digits; a 16-digit
// one is the low half of a 32-digit trace ID with zeros before it) names
// the trace ID tid (32 digits).
func sameB3ID(b3, tid string) bool {
	if len(b3) == 16 {
		return tid == "0000000000000000"+b3
	}
	return b3 == tid
}

// settleB3 makes the B3 sampling state the propagator wrote into h say
// ferry's own decision on the attempt's span (sampled): "d" (X-B3-Flags: 1)
// only when the caller asked for debug and ferry records, else 1 or 0.
// The propagator writes the caller's debug flag or deferral as it came
// whatever ferry decided, and an upstream told "debug" or left to decide
// may record a span whose parent, ferry's, was never recorded. Only
// fields the propagator wrote are changed (the caller's were deleted
// before it ran).
func settleB3(h http.Header, sampled bool) {
	state := "0"
	if sampled {
		state = "1"
	}
	if v := h["B3"]; len(v) == 1 {
		parts := strings.Split(v[0], "-")
		switch {
		case len(parts) == 2: // deferred
			v[0] += "-" + state
		case len(parts) >= 3 && !(sampled && parts[2] == "d"):
			parts[2] = state
			v[0] = strings.Join(parts, "-")
		}
	}
	if _, ok := h["X-B3-Traceid"]; ok || h["X-B3-Flags"] != nil || h["X-B3-Sampled"] != nil {
		if sampled && len(h["X-B3-Flags"]) == 1 && h["X-B3-Flags"][0] == "1" {
			return // debug, which implies sampled: X-B3-Sampled goes without
		}
		delete(h, "X-B3-Flags")
		h["X-B3-Sampled"] = []string{state}
	}
}

// otherFormat is a trace context format that ferry's propagators neither
// read nor write, which a caller may send beside one they read (an
// OpenTelemetry SDK configured with tracecontext,b3 sends both).
type otherFormat struct {
	prop propagation.TextMapPropagator
	ids  []string // the canonical keys that may carry its IDs
	drop []string // every header of the format
}

// otherFormats lists the trace context formats of tracecontext and B3 that
// the propagators names lists do not include; none for "none" (ferry then
// continues no caller's trace).
func otherFormats(names []string) []otherFormat {
	if slices.Contains(names, "none") {
		return nil
	}
	var out []otherFormat
	if !slices.Contains(names, "tracecontext") {
		p := traceContext{}
		out = append(out, otherFormat{prop: p,
			ids: []string{"Traceparent"}, drop: []string{"Traceparent", "Tracestate"}})
	}
	if !slices.Contains(names, "b3") && !slices.Contains(names, "b3multi") {
		p, err := autoprop.TextMapPropagator("b3")
		if err == nil {
			out = append(out, otherFormat{prop: p,
				ids: []string{"B3", "X-B3-Traceid", "X-B3-Spanid"}, drop: b3Headers})
		}
	}
	return out
}

// namesTrace reports whether h carries f's context naming trace tid: an
// upstream reading f would then record its span as the caller's child,
// in the trace ferry's spans are in. A field of f sent on several lines
// counts as naming it too: ferry cannot tell which line an upstream would
// read.
func (f *otherFormat) namesTrace(h http.Header, tid trace.TraceID) bool {
	found := false
	for _, k := range f.ids {
		switch len(h[k]) {
		case 0:
		case 1:
			found = true
		default:
			return true
		}
	}
	if !found {
		return false
	}
	sc := trace.SpanContextFromContext(f.prop.Extract(context.Background(), headerCarrier{h}))
	return sc.IsValid() && sc.TraceID() == tid
}
