package telemetry

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// TestKnownSamplersDecide: for each sampler ferry builds whose decision
// it makes itself (knownSampler), and every kind of parent (none, remote
// or local, sampled or not, with the random flag, with a tracestate),
// the decision, tracestate and attributes are the SDK sampler's; the
// other samplers are asked.
func TestKnownSamplersDecide(t *testing.T) {
	tid := trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36}
	sid := trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7}
	ts, err := trace.ParseTraceState("vendor=abc,other=x")
	if err != nil {
		t.Fatal(err)
	}
	parents := []trace.SpanContext{{}}
	for _, remote := range []bool{true, false} {
		for _, flags := range []trace.TraceFlags{0, trace.FlagsSampled, trace.FlagsRandom, trace.FlagsSampled | trace.FlagsRandom} {
			for _, state := range []trace.TraceState{{}, ts} {
				parents = append(parents, trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: flags, TraceState: state, Remote: remote}))
			}
		}
	}
	known := 0
	for _, name := range []string{SamplerAlwaysOn, SamplerAlwaysOff, SamplerTraceIDRatio, SamplerParentBasedAlwaysOn, SamplerParentBasedAlwaysOff, SamplerParentBasedTraceIDRatio} {
		tel := &Telemetry{}
		tel.s.sampler, tel.s.samplerArg = name, 0.5
		sampler, k := tel.sampler()
		if (k == samplerOther) != (name == SamplerTraceIDRatio || name == SamplerParentBasedTraceIDRatio) {
			t.Errorf("%s: known as %d", name, k)
		}
		if k == samplerOther {
			continue
		}
		known++
		for _, psc := range parents {
			want := sampler.ShouldSample(sdktrace.SamplingParameters{
				ParentContext: trace.ContextWithSpanContext(context.Background(), psc), TraceID: tid, Name: "GET", Kind: trace.SpanKindServer,
			})
			var got sdktrace.SamplingResult
			k.decide(&got, &psc)
			if got.Decision != want.Decision || got.Tracestate.String() != want.Tracestate.String() || len(got.Attributes) != len(want.Attributes) {
				t.Errorf("%s, parent %+v (remote %v): decided %+v, the sampler %+v", name, psc, psc.IsRemote(), got, want)
			}
		}
	}
	if known != 4 {
		t.Errorf("%d samplers known, want 4", known)
	}
}
