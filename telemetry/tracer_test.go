package telemetry

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func testProvider(t *testing.T, sampler sdktrace.Sampler) (*tracerProvider, *tracetest.SpanRecorder) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	p := newTracerProvider(sampler, rec, resource.NewSchemaless(attribute.String("service.name", "t")), defaultSpanLimits())
	t.Cleanup(func() { _ = p.Shutdown(context.Background()) })
	return p, rec
}

func remoteParent(t *testing.T, sampled bool) context.Context {
	t.Helper()
	tid, _ := trace.TraceIDFromHex(callerTrace)
	sid, _ := trace.SpanIDFromHex(callerSpan)
	ts, _ := trace.ParseTraceState("vendor=abc")
	flags := trace.TraceFlags(0)
	if sampled {
		flags = trace.FlagsSampled
	}
	return trace.ContextWithRemoteSpanContext(context.Background(),
		trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: flags, TraceState: ts, Remote: true}))
}

func TestTracerSampling(t *testing.T) {
	parentBased := sdktrace.ParentBased(sdktrace.AlwaysSample())
	for _, c := range []struct {
		name          string
		sampler       sdktrace.Sampler
		ctx           context.Context
		opts          []trace.SpanStartOption
		wantRecording bool
		wantParent    bool
	}{
		{"sampled parent", parentBased, remoteParent(t, true), nil, true, true},
		{"unsampled parent", parentBased, remoteParent(t, false), nil, false, true},
		{"no parent", parentBased, context.Background(), nil, true, false},
		{"new root", parentBased, remoteParent(t, false), []trace.SpanStartOption{trace.WithNewRoot()}, true, false},
		{"never", sdktrace.NeverSample(), context.Background(), nil, false, false},
		{"ratio 0", sdktrace.TraceIDRatioBased(0), context.Background(), nil, false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, rec := testProvider(t, c.sampler)
			ctx, s := p.Tracer("x").Start(c.ctx, "op", c.opts...)
			sc := s.SpanContext()
			if !sc.IsValid() || !trace.SpanContextFromContext(ctx).Equal(sc) {
				t.Fatalf("span context %v invalid or not in the returned context", sc)
			}
			if s.IsRecording() != c.wantRecording || sc.IsSampled() != c.wantRecording {
				t.Errorf("recording %v sampled %v, want %v", s.IsRecording(), sc.IsSampled(), c.wantRecording)
			}
			parent := trace.SpanContextFromContext(c.ctx)
			if c.wantParent && (sc.TraceID() != parent.TraceID() || sc.SpanID() == parent.SpanID() || sc.TraceState().String() != "vendor=abc") {
				t.Errorf("child %v of %v: want the parent's trace and trace state, a new span id", sc, parent)
			}
			if !c.wantParent && sc.TraceID() == parent.TraceID() {
				t.Error("a new trace reused the parent's trace id")
			}
			s.End()
			if got := len(rec.Ended()); got != map[bool]int{true: 1, false: 0}[c.wantRecording] {
				t.Errorf("%d spans processed", got)
			}
			if c.wantRecording && c.wantParent {
				if ro := rec.Ended()[0]; !ro.Parent().Equal(parent) || !ro.Parent().IsRemote() {
					t.Errorf("parent %v, want the remote %v", ro.Parent(), parent)
				}
			}
		})
	}
}

