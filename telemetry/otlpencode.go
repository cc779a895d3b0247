package telemetry

import (
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// This file encodes an OTLP ExportTraceServiceRequest
// (opentelemetry/proto/collector/trace/v1/trace_service.proto) straight from
// the SDK's read-only spans into a byte slice, without building the
// generated message structs first. Field numbers below are those of the
// OTLP v1 protos (trace.proto, common.proto, resource.proto).

// Field numbers, by message.
const (
	// ExportTraceServiceRequest
	fReqResourceSpans = 1
	// ResourceSpans
	fRSResource   = 1
	fRSScopeSpans = 2
	fRSSchemaURL  = 3
	// Resource
	fResAttributes = 1
	// ScopeSpans
	fSSScope     = 1
	fSSSpans     = 2
	fSSSchemaURL = 3
	// InstrumentationScope
	fScopeName       = 1
	fScopeVersion    = 2
	fScopeAttributes = 3
	// Span
	fSpanTraceID       = 1
	fSpanSpanID        = 2
	fSpanTraceState    = 3
	fSpanParentSpanID  = 4
	fSpanName          = 5
	fSpanKind          = 6
	fSpanStart         = 7
	fSpanEnd           = 8
	fSpanAttributes    = 9
	fSpanDroppedAttrs  = 10
	fSpanEvents        = 11
	fSpanDroppedEvents = 12
	fSpanLinks         = 13
	fSpanDroppedLinks  = 14
	fSpanStatus        = 15
	fSpanFlags         = 16
	// Span.Event
	fEventTime         = 1
	fEventName         = 2
	fEventAttributes   = 3
	fEventDroppedAttrs = 4
	// Span.Link
	fLinkTraceID      = 1
	fLinkSpanID       = 2
	fLinkTraceState   = 3
	fLinkAttributes   = 4
	fLinkDroppedAttrs = 5
	fLinkFlags        = 6
	// Status
	fStatusMessage = 2
	fStatusCode    = 3
	// KeyValue
	fKVKey   = 1
	fKVValue = 2
	// AnyValue
	fAnyString = 1
	fAnyBool   = 2
	fAnyInt    = 3
	fAnyDouble = 4
	fAnyArray  = 5
	fAnyKVList = 6
	fAnyBytes  = 7
	// ArrayValue and KeyValueList
	fListValues = 1
)

// SpanFlags bits above the W3C trace flags: whether the parent is known to
// be remote, and whether it is.
const (
	spanFlagsHasIsRemote = 0x100
	spanFlagsIsRemote    = 0x200
)

// otlpEncoder appends ExportTraceServiceRequests to a reused buffer. The
// encodings of a resource and of an instrumentation scope, which are the
// same for every span ferry makes, are cached. Not safe for concurrent use.
type otlpEncoder struct {
	buf []byte

	// Groups of the batch being encoded, in order of first appearance.
	groups []spanGroup

	// Cached encodings of the last resource and scope seen.
	res      *resource.Resource
	resBytes []byte
	scopes   []scopeEncoding

	// attrs writes the attributes of ferry's own spans (otlpattrs.go).
	attrs attrEncoder
	// span holds the fields of the span being written.
	span spanFields
}

type spanGroup struct {
	res   *resource.Resource
	scope instrumentation.Scope
	spans []sdktrace.ReadOnlySpan
}

type scopeEncoding struct {
	scope instrumentation.Scope
	bytes []byte // InstrumentationScope message body
}

// encode returns the ExportTraceServiceRequest for spans after prefix
// zero bytes (room for gRPC's message prefix), valid until the next call. Spans are grouped by resource and scope (one ResourceSpans per
// resource, one ScopeSpans per scope in it), in order of first appearance.
func (e *otlpEncoder) encode(spans []sdktrace.ReadOnlySpan, prefix int) []byte {
	e.group(spans)
	if len(e.groups) == 1 {
		return e.encodeOne(prefix)
	}
	b := append(e.buf[:0], make([]byte, prefix)...)
	for i := range e.groups {
		res := e.groups[i].res
		if e.groups[i].spans == nil {
			continue // already written with an earlier group of its resource
		}
		var rs int
		b, rs = openMessage(b, fReqResourceSpans)
		if res != nil {
			b = appendTag(b, fRSResource, protowire.BytesType)
			b = protowire.AppendBytes(b, e.resource(res))
		}
		for j := i; j < len(e.groups); j++ {
			g := &e.groups[j]
			if g.res != res || g.spans == nil {
				continue
			}
			var ss int
			b, ss = openMessage(b, fRSScopeSpans)
			if g.scope != (instrumentation.Scope{}) {
				b = appendTag(b, fSSScope, protowire.BytesType)
				b = protowire.AppendBytes(b, e.scopeBytes(g.scope))
			}
			for _, s := range g.spans {
				b = e.appendSpan(b, s)
			}
			b = appendString(b, fSSSchemaURL, g.scope.SchemaURL)
			b = closeMessage(b, ss)
			g.spans = nil
		}
		if res != nil {
			b = appendString(b, fRSSchemaURL, res.SchemaURL())
		}
		b = closeMessage(b, rs)
	}
	e.buf = b
	return b
}

// encodeOne is encode for a batch of one resource and one scope, ferry's
// case. The spans are written first, after room for the heads of the
// ResourceSpans and the ScopeSpans that hold them; once their lengths are
// known, the heads (and the prefix) are written right before the spans,
// and the request starts where they do. The ResourceSpans and ScopeSpans
// are as long as the batch: openMessage and closeMessage would move the
// whole batch once for each, to make room for their lengths.
func (e *otlpEncoder) encodeOne(prefix int) []byte {
	g := &e.groups[0]
	var res, scope []byte
	if g.res != nil {
		res = e.resource(g.res)
	}
	if g.scope != (instrumentation.Scope{}) {
		scope = e.scopeBytes(g.scope)
	}
	resField, scopeField := bytesFieldSize(res, g.res != nil), bytesFieldSize(scope, scope != nil)
	room := prefix + 2*(1+protowire.SizeVarint(math.MaxUint64)) + resField + scopeField
	b := e.buf[:0]
	if cap(b) < room {
		b = make([]byte, 0, max(room, 64<<10))
	}
	b = b[:room]
	for _, s := range g.spans {
		b = e.appendSpan(b, s)
	}
	b = appendString(b, fSSSchemaURL, g.scope.SchemaURL)
	ssLen := scopeField + len(b) - room
	if g.res != nil {
		b = appendString(b, fRSSchemaURL, g.res.SchemaURL())
	}
	rsLen := resField + 1 + protowire.SizeVarint(uint64(ssLen)) + scopeField + len(b) - room
	head := 1 + protowire.SizeVarint(uint64(rsLen)) + resField + 1 + protowire.SizeVarint(uint64(ssLen)) + scopeField
	start := room - head - prefix
	h := b[start:start:room]
	h = append(h, make([]byte, prefix)...)
	h = appendTag(h, fReqResourceSpans, protowire.BytesType)
	h = appendVarint(h, uint64(rsLen))
	if g.res != nil {
		h = appendTag(h, fRSResource, protowire.BytesType)
		h = protowire.AppendBytes(h, res)
	}
	h = appendTag(h, fRSScopeSpans, protowire.BytesType)
	h = appendVarint(h, uint64(ssLen))
	if scope != nil {
		h = appendTag(h, fSSScope, protowire.BytesType)
		h = protowire.AppendBytes(h, scope)
	}
	if len(h) != room-start {
		panic("otlp: the head of a batch is not the length counted for it")
	}
	e.buf = b
	return b[start:]
}

// bytesFieldSize is the size of a length-delimited field of one-byte tag
// holding b; 0 when the field is not written.
func bytesFieldSize(b []byte, written bool) int {
	if !written {
		return 0
	}
	return 1 + protowire.SizeVarint(uint64(len(b))) + len(b)
}

// group sorts spans into e.groups by resource and scope, in order of first
// appearance. ferry has one resource and one scope, so this is one linear
// pass in practice. Equal resources behind different pointers share the
// first pointer, so encode can compare pointers.
func (e *otlpEncoder) group(spans []sdktrace.ReadOnlySpan) {
	e.groups = e.groups[:0]
	if len(spans) > 0 && spans[0] != nil && oneGroup(spans) {
		// ferry's case: every span from one tracer; no copy.
		e.groups = append(e.groups, spanGroup{res: spans[0].Resource(), scope: spans[0].InstrumentationScope(), spans: spans})
		return
	}
	for _, s := range spans {
		if s == nil {
			continue
		}
		res, scope := s.Resource(), s.InstrumentationScope()
		found := -1
		for i := range e.groups {
			g := &e.groups[i]
			if g.res != res && sameResource(g.res, res) {
				res = g.res
			}
			if g.res == res && g.scope == scope {
				found = i
				break
			}
		}
		if found < 0 {
			found = len(e.groups)
			e.groups = append(e.groups, spanGroup{res: res, scope: scope, spans: make([]sdktrace.ReadOnlySpan, 0, len(spans))})
		}
		e.groups[found].spans = append(e.groups[found].spans, s)
	}
}

// oneGroup reports whether every span has the first one's resource (the
// same pointer) and scope.
func oneGroup(spans []sdktrace.ReadOnlySpan) bool {
	if first, ok := spans[0].(*endedSpan); ok {
		// ferry's spans: those of one tracer share its resource and scope.
		t, i := first.s.t, 1
		for ; i < len(spans); i++ {
			if own, ok := spans[i].(*endedSpan); !ok || own.s.t != t {
				break
			}
		}
		if i == len(spans) {
			return true
		}
	}
	res, scope := spans[0].Resource(), spans[0].InstrumentationScope()
	for _, s := range spans[1:] {
		if s == nil || s.Resource() != res || s.InstrumentationScope() != scope {
			return false
		}
	}
	return true
}

func sameResource(a, b *resource.Resource) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(b)
}

