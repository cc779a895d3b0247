package sidecar

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/ferrymesh/ferry/telemetry"
	"github.com/ferrymesh/ferry/telemetry/jaegertest"

	"github.com/ferrymesh/ferry/internal/localnet/localnettest"
	"github.com/ferrymesh/ferry/internal/syncbuf"
)

// tracedFerry starts a ferry whose spans land in an in-memory recorder and
// whose access log lines land in a buffer.
func tracedFerry(t *testing.T, text string) (*Sidecar, *tracetest.SpanRecorder, *syncbuf.Buffer) {
	t.Helper()
	return tracedFerryWith(t, text, telemetry.Config{ServiceName: "ferry-test"})
}

// tracedFerryWith is tracedFerry with a telemetry config of its own.
func tracedFerryWith(t *testing.T, text string, tc telemetry.Config) (*Sidecar, *tracetest.SpanRecorder, *syncbuf.Buffer) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	logs := &syncbuf.Buffer{}
	tel, err := telemetry.New(context.Background(), tc,
		telemetry.WithEnv(func(string) string { return "" }),
		telemetry.WithSpanProcessor(rec), telemetry.WithAccessLogWriter(logs))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tel.Shutdown(context.Background()) })
	cfg, err := ParseConfig([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	sc, err := New(cfg, Options{Telemetry: tel})
	if err != nil {
		t.Fatal(err)
	}
	if err := sc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sc.Shutdown(context.Background()) })
	return sc, rec, logs
}

func randomIDs() (traceID, spanID string) {
	var tid [16]byte
	var sid [8]byte
	rand.Read(tid[:])
	rand.Read(sid[:])
	return hex.EncodeToString(tid[:]), hex.EncodeToString(sid[:])
}

func spansOfKind(spans []sdktrace.ReadOnlySpan, kind trace.SpanKind) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range spans {
		if s.SpanKind() == kind {
			out = append(out, s)
		}
	}
	return out
}

func attr(s sdktrace.ReadOnlySpan, key attribute.Key) attribute.Value {
	for _, kv := range s.Attributes() {
		if kv.Key == key {
			return kv.Value
		}
	}
	return attribute.Value{}
}

// The upstream gets a new traceparent whose parent is ferry's client span,
// itself a child of the server span that continues the caller's trace; the
// spans end with the body.
func TestTracingParentsAndPropagation(t *testing.T) {
	got := make(chan string, 1)
	release := make(chan struct{})
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("Traceparent")
		w.Write([]byte("first"))
		w.(http.Flusher).Flush()
		<-release
		w.Write([]byte("-last"))
	}))
	sc, rec, logs := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { host: files, service: files } ] }
services: { files: { endpoints: [%s] } }
`, up))
	traceID, callerSpan := randomIDs()
	req, _ := http.NewRequest("GET", "http://"+sc.Addr("outbound")+"/report.pdf", nil)
	req.Host = "files"
	incoming := "00-" + traceID + "-" + callerSpan + "-01"
	req.Header.Set("traceparent", incoming)
	res, err := h1Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadFull(res.Body, make([]byte, 5))
	if n := len(rec.Ended()); n != 0 {
		t.Fatalf("%d spans ended before the body did", n)
	}
	close(release)
	io.ReadAll(res.Body)
	res.Body.Close()
	waitFor(t, "both spans to end", 5*time.Second, func() bool { return len(rec.Ended()) == 2 })

	spans := rec.Ended()
	server, client := spansOfKind(spans, trace.SpanKindServer)[0], spansOfKind(spans, trace.SpanKindClient)[0]
	if server.Parent().SpanID().String() != callerSpan || server.SpanContext().TraceID().String() != traceID {
		t.Errorf("server span parent %s trace %s, want the caller's %s %s", server.Parent().SpanID(), server.SpanContext().TraceID(), callerSpan, traceID)
	}
	if client.Parent().SpanID() != server.SpanContext().SpanID() {
		t.Errorf("client span's parent is %s, want the server span %s", client.Parent().SpanID(), server.SpanContext().SpanID())
	}
	upstreamSaw := <-got
	want := "00-" + traceID + "-" + client.SpanContext().SpanID().String() + "-01"
	if upstreamSaw != want || upstreamSaw == incoming {
		t.Errorf("upstream got traceparent %q, want %q (never the caller's %q)", upstreamSaw, want, incoming)
	}
	if server.Name() != "GET files" || attr(server, telemetry.AttrService).AsString() != "files" {
		t.Errorf("server span %q service %q", server.Name(), attr(server, telemetry.AttrService).AsString())
	}
	if attr(client, telemetry.AttrEndpoint).AsString() != up || attr(server, telemetry.AttrBytesOut).AsInt64() != 10 {
		t.Errorf("client endpoint %q, server bytes_out %d", attr(client, telemetry.AttrEndpoint).AsString(), attr(server, telemetry.AttrBytesOut).AsInt64())
	}
	line := logs.String()
	for _, want := range []string{traceID, `"service":"files"`, `"status":200`, `"route":"files"`} {
		if !strings.Contains(line, want) {
			t.Errorf("access log lacks %s: %s", want, line)
		}
	}
}

// A caller's not-sampled decision is kept: no span is recorded, and the
// upstream still gets a traceparent saying not sampled.
func TestTracingRespectsCallerNotSampled(t *testing.T) {
	got := make(chan string, 1)
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got <- r.Header.Get("Traceparent") }))
	sc, rec, _ := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: s } ] }
services: { s: { endpoints: [%s] } }
`, up))
	traceID, callerSpan := randomIDs()
	req, _ := http.NewRequest("GET", "http://"+sc.Addr("outbound")+"/", nil)
	req.Header.Set("traceparent", "00-"+traceID+"-"+callerSpan+"-00")
	res, err := h1Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	tp := <-got
	if !strings.HasPrefix(tp, "00-"+traceID+"-") || !strings.HasSuffix(tp, "-00") {
		t.Errorf("upstream traceparent %q: want the caller's trace, not sampled", tp)
	}
	if n := len(rec.Ended()); n != 0 {
		t.Errorf("%d spans recorded for a not-sampled trace", n)
	}
}

