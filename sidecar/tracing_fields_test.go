package sidecar

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/ferrymesh/ferry/telemetry"
)

// A trace field sent on several lines reads as one value, all lines
// joined with commas (RFC 9110 section 5.3), over the lane (HTTP/1.1) and
// net/http (h2c) alike: a traceparent sent twice is no single valid
// traceparent, so ferry starts a new trace rather than pick one of them as
// the server span's parent; tracestate is a list, and every line's members
// reach the upstream.
func TestTracingRepeatedTraceFields(t *testing.T) {
	got := make(chan http.Header, 1)
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got <- r.Header.Clone() }))
	sc, rec, _ := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: s } ] }
services: { s: { endpoints: [%s] } }
`, up))
	for _, c := range []struct {
		name   string
		client *http.Client
	}{{"h1", h1For(t)}, {"h2c", h2cFor(t)}} {
		t.Run(c.name, func(t *testing.T) {
			do := func(h http.Header) (trace.SpanContext, trace.SpanContext, http.Header) {
				t.Helper()
				rec.Reset()
				req, _ := http.NewRequest("GET", "http://"+sc.Addr("outbound")+"/", nil)
				req.Header = h
				res, err := c.client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				res.Body.Close()
				hdr := recv(t, got, 5*time.Second, "the upstream request")
				waitFor(t, "the spans", 5*time.Second, func() bool { return len(rec.Ended()) == 2 })
				server := spansOfKind(rec.Ended(), trace.SpanKindServer)[0]
				return server.Parent(), server.SpanContext(), hdr
			}

			traceID, first := randomIDs()
			_, second := randomIDs()
			parent, server, hdr := do(http.Header{"Traceparent": {
				"00-" + traceID + "-" + first + "-01",
				"00-" + traceID + "-" + second + "-01",
			}})
			if parent.IsValid() || server.TraceID().String() == traceID {
				t.Errorf("two traceparents: server span's parent %s in trace %s, want a new trace", parent.SpanID(), server.TraceID())
			}
			if tp := hdr.Values("Traceparent"); len(tp) != 1 || !strings.HasPrefix(tp[0], "00-"+server.TraceID().String()+"-") {
				t.Errorf("two traceparents: upstream got %q, want one of the new trace %s", tp, server.TraceID())
			}

			_, server, hdr = do(http.Header{
				"Traceparent": {"00-" + traceID + "-" + first + "-01"},
				"Tracestate":  {"a=1,b=2", "c=3"},
			})
			if ts := server.TraceState().String(); ts != "a=1,b=2,c=3" {
				t.Errorf("tracestate on two lines: server span's %q, want a=1,b=2,c=3", ts)
			}
			if ts := hdr.Values("Tracestate"); len(ts) != 1 || ts[0] != "a=1,b=2,c=3" {
				t.Errorf("tracestate on two lines: upstream got %q, want [a=1,b=2,c=3]", ts)
			}
		})
	}
}

// With tracing off ferry is no hop of the trace: every attempt's upstream
// request carries the caller's propagation headers as they came, whatever
// the propagators would make of them (a B3 sampling decision alone, a
// future traceparent version, a version 00 one too long to be valid, a
// tracestate member they cannot parse), and
// none when the caller sent none (B3 would say "do not sample").
func TestTracingOffPassesTraceHeadersAsTheyCame(t *testing.T) {
	var mu sync.Mutex
	var seen []http.Header
	record := func(code int) string {
		return origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			seen = append(seen, r.Header.Clone())
			mu.Unlock()
			w.WriteHeader(code)
		}))
	}
	// Both answer 503: each request is tried on both.
	a, b := record(http.StatusServiceUnavailable), record(http.StatusServiceUnavailable)
	fields := []string{"Traceparent", "Tracestate", "Baggage", "B3", "X-B3-Traceid", "X-B3-Spanid", "X-B3-Parentspanid", "X-B3-Sampled", "X-B3-Flags"}
	for _, props := range []string{"tracecontext,baggage", "b3", "b3multi"} {
		tel, err := telemetry.New(context.Background(), telemetry.Config{AccessLog: "off", Propagators: strings.Split(props, ",")},
			telemetry.WithEnv(func(string) string { return "" }))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tel.Shutdown(context.Background()) })
		sc, err := New(mustParse(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: s } ] }
services:
  s:
    endpoints: [%s, %s]
    breaker: { consecutive_failures: 1000 }
    outlier: { consecutive_5xx: 1000 }
    retry: { max_retries: 1, base_interval: 1ms, max_interval: 1ms, budget: { min_per_second: 1000 } }
`, a, b)), Options{Telemetry: tel})
		if err != nil {
			t.Fatal(err)
		}
		if err := sc.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sc.Shutdown(context.Background()) })
		for _, in := range []http.Header{
			{},
			{"X-B3-Sampled": {"1"}},
			{"B3": {"1"}},
			{"B3": {"0"}},
			{"X-B3-Sampled": {"0"}},
			{"X-B3-Flags": {"1"}},
			{"Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-"}, "Tracestate": {"congo=t61rcWkgMzE"}},
			{"Traceparent": {"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-will-be-like"}},
			{"Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}, "Tracestate": {"congo=t61rcWkgMzE, rojo=00f067aa0ba902b7"}, "Baggage": {"k=v"}},
		} {
			for _, c := range []*http.Client{h1For(t), h2cFor(t)} {
				mu.Lock()
				seen = nil
				mu.Unlock()
				req, _ := http.NewRequest("GET", "http://"+sc.Addr("outbound")+"/", nil)
				req.Header = in.Clone()
				res, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				res.Body.Close()
				mu.Lock()
				if len(seen) != 2 {
					t.Errorf("%s %v: %d attempts, want 2", props, in, len(seen))
				}
				for i, h := range seen {
					for _, k := range fields {
						if !slices.Equal(h[k], in[k]) {
							t.Errorf("%s, %s caller %v: attempt %d sent %s %q, want %q", props, res.Proto, in, i+1, k, h[k], in[k])
						}
					}
				}
				mu.Unlock()
			}
		}
	}
}