// resource returns the Resource message body of res, cached.
func (e *otlpEncoder) resource(res *resource.Resource) []byte {
	if e.res != res || e.resBytes == nil {
		b := make([]byte, 0, 256)
		for it := res.Iter(); it.Next(); {
			b = appendKeyValue(b, fResAttributes, it.Attribute())
		}
		e.res, e.resBytes = res, b
	}
	return e.resBytes
}

// scopeBytes returns the InstrumentationScope message body of scope, cached.
func (e *otlpEncoder) scopeBytes(scope instrumentation.Scope) []byte {
	for _, s := range e.scopes {
		if s.scope == scope {
			return s.bytes
		}
	}
	b := appendString(nil, fScopeName, scope.Name)
	b = appendString(b, fScopeVersion, scope.Version)
	for it := scope.Attributes.Iter(); it.Next(); {
		b = appendKeyValue(b, fScopeAttributes, it.Attribute())
	}
	if len(e.scopes) >= 16 { // bounded: ferry has one scope
		e.scopes = e.scopes[:0]
	}
	e.scopes = append(e.scopes, scopeEncoding{scope: scope, bytes: b})
	return b
}

// spanFields are the fields of a span the encoder writes besides its
// attributes, read from ferry's own spans directly and from any other
// through the ReadOnlySpan methods.
type spanFields struct {
	sc, parent                                trace.SpanContext
	name                                      string
	kind                                      trace.SpanKind
	start, end                                time.Time
	droppedAttrs, droppedEvents, droppedLinks int
	events                                    []sdktrace.Event
	links                                     []sdktrace.Link
	status                                    sdktrace.Status
}

