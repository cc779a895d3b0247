package telemetry

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/ferrymesh/ferry/internal/syncbuf"
)

const (
	callerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	callerSpan  = "00f067aa0ba902b7"
)

// parseTraceparent splits a W3C traceparent into trace id, parent id, flags.
func parseTraceparent(t *testing.T, v string) (string, string, string) {
	t.Helper()
	parts := strings.Split(v, "-")
	if len(parts) != 4 || parts[0] != "00" {
		t.Fatalf("traceparent %q is malformed", v)
	}
	return parts[1], parts[2], parts[3]
}

func TestServerAndClientSpans(t *testing.T) {
	tel, rec, _ := recorded(t, Config{}, env{})
	r := incoming("GET", "http://files.mesh:8080/report.pdf?secret=1", map[string]string{
		"traceparent": "00-" + callerTrace + "-" + callerSpan + "-01",
		"baggage":     "tenant=acme",
	})
	before := time.Now()
	ctx, req := tel.StartRequest(r, Outbound)
	if !trace.SpanContextFromContext(ctx).IsValid() {
		t.Fatal("context carries no span")
	}
	req.SetRoute("files", "files")
	out := upstream(t, tel, r, "http://files/report.pdf?secret=1")
	if out.Header.Get("traceparent") != "" || out.Header.Get("baggage") != "" {
		t.Fatal("test setup: propagation headers not removed")
	}
	att := req.StartAttempt(out, AttemptInfo{Endpoint: "10.0.0.7:8080", Attempt: 1, BreakerState: BreakerClosed})
	att.Inject(out.Header)
	att.SetStatus(200)
	att.End(Outcome{Status: 200, BytesIn: 5120, BytesOut: 0})
	lastByte := time.Now()
	req.End(Outcome{Status: 200, BytesIn: 0, BytesOut: 5120})

	spans := rec.Ended()
	if len(spans) != 2 {
		t.Fatalf("got %d spans, want 2", len(spans))
	}
	server, client := spanByKind(t, spans, "server"), spanByKind(t, spans, "client")

	// Parenting: caller -> server span -> client span, one trace.
	if got := server.SpanContext().TraceID().String(); got != callerTrace {
		t.Errorf("server trace id %s, want the caller's %s", got, callerTrace)
	}
	if got := server.Parent().SpanID().String(); got != callerSpan || !server.Parent().IsRemote() {
		t.Errorf("server parent %s (remote %v), want remote %s", got, server.Parent().IsRemote(), callerSpan)
	}
	if client.Parent().SpanID() != server.SpanContext().SpanID() {
		t.Errorf("client parent %s, want server span %s", client.Parent().SpanID(), server.SpanContext().SpanID())
	}
	if client.SpanContext().TraceID() != server.SpanContext().TraceID() {
		t.Error("client span is in another trace")
	}

	// Injected header: same trace, NEW parent = the client span, sampled.
	tid, pid, flags := parseTraceparent(t, out.Header.Get("traceparent"))
	if tid != callerTrace {
		t.Errorf("injected trace id %s, want %s", tid, callerTrace)
	}
	if pid == callerSpan {
		t.Error("incoming traceparent passed through unchanged")
	}
	if pid != client.SpanContext().SpanID().String() {
		t.Errorf("injected parent %s, want client span %s", pid, client.SpanContext().SpanID())
	}
	if flags != "01" {
		t.Errorf("injected flags %s, want 01", flags)
	}
	if got := out.Header.Get("baggage"); got != "tenant=acme" {
		t.Errorf("baggage %q not propagated", got)
	}

	// Names and attributes.
	if server.Name() != "GET files" || client.Name() != "GET" {
		t.Errorf("names %q, %q", server.Name(), client.Name())
	}
	sa := attrMap(server)
	for k, want := range map[string]any{
		"http.request.method": "GET", "http.route": "files", "http.response.status_code": int64(200),
		"url.path": "/report.pdf", "url.scheme": "http", "server.address": "files.mesh", "server.port": int64(8080),
		"network.peer.address": "10.1.2.3", "network.peer.port": int64(40000), "client.address": "10.1.2.3",
		"user_agent.original": "ferry-test/1", "network.protocol.version": "1.1",
		"ferry.listener": "outbound", "ferry.service": "files", "ferry.endpoint": "10.0.0.7:8080",
		"ferry.bytes_out": int64(5120), "ferry.bytes_in": int64(0), "http.response.body.size": int64(5120),
		"ferry.attempts": int64(1),
	} {
		if sa[k] != want {
			t.Errorf("server %s = %v (%T), want %v", k, sa[k], sa[k], want)
		}
	}
	ca := attrMap(client)
	for k, want := range map[string]any{
		"http.request.method": "GET", "http.response.status_code": int64(200), "http.route": "files",
		"server.address": "files", "server.port": int64(80), "url.full": "http://files/report.pdf",
		"network.peer.address": "10.0.0.7", "network.peer.port": int64(8080),
		"ferry.service": "files", "ferry.endpoint": "10.0.0.7:8080", "ferry.attempt": int64(1),
		"ferry.breaker_state": "closed", "ferry.bytes_in": int64(5120), "ferry.bytes_out": int64(0),
	} {
		if ca[k] != want {
			t.Errorf("client %s = %v (%T), want %v", k, ca[k], ca[k], want)
		}
	}
	if _, ok := ca["http.request.resend_count"]; ok {
		t.Error("first attempt carries a resend count")
	}
	if server.Status().Code != codes.Unset || client.Status().Code != codes.Unset {
		t.Errorf("statuses %v %v, want unset", server.Status(), client.Status())
	}

	// The spans cover the whole exchange up to the last body byte.
	if server.StartTime().Before(before) || server.EndTime().Before(lastByte) {
		t.Errorf("server span %v..%v does not cover %v..%v", server.StartTime(), server.EndTime(), before, lastByte)
	}
	if client.StartTime().Before(server.StartTime()) || client.EndTime().After(server.EndTime()) {
		t.Error("client span is not inside the server span")
	}
}

