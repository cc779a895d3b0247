package sidecar

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/resilience"
)

// heldOrigin answers "/hold" only once release is closed, with the status
// given; anything else at once, with the same status. started hears of
// every held request.
func heldOrigin(t *testing.T, status int) (addr string, started chan struct{}, release chan struct{}) {
	started, release = make(chan struct{}, 8), make(chan struct{})
	addr = origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			started <- struct{}{}
			<-release
		}
		w.WriteHeader(status)
		io.WriteString(w, "answer")
	}))
	return addr, started, release
}

// A reload that rebuilds a service's breakers (its resilience settings
// changed) leaves the old ones to the exchanges still running on the
// generation before: what those exchanges do to them is not the service's
// breaker state any more, and /metrics reports the breakers in force only.
// The old breaker opening must neither count in
// ferry_breaker_transitions_total nor show in ferry_breaker_state.
func TestReplacedBreakersLeaveMetrics(t *testing.T) {
	up, started, release := heldOrigin(t, http.StatusServiceUnavailable)
	config := func(openFor string) string {
		return reloadConfig(up, fmt.Sprintf("defaults: { breaker: { consecutive_failures: 1, open_duration: %s }, outlier: { consecutive_5xx: 0 }, retry: { max_retries: 0 } }", openFor))
	}
	sc := startFerry(t, config("30s"))
	url := "http://" + sc.Addr("outbound") + "/"
	metrics := func() string {
		_, body := get(t, h1Client(), "http://"+sc.Addr("admin")+"/metrics", "")
		return grepLines(body, "ferry_breaker_")
	}
	c := h1Client()
	done := getInBackground(url + "hold")
	recv(t, started, 5*time.Second, "the request to reach the origin")
	old := sc.state.Load().upstreams["svc"].res
	if err := sc.Reload(context.Background(), mustParse(t, config("20s"))); err != nil {
		t.Fatal(err)
	}
	if sc.state.Load().upstreams["svc"].res == old {
		t.Fatal("the reload kept svc's breakers: the test needs them rebuilt")
	}
	close(release)
	if ans := recv(t, done, 5*time.Second, "the held request"); !strings.HasPrefix(ans, "503 answer") {
		t.Fatalf("held request: %q, want the origin's 503", ans)
	}
	waitFor(t, "the replaced breaker to open", 5*time.Second, func() bool {
		eps := old.Status()
		return len(eps) == 1 && eps[0].Breaker == resilience.BreakerOpen
	})
	m := metrics()
	closed := fmt.Sprintf(`ferry_breaker_state{endpoint="%s",service="svc"} 0`, up)
	if strings.Contains(m, "ferry_breaker_transitions_total{") || !strings.Contains(m, closed) {
		t.Fatalf("after the replaced breaker opened, /metrics shows:\n%s\nwant no transition and %s (the breaker in force is closed)", m, closed)
	}
	// The breaker in force still reports its own changes.
	get(t, c, url, "")
	waitFor(t, "the breaker in force to open", 5*time.Second, func() bool {
		return strings.Contains(metrics(), `ferry_breaker_transitions_total{service="svc",to="open"} 1`)
	})
}

// The retry budget counts the requests and retries of its window across a
// reload that rebuilds the service's resilience state: a reload during a
// retry storm must not hand out a fresh budget. Here the budget allows 2
// retries a second (the clock does not move); once they are spent, a
// reload that changes only max_in_flight leaves them spent.
func TestReloadKeepsRetryBudget(t *testing.T) {
	clock := resilience.NewManualClock(time.Unix(1_000_000, 0))
	a, b := newFlaky(t, "a"), newFlaky(t, "b")
	a.fail.Store(503)
	b.fail.Store(503)
	config := func(maxInFlight int) *Config {
		return mustParse(t, reloadConfig(a.addr+", "+b.addr, fmt.Sprintf(`defaults:
  max_in_flight: %d
  breaker: { consecutive_failures: 0 }
  outlier: { consecutive_5xx: 0 }
  retry: { max_retries: 1, base_interval: 1ms, max_interval: 1ms, budget: { ratio: 0, min_per_second: 2 } }`, maxInFlight)))
	}
	sc := startSidecar(t, config(100), Options{Clock: clock})
	url := "http://" + sc.Addr("outbound") + "/"
	c := h1Client()
	// attempts sends one request and returns how many upstream attempts
	// it made: 2 when it was retried.
	attempts := func() int64 {
		before := a.hits.Load() + b.hits.Load()
		if code, _ := call(t, c, "GET", url, nil); code != 503 {
			t.Fatalf("got %d, want the origins' 503", code)
		}
		return a.hits.Load() + b.hits.Load() - before
	}
	for i := range 2 {
		if n := attempts(); n != 2 {
			t.Fatalf("request %d made %d attempts, want 2 (a retry within the budget's floor)", i+1, n)
		}
	}
	if n := attempts(); n != 1 {
		t.Fatalf("third request made %d attempts, want 1: the budget is spent", n)
	}
	old := sc.state.Load().upstreams["svc"].res
	if err := sc.Reload(context.Background(), config(200)); err != nil {
		t.Fatal(err)
	}
	if sc.state.Load().upstreams["svc"].res == old {
		t.Fatal("the reload kept svc's resilience state: the test needs it rebuilt")
	}
	for i := range 3 {
		if n := attempts(); n != 1 {
			t.Fatalf("request %d after the reload made %d attempts, want 1: the budget spent before the reload is still spent", i+1, n)
		}
	}
	// The next second brings the floor back.
	clock.Advance(time.Second)
	if n := attempts(); n != 2 {
		t.Fatalf("a second later a request made %d attempts, want 2", n)
	}
}