func (f *spanFields) read(s sdktrace.ReadOnlySpan) {
	if own, ok := s.(*endedSpan); ok {
		// An ended span changes no more (endedSpan's methods read the
		// same fields).
		// Field by field: a composite literal would be built whole
		// and copied.
		sp := own.s
		m := sp.more0()
		f.sc, f.parent, f.name, f.kind, f.start, f.end = sp.sc, sp.parent, sp.name, trace.SpanKind(sp.kind), sp.start, sp.end
		f.droppedAttrs, f.droppedEvents, f.droppedLinks = m.droppedAttrs, m.droppedEvents, m.droppedLinks
		f.events, f.links, f.status = m.events, m.links, sp.status
		return
	}
	*f = spanFields{sc: s.SpanContext(), parent: s.Parent(), name: s.Name(), kind: s.SpanKind(), start: s.StartTime(), end: s.EndTime(),
		droppedAttrs: s.DroppedAttributes(), droppedEvents: s.DroppedEvents(), droppedLinks: s.DroppedLinks(),
		events: s.Events(), links: s.Links(), status: s.Status()}
}

// appendSpan appends one Span (field 2 of ScopeSpans).
func (e *otlpEncoder) appendSpan(b []byte, s sdktrace.ReadOnlySpan) []byte {
	b, m := openLongMessage(b, fSSSpans)
	f := &e.span
	f.read(s)
	sc := f.sc
	tid, sid := sc.TraceID(), sc.SpanID()
	b = appendTag(b, fSpanTraceID, protowire.BytesType)
	b = append(append(b, byte(len(tid))), tid[:]...)
	b = appendTag(b, fSpanSpanID, protowire.BytesType)
	b = append(append(b, byte(len(sid))), sid[:]...)
	if ts := sc.TraceState(); ts.Len() > 0 {
		b = appendString(b, fSpanTraceState, ts.String())
	}
	parent := f.parent
	if psid := parent.SpanID(); psid.IsValid() {
		b = appendTag(b, fSpanParentSpanID, protowire.BytesType)
		b = append(append(b, byte(len(psid))), psid[:]...)
	}
	b = appendString(b, fSpanName, f.name)
	if k := spanKindNumber(f.kind); k != 0 {
		b = appendTag(b, fSpanKind, protowire.VarintType)
		b = appendVarint(b, k)
	}
	b = appendTime(b, fSpanStart, f.start.UnixNano())
	b = appendTime(b, fSpanEnd, f.end.UnixNano())
	if own, ok := s.(*endedSpan); ok && own.s.pa != nil {
		b = e.attrs.appendAll(b, own.s.pa) // ferry's spans: from the raw values
	} else {
		for _, kv := range s.Attributes() {
			b = appendKeyValue(b, fSpanAttributes, kv)
		}
	}
	b = appendCount(b, fSpanDroppedAttrs, f.droppedAttrs)
	for _, ev := range f.events {
		var em int
		b, em = openMessage(b, fSpanEvents)
		b = appendTime(b, fEventTime, ev.Time.UnixNano())
		b = appendString(b, fEventName, ev.Name)
		for _, kv := range ev.Attributes {
			b = appendKeyValue(b, fEventAttributes, kv)
		}
		b = appendCount(b, fEventDroppedAttrs, ev.DroppedAttributeCount)
		b = closeMessage(b, em)
	}
	b = appendCount(b, fSpanDroppedEvents, f.droppedEvents)
	for _, l := range f.links {
		var lm int
		b, lm = openMessage(b, fSpanLinks)
		ltid, lsid := l.SpanContext.TraceID(), l.SpanContext.SpanID()
		b = appendTag(b, fLinkTraceID, protowire.BytesType)
		b = protowire.AppendBytes(b, ltid[:])
		b = appendTag(b, fLinkSpanID, protowire.BytesType)
		b = protowire.AppendBytes(b, lsid[:])
		if ts := l.SpanContext.TraceState(); ts.Len() > 0 {
			b = appendString(b, fLinkTraceState, ts.String())
		}
		for _, kv := range l.Attributes {
			b = appendKeyValue(b, fLinkAttributes, kv)
		}
		b = appendCount(b, fLinkDroppedAttrs, l.DroppedAttributeCount)
		b = appendTag(b, fLinkFlags, protowire.Fixed32Type)
		b = protowire.AppendFixed32(b, spanFlags(l.SpanContext.TraceFlags(), l.SpanContext))
		b = closeMessage(b, lm)
	}
	b = appendCount(b, fSpanDroppedLinks, f.droppedLinks)
	st := f.status
	var sm int
	b, sm = openMessage(b, fSpanStatus)
	if st.Code == codes.Error || st.Code == codes.Ok {
		b = appendString(b, fStatusMessage, st.Description)
		b = appendTag(b, fStatusCode, protowire.VarintType)
		b = appendVarint(b, statusCodeNumber(st.Code))
	}
	b = closeMessage(b, sm)
	b = appendTag(b, fSpanFlags, protowire.Fixed32Type)
	b = protowire.AppendFixed32(b, spanFlags(sc.TraceFlags(), parent))
	return closeLongMessage(b, m)
}