// Proxy-made failures set an error status and a reason; a retry is a span
// event and each attempt its own client span.
func TestTracingFailuresAndRetries(t *testing.T) {
	dead := localnettest.RefusedAddr(t)
	good := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	sc, rec, _ := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound:
  listen: 127.0.0.1:0
  routes: [ { host: mixed, service: mixed }, { host: dead, service: dead } ]
services:
  mixed: { endpoints: [%s, %s], balancer: round_robin, retry: { base_interval: 1ms, max_interval: 1ms } }
  dead: { endpoints: [%s] }
`, dead, good, dead))
	base := "http://" + sc.Addr("outbound") + "/"
	if res, body := get(t, h1Client(), base, "dead"); res.StatusCode != 502 {
		t.Fatalf("dead: %d %s", res.StatusCode, body)
	}
	waitFor(t, "spans of the failed request", 5*time.Second, func() bool { return len(spansOfKind(rec.Ended(), trace.SpanKindServer)) == 1 })
	server := spansOfKind(rec.Ended(), trace.SpanKindServer)[0]
	if server.Status().Code != codes.Error || attr(server, telemetry.AttrReason).AsString() != telemetry.ReasonDialFailed {
		t.Errorf("502 server span: status %v reason %q", server.Status(), attr(server, telemetry.AttrReason).AsString())
	}

	// Round robin starts at the dead endpoint often enough: find a request
	// that was retried.
	for i := 0; i < 4; i++ {
		if res, body := get(t, h1Client(), base, "mixed"); res.StatusCode != 200 {
			t.Fatalf("mixed: %d %s", res.StatusCode, body)
		}
	}
	waitFor(t, "spans of the mixed requests", 5*time.Second, func() bool { return len(spansOfKind(rec.Ended(), trace.SpanKindServer)) == 5 })
	retried := 0
	for _, s := range spansOfKind(rec.Ended(), trace.SpanKindServer)[1:] {
		for _, e := range s.Events() {
			if e.Name == telemetry.EventRetry {
				retried++
			}
		}
	}
	clients := spansOfKind(rec.Ended(), trace.SpanKindClient)
	if retried == 0 || len(clients) != 1+4+retried {
		t.Errorf("%d retry events, %d client spans (want 1 + 4 + retries)", retried, len(clients))
	}
}

// /metrics serves the request counters in Prometheus text.
func TestMetricsEndpoint(t *testing.T) {
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	sc, _, _ := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: s } ] }
services: { s: { endpoints: [%s] } }
`, up))
	get(t, h1Client(), "http://"+sc.Addr("outbound")+"/x", "")
	// The request is counted as it ends, a moment after its last byte
	// reached the caller.
	waitFor(t, "the request in /metrics", 5*time.Second, func() bool {
		res, body := get(t, h1Client(), "http://"+sc.Addr("admin")+"/metrics", "")
		return res.StatusCode == 200 && strings.Contains(body, "ferry_requests_total{") && strings.Contains(body, `service="s"`)
	})
}

// client -> ferry (outbound, OTLP gRPC) -> ferry (inbound, OTLP HTTP) ->
// app, found in a real Jaeger: one trace, parent/child across both ferries,
// and every span still open when the body's last part was released.
func TestTracingEndToEndJaeger(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Jaeger")
	}
	j := jaegertest.Start(t)
	release := make(chan struct{})
	appSaw := make(chan string, 1)
	app := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		appSaw <- r.Header.Get("Traceparent")
		w.Write([]byte("first"))
		w.(http.Flusher).Flush()
		<-release
		w.Write([]byte("-last"))
	}))
	inbound := startFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
