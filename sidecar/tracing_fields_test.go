package sidecar

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
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
