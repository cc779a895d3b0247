package telemetry

import (
	"context"
	"encoding/hex"
	"math"
	"reflect"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// everyType has one attribute of every value type the API offers,
// including nested slices and maps and the empty value.
var everyType = []attribute.KeyValue{
	attribute.String("s", "text ✓"),
	attribute.String("s.empty", ""),
	attribute.Bool("b", true),
	attribute.Bool("b.false", false),
	attribute.Int64("i", -42),
	attribute.Int64("i.max", math.MaxInt64),
	attribute.Float64("f", 3.25),
	attribute.Float64("f.nan", math.Inf(-1)),
	attribute.BoolSlice("bs", []bool{true, false, true}),
	attribute.Int64Slice("is", []int64{1, -2, 300000}),
	attribute.Float64Slice("fs", []float64{0.5, -1e300}),
	attribute.StringSlice("ss", []string{"a", "", "c"}),
	attribute.StringSlice("ss.empty", []string{}),
	attribute.ByteSlice("bytes", []byte{0, 1, 0xff}),
	attribute.Slice("mixed", attribute.StringValue("x"), attribute.Int64Value(7),
		attribute.SliceValue(attribute.BoolValue(true)), attribute.MapValue(attribute.String("k", "v"))),
	attribute.Map("map", attribute.String("a", "1"), attribute.Int64("b", 2),
		attribute.Map("nested", attribute.Float64("c", 1.5))),
	{Key: "empty"},
	attribute.String("long", string(make([]byte, 300))), // a value longer than one length byte
}

// recordSpans makes spans that use every field OTLP carries, with two
// resources and three scopes, and returns them as the SDK recorded them.
func recordSpans(t *testing.T) []sdktrace.ReadOnlySpan {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	res1 := resource.NewWithAttributes("https://opentelemetry.io/schemas/1.26.0",
		attribute.String("service.name", "ferry-test"), attribute.Int64("pid", 7))
	res2 := resource.NewSchemaless(attribute.String("service.name", "other"))
	limits := sdktrace.NewSpanLimits()
	limits.AttributeCountLimit = len(everyType) + 2
	limits.EventCountLimit = 2
	limits.LinkCountLimit = 1
	limits.AttributePerEventCountLimit = 2
	limits.AttributePerLinkCountLimit = 1
	tp1 := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithResource(res1), sdktrace.WithRawSpanLimits(limits))
	tp2 := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithResource(res2))
	defer tp1.Shutdown(context.Background())
	defer tp2.Shutdown(context.Background())

	scoped := tp1.Tracer("scope.a", trace.WithInstrumentationVersion("1.2.3"),
		trace.WithSchemaURL("https://opentelemetry.io/schemas/1.26.0"),
		trace.WithInstrumentationAttributes(attribute.String("scope.attr", "x"), attribute.Bool("scope.flag", true)))
	plain := tp1.Tracer("scope.b")
	other := tp2.Tracer("scope.c")

	tid, _ := trace.TraceIDFromHex(callerTrace)
	sid, _ := trace.SpanIDFromHex(callerSpan)
	ts, err := trace.ParseTraceState("vendor=abc,other=1")
	if err != nil {
		t.Fatal(err)
	}
	remote := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, TraceState: ts, Remote: true})
	ctx := trace.ContextWithRemoteSpanContext(context.Background(), remote)
	linkTo := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5}, TraceState: ts, Remote: true})
	start := time.Unix(1_700_000_000, 123456789)

	sctx, server := scoped.Start(ctx, "GET files", trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(start),
		trace.WithAttributes(everyType...),
		trace.WithLinks(trace.Link{SpanContext: linkTo}, // over the link limit: the oldest is dropped
			trace.Link{SpanContext: linkTo, Attributes: []attribute.KeyValue{attribute.String("l1", "a"), attribute.Int64("l2", 2)}}))
	// Beyond the attribute limit: dropped.
	server.SetAttributes(attribute.String("over.1", "x"), attribute.String("over.2", "y"), attribute.String("over.3", "z"))
	// Over the event limit: the oldest event is dropped.
	server.AddEvent("evicted")
	server.AddEvent("second")
	server.AddEvent("ferry.retry", trace.WithTimestamp(start.Add(time.Millisecond)),
		trace.WithAttributes(attribute.Int64("ferry.attempt", 2), attribute.String("ferry.reason", "status_503"), attribute.Bool("dropped", true)))
	server.SetStatus(codes.Error, "upstream failed")

	_, client := plain.Start(sctx, "GET", trace.WithSpanKind(trace.SpanKindClient), trace.WithTimestamp(start.Add(time.Microsecond)))
	client.SetAttributes(attribute.Int64("http.response.status_code", 200))
	client.SetStatus(codes.Ok, "ignored for ok")
	client.End(trace.WithTimestamp(start.Add(time.Second)))

	_, internal := other.Start(context.Background(), "internal", trace.WithSpanKind(trace.SpanKindInternal))
	internal.End()
	_, producer := scoped.Start(sctx, "produce", trace.WithSpanKind(trace.SpanKindProducer))
	producer.End()
	_, consumer := plain.Start(sctx, "consume", trace.WithSpanKind(trace.SpanKindConsumer))
	consumer.End()
	server.End(trace.WithTimestamp(start.Add(2 * time.Second)))

	spans := rec.Ended()
	if len(spans) != 5 {
		t.Fatalf("recorded %d spans", len(spans))
	}
	return spans
}