// spanFlags is the OTLP flags field: the W3C trace flags, and whether the
// parent (or the linked span) is remote.
func spanFlags(tf trace.TraceFlags, parent trace.SpanContext) uint32 {
	f := uint32(tf) | spanFlagsHasIsRemote
	if parent.IsRemote() {
		f |= spanFlagsIsRemote
	}
	return f
}

// spanKindNumber is the OTLP Span.SpanKind enum value.
func spanKindNumber(k trace.SpanKind) uint64 {
	switch k {
	case trace.SpanKindInternal:
		return 1
	case trace.SpanKindServer:
		return 2
	case trace.SpanKindClient:
		return 3
	case trace.SpanKindProducer:
		return 4
	case trace.SpanKindConsumer:
		return 5
	}
	return 0
}

// statusCodeNumber is the OTLP Status.StatusCode enum value.
func statusCodeNumber(c codes.Code) uint64 {
	switch c {
	case codes.Ok:
		return 1
	case codes.Error:
		return 2
	}
	return 0
}

// appendKeyValue appends one KeyValue message as field num.
func appendKeyValue(b []byte, num protowire.Number, kv attribute.KeyValue) []byte {
	b, m := openMessage(b, num)
	b = appendString(b, fKVKey, string(kv.Key))
	b = appendAnyValue(b, fKVValue, kv.Value)
	return closeMessage(b, m)
}

