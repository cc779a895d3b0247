package telemetry

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// spySampler is a sampler ferry does not know: it asks inner, adds to its
// result an attribute naming the span kind and a tracestate member, and
// keeps what it was asked.
type spySampler struct {
	inner sdktrace.Sampler
	mu    sync.Mutex
	asked []sdktrace.SamplingParameters
}

func (s *spySampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	s.mu.Lock()
	s.asked = append(s.asked, p)
	s.mu.Unlock()
	res := s.inner.ShouldSample(p)
	res.Attributes = append(res.Attributes, attribute.String("spy.kind", p.Kind.String()))
	res.Tracestate = spyState(res.Tracestate)
	return res
}

func (s *spySampler) Description() string { return "spy" }

// spyState is ts with the member the spy adds.
func spyState(ts trace.TraceState) trace.TraceState {
	ts, err := ts.Insert("spy", "1")
	if err != nil {
		panic(err)
	}
	return ts
}

// The caller's trace context as the server span's sampler sees it.
type startParent int

const (
	parentCaller   startParent = iota // the caller's span context (from the headers or r.Context())
	parentRoot                        // none: a new trace
	parentAccepts                     // a B3 decision to sample, without IDs
	parentDenies                      // a B3 decision not to sample, without IDs
	parentDeferred                    // a B3 trace whose caller left the decision to ferry
)

// TestStartPathFollowsTheSampler: for each sampler (those ferry decides
// for itself, the others, and a sampler ferry does not know that adds an
// attribute and a tracestate member to another's result), and each kind
// of caller (none; a traceparent sampled or not, with the random flag and
// a tracestate, read by ferry or by the propagators; a span in
// r.Context(); a B3 decision without IDs; a B3 trace that defers), the
// server span and two attempts' client spans are what the SDK's sampler
// makes of their parents: the server span's under the caller's span
// context (none for a root, the caller's decision for a B3 decision
// without IDs, none but the caller's trace for a deferral), each
// attempt's under the server span's span context as it is, recording or
// not (trace, span ID, flags and tracestate). Checked: the span contexts
// (the parent's flags kept besides sampled, the sampler's tracestate or,
// for a deferral that gives none, the caller's), which spans record,
// their parents, start times and the sampler's attributes, what an
// unknown sampler is asked, and what the upstream is sent.
func TestStartPathFollowsTheSampler(t *testing.T) {
	half := 0.5
	const state = "congo=t61rcWkgMzE"
	caller := func(flags string) map[string]string {
		return map[string]string{"traceparent": "00-" + callerTrace + "-" + callerSpan + "-" + flags, "tracestate": state}
	}
	tid, _ := trace.TraceIDFromHex(callerTrace)
	sid, _ := trace.SpanIDFromHex(callerSpan)
	ts, _ := trace.ParseTraceState("local=1")
	local := func(flags trace.TraceFlags) *trace.SpanContext {
		sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: flags, TraceState: ts})
		return &sc
	}
	callers := []struct {
		name   string
		props  string // "": the default propagators, which ferry reads itself
		hdr    map[string]string
		local  *trace.SpanContext // what r.Context() carries
		parent startParent
	}{
		{"no parent", "", nil, nil, parentRoot},
		{"sampled", "", caller("01"), nil, parentCaller},
		{"not sampled", "", caller("00"), nil, parentCaller},
		{"sampled, random", "", caller("03"), nil, parentCaller},
		{"not sampled, random", "", caller("02"), nil, parentCaller},
		{"sampled, random, propagators", "tracecontext,b3", caller("03"), nil, parentCaller},
		{"not sampled, random, propagators", "tracecontext,b3", caller("02"), nil, parentCaller},
		{"in-process sampled, random", "", nil, local(trace.FlagsSampled | trace.FlagsRandom), parentCaller},
		{"in-process not sampled", "", nil, local(0), parentCaller},
		{"in-process under a traceparent", "", caller("00"), local(trace.FlagsSampled), parentCaller},
		{"in-process under a traceparent, propagators", "tracecontext,b3", caller("00"), local(trace.FlagsSampled), parentCaller},
		{"b3 accepts", "b3", map[string]string{"b3": "1"}, nil, parentAccepts},
		{"b3multi accepts", "b3multi,tracecontext", map[string]string{"X-B3-Sampled": "1"}, nil, parentAccepts},
		{"b3 denies", "b3,tracecontext", map[string]string{"b3": "0"}, nil, parentDenies},
		{"b3 defers", "b3", map[string]string{"b3": callerTrace + "-" + callerSpan}, nil, parentDeferred},
		{"b3 defers, traceparent random with tracestate", "b3,tracecontext",
			map[string]string{"b3": callerTrace + "-" + callerSpan, "traceparent": "00-" + callerTrace + "-" + callerSpan + "-02", "tracestate": state},
			nil, parentDeferred},
	}
	samplers := []Config{
		{Sampler: SamplerAlwaysOn}, {Sampler: SamplerAlwaysOff},
		{Sampler: SamplerParentBasedAlwaysOn}, {Sampler: SamplerParentBasedAlwaysOff},
		{Sampler: SamplerTraceIDRatio, SamplerArg: &half}, {Sampler: SamplerParentBasedTraceIDRatio, SamplerArg: &half},
	}
	for _, scfg := range samplers {
		for _, spy := range []bool{false, true} {
			for _, c := range callers {
				cfg := scfg
				cfg.AccessLog = "off"
				if c.props != "" {
					cfg.Propagators = strings.Split(c.props, ",")
				}
				tel, rec, _ := recorded(t, cfg, env{})
				inner := tel.prov.sampler
				var sp *spySampler
				if spy {
					sp = &spySampler{inner: inner}
					tel.prov.sampler, tel.prov.known = sp, samplerOther
				}
				// The ratio samplers decide by trace ID: enough requests
				// that both decisions come up.
				for i := range 8 {
					what := fmt.Sprintf("%s (spy %v), %s, #%d", cfg.Sampler, spy, c.name, i)
					rec.Reset()
					if sp != nil {
						sp.asked = nil
					}
					checkStartPath(t, what, tel, rec.Ended, inner, sp, c.hdr, c.local, c.parent)
				}
			}
		}
	}
}