func TestTracerAttributesEventsLimits(t *testing.T) {
	p, rec := testProvider(t, sdktrace.AlwaysSample())
	start := time.Unix(1_700_000_000, 0)
	linked := trace.SpanContextFromContext(remoteParent(t, true))
	_, s := p.Tracer("scope", trace.WithInstrumentationVersion("1.0")).Start(context.Background(), "first name",
		trace.WithSpanKind(trace.SpanKindClient), trace.WithTimestamp(start),
		trace.WithAttributes(attribute.String("a", "start"), attribute.Int("b", 1)),
		trace.WithLinks(trace.Link{SpanContext: linked, Attributes: []attribute.KeyValue{attribute.Bool("l", true)}}))
	s.SetAttributes(attribute.String("a", "later"), attribute.KeyValue{}, attribute.String("c", "x"))
	s.SetName("GET files")
	s.SetStatus(codes.Error, "broken")
	s.SetStatus(codes.Unset, "ignored")
	for i := range defaultSpanLimit + 2 {
		s.AddEvent(fmt.Sprintf("e%d", i))
	}
	many := make([]attribute.KeyValue, defaultSpanLimit+3)
	for i := range many {
		many[i] = attribute.Int(fmt.Sprint("k", i), i)
	}
	s.AddEvent("many", trace.WithAttributes(many...))
	s.RecordError(errors.New("boom"))
	end := start.Add(time.Second)
	s.End(trace.WithTimestamp(end))
	s.End()                                    // only the first End counts
	s.SetAttributes(attribute.String("z", "")) // ignored after End
	if s.IsRecording() {
		t.Error("recording after End")
	}

	spans := rec.Ended()
	if len(spans) != 1 {
		t.Fatalf("%d spans processed, want 1", len(spans))
	}
	ro := spans[0]
	if ro.Name() != "GET files" || ro.SpanKind() != trace.SpanKindClient || !ro.StartTime().Equal(start) || !ro.EndTime().Equal(end) {
		t.Errorf("name %q kind %v times %v..%v", ro.Name(), ro.SpanKind(), ro.StartTime(), ro.EndTime())
	}
	if got := fmt.Sprint(ro.Attributes()); got != fmt.Sprint([]attribute.KeyValue{
		attribute.String("a", "later"), attribute.Int("b", 1), attribute.String("c", "x")}) {
		t.Errorf("attributes %s: want the last value of a key, in its first place", got)
	}
	if ro.DroppedAttributes() != 1 {
		t.Errorf("dropped attributes %d, want the invalid one", ro.DroppedAttributes())
	}
	if ro.Status().Code != codes.Error || ro.Status().Description != "broken" {
		t.Errorf("status %+v", ro.Status())
	}
	ev := ro.Events()
	if len(ev) != defaultSpanLimit || ro.DroppedEvents() != 4 || ev[0].Name != "e4" {
		t.Errorf("%d events (first %q), %d dropped; want %d from e4, 4 dropped", len(ev), ev[0].Name, ro.DroppedEvents(), defaultSpanLimit)
	}
	many2 := ev[len(ev)-2]
	if many2.Name != "many" || len(many2.Attributes) != defaultSpanLimit || many2.DroppedAttributeCount != 3 {
		t.Errorf("event %q with %d attributes, %d dropped", many2.Name, len(many2.Attributes), many2.DroppedAttributeCount)
	}
	exc := attrMapOf(ev[len(ev)-1].Attributes)
	if ev[len(ev)-1].Name != "exception" || exc["exception.message"] != "boom" || exc["exception.type"] != "*errors.errorString" {
		t.Errorf("RecordError gave %q %v", ev[len(ev)-1].Name, exc)
	}
	if l := ro.Links(); len(l) != 1 || !l[0].SpanContext.Equal(linked) || len(l[0].Attributes) != 1 {
		t.Errorf("links %+v", l)
	}
	if ro.InstrumentationScope().Name != "scope" || ro.InstrumentationScope().Version != "1.0" || ro.Resource() != p.res {
		t.Errorf("scope %+v resource %v", ro.InstrumentationScope(), ro.Resource())
	}
}

func TestTracerStatusAndShutdown(t *testing.T) {
	p, rec := testProvider(t, sdktrace.AlwaysSample())
	_, s := p.Tracer("x").Start(context.Background(), "op")
	s.SetStatus(codes.Ok, "dropped for ok")
	s.SetStatus(codes.Error, "ok wins")
	s.End()
	if st := rec.Ended()[0].Status(); st.Code != codes.Ok || st.Description != "" {
		t.Errorf("status %+v, want Ok without a description", st)
	}
	_, late := p.Tracer("x").Start(context.Background(), "late")
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	late.End()
	if n := len(rec.Ended()); n != 1 {
		t.Errorf("%d spans processed; one ended after Shutdown must not be", n)
	}
}

func attrMapOf(kvs []attribute.KeyValue) map[string]any {
	m := map[string]any{}
	for _, kv := range kvs {
		m[string(kv.Key)] = kv.Value.AsInterface()
	}
	return m
}