// tracedHops starts a traced ferry with propagators tc routing to an
// upstream, and returns a function that sends one request with header h
// through it with client and returns the upstream's request headers once
// the request's access log line, written after its spans ended, is out.
func tracedHops(t *testing.T, tc telemetry.Config) (hop func(client *http.Client, h http.Header) http.Header, rec *tracetest.SpanRecorder) {
	t.Helper()
	got := make(chan http.Header, 1)
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got <- r.Header.Clone() }))
	sc, rec, logs := tracedFerryWith(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: s } ] }
services: { s: { endpoints: [%s] } }
`, up), tc)
	return func(client *http.Client, h http.Header) http.Header {
		t.Helper()
		rec.Reset()
		lines := strings.Count(logs.String(), "\n")
		req, _ := http.NewRequest("GET", "http://"+sc.Addr("outbound")+"/", nil)
		req.Header = h
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		hdr := recv(t, got, 5*time.Second, "the upstream request")
		waitFor(t, "the access log line", 5*time.Second, func() bool { return strings.Count(logs.String(), "\n") > lines })
		return hdr
	}, rec
}

// With tracing on, a version 00 traceparent longer than 55 characters is
// invalid: ferry starts a new trace and passes on no tracestate, over the
// lane (HTTP/1.1) and net/http (h2c) alike.
func TestTracingLongTraceparentStartsNewTrace(t *testing.T) {
	hop, rec := tracedHops(t, telemetry.Config{ServiceName: "ferry-test"})
	for _, c := range []struct {
		name   string
		client *http.Client
	}{{"h1", h1For(t)}, {"h2c", h2cFor(t)}} {
		t.Run(c.name, func(t *testing.T) {
			traceID, spanID := randomIDs()
			hdr := hop(c.client, http.Header{"Traceparent": {"00-" + traceID + "-" + spanID + "-01-"}, "Tracestate": {"congo=t61rcWkgMzE"}})
			waitFor(t, "the spans", 5*time.Second, func() bool { return len(rec.Ended()) == 2 })
			server := spansOfKind(rec.Ended(), trace.SpanKindServer)[0]
			if server.Parent().IsValid() || server.SpanContext().TraceID().String() == traceID {
				t.Errorf("traceparent of 56 characters: server span's parent %s in trace %s, want a new trace", server.Parent().SpanID(), server.SpanContext().TraceID())
			}
			if tp := hdr.Get("Traceparent"); !strings.HasPrefix(tp, "00-"+server.SpanContext().TraceID().String()+"-") {
				t.Errorf("traceparent of 56 characters: upstream got %q, want the new trace %s", tp, server.SpanContext().TraceID())
			}
			if ts, ok := hdr["Tracestate"]; ok {
				t.Errorf("traceparent of 56 characters: upstream got tracestate %q, want none", ts)
			}
		})
	}
}

// With tracing on, a caller that sends a B3 deny without IDs ("b3: 0",
// "X-B3-Sampled: 0") gets no span recorded for its request, and the
// upstream is told not to sample in every configured format, with the
// IDs of ferry's new trace; over the lane (HTTP/1.1) and net/http (h2c)
// alike.
func TestTracingCallerDenyWithoutIDs(t *testing.T) {
	hop, rec := tracedHops(t, telemetry.Config{ServiceName: "ferry-test", Propagators: []string{"tracecontext", "b3"}})
	for _, c := range []struct {
		name   string
		client *http.Client
	}{{"h1", h1For(t)}, {"h2c", h2cFor(t)}} {
		t.Run(c.name, func(t *testing.T) {
			for _, deny := range []http.Header{{"B3": {"0"}}, {"X-B3-Sampled": {"0"}}} {
				hdr := hop(c.client, deny)
				if n := len(rec.Ended()); n != 0 {
					t.Errorf("caller sent %v: %d spans recorded, want none", deny, n)
				}
				tp := strings.Split(hdr.Get("Traceparent"), "-")
				b3 := strings.Split(hdr.Get("B3"), "-")
				if len(tp) != 4 || tp[3] != "00" || len(b3) != 3 || b3[2] != "0" || b3[0] != tp[1] {
					t.Errorf("caller sent %v: upstream got traceparent %q and b3 %q, want one trace not sampled in both",
						deny, hdr.Get("Traceparent"), hdr.Get("B3"))
				}
			}
		})
	}
}

// With tracing on, a caller's trace header of a format ferry is not
// configured to write, naming the very trace ferry continues (a caller
// that sends its context both as traceparent and as B3, as OpenTelemetry
// SDKs do with propagators tracecontext,b3), does not reach the upstream:
// it names the caller's span, so an upstream reading that format would
// record its span as the caller's child, a sibling of ferry's server span
// rather than the child of ferry's attempt. One naming another trace,
// which ferry's spans are not in, goes on as it came (as does any such
// header when ferry continued no trace: propagators b3 with a W3C-only
// caller), over the lane (HTTP/1.1) and net/http (h2c) alike.
func TestTracingOtherFormatOfTheContinuedTraceNotPassedOn(t *testing.T) {
	tid, sid := randomIDs()
	otherTid, otherSid := randomIDs()
	tp := "00-" + tid + "-" + sid + "-01"
	b3Fields := []string{"B3", "X-B3-Traceid", "X-B3-Spanid", "X-B3-Parentspanid", "X-B3-Sampled", "X-B3-Flags"}
	for _, c := range []struct {
		name  string
		props []string
		in    http.Header
		gone  []string // the caller's fields the upstream must not get
		kept  []string // the caller's fields it gets as they came
	}{
		{"b3 with traceparent of its trace", []string{"b3"},
			http.Header{"B3": {tid + "-" + sid + "-1"}, "Traceparent": {tp}, "Tracestate": {"k=v"}},
			[]string{"Traceparent", "Tracestate"}, nil},
		{"b3multi with traceparent of its trace", []string{"b3multi"},
			http.Header{"X-B3-Traceid": {tid}, "X-B3-Spanid": {sid}, "X-B3-Sampled": {"1"}, "Traceparent": {tp}},
			[]string{"Traceparent"}, nil},
		{"traceparent with b3 of its trace", []string{"tracecontext", "baggage"},
			http.Header{"Traceparent": {tp}, "B3": {tid + "-" + sid + "-1"}},
			[]string{"B3"}, nil},
		{"traceparent with B3 multi of its trace, 64-bit", []string{"tracecontext"},
			http.Header{"Traceparent": {"00-0000000000000000" + tid[16:] + "-" + sid + "-01"},
				"X-B3-Traceid": {tid[16:]}, "X-B3-Spanid": {sid}, "X-B3-Parentspanid": {otherSid}, "X-B3-Sampled": {"1"}},
			b3Fields, nil},
		{"traceparent with b3 of another trace", []string{"tracecontext"},
			http.Header{"Traceparent": {tp}, "B3": {otherTid + "-" + otherSid + "-1"}},
			nil, []string{"B3"}},
		{"b3 with no trace, traceparent", []string{"b3"},
			http.Header{"Traceparent": {tp}, "Tracestate": {"k=v"}},
			nil, []string{"Traceparent", "Tracestate"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			hop, rec := tracedHops(t, telemetry.Config{ServiceName: "ferry-test", Propagators: c.props})
			for _, cl := range []struct {
				name   string
				client *http.Client
			}{{"h1", h1For(t)}, {"h2c", h2cFor(t)}} {
				hdr := hop(cl.client, c.in.Clone())
				waitFor(t, "the spans", 5*time.Second, func() bool { return len(rec.Ended()) == 2 })
				client := spansOfKind(rec.Ended(), trace.SpanKindClient)[0]
				for _, k := range c.gone {
					for _, v := range hdr[k] {
						if slices.Contains(c.in[k], v) {
							t.Errorf("%s: upstream got the caller's %s %q, naming the caller's span of the trace ferry continued (ferry's attempt is %s)",
								cl.name, k, v, client.SpanContext().SpanID())
						}
					}
				}
				for _, k := range c.kept {
					if !slices.Equal(hdr[k], c.in[k]) {
						t.Errorf("%s: upstream got %s %q, want the caller's %q as it came", cl.name, k, hdr[k], c.in[k])
					}
				}
			}
		})
	}
}