// checkStartPath sends one request with hdr (and local in its context)
// through tel, two attempts, and checks its spans against what inner, the
// SDK sampler tel was configured with, makes of them (see
// TestStartPathFollowsTheSampler); sp, when set, is the sampler tel asks.
func checkStartPath(t *testing.T, what string, tel *Telemetry, ended func() []sdktrace.ReadOnlySpan,
	inner sdktrace.Sampler, sp *spySampler, hdr map[string]string, local *trace.SpanContext, kind startParent) {
	t.Helper()
	r := incoming("GET", "http://files/x", hdr)
	if local != nil {
		r = r.WithContext(trace.ContextWithSpanContext(r.Context(), *local))
	}
	// The caller's span context as the propagators extract it.
	callerSC := trace.SpanContextFromContext(tel.propagator.Extract(r.Context(), headerCarrier{r.Header}))
	at := time.Now().Add(-time.Second)
	ctx, q := tel.StartRequestIn(nil, r, Outbound, at)
	ssc := q.Span().SpanContext()
	if !ssc.Equal(trace.SpanContextFromContext(ctx)) || !ssc.Equal(trace.SpanContextFromContext(q.Context())) {
		t.Fatalf("%s: the server span %v is not the one its context carries", what, ssc)
	}
	if !q.Start().Equal(at) {
		t.Errorf("%s: request started %v, want %v", what, q.Start(), at)
	}

	// What the sampler is asked about the server span: its parent and trace.
	var parent trace.SpanContext // the server span's
	askedParent, askedTrace := callerSC, callerSC.TraceID()
	var baseFlags trace.TraceFlags // the parent's, kept besides sampled
	switch kind {
	case parentCaller:
		parent, baseFlags = callerSC, callerSC.TraceFlags()
	case parentRoot:
		askedParent, askedTrace = trace.SpanContext{}, ssc.TraceID()
	case parentAccepts, parentDenies:
		var flags trace.TraceFlags
		if kind == parentAccepts {
			flags = trace.FlagsSampled
		}
		askedTrace = ssc.TraceID()
		askedParent = trace.NewSpanContext(trace.SpanContextConfig{TraceID: askedTrace, SpanID: trace.SpanID{1}, TraceFlags: flags, Remote: true})
	case parentDeferred:
		parent, baseFlags = callerSC, callerSC.TraceFlags()
		askedParent = trace.SpanContext{}
	}
	if kind != parentRoot && kind != parentAccepts && kind != parentDenies && ssc.TraceID() != callerSC.TraceID() {
		t.Errorf("%s: server span in trace %s, want the caller's %s", what, ssc.TraceID(), callerSC.TraceID())
	}
	if (kind == parentRoot || kind == parentAccepts || kind == parentDenies) && (!ssc.TraceID().IsValid() || ssc.TraceID().String() == callerTrace) {
		t.Errorf("%s: server span in trace %s, want a new one", what, ssc.TraceID())
	}
	want := inner.ShouldSample(sdktrace.SamplingParameters{
		ParentContext: trace.ContextWithSpanContext(context.Background(), askedParent), TraceID: askedTrace, Name: "GET", Kind: trace.SpanKindServer,
	})
	wantState := want.Tracestate
	if sp != nil {
		wantState = spyState(wantState)
	}
	if kind == parentDeferred && wantState.Len() == 0 {
		wantState = callerSC.TraceState()
	}
	checkSpanContext(t, what+", server span", ssc, ssc.TraceID(), baseFlags, want.Decision, wantState)

	// Two attempts, each the server span's child.
	var atts []trace.SpanContext
	var attWant []sdktrace.SamplingResult
	for i := 1; i <= 2; i++ {
		out := upstream(t, tel, r, "http://files/x")
		a := q.StartAttempt(out, AttemptInfo{Endpoint: "10.0.0.7:8080", Attempt: i})
		asc := a.Span().SpanContext()
		aw := inner.ShouldSample(sdktrace.SamplingParameters{
			ParentContext: trace.ContextWithSpanContext(context.Background(), ssc), TraceID: ssc.TraceID(), Name: "GET", Kind: trace.SpanKindClient,
		})
		aState := aw.Tracestate
		if sp != nil {
			aState = spyState(aState)
		}
		awhat := fmt.Sprintf("%s, attempt %d", what, i)
		checkSpanContext(t, awhat, asc, ssc.TraceID(), ssc.TraceFlags(), aw.Decision, aState)
		if asc.SpanID() == ssc.SpanID() {
			t.Errorf("%s: the attempt has the server span's ID", awhat)
		}
		if !asc.Equal(trace.SpanContextFromContext(a.Context())) {
			t.Errorf("%s: the attempt %v is not the one its context carries", awhat, asc)
		}
		a.Inject(out.Header)
		if tp := out.Header.Get("traceparent"); tp != "" {
			if tr, id, _ := parseTraceparent(t, tp); tr != asc.TraceID().String() || id != asc.SpanID().String() {
				t.Errorf("%s: upstream traceparent %q, want the attempt's %v", awhat, tp, asc)
			}
			if got := out.Header.Get("tracestate"); got != asc.TraceState().String() {
				t.Errorf("%s: upstream tracestate %q, want the attempt's %q", awhat, got, asc.TraceState())
			}
		}
		a.End(Outcome{Status: 200})
		atts, attWant = append(atts, asc), append(attWant, aw)
	}
	q.End(Outcome{Status: 200})

	// What was recorded.
	spans := ended()
	var server sdktrace.ReadOnlySpan
	clients := map[trace.SpanID]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		if s.SpanKind() == trace.SpanKindServer {
			server = s
		} else {
			clients[s.SpanContext().SpanID()] = s
		}
	}
	if (server != nil) != (want.Decision != sdktrace.Drop) {
		t.Errorf("%s: server span recorded %v, the sampler decided %v", what, server != nil, want.Decision)
	}
	if server != nil {
		if !server.SpanContext().Equal(ssc) || !server.Parent().Equal(parent) {
			t.Errorf("%s: server span %v under %v, want %v under %v", what, server.SpanContext(), server.Parent(), ssc, parent)
		}
		if !server.StartTime().Equal(at) {
			t.Errorf("%s: server span started %v, want %v", what, server.StartTime(), at)
		}
		checkSpyAttr(t, what+", server span", server, sp, "server")
	}
	for i, asc := range atts {
		awhat := fmt.Sprintf("%s, attempt %d", what, i+1)
		s, ok := clients[asc.SpanID()]
		if ok != (attWant[i].Decision != sdktrace.Drop) {
			t.Errorf("%s: client span recorded %v, the sampler decided %v", awhat, ok, attWant[i].Decision)
		}
		if !ok {
			continue
		}
		if !s.SpanContext().Equal(asc) || !s.Parent().Equal(ssc) {
			t.Errorf("%s: client span %v under %v, want %v under the server span %v", awhat, s.SpanContext(), s.Parent(), asc, ssc)
		}
		if !s.StartTime().After(at) {
			t.Errorf("%s: client span started %v, with the request (%v)", awhat, s.StartTime(), at)
		}
		checkSpyAttr(t, awhat, s, sp, "client")
	}

	// What a sampler ferry does not know was asked.
	if sp == nil {
		return
	}
	if len(sp.asked) != 3 {
		t.Fatalf("%s: the sampler was asked %d times, want 3", what, len(sp.asked))
	}
	for i, p := range sp.asked {
		wantParent, wantTrace, wantKind := askedParent, askedTrace, trace.SpanKindServer
		if i > 0 {
			wantParent, wantTrace, wantKind = ssc, ssc.TraceID(), trace.SpanKindClient
		}
		got := trace.SpanContextFromContext(p.ParentContext)
		sameParent := got.Equal(wantParent)
		if i == 0 && (kind == parentAccepts || kind == parentDenies) {
			// Its span ID is ferry's to make.
			sameParent = got.SpanID().IsValid() && got.SpanID() != ssc.SpanID() &&
				got.Equal(trace.NewSpanContext(trace.SpanContextConfig{TraceID: got.TraceID(), SpanID: got.SpanID(), TraceFlags: wantParent.TraceFlags(), Remote: true})) &&
				got.TraceID() == wantTrace
		}
		if !sameParent || p.TraceID != wantTrace || p.Name != "GET" || p.Kind != wantKind {
			t.Errorf("%s: the sampler was asked (#%d) about %s %q of trace %s under %v, want %s of trace %s under %v",
				what, i, p.Kind, p.Name, p.TraceID, got, wantKind, wantTrace, wantParent)
		}
	}
}