// appendAnyValue appends one AnyValue message as field num. An EMPTY value
// is an AnyValue with no field set; a type the encoder does not know is the
// string "INVALID", as the OpenTelemetry exporters do.
func appendAnyValue(b []byte, num protowire.Number, v attribute.Value) []byte {
	b, m := openMessage(b, num)
	switch v.Type() {
	case attribute.STRING:
		b = appendStringField(b, fAnyString, v.AsString())
	case attribute.BOOL:
		b = appendBool(b, v.AsBool())
	case attribute.INT64:
		b = appendInt(b, v.AsInt64())
	case attribute.FLOAT64:
		b = appendDouble(b, v.AsFloat64())
	case attribute.BYTESLICE:
		b = appendTag(b, fAnyBytes, protowire.BytesType)
		b = protowire.AppendBytes(b, v.AsByteSlice())
	case attribute.STRINGSLICE:
		b = appendArray(b, v.AsStringSlice(), func(b []byte, x string) []byte {
			return appendStringField(b, fAnyString, x)
		})
	case attribute.BOOLSLICE:
		b = appendArray(b, v.AsBoolSlice(), appendBool)
	case attribute.INT64SLICE:
		b = appendArray(b, v.AsInt64Slice(), appendInt)
	case attribute.FLOAT64SLICE:
		b = appendArray(b, v.AsFloat64Slice(), appendDouble)
	case attribute.SLICE:
		var am int
		b, am = openMessage(b, fAnyArray)
		for _, x := range v.AsSlice() {
			b = appendAnyValue(b, fListValues, x)
		}
		b = closeMessage(b, am)
	case attribute.MAP:
		var km int
		b, km = openMessage(b, fAnyKVList)
		for _, kv := range v.AsMap() {
			b = appendKeyValue(b, fListValues, kv)
		}
		b = closeMessage(b, km)
	case attribute.EMPTY:
	default:
		b = appendTag(b, fAnyString, protowire.BytesType)
		b = protowire.AppendString(b, "INVALID")
	}
	return closeMessage(b, m)
}

// appendArray appends an ArrayValue (AnyValue field 5) whose values are
// AnyValue messages with one scalar field each, written by one.
func appendArray[T any](b []byte, xs []T, one func([]byte, T) []byte) []byte {
	b, am := openMessage(b, fAnyArray)
	for _, x := range xs {
		var vm int
		b, vm = openMessage(b, fListValues)
		b = one(b, x)
		b = closeMessage(b, vm)
	}
	return closeMessage(b, am)
}

func appendBool(b []byte, v bool) []byte {
	b = appendTag(b, fAnyBool, protowire.VarintType)
	return appendVarint(b, protowire.EncodeBool(v))
}

func appendInt(b []byte, v int64) []byte {
	b = appendTag(b, fAnyInt, protowire.VarintType)
	return appendVarint(b, uint64(v))
}

func appendDouble(b []byte, v float64) []byte {
	b = appendTag(b, fAnyDouble, protowire.Fixed64Type)
	return protowire.AppendFixed64(b, math.Float64bits(v))
}

// appendString appends a string field, omitted when empty (proto3 default).
func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	return appendStringField(b, num, s)
}

// appendTime appends a fixed64 nanosecond timestamp; times before 1970 are 0.
func appendTime(b []byte, num protowire.Number, ns int64) []byte {
	if ns <= 0 {
		return b
	}
	b = appendTag(b, num, protowire.Fixed64Type)
	return protowire.AppendFixed64(b, uint64(ns))
}

// appendCount appends a uint32 count, clamped, omitted when zero.
func appendCount(b []byte, num protowire.Number, n int) []byte {
	if n <= 0 {
		return b
	}
	b = appendTag(b, num, protowire.VarintType)
	return appendVarint(b, uint64(min(int64(n), math.MaxUint32)))
}

// openMessage appends the tag of a length-delimited field num and reserves
// one byte for its length; closeMessage fills it in once the body is
// written. Most of ferry's nested messages (key-values, values) are shorter
// than 128 bytes, so the reserved byte is enough and nothing moves; a
// longer body is moved right by the extra length bytes.
func openMessage(b []byte, num protowire.Number) ([]byte, int) {
	b = appendTag(b, num, protowire.BytesType)
	return append(b, 0), len(b) + 1
}

