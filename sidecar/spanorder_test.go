package sidecar

import (
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// A small bodiless GET answered through the lane and ferry's own client
// (the path whose exchange end takes the reading made as the response went
// out): the attempt's client span lies within the request's server span,
// start and end.
func TestLaneClientSpanWithinServerSpan(t *testing.T) {
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "5")
		w.Write([]byte("hello"))
	}))
	sc, rec, _ := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { host: files, service: files } ] }
services: { files: { endpoints: [%s] } }
`, up))
	client := h1Client()
	const n = 20
	for i := 0; i < n; i++ {
		req, _ := http.NewRequest("GET", "http://"+sc.Addr("outbound")+"/f", nil)
		req.Host = "files"
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(spansOfKind(rec.Ended(), trace.SpanKindServer)) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d server spans ended, want %d", len(spansOfKind(rec.Ended(), trace.SpanKindServer)), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	ended := rec.Ended()
	byID := map[trace.SpanID]int{}
	for i, s := range ended {
		if s.SpanKind() == trace.SpanKindServer {
			byID[s.SpanContext().SpanID()] = i
		}
	}
	checked := 0
	for _, c := range spansOfKind(ended, trace.SpanKindClient) {
		i, ok := byID[c.Parent().SpanID()]
		if !ok {
			continue
		}
		s := ended[i]
		checked++
		if c.StartTime().Before(s.StartTime()) || c.EndTime().After(s.EndTime()) {
			t.Errorf("client span %v..%v is not within its server span %v..%v (ends %v after it)",
				c.StartTime(), c.EndTime(), s.StartTime(), s.EndTime(), c.EndTime().Sub(s.EndTime()))
		}
	}
	if checked != n {
		t.Fatalf("checked %d client spans, want %d", checked, n)
	}
}