func TestTracerAttributeLimit(t *testing.T) {
	p, rec := testProvider(t, sdktrace.AlwaysSample())
	_, s := p.Tracer("x").Start(context.Background(), "op")
	for i := range defaultSpanLimit + 5 {
		s.SetAttributes(attribute.Int(fmt.Sprint("k", i), i), attribute.Int("k0", -i)) // k0 set again each time
	}
	s.End()
	ro := rec.Ended()[0]
	got := attrMapOf(ro.Attributes())
	if len(ro.Attributes()) != defaultSpanLimit || ro.DroppedAttributes() != 5 {
		t.Errorf("%d attributes, %d dropped; want %d and 5", len(ro.Attributes()), ro.DroppedAttributes(), defaultSpanLimit)
	}
	if got["k0"] != int64(-(defaultSpanLimit+4)) || got["k127"] != int64(127) {
		t.Errorf("k0=%v k127=%v: want the last k0 and the first 128 keys", got["k0"], got["k127"])
	}
}

// The OTEL_*_LIMIT variables bound a span as the SDK's do: counts, the
// oldest events and links dropped first, string values truncated on a
// character boundary.
func TestTracerLimitsFromEnvironment(t *testing.T) {
	env := map[string]string{
		"OTEL_ATTRIBUTE_COUNT_LIMIT":             "3",
		"OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT": "4",
		"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT":      "99", // the span-specific one wins
		"OTEL_SPAN_EVENT_COUNT_LIMIT":            "2",
		"OTEL_SPAN_LINK_COUNT_LIMIT":             "0",
		"OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT":       "1",
	}
	limits, err := resolveSpanLimits(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	want := spanLimits{attributes: 3, events: 2, links: 0, eventAttributes: 1, linkAttributes: defaultSpanLimit, valueLength: 4}
	if limits != want {
		t.Fatalf("limits %+v, want %+v", limits, want)
	}
	rec := tracetest.NewSpanRecorder()
	p := newTracerProvider(sdktrace.AlwaysSample(), rec, resource.NewSchemaless(), limits)
	defer p.Shutdown(context.Background())
	_, s := p.Tracer("x").Start(context.Background(), "op", trace.WithLinks(trace.Link{SpanContext: remoteParentSC(t)}))
	s.SetAttributes(attribute.String("a", "héllo wörld"), attribute.StringSlice("b", []string{"abcdef", "ab"}), attribute.Int("c", 1), attribute.Int("d", 2))
	for i := range 3 {
		s.AddEvent(fmt.Sprintf("e%d", i), trace.WithAttributes(attribute.Int("x", 1), attribute.Int("y", 2)))
	}
	s.End()
	ro := rec.Ended()[0]
	attrs := ro.Attributes()
	if len(attrs) != 3 || ro.DroppedAttributes() != 1 || attrs[0].Value.AsString() != "héll" ||
		fmt.Sprint(attrs[1].Value.AsStringSlice()) != "[abcd ab]" {
		t.Errorf("attributes %v, %d dropped", attrs, ro.DroppedAttributes())
	}
	ev := ro.Events()
	if len(ev) != 2 || ev[0].Name != "e1" || ro.DroppedEvents() != 1 || len(ev[0].Attributes) != 1 || ev[0].DroppedAttributeCount != 1 {
		t.Errorf("events %+v, %d dropped", ev, ro.DroppedEvents())
	}
	if len(ro.Links()) != 0 || ro.DroppedLinks() != 1 {
		t.Errorf("links %v, %d dropped", ro.Links(), ro.DroppedLinks())
	}
	if _, err := resolveSpanLimits(func(k string) string {
		if k == "OTEL_SPAN_EVENT_COUNT_LIMIT" {
			return "lots"
		}
		return ""
	}); err == nil || !strings.Contains(err.Error(), "OTEL_SPAN_EVENT_COUNT_LIMIT") {
		t.Errorf("a bad limit gave %v, want an error naming the variable", err)
	}
}

func remoteParentSC(t *testing.T) trace.SpanContext {
	return trace.SpanContextFromContext(remoteParent(t, true))
}
