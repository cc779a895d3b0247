package sidecar

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/ferrymesh/ferry/telemetry"
)

// unavailableOrigin answers every request 503 at once.
func unavailableOrigin(t *testing.T) string {
	t.Helper()
	return origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
}

// An attempt answered with a status the policy retries ends when its
// answer came, not after the backoff before the next attempt: its client
// span ends while ferry waits, and it is the 503 it was, not the failure
// of whatever ended the wait. (Before, the span ended only once the wait
// was over, so a trace showed the backoff as the upstream's latency, and
// here, where the caller gives up during an hour's backoff, as the
// caller's cancellation.)
func TestRetriedStatusAttemptEndsBeforeBackoff(t *testing.T) {
	sc, rec, _ := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: s } ] }
services:
  s:
    endpoints: [%s, %s]
    retry: { max_retries: 1, base_interval: 1h, max_interval: 1h }
`, unavailableOrigin(t), unavailableOrigin(t)))
	c, err := net.Dial("tcp", sc.Addr("outbound"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: s\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the 503 attempt's client span to end during the backoff", 5*time.Second, func() bool {
		return len(spansOfKind(rec.Ended(), trace.SpanKindClient)) == 1
	})
	c.Close()
	waitFor(t, "the server span", 5*time.Second, func() bool { return len(spansOfKind(rec.Ended(), trace.SpanKindServer)) == 1 })
	client := spansOfKind(rec.Ended(), trace.SpanKindClient)[0]
	if code, reason := attr(client, semconv.HTTPResponseStatusCodeKey).AsInt64(), attr(client, telemetry.AttrReason).AsString(); code != 503 || reason != "" {
		t.Errorf("the attempt's client span: status %d, reason %q; want 503 and no reason", code, reason)
	}
}

// A retry made after a retryable status: the first attempt's client span
// ends before the retry is reported and the next attempt begins, so the
// backoff between them is in neither attempt.
func TestRetriedStatusAttemptExcludesBackoff(t *testing.T) {
	sc, rec, _ := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: s } ] }
services:
  s:
    endpoints: [%s, %s]
    retry: { max_retries: 1, base_interval: 50ms, max_interval: 50ms }
`, unavailableOrigin(t), unavailableOrigin(t)))
	if res, body := get(t, h1Client(), "http://"+sc.Addr("outbound")+"/", "s"); res.StatusCode != 503 {
		t.Fatalf("caller got %d %q, want the second attempt's 503", res.StatusCode, body)
	}
	waitFor(t, "the server span", 5*time.Second, func() bool { return len(spansOfKind(rec.Ended(), trace.SpanKindServer)) == 1 })
	server := spansOfKind(rec.Ended(), trace.SpanKindServer)[0]
	clients := spansOfKind(rec.Ended(), trace.SpanKindClient)
	var retried []sdktrace.Event
	for _, e := range server.Events() {
		if e.Name == telemetry.EventRetry {
			retried = append(retried, e)
		}
	}
	if len(clients) != 2 || len(retried) != 1 {
		t.Fatalf("%d client spans and %d retry events, want 2 and 1", len(clients), len(retried))
	}
	first, second := clients[0], clients[1]
	if second.StartTime().Before(first.StartTime()) {
		first, second = second, first
	}
	if first.EndTime().After(retried[0].Time) || first.EndTime().After(second.StartTime()) {
		t.Errorf("the first attempt's span ended %v after the retry was reported and %v after the second attempt began: it holds the backoff",
			first.EndTime().Sub(retried[0].Time), first.EndTime().Sub(second.StartTime()))
	}
}

// A timeout of ferry's is named on the spans of the exchange it ended, as
// it is to the caller (X-Ferry-Error) and in ferry's log: the error each
// span records (its status description and exception event) is the
// timeout, never the bare "context canceled" of the cancelled round trip
// or body read, which reads as a caller that went away.
func TestTimeoutSpansNameTheTimeout(t *testing.T) {
	stall := make(chan struct{})
	t.Cleanup(func() { close(stall) })
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/mid-body" {
			w.Write([]byte("first bytes"))
			w.(http.Flusher).Flush()
		}
		select {
		case <-stall:
		case <-r.Context().Done():
		}
	}))
	for _, c := range []struct{ name, path, timeouts, want string }{
		{"per_try", "/", "{ per_try: 100ms }", "timeouts.per_try"},
		{"overall", "/", "{ overall: 100ms, connect: 50ms, response_header: 1m }", "overall timeout"},
		{"body_idle", "/mid-body", "{ body_idle: 100ms }", "body idle timeout"},
	} {
		t.Run(c.name, func(t *testing.T) {
			sc, rec, _ := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: s } ] }
services:
  s:
    endpoints: [%s]
    retry: { max_retries: 0 }
    timeouts: %s
`, up, c.timeouts))
			res, err := h1Client().Get("http://" + sc.Addr("outbound") + c.path)
			if err == nil {
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
			}
			waitFor(t, "both spans", 5*time.Second, func() bool { return len(rec.Ended()) == 2 })
			for _, s := range rec.Ended() {
				var recorded []string
				for _, e := range s.Events() {
					for _, kv := range e.Attributes {
						if kv.Key == semconv.ExceptionMessageKey {
							recorded = append(recorded, kv.Value.AsString())
						}
					}
				}
				if d := s.Status().Description; !strings.Contains(d, c.want) || len(recorded) != 1 || !strings.Contains(recorded[0], c.want) {
					t.Errorf("%s span: status %q, exception messages %q; want both to name the %s", s.SpanKind(), d, recorded, c.want)
				}
			}
		})
	}
}
