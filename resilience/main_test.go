package resilience

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// resilience starts no goroutines; goleak makes sure it stays that way.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var epoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// recorder is an Observer that remembers every event as a string.
type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) add(format string, args ...any) {
	r.mu.Lock()
	r.events = append(r.events, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

func (r *recorder) BreakerChanged(service, addr string, from, to BreakerState) {
	r.add("breaker %s %s %s->%s", service, addr, from, to)
}

func (r *recorder) Ejected(service, addr string, d time.Duration, n int) {
	r.add("ejected %s %s %s #%d", service, addr, d, n)
}

func (r *recorder) RetryDecided(service string, attempt int, d RetryDecision) {
	r.add("retry %s %d %s", service, attempt, d)
}

func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ev := r.events
	r.events = nil
	return ev
}

// newTestUpstream builds an Upstream on a manual clock with the given
// endpoints (weight 1) after letting mod adjust the default settings.
func newTestUpstream(t testing.TB, mod func(*Settings), addrs ...string) (*Upstream, *ManualClock, *recorder) {
	t.Helper()
	s := DefaultSettings()
	if mod != nil {
		mod(&s)
	}
	clk := NewManualClock(epoch)
	rec := &recorder{}
	u, err := NewUpstream("files", s, WithClock(clk), WithObserver(rec))
	if err != nil {
		t.Fatalf("NewUpstream: %v", err)
	}
	eps := make([]Endpoint, len(addrs))
	for i, a := range addrs {
		eps[i] = Endpoint{Addr: a, Weight: 1}
	}
	u.Update(eps)
	return u, clk, rec
}

func mustPick(t testing.TB, u *Upstream, key string, excluded ...string) Pick {
	t.Helper()
	p, err := u.Pick(key, excluded)
	if err != nil {
		t.Fatalf("Pick: %v", err)
	}
	return p
}

func statusOf(t testing.TB, u *Upstream, addr string) EndpointStatus {
	t.Helper()
	for _, st := range u.Status() {
		if st.Addr == addr {
			return st
		}
	}
	t.Fatalf("no status for %s", addr)
	return EndpointStatus{}
}

var (
	ok200  = Outcome{Result: Responded, Status: 200}
	bad503 = Outcome{Result: Responded, Status: 503}
	refuse = Outcome{Result: ConnectFailed}
	cancel = Outcome{Result: Canceled}
)