func TestOTLPEncodingMatchesRecordedSpans(t *testing.T) {
	spans := recordSpans(t)
	var enc otlpEncoder
	// Twice through one encoder: the reused buffer and caches give the same bytes.
	first := append([]byte(nil), enc.encode(spans, 0)...)
	if again := enc.encode(spans, 0); string(again) != string(first) {
		t.Fatal("a second encoding of the same spans differs")
	}
	var req coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(first, &req); err != nil {
		t.Fatalf("decode: %v", err)
	}

	// Index the decoded spans with their resource and scope.
	type decoded struct {
		span  *tracepb.Span
		rs    *tracepb.ResourceSpans
		scope *tracepb.ScopeSpans
	}
	got := map[string]decoded{}
	if len(req.ResourceSpans) != 2 {
		t.Fatalf("%d ResourceSpans, want one per resource (2)", len(req.ResourceSpans))
	}
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				got[hex.EncodeToString(s.SpanId)] = decoded{s, rs, ss}
			}
		}
	}
	if n := len(req.ResourceSpans[0].ScopeSpans); n != 2 {
		t.Errorf("first resource has %d ScopeSpans, want 2", n)
	}

	for _, want := range spans {
		sc := want.SpanContext()
		d, ok := got[sc.SpanID().String()]
		if !ok {
			t.Fatalf("span %s (%s) not encoded", want.Name(), sc.SpanID())
		}
		s := d.span
		name := want.Name()
		eq := func(field string, g, w any) {
			t.Helper()
			if !reflect.DeepEqual(g, w) {
				t.Errorf("%s: %s = %v, want %v", name, field, g, w)
			}
		}
		tid, sid := sc.TraceID(), sc.SpanID()
		eq("trace_id", s.TraceId, tid[:])
		eq("span_id", s.SpanId, sid[:])
		eq("trace_state", s.TraceState, sc.TraceState().String())
		var wantParent []byte
		if p := want.Parent().SpanID(); p.IsValid() {
			wantParent = p[:]
		}
		eq("parent_span_id", s.ParentSpanId, wantParent)
		wantFlags := uint32(sc.TraceFlags()) | 0x100
		if want.Parent().IsRemote() {
			wantFlags |= 0x200
		}
		eq("flags", s.Flags, wantFlags)
		eq("name", s.Name, want.Name())
		eq("kind", int(s.Kind), int(want.SpanKind()))
		eq("start", s.StartTimeUnixNano, uint64(want.StartTime().UnixNano()))
		eq("end", s.EndTimeUnixNano, uint64(want.EndTime().UnixNano()))
		eq("attributes", fromKeyValues(s.Attributes), fromAttributes(want.Attributes()))
		eq("dropped_attributes_count", int(s.DroppedAttributesCount), want.DroppedAttributes())
		eq("dropped_events_count", int(s.DroppedEventsCount), want.DroppedEvents())
		eq("dropped_links_count", int(s.DroppedLinksCount), want.DroppedLinks())
		if len(s.Events) != len(want.Events()) {
			t.Fatalf("%s: %d events, want %d", name, len(s.Events), len(want.Events()))
		}
		for i, we := range want.Events() {
			ge := s.Events[i]
			eq("event name", ge.Name, we.Name)
			eq("event time", ge.TimeUnixNano, uint64(we.Time.UnixNano()))
			eq("event attributes", fromKeyValues(ge.Attributes), fromAttributes(we.Attributes))
			eq("event dropped", int(ge.DroppedAttributesCount), we.DroppedAttributeCount)
		}
		if len(s.Links) != len(want.Links()) {
			t.Fatalf("%s: %d links, want %d", name, len(s.Links), len(want.Links()))
		}
		for i, wl := range want.Links() {
			gl := s.Links[i]
			ltid, lsid := wl.SpanContext.TraceID(), wl.SpanContext.SpanID()
			eq("link trace_id", gl.TraceId, ltid[:])
			eq("link span_id", gl.SpanId, lsid[:])
			eq("link trace_state", gl.TraceState, wl.SpanContext.TraceState().String())
			eq("link attributes", fromKeyValues(gl.Attributes), fromAttributes(wl.Attributes))
			eq("link dropped", int(gl.DroppedAttributesCount), wl.DroppedAttributeCount)
			eq("link flags", gl.Flags, uint32(wl.SpanContext.TraceFlags())|0x300)
		}
		wantCode := map[codes.Code]tracepb.Status_StatusCode{codes.Unset: tracepb.Status_STATUS_CODE_UNSET,
			codes.Ok: tracepb.Status_STATUS_CODE_OK, codes.Error: tracepb.Status_STATUS_CODE_ERROR}[want.Status().Code]
		eq("status code", s.GetStatus().GetCode(), wantCode)
		eq("status message", s.GetStatus().GetMessage(), want.Status().Description)

		// Resource and scope.
		res := want.Resource()
		eq("resource schema_url", d.rs.SchemaUrl, res.SchemaURL())
		eq("resource attributes", fromKeyValues(d.rs.GetResource().GetAttributes()), fromAttributes(res.Attributes()))
		scope := want.InstrumentationScope()
		eq("scope name", d.scope.GetScope().GetName(), scope.Name)
		eq("scope version", d.scope.GetScope().GetVersion(), scope.Version)
		eq("scope schema_url", d.scope.SchemaUrl, scope.SchemaURL)
		eq("scope attributes", fromKeyValues(d.scope.GetScope().GetAttributes()), fromAttributes(scope.Attributes.ToSlice()))
	}

	// The test covers what it claims: drops happened, every type was seen.
	server := spanByKind(t, spans, "server")
	if server.DroppedAttributes() == 0 || server.DroppedEvents() == 0 || server.DroppedLinks() == 0 ||
		server.Events()[1].DroppedAttributeCount == 0 || server.Links()[0].DroppedAttributeCount == 0 {
		t.Error("the span limits did not drop anything: the dropped counts are untested")
	}
	seen := map[attribute.Type]bool{}
	for _, kv := range server.Attributes() {
		seen[kv.Value.Type()] = true
	}
	for ty := attribute.EMPTY; ty <= attribute.MAP; ty++ {
		if !seen[ty] {
			t.Errorf("no attribute of type %s on the server span", ty)
		}
	}
}