// openLongMessage is openMessage for a message that is most likely 128
// bytes to 16 KiB long, as ferry's spans are: two bytes are reserved for
// its length, and closeLongMessage writes it there without moving the
// body, unless it is shorter or longer.
func openLongMessage(b []byte, num protowire.Number) ([]byte, int) {
	b = appendTag(b, num, protowire.BytesType)
	return append(b, 0, 0), len(b) + 2
}

// closeLongMessage writes the length of the message whose body starts at
// start (as returned by openLongMessage), in its shortest form.
func closeLongMessage(b []byte, start int) []byte {
	n := len(b) - start
	switch {
	case n < 0x80:
		b[start-2] = byte(n)
		copy(b[start-1:], b[start:])
		return b[:len(b)-1]
	case n < 0x4000:
		b[start-2] = byte(n) | 0x80
		b[start-1] = byte(n >> 7)
		return b
	}
	extra := protowire.SizeVarint(uint64(n)) - 2
	b = append(b, make([]byte, extra)...)
	copy(b[start+extra:], b[start:start+n])
	appendVarint(b[:start-2], uint64(n))
	return b
}

// appendTag appends a field tag; every field number ferry writes but
// Span.flags (16) fits the one-byte form. Small enough to be inlined (the
// longer form is a call): with a constant tag, as nearly every one is, it
// is one byte appended.
func appendTag(b []byte, num protowire.Number, typ protowire.Type) []byte {
	if num < 16 {
		return append(b, byte(num)<<3|byte(typ))
	}
	return appendLongTag(b, num, typ)
}

//go:noinline
func appendLongTag(b []byte, num protowire.Number, typ protowire.Type) []byte {
	return protowire.AppendTag(b, num, typ)
}

// appendStringField appends a string field, empty or not.
func appendStringField(b []byte, num protowire.Number, s string) []byte {
	s = validUTF8(s)
	b = appendTag(b, num, protowire.BytesType)
	if len(s) < 0x80 {
		b = append(b, byte(len(s)))
	} else {
		b = appendVarint(b, uint64(len(s)))
	}
	return append(b, s...)
}

// closeMessage writes the length of the message whose body starts at start
// (as returned by openMessage).
func closeMessage(b []byte, start int) []byte {
	n := len(b) - start
	if n < 0x80 {
		b[start-1] = byte(n)
		return b
	}
	extra := protowire.SizeVarint(uint64(n)) - 1
	b = append(b, make([]byte, extra)...)
	copy(b[start+extra:], b[start:start+n])
	appendVarint(b[:start-1], uint64(n))
	return b
}

// validUTF8 is s with any invalid UTF-8 replaced by U+FFFD: a protobuf
// string field must hold valid UTF-8, and a receiver refuses the whole
// export (every span of the batch) over one that does not. Request paths
// and User-Agents come from callers and may hold any byte.
func validUTF8(s string) string {
	if asciiOnly(s) || utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// appendVarint is protowire.AppendVarint with the one-byte form, most of
// the lengths, counts and numbers ferry writes, small enough to be
// inlined; the two-byte form, most of the rest, is the first case of the
// call.
func appendVarint(b []byte, v uint64) []byte {
	if v < 1<<7 {
		return append(b, byte(v))
	}
	return appendLongVarint(b, v)
}

//go:noinline
func appendLongVarint(b []byte, v uint64) []byte {
	if v < 1<<14 {
		return append(b, byte(v)|0x80, byte(v>>7))
	}
	return protowire.AppendVarint(b, v)
}

// asciiOnly reports whether s is all ASCII, and so valid UTF-8, eight bytes
// at a time: what nearly every string in a span is, checked in a fraction
// of utf8.ValidString's time.
func asciiOnly(s string) bool {
	if len(s) < 8 {
		var m byte
		for i := 0; i < len(s); i++ {
			m |= s[i]
		}
		return m < utf8.RuneSelf
	}
	m := load64(s[len(s)-8:]) // the last eight, overlapping the loop's last
	for ; len(s) > 8; s = s[8:] {
		m |= load64(s)
	}
	return m&0x8080808080808080 == 0
}

// load64 is s's first eight bytes as one little-endian word (one load on
// the machines that allow unaligned ones).
func load64(s string) uint64 {
	_ = s[7]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}