func TestNewTraceWhenNoneIncoming(t *testing.T) {
	tel, rec, _ := recorded(t, Config{}, env{})
	r := incoming("POST", "http://app/upload", nil)
	_, req := tel.StartRequest(r, Inbound)
	req.SetRoute("local", "app")
	out := upstream(t, tel, r, "http://127.0.0.1:9000/upload")
	att := req.StartAttempt(out, AttemptInfo{Endpoint: "127.0.0.1:9000", Attempt: 1})
	att.Inject(out.Header)
	att.End(Outcome{Status: 201})
	req.End(Outcome{Status: 201, BytesIn: 10})

	server := spanByKind(t, rec.Ended(), "server")
	if server.Parent().IsValid() {
		t.Errorf("server span has parent %v, want a root", server.Parent())
	}
	tid, _, flags := parseTraceparent(t, out.Header.Get("traceparent"))
	if tid != server.SpanContext().TraceID().String() || flags != "01" {
		t.Errorf("injected %s/%s, want trace %s sampled", tid, flags, server.SpanContext().TraceID())
	}
}

func TestCallerNotSampledIsRespected(t *testing.T) {
	tel, rec, _ := recorded(t, Config{}, env{})
	_, sent := hop(t, tel, map[string]string{
		"traceparent": "00-" + callerTrace + "-" + callerSpan + "-00",
	})

	if n := len(rec.Ended()); n != 0 {
		t.Fatalf("%d spans recorded for a not-sampled caller", n)
	}
	tid, pid, flags := parseTraceparent(t, sent.Get("traceparent"))
	if tid != callerTrace || flags != "00" {
		t.Errorf("injected %s/%s, want the caller's trace, not sampled", tid, flags)
	}
	if pid == callerSpan {
		t.Error("incoming traceparent passed through unchanged")
	}
}