inbound: { listen: 127.0.0.1:0, app: %s }
telemetry: { service_name: ferry-in, endpoint: "http://%s", protocol: http/protobuf, batch_timeout: 50ms, access_log: "off" }
`, app, j.OTLPHTTP))
	outbound := startFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { host: files, service: files } ] }
services: { files: { endpoints: [%s] } }
telemetry: { service_name: ferry-out, endpoint: "http://%s", protocol: grpc, batch_timeout: 50ms, access_log: "off" }
`, inbound.Addr("inbound"), j.OTLPGRPC))

	traceID, callerSpan := randomIDs()
	req, _ := http.NewRequest("GET", "http://"+outbound.Addr("outbound")+"/report.pdf", nil)
	req.Host = "files"
	req.Header.Set("traceparent", "00-"+traceID+"-"+callerSpan+"-01")
	res, err := h1Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadFull(res.Body, make([]byte, 5))
	released := time.Now()
	close(release)
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !bytes.Equal(body, []byte("-last")) {
		t.Fatalf("body rest %q", body)
	}
	// Shutting the ferries down flushes their spans.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	outbound.Shutdown(ctx)
	inbound.Shutdown(ctx)

	var tr jaegertest.Trace
	j.WaitTraces(t, "ferry-out", 30*time.Second, func(ts []jaegertest.Trace) bool {
		for _, x := range ts {
			if x.TraceID == traceID && len(x.Spans) == 4 {
				tr = x
				return true
			}
		}
		return false
	})
	find := func(service, kind string) jaegertest.Span {
		for _, s := range tr.Spans {
			if k, _ := s.Tag("span.kind"); tr.Service(s) == service && k == kind {
				return s
			}
		}
		t.Fatalf("no %s %s span", service, kind)
		return jaegertest.Span{}
	}
	outServer, outClient := find("ferry-out", "server"), find("ferry-out", "client")
	inServer, inClient := find("ferry-in", "server"), find("ferry-in", "client")
	for _, c := range []struct {
		name         string
		span         jaegertest.Span
		parent, want string
	}{
		{"outbound server", outServer, outServer.ParentSpanID(), callerSpan},
		{"outbound client", outClient, outClient.ParentSpanID(), outServer.SpanID},
		{"inbound server", inServer, inServer.ParentSpanID(), outClient.SpanID},
		{"inbound client", inClient, inClient.ParentSpanID(), inServer.SpanID},
	} {
		if c.parent != c.want {
			t.Errorf("%s parent %s, want %s", c.name, c.parent, c.want)
		}
		if end := c.span.StartTime + c.span.Duration; end < released.UnixMicro() {
			t.Errorf("%s ended before the last body part was released", c.name)
		}
	}
	if got, want := <-appSaw, "00-"+traceID+"-"+inClient.SpanID+"-01"; got != want {
		t.Errorf("app got traceparent %q, want %q", got, want)
	}
}

// A breaker that opens while serving a request shows as a span event on
// that request's server span, and in the breaker metrics.
func TestTracingBreakerEvent(t *testing.T) {
	bad := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", 503) }))
	sc, rec, _ := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: s } ] }