func TestOTLPEncodingPrefixAndEmpty(t *testing.T) {
	var enc otlpEncoder
	if b := enc.encode(nil, 5); len(b) != 5 {
		t.Errorf("no spans: %d bytes, want just the 5-byte prefix", len(b))
	}
	spans := recordSpans(t)
	b := enc.encode(spans, 5)
	var req coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(b[5:], &req); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			n += len(ss.Spans)
		}
	}
	if n != len(spans) {
		t.Errorf("%d spans after the prefix, want %d", n, len(spans))
	}

	// Spans of one resource and scope (ferry's case) make one ResourceSpans
	// with one ScopeSpans, in order, and the caller's slice is left alone.
	var one []sdktrace.ReadOnlySpan
	for _, s := range spans {
		if s.InstrumentationScope().Name == "scope.b" {
			one = append(one, s)
		}
	}
	kept := append([]sdktrace.ReadOnlySpan(nil), one...)
	req.Reset()
	if err := proto.Unmarshal(enc.encode(one, 0), &req); err != nil {
		t.Fatal(err)
	}
	if len(req.ResourceSpans) != 1 || len(req.ResourceSpans[0].ScopeSpans) != 1 || len(req.ResourceSpans[0].ScopeSpans[0].Spans) != len(one) {
		t.Fatalf("one group encoded as %d ResourceSpans", len(req.ResourceSpans))
	}
	for i, s := range req.ResourceSpans[0].ScopeSpans[0].Spans {
		if sid := one[i].SpanContext().SpanID(); string(s.SpanId) != string(sid[:]) || one[i] != kept[i] {
			t.Errorf("span %d out of order or the input changed", i)
		}
	}
}