func TestSamplerAlwaysOffOverridesSampledCaller(t *testing.T) {
	tel, rec, _ := recorded(t, Config{Sampler: SamplerAlwaysOff}, env{})
	r := incoming("GET", "http://files/x", map[string]string{"traceparent": "00-" + callerTrace + "-" + callerSpan + "-01"})
	_, req := tel.StartRequest(r, Outbound)
	req.End(Outcome{Status: 200})
	if n := len(rec.Ended()); n != 0 {
		t.Fatalf("always_off recorded %d spans", n)
	}
}

func TestB3SingleInAndOut(t *testing.T) {
	tel, rec, _ := recorded(t, Config{}, env{"OTEL_PROPAGATORS": "b3"})
	r := incoming("GET", "http://files/x", map[string]string{"b3": callerTrace + "-" + callerSpan + "-1"})
	_, req := tel.StartRequest(r, Outbound)
	out := upstream(t, tel, r, "http://files/x")
	if out.Header.Get("b3") != "" {
		t.Fatal("b3 is not among PropagationHeaders")
	}
	att := req.StartAttempt(out, AttemptInfo{Endpoint: "10.0.0.7:8080", Attempt: 1})
	att.Inject(out.Header)
	att.End(Outcome{Status: 200})
	req.End(Outcome{Status: 200})

	client := spanByKind(t, rec.Ended(), "client")
	server := spanByKind(t, rec.Ended(), "server")
	if server.SpanContext().TraceID().String() != callerTrace || server.Parent().SpanID().String() != callerSpan {
		t.Errorf("server span did not continue the B3 trace: %v parent %v", server.SpanContext(), server.Parent())
	}
	want := callerTrace + "-" + client.SpanContext().SpanID().String() + "-1"
	if got := out.Header.Get("b3"); got != want {
		t.Errorf("b3 out %q, want %q", got, want)
	}
	if out.Header.Get("traceparent") != "" {
		t.Error("traceparent injected although only b3 is configured")
	}
}

func TestB3MultiInAndOut(t *testing.T) {
	tel, rec, _ := recorded(t, Config{Propagators: []string{"tracecontext", "b3multi"}}, env{})
	_, up := hop(t, tel, map[string]string{
		"X-B3-TraceId": callerTrace, "X-B3-SpanId": callerSpan, "X-B3-Sampled": "1",
	})

	client := spanByKind(t, rec.Ended(), "client")
	if got := up.Get("X-B3-TraceId"); got != callerTrace {
		t.Errorf("X-B3-TraceId %q, want %q", got, callerTrace)
	}
	if got := up.Get("X-B3-SpanId"); got != client.SpanContext().SpanID().String() {
		t.Errorf("X-B3-SpanId %q, want client span %s", got, client.SpanContext().SpanID())
	}
	if got := up.Get("X-B3-Sampled"); got != "1" {
		t.Errorf("X-B3-Sampled %q", got)
	}
	_, pid, _ := parseTraceparent(t, up.Get("traceparent"))
	if pid != client.SpanContext().SpanID().String() {
		t.Error("traceparent parent is not the client span")
	}
}

func TestProxyFailuresSetErrorAndReason(t *testing.T) {
	cases := []struct {
		name       string
		attempt    *Outcome
		request    Outcome
		wantReason string
	}{
		{"breaker open", nil, Outcome{Status: 503, Reason: ReasonBreakerOpen}, ReasonBreakerOpen},
		{"dial failed", &Outcome{Reason: ReasonDialFailed, Err: errors.New("connection refused")},
			Outcome{Status: 502, Reason: ReasonDialFailed}, ReasonDialFailed},
		{"timeout", &Outcome{Reason: ReasonTimeout}, Outcome{Status: 504, Reason: ReasonTimeout}, ReasonTimeout},
		{"broken mid-body", &Outcome{Status: 200, BytesIn: 100, Reason: ReasonBodyBroken},
			Outcome{Status: 200, BytesOut: 100, Reason: ReasonBodyBroken}, ReasonBodyBroken},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tel, rec, _ := recorded(t, Config{}, env{})
			r := incoming("GET", "http://files/x", nil)
			_, req := tel.StartRequest(r, Outbound)
			req.SetRoute("files", "files")
			if tc.attempt != nil {
				att := req.StartAttempt(upstream(t, tel, r, "http://files/x"), AttemptInfo{Endpoint: "10.0.0.7:8080", Attempt: 1})
				att.End(*tc.attempt)
			}
			req.End(tc.request)
			for _, s := range rec.Ended() {
				if s.Status().Code != codes.Error {
					t.Errorf("%s span status %v, want Error", s.SpanKind(), s.Status())
				}
				a := attrMap(s)
				if a["ferry.reason"] != tc.wantReason || a["error.type"] != tc.wantReason {
					t.Errorf("%s span reason %v error.type %v, want %s", s.SpanKind(), a["ferry.reason"], a["error.type"], tc.wantReason)
				}
			}
		})
	}
}