// checkSpanContext checks sc, a span's, against the sampler's decision:
// trace tid, the parent's flags (parentFlags) besides sampled, tracestate
// state.
func checkSpanContext(t *testing.T, what string, sc trace.SpanContext, tid trace.TraceID, parentFlags trace.TraceFlags, d sdktrace.SamplingDecision, state trace.TraceState) {
	t.Helper()
	flags := parentFlags &^ trace.FlagsSampled
	if d == sdktrace.RecordAndSample {
		flags |= trace.FlagsSampled
	}
	if !sc.IsValid() || sc.IsRemote() || sc.TraceID() != tid || sc.TraceFlags() != flags || sc.TraceState().String() != state.String() {
		t.Errorf("%s: %v (flags %s, tracestate %q), want trace %s, flags %s, tracestate %q", what, sc, sc.TraceFlags(), sc.TraceState(), tid, flags, state)
	}
}

// checkSpyAttr checks that s carries the attribute sp's result gave it.
func checkSpyAttr(t *testing.T, what string, s sdktrace.ReadOnlySpan, sp *spySampler, kind string) {
	t.Helper()
	got, ok := attrMap(s)["spy.kind"]
	if sp == nil && ok {
		t.Errorf("%s: spy.kind %v with no spy", what, got)
	}
	if sp != nil && got != kind {
		t.Errorf("%s: spy.kind %v, want %s", what, got, kind)
	}
}

