package sidecar

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A caller's trace ferry does not record (not sampled, with the random
// flag and a tracestate) still gets a hop per attempt: each upstream
// request of a retried exchange carries a traceparent in the caller's
// trace naming a span of its own (neither the caller's nor another
// attempt's), with the caller's flags (random, not sampled), and the
// caller's tracestate; no span is recorded. Over the lane and h2c, and
// for a caller that sets the sampled flag too, whose attempts are
// recorded under the server span.
func TestTracingAttemptsKeepTheCallersFlagsAndState(t *testing.T) {
	hops, sc, rec := retriedHops(t)
	tid, sid := randomIDs()
	for _, cl := range []struct {
		name string
		c    *http.Client
	}{{"h1", h1For(t)}, {"h2c", h2cFor(t)}} {
		for _, flags := range []string{"02", "03"} {
			t.Run(cl.name+"-"+flags, func(t *testing.T) {
				rec.Reset()
				path := "/flags/" + cl.name + "/" + flags
				req, _ := http.NewRequest("GET", "http://"+sc.Addr("outbound")+path, nil)
				req.Header.Set("Traceparent", "00-"+tid+"-"+sid+"-"+flags)
				req.Header.Set("Tracestate", "x=y")
				res, err := cl.c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != 200 {
					t.Fatalf("status %d", res.StatusCode)
				}
				ups := hops.got(path)
				if len(ups) != 3 {
					t.Fatalf("upstream got %d requests, want 3", len(ups))
				}
				seen := map[string]bool{sid: true}
				for i, h := range ups {
					tp := h.Values("Traceparent")
					parts := strings.Split(strings.Join(tp, ""), "-")
					if len(tp) != 1 || len(parts) != 4 || parts[0] != "00" || parts[1] != tid || parts[3] != flags || seen[parts[2]] {
						t.Errorf("attempt %d sent traceparent %q, want one in trace %s with flags %s naming a span of its own", i+1, tp, tid, flags)
					} else {
						seen[parts[2]] = true
					}
					if ts := h.Values("Tracestate"); len(ts) != 1 || ts[0] != "x=y" {
						t.Errorf("attempt %d sent tracestate %q, want x=y", i+1, ts)
					}
				}
				if flags == "02" {
					if n := len(rec.Ended()); n != 0 {
						t.Errorf("%d spans recorded for a trace not sampled", n)
					}
					return
				}
				// The server span ends after its attempts' client spans.
				waitFor(t, "the server span of "+path, 5*time.Second, func() bool { return len(serverSpansOf(rec, path)) > 0 })
				server := serverSpansOf(rec, path)[0]
				if p := server.Parent(); p.TraceID().String() != tid || p.SpanID().String() != sid || !p.IsRemote() {
					t.Errorf("server span's parent %v, want the caller's %s-%s", p, tid, sid)
				}
				clients := childrenOf(rec, server.SpanContext())
				for _, c := range clients {
					if !c.Parent().Equal(server.SpanContext()) || !seen[c.SpanContext().SpanID().String()] {
						t.Errorf("client span %v under %v: want one an upstream request names, under %v", c.SpanContext(), c.Parent(), server.SpanContext())
					}
				}
				if len(clients) != 3 {
					t.Errorf("%d client spans under the server span, want 3", len(clients))
				}
			})
		}
	}
}