func TestUpstreamStatusErrorRules(t *testing.T) {
	tel, rec, _ := recorded(t, Config{}, env{})
	r := incoming("GET", "http://files/x", nil)
	_, req := tel.StartRequest(r, Outbound)
	att := req.StartAttempt(upstream(t, tel, r, "http://files/x"), AttemptInfo{Endpoint: "10.0.0.7:8080", Attempt: 1})
	att.End(Outcome{Status: 404})
	req.End(Outcome{Status: 404})
	// Conventions: 4xx is an error for the client span only.
	if s := spanByKind(t, rec.Ended(), "client"); s.Status().Code != codes.Error {
		t.Errorf("client 404 status %v, want Error", s.Status())
	}
	if s := spanByKind(t, rec.Ended(), "server"); s.Status().Code != codes.Unset {
		t.Errorf("server 404 status %v, want Unset", s.Status())
	}
}

func TestRetriesAndEventsAndAttempts(t *testing.T) {
	tel, rec, _ := recorded(t, Config{}, env{})
	r := incoming("GET", "http://files/x", nil)
	_, req := tel.StartRequest(r, Outbound)
	req.SetRoute("files", "files")
	a1 := req.StartAttempt(upstream(t, tel, r, "http://files/x"), AttemptInfo{Endpoint: "10.0.0.7:8080", Attempt: 1, BreakerState: BreakerClosed})
	a1.End(Outcome{Reason: ReasonDialFailed})
	req.BreakerTransition("10.0.0.7:8080", BreakerClosed, BreakerOpen)
	req.Ejection("10.0.0.7:8080", "consecutive_5xx")
	req.Retry(2, ReasonDialFailed)
	a2 := req.StartAttempt(upstream(t, tel, r, "http://files/x"), AttemptInfo{Endpoint: "10.0.0.8:8080", Attempt: 2, BreakerState: BreakerHalfOpen})
	a2.End(Outcome{Status: 200})
	req.End(Outcome{Status: 200})
	a2.End(Outcome{Status: 500}) // a second End changes nothing
	req.End(Outcome{Status: 500})

	spans := rec.Ended()
	if len(spans) != 3 {
		t.Fatalf("%d spans, want 3", len(spans))
	}
	server := spanByKind(t, spans, "server")
	var names []string
	for _, e := range server.Events() {
		names = append(names, e.Name)
	}
	if got := strings.Join(names, ","); got != "ferry.breaker_transition,ferry.ejection,ferry.retry" {
		t.Errorf("events %s", got)
	}
	ev := server.Events()[0]
	evAttrs := map[string]string{}
	for _, kv := range ev.Attributes {
		evAttrs[string(kv.Key)] = kv.Value.Emit()
	}
	if evAttrs["ferry.breaker_from"] != "closed" || evAttrs["ferry.breaker_to"] != "open" || evAttrs["ferry.endpoint"] != "10.0.0.7:8080" {
		t.Errorf("breaker event attributes %v", evAttrs)
	}
	sa := attrMap(server)
	if sa["ferry.attempts"] != int64(2) || sa["ferry.endpoint"] != "10.0.0.8:8080" || sa["http.response.status_code"] != int64(200) {
		t.Errorf("server attrs after retry: %v", sa)
	}
	var second map[string]any
	for _, s := range spans {
		if a := attrMap(s); a["ferry.attempt"] == int64(2) {
			second = a
		}
	}
	if second == nil || second["http.request.resend_count"] != int64(1) || second["ferry.breaker_state"] != "half_open" {
		t.Errorf("second attempt attrs %v", second)
	}
}