// TestTracerStartFollowsTheSampler: a span started through the tracer
// under a local parent (sampled or not, with the random flag and a
// tracestate) keeps the parent's flags besides sampled, takes the
// tracestate and attributes of the sampler's result besides those of
// its options, and the sampler is asked with the options' attributes
// and links.
func TestTracerStartFollowsTheSampler(t *testing.T) {
	tid, _ := trace.TraceIDFromHex(callerTrace)
	sid, _ := trace.SpanIDFromHex(callerSpan)
	ts, _ := trace.ParseTraceState("local=1")
	link := trace.Link{SpanContext: trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: trace.SpanID{7}})}
	for _, inner := range []sdktrace.Sampler{sdktrace.ParentBased(sdktrace.AlwaysSample()), sdktrace.AlwaysSample()} {
		for _, flags := range []trace.TraceFlags{0, trace.FlagsRandom, trace.FlagsSampled | trace.FlagsRandom} {
			sp := &spySampler{inner: inner}
			p, rec := testProvider(t, sp)
			psc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: flags, TraceState: ts})
			ctx := trace.ContextWithSpanContext(context.Background(), psc)
			_, s := p.Tracer("x").Start(ctx, "op", trace.WithAttributes(attribute.String("opt", "v")), trace.WithLinks(link), trace.WithSpanKind(trace.SpanKindInternal))
			s.End()
			what := fmt.Sprintf("%s, parent flags %s", inner.Description(), flags)
			want := inner.ShouldSample(sdktrace.SamplingParameters{ParentContext: ctx, TraceID: tid})
			checkSpanContext(t, what, s.SpanContext(), tid, flags, want.Decision, spyState(ts))
			if len(sp.asked) != 1 || len(sp.asked[0].Attributes) != 1 || len(sp.asked[0].Links) != 1 || sp.asked[0].Name != "op" ||
				!trace.SpanContextFromContext(sp.asked[0].ParentContext).Equal(psc) {
				t.Errorf("%s: the sampler was asked %+v", what, sp.asked)
			}
			ended := rec.Ended()
			if (len(ended) == 1) != (want.Decision != sdktrace.Drop) {
				t.Fatalf("%s: %d spans recorded, the sampler decided %v", what, len(ended), want.Decision)
			}
			if len(ended) == 1 {
				a := attrMap(ended[0])
				if a["spy.kind"] != "internal" || a["opt"] != "v" || !ended[0].Parent().Equal(psc) {
					t.Errorf("%s: span under %v with attributes %v", what, ended[0].Parent(), a)
				}
			}
		}
	}
}