services: { s: { endpoints: [%s], breaker: { consecutive_failures: 2 }, outlier: { consecutive_5xx: 0 }, retry: { max_retries: 0 } } }
`, bad))
	for range 2 {
		get(t, h1Client(), "http://"+sc.Addr("outbound")+"/", "")
	}
	waitFor(t, "two server spans", 5*time.Second, func() bool { return len(spansOfKind(rec.Ended(), trace.SpanKindServer)) == 2 })
	// Each request came on its own connection, so the first one's outcome
	// (and span end) may come after the second's: the request that opened
	// the breaker is whichever was counted second, and only its span shows
	// the transition, however the two outcomes overlap.
	var with [][]string
	for _, sp := range spansOfKind(rec.Ended(), trace.SpanKindServer) {
		if e := eventsNamed(sp, telemetry.EventBreakerTransition); len(e) > 0 {
			with = append(with, e)
		}
	}
	if len(with) != 1 || len(with[0]) != 1 || !strings.Contains(with[0][0], `"ferry.breaker_from":"closed"`) || !strings.Contains(with[0][0], `"ferry.breaker_to":"open"`) {
		t.Fatalf("breaker transition events by span: %v, want one span with one, closed to open", with)
	}
	_, body := get(t, h1Client(), "http://"+sc.Addr("admin")+"/metrics", "")
	if !strings.Contains(body, `ferry_breaker_transitions_total{service="s",to="open"} 1`+"\n") {
		t.Fatalf("breaker metrics missing:\n%s", grepLines(body, "breaker"))
	}
}

// B3 in and out: with propagators b3multi, ferry continues a B3 caller's
// trace and sends the upstream B3 headers naming its client span.
func TestTracingB3InAndOut(t *testing.T) {
	got := make(chan http.Header, 1)
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got <- r.Header.Clone() }))
	rec := tracetest.NewSpanRecorder()
	tel, err := telemetry.New(context.Background(), telemetry.Config{Propagators: []string{"b3multi"}, AccessLog: "off"},
		telemetry.WithEnv(func(string) string { return "" }), telemetry.WithSpanProcessor(rec))
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	cfg := mustParse(t, fmt.Sprintf("admin: { listen: 127.0.0.1:0 }\noutbound: { listen: 127.0.0.1:0, routes: [ { service: s } ] }\nservices: { s: { endpoints: [%s] } }\n", up))
	sc, err := New(cfg, Options{Telemetry: tel})
	if err != nil {
		t.Fatal(err)
	}
	if err := sc.Start(); err != nil {
		t.Fatal(err)
	}
	defer sc.Shutdown(context.Background())
	traceID, callerSpan := randomIDs()
	req, _ := http.NewRequest("GET", "http://"+sc.Addr("outbound")+"/", nil)
	req.Header.Set("X-B3-TraceId", traceID)
	req.Header.Set("X-B3-SpanId", callerSpan)
	req.Header.Set("X-B3-Sampled", "1")
	res, err := h1Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	h := <-got
	waitFor(t, "spans", 5*time.Second, func() bool { return len(rec.Ended()) == 2 })
	client := spansOfKind(rec.Ended(), trace.SpanKindClient)[0]
	if h.Get("X-B3-TraceId") != traceID || h.Get("X-B3-SpanId") != client.SpanContext().SpanID().String() || h.Get("X-B3-Sampled") != "1" {
		t.Fatalf("upstream B3 %s/%s/%s, want %s/%s/1", h.Get("X-B3-TraceId"), h.Get("X-B3-SpanId"), h.Get("X-B3-Sampled"), traceID, client.SpanContext().SpanID())
	}
	if server := spansOfKind(rec.Ended(), trace.SpanKindServer)[0]; server.Parent().SpanID().String() != callerSpan {
		t.Fatalf("server span parent %s, want the B3 caller %s", server.Parent().SpanID(), callerSpan)
	}
}

func grepLines(body, sub string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// With tracing on, every B3 header of the caller that the configured B3
// propagator reads must be replaced, never passed on as it came: the
// upstream must not see the caller's X-B3-ParentSpanId next to ferry's
// X-B3-SpanId (b3multi), nor the caller's X-B3-* headers next to ferry's
// single b3 header (b3).
func TestB3CallerHeadersNotPassedOn(t *testing.T) {
	for _, props := range [][]string{{"b3multi"}, {"b3"}} {
		t.Run(props[0], func(t *testing.T) {
			got := make(chan http.Header, 1)
			up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got <- r.Header.Clone() }))
			sc, rec, _ := tracedFerryWith(t, fmt.Sprintf("admin: { listen: 127.0.0.1:0 }\noutbound: { listen: 127.0.0.1:0, routes: [ { service: s } ] }\nservices: { s: { endpoints: [%s] } }\n", up), telemetry.Config{Propagators: props})
			traceID, callerSpan := randomIDs()
			_, callerParent := randomIDs()
			req, _ := http.NewRequest("GET", "http://"+sc.Addr("outbound")+"/", nil)
			req.Header.Set("X-B3-TraceId", traceID)
			req.Header.Set("X-B3-SpanId", callerSpan)
			req.Header.Set("X-B3-ParentSpanId", callerParent)
			req.Header.Set("X-B3-Sampled", "1")
			res, err := h1For(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			h := recv(t, got, 5*time.Second, "the upstream request")
			waitFor(t, "spans", 5*time.Second, func() bool { return len(rec.Ended()) == 2 })
			server := spansOfKind(rec.Ended(), trace.SpanKindServer)[0]
			if server.Parent().SpanID().String() != callerSpan {
				t.Fatalf("server span parent %s, want the caller's %s", server.Parent().SpanID(), callerSpan)
			}
			for _, k := range []string{"X-B3-Spanid", "X-B3-Parentspanid"} {
				for _, v := range h[k] {
					if v == callerSpan || v == callerParent {
						t.Errorf("upstream got the caller's %s: %q as it came (upstream B3 headers: b3=%q traceid=%q spanid=%q parentspanid=%q)",
							k, v, h.Get("B3"), h.Get("X-B3-TraceId"), h.Get("X-B3-SpanId"), h.Get("X-B3-ParentSpanId"))
					}
				}
			}
		})
	}
}