func TestUnknownMethodIsOther(t *testing.T) {
	tel, rec, _ := recorded(t, Config{}, env{})
	r := incoming("PURGE", "http://files/x", nil)
	_, req := tel.StartRequest(r, Outbound)
	req.End(Outcome{Status: 200})
	a := attrMap(spanByKind(t, rec.Ended(), "server"))
	if a["http.request.method"] != "_OTHER" || a["http.request.method_original"] != "PURGE" {
		t.Errorf("method attrs %v", a)
	}
}

// A method the conventions do not name is "HTTP" in span names, as they
// ask (it is http.request.method_original, above): any token is a method,
// and names must not take one per caller's whim.
func TestUnknownMethodSpanNames(t *testing.T) {
	tel, rec, _ := recorded(t, Config{}, env{})
	for _, routed := range []bool{true, false} {
		rec.Reset()
		r := incoming("PURGE", "http://files/x", nil)
		_, req := tel.StartRequest(r, Outbound)
		want := "HTTP"
		if routed {
			req.SetRoute("files", "files")
			want = "HTTP files"
		}
		out := upstream(t, tel, r, "http://10.0.0.7:8080/x")
		att := req.StartAttempt(out, AttemptInfo{Endpoint: "10.0.0.7:8080", Attempt: 1})
		att.End(Outcome{Status: 200})
		req.End(Outcome{Status: 200})
		if n := spanByKind(t, rec.Ended(), "server").Name(); n != want {
			t.Errorf("routed %v: server span %q, want %q", routed, n, want)
		}
		if n := spanByKind(t, rec.Ended(), "client").Name(); n != "HTTP" {
			t.Errorf("routed %v: client span %q, want HTTP", routed, n)
		}
	}
}

func TestTracingOffIsTransparent(t *testing.T) {
	logs := &syncbuf.Buffer{}
	tel, err := New(t.Context(), Config{}, WithEnv(env{}.get), WithAccessLogWriter(logs))
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(t.Context())
	if tel.TracingEnabled() {
		t.Fatal("tracing on without an endpoint")
	}
	in := "00-" + callerTrace + "-" + callerSpan + "-01"
	r := incoming("GET", "http://files/x", map[string]string{"traceparent": in})
	_, req := tel.StartRequest(r, Outbound)
	out := upstream(t, tel, r, "http://files/x")
	att := req.StartAttempt(out, AttemptInfo{Endpoint: "10.0.0.7:8080", Attempt: 1})
	if att.Span().IsRecording() || req.Span().IsRecording() {
		t.Error("spans record with tracing off")
	}
	att.Inject(out.Header)
	att.End(Outcome{Status: 200})
	req.End(Outcome{Status: 200})
	if got := out.Header.Get("traceparent"); got != in {
		t.Errorf("tracing off: upstream traceparent %q, want the caller's %q", got, in)
	}
	if !strings.Contains(logs.String(), `"trace_id":"`+callerTrace+`"`) {
		t.Errorf("access log lacks the caller's trace id: %s", logs.String())
	}
}

func TestPropagationHeaders(t *testing.T) {
	tel, _, _ := recorded(t, Config{Propagators: []string{"tracecontext", "baggage", "b3", "b3multi"}}, env{})
	got := map[string]bool{}
	for _, h := range tel.PropagationHeaders() {
		got[h] = true
	}
	for _, h := range []string{"Traceparent", "Tracestate", "Baggage", "B3", "X-B3-Traceid", "X-B3-Spanid", "X-B3-Sampled"} {
		if !got[http.CanonicalHeaderKey(h)] {
			t.Errorf("PropagationHeaders lacks %s: %v", h, tel.PropagationHeaders())
		}
	}
}
