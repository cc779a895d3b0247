package sidecar

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/ferrymesh/ferry/resilience"
	"github.com/ferrymesh/ferry/telemetry"
)

// eventsNamed lists the attributes of a span's events called name.
func eventsNamed(s sdktrace.ReadOnlySpan, name string) []string {
	var out []string
	for _, e := range s.Events() {
		if e.Name == name {
			out = append(out, fmt.Sprint(e.Attributes))
		}
	}
	return out
}

// serverSpanOf waits for the server span of the request for path.
func serverSpanOf(t *testing.T, rec interface {
	Ended() []sdktrace.ReadOnlySpan
}, path string) sdktrace.ReadOnlySpan {
	t.Helper()
	var found sdktrace.ReadOnlySpan
	waitFor(t, "the server span of "+path, 5*time.Second, func() bool {
		for _, s := range spansOfKind(rec.Ended(), trace.SpanKindServer) {
			if attr(s, semconv.URLPathKey).AsString() == path {
				found = s
				return true
			}
		}
		return false
	})
	return found
}

// heldOrigins starts n origins that answer 503 at once, except on /held,
// which they answer 503 only once release is called; arrived gets the
// origin's address as a /held request comes in.
func heldOrigins(t *testing.T, n int) (addrs []string, arrived <-chan string, release func()) {
	t.Helper()
	in := make(chan string, 4)
	gate := make(chan struct{})
	var once sync.Once
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/held" {
			in <- r.Context().Value(http.LocalAddrContextKey).(net.Addr).String()
			select {
			case <-gate:
			case <-r.Context().Done():
				return
			}
		}
		http.Error(w, "down", http.StatusServiceUnavailable)
	})
	for range n {
		addrs = append(addrs, origin(t, h))
	}
	release = func() { once.Do(func() { close(gate) }) }
	t.Cleanup(release)
	return addrs, in, release
}

// A request in flight while another request's failure opens the breaker
// does not show that transition when it fails in turn: its outcome came
// under the breaker's earlier state and changed nothing. Only the request
// whose outcome opened the breaker shows it.
func TestTracingBreakerEventOnlyOnTheRequestThatCausedIt(t *testing.T) {
	addrs, arrived, release := heldOrigins(t, 1)
	sc, rec, _ := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: s } ] }
services: { s: { endpoints: [%s], breaker: { consecutive_failures: 1, open_duration: 1h }, outlier: { consecutive_5xx: 0 }, retry: { max_retries: 0 } } }
`, addrs[0]))
	held := make(chan int, 1)
	go func() {
		res, err := h1Client().Get("http://" + sc.Addr("outbound") + "/held")
		if err != nil {
			held <- 0
			return
		}
		res.Body.Close()
		held <- res.StatusCode
	}()
	recv(t, arrived, 5*time.Second, "the held request at the origin")
	if r, _ := get(t, h1Client(), "http://"+sc.Addr("outbound")+"/opens", ""); r.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/opens: %d, want the origin's 503", r.StatusCode)
	}
	waitFor(t, "the breaker open", 5*time.Second, func() bool {
		eps := upstreamStatus(t, sc, "s").Endpoints
		return len(eps) == 1 && eps[0].Breaker == resilience.BreakerOpen
	})
	release()
	if st := recv(t, held, 5*time.Second, "the held request's answer"); st != http.StatusServiceUnavailable {
		t.Fatalf("/held: %d, want the origin's 503", st)
	}
	opener, late := serverSpanOf(t, rec, "/opens"), serverSpanOf(t, rec, "/held")
	if got := eventsNamed(opener, telemetry.EventBreakerTransition); len(got) != 1 ||
		!strings.Contains(got[0], `"ferry.breaker_from":"closed"`) || !strings.Contains(got[0], `"ferry.breaker_to":"open"`) {
		t.Errorf("the request that opened the breaker has transitions %v, want one, closed to open", got)
	}
	if got := eventsNamed(late, telemetry.EventBreakerTransition); len(got) != 0 {
		t.Errorf("the request whose outcome came after the breaker opened has transitions %v, want none", got)
	}
	if body := metricsText(sc); !strings.Contains(body, `ferry_breaker_transitions_total{service="s",to="open"} 1`+"\n") {
		t.Errorf("want one transition to open counted:\n%s", grepLines(body, "ferry_breaker_transitions_total"))
	}
}

// Likewise for ejection: a request in flight on an endpoint that another
// request's 5xx ejected does not show that ejection (nor any breaker
// transition: the service has no breaker).
func TestTracingEjectionEventOnlyOnTheRequestThatCausedIt(t *testing.T) {
	addrs, arrived, release := heldOrigins(t, 2)
	sc, rec, _ := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: s } ] }
services: { s: { endpoints: [%s, %s], balancer: hash, hash_header: X-User, breaker: { consecutive_failures: 0 }, outlier: { consecutive_5xx: 1, max_ejection_percent: 50 }, retry: { max_retries: 0 } } }
`, addrs[0], addrs[1]))
	// Both requests carry the same hash key: they go to the same endpoint
	// while both endpoints are in rotation, the one the held request came
	// to.
	send := func(path string) int {
		req, _ := http.NewRequest("GET", "http://"+sc.Addr("outbound")+path, nil)
		req.Header.Set("X-User", "u1")
		res, err := h1Client().Do(req)
		if err != nil {
			return 0
		}
		res.Body.Close()
		return res.StatusCode
	}
	held := make(chan int, 1)
	go func() { held <- send("/held") }()
	bad := recv(t, arrived, 5*time.Second, "the held request at an origin")
	if st := send("/ejects"); st != http.StatusServiceUnavailable {
		t.Fatalf("/ejects: %d, want the origin's 503", st)
	}
	waitFor(t, "the endpoint ejected", 5*time.Second, func() bool {
		for _, ep := range upstreamStatus(t, sc, "s").Endpoints {
			if ep.Addr == bad {
				return !ep.EjectedUntil.IsZero()
			}
		}
		return false
	})
	release()
	if st := recv(t, held, 5*time.Second, "the held request's answer"); st != http.StatusServiceUnavailable {
		t.Fatalf("/held: %d, want the origin's 503", st)
	}
	ejector, late := serverSpanOf(t, rec, "/ejects"), serverSpanOf(t, rec, "/held")
	if got := eventsNamed(ejector, telemetry.EventEjection); len(got) != 1 || !strings.Contains(got[0], bad) {
		t.Errorf("the request that ejected the endpoint has ejections %v, want one of %s", got, bad)
	}
	if got := eventsNamed(late, telemetry.EventEjection); len(got) != 0 {
		t.Errorf("the request whose outcome came after the ejection has ejections %v, want none", got)
	}
	for _, s := range []sdktrace.ReadOnlySpan{ejector, late} {
		if got := eventsNamed(s, telemetry.EventBreakerTransition); len(got) != 0 {
			t.Errorf("%s: breaker transitions %v on a service with no breaker", attr(s, semconv.URLPathKey).AsString(), got)
		}
	}
}