// fromAttributes and fromKeyValues render API and decoded OTLP attributes
// in one shape for comparison: scalars as Go values, every slice as []any,
// maps as [][2]any in order.
func fromAttributes(kvs []attribute.KeyValue) [][2]any {
	out := [][2]any{}
	for _, kv := range kvs {
		out = append(out, [2]any{string(kv.Key), fromValue(kv.Value)})
	}
	return out
}

func fromValue(v attribute.Value) any {
	switch v.Type() {
	case attribute.EMPTY:
		return nil
	case attribute.BOOLSLICE, attribute.INT64SLICE, attribute.FLOAT64SLICE, attribute.STRINGSLICE:
		rv := reflect.ValueOf(v.AsInterface())
		out := make([]any, rv.Len())
		for i := range out {
			out[i] = rv.Index(i).Interface()
		}
		return out
	case attribute.SLICE:
		out := []any{}
		for _, x := range v.AsSlice() {
			out = append(out, fromValue(x))
		}
		return out
	case attribute.MAP:
		return fromAttributes(v.AsMap())
	}
	return v.AsInterface()
}

func fromKeyValues(kvs []*commonpb.KeyValue) [][2]any {
	out := [][2]any{}
	for _, kv := range kvs {
		out = append(out, [2]any{kv.Key, fromAnyValue(kv.Value)})
	}
	return out
}

func fromAnyValue(v *commonpb.AnyValue) any {
	switch x := v.GetValue().(type) {
	case nil:
		return nil
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_BoolValue:
		return x.BoolValue
	case *commonpb.AnyValue_IntValue:
		return x.IntValue
	case *commonpb.AnyValue_DoubleValue:
		return x.DoubleValue
	case *commonpb.AnyValue_BytesValue:
		return x.BytesValue
	case *commonpb.AnyValue_ArrayValue:
		out := []any{}
		for _, e := range x.ArrayValue.GetValues() {
			out = append(out, fromAnyValue(e))
		}
		return out
	case *commonpb.AnyValue_KvlistValue:
		return fromKeyValues(x.KvlistValue.GetValues())
	}
	return "unknown"
}

// A request whose path (percent-decoded) or User-Agent is not valid UTF-8
// must not make the whole ExportTraceServiceRequest undecodable: OTLP
// string fields are proto3 strings (valid UTF-8), and the official protos
// reject the message, losing every span of the batch.
func TestInvalidUTF8KeepsBatchDecodable(t *testing.T) {
	tel, rec, _ := recorded(t, Config{AccessLog: "off"}, env{})
	// Two good requests and one bad in the same batch.
	for _, target := range []string{"http://files/ok", "http://files/caf%E9", "http://files/ok2"} {
		r := incoming("GET", target, map[string]string{"User-Agent": "bot\xff/1"})
		_, req := tel.StartRequest(r, Inbound)
		req.End(Outcome{Status: 200})
	}
	spans := rec.Ended()
	var enc otlpEncoder
	body := enc.encode(spans, 0)
	var msg coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(body, &msg); err != nil {
		t.Fatalf("batch of %d spans (one request had a non-UTF-8 path/User-Agent) does not decode with the official OTLP protos: %v", len(spans), err)
	}
}