// A retryable answer (503) that opened its endpoint's breaker, relayed
// because no other endpoint was left to retry on, shows the transition
// once per attempt that caused it, not again as the answer is relayed.
func TestTracingBreakerEventOncePerAttempt(t *testing.T) {
	a := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", 503) }))
	b := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", 503) }))
	sc, rec, _ := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: s } ] }
services: { s: { endpoints: [%s, %s], breaker: { consecutive_failures: 1, open_duration: 1h }, outlier: { consecutive_5xx: 0 }, retry: { max_retries: 1 } } }
`, a, b))
	if r, _ := get(t, h1Client(), "http://"+sc.Addr("outbound")+"/twice", ""); r.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want the second endpoint's 503", r.StatusCode)
	}
	got := eventsNamed(serverSpanOf(t, rec, "/twice"), telemetry.EventBreakerTransition)
	if len(got) != 2 {
		t.Fatalf("breaker transitions %v, want two: each attempt opened its endpoint's breaker", got)
	}
	seen := map[string]bool{}
	for _, e := range got {
		for _, addr := range []string{a, b} {
			if strings.Contains(e, addr) && strings.Contains(e, `"ferry.breaker_to":"open"`) {
				seen[addr] = true
			}
		}
	}
	if len(seen) != 2 {
		t.Errorf("breaker transitions %v, want closed to open on %s and on %s", got, a, b)
	}
}

// A failure that is not a 5xx (failure_statuses: [400]) shows the
// transition it caused, as a 5xx does.
func TestTracingBreakerEventOnNon5xxFailure(t *testing.T) {
	bad := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", http.StatusBadRequest) }))
	sc, rec, _ := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: s } ] }
services: { s: { endpoints: [%s], breaker: { consecutive_failures: 1, failure_statuses: [400], open_duration: 1h }, outlier: { consecutive_5xx: 0 }, retry: { max_retries: 0 } } }
`, bad))
	if r, _ := get(t, h1Client(), "http://"+sc.Addr("outbound")+"/400", ""); r.StatusCode != http.StatusBadRequest {
		t.Fatalf("status %d, want the origin's 400", r.StatusCode)
	}
	got := eventsNamed(serverSpanOf(t, rec, "/400"), telemetry.EventBreakerTransition)
	if len(got) != 1 || !strings.Contains(got[0], `"ferry.breaker_from":"closed"`) || !strings.Contains(got[0], `"ferry.breaker_to":"open"`) {
		t.Fatalf("breaker transitions %v, want one, closed to open", got)
	}
}
