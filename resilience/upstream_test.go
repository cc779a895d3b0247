package resilience

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestUpdateKeepsState(t *testing.T) {
	u, clk, _ := newTestUpstream(t, func(s *Settings) {
		s.Breaker = BreakerSettings{ConsecutiveFailures: 2, OpenDuration: time.Minute, HalfOpenProbes: 1, FailureStatuses: []int{503}}
		s.Outlier = OutlierSettings{Consecutive5xx: 2, BaseEjectionTime: time.Minute, MaxEjectionTime: time.Hour, MaxEjectionPercent: 50}
	}, "a:1", "b:1", "c:1", "d:1")
	failOn(t, u, "a:1", 2, refuse)                                  // a: open and ejected
	failOn(t, u, "b:1", 2, Outcome{Result: Responded, Status: 500}) // b: ejected only
	failOn(t, u, "c:1", 1, refuse)                                  // c: one failure in its streak
	held := mustPick(t, u, "", "a:1", "b:1", "c:1")                 // d: one in flight
	before := map[string]EndpointStatus{}
	for _, st := range u.Status() {
		before[st.Addr] = st
	}

	// A new snapshot: same endpoints in another order, d reweighted, e new.
	u.Update([]Endpoint{{Addr: "e:1"}, {Addr: "d:1", Weight: 5}, {Addr: "c:1"}, {Addr: "b:1"}, {Addr: "a:1"}})
	for _, a := range []string{"a:1", "b:1", "c:1"} {
		if st := statusOf(t, u, a); st != before[a] {
			t.Fatalf("%s changed across Update:\n%+v\n%+v", a, before[a], st)
		}
	}
	if st := statusOf(t, u, "d:1"); st.InFlight != 1 || st.Weight != 5 {
		t.Fatalf("d after Update: %+v", st)
	}
	if st := statusOf(t, u, "e:1"); st.Breaker != BreakerClosed || st.Requests != 0 {
		t.Fatalf("new endpoint e: %+v", st)
	}
	// c's streak survived: one more failure opens it.
	failOn(t, u, "c:1", 1, refuse)
	if st := statusOf(t, u, "c:1"); st.Breaker != BreakerOpen {
		t.Fatalf("c's failure count was lost: %+v", st)
	}
	held.Done(ok200)
	if st := statusOf(t, u, "d:1"); st.InFlight != 0 || st.Requests != 1 {
		t.Fatalf("d after Done: %+v", st)
	}

	// Removed endpoints are forgotten: a comes back fresh. An attempt
	// still in flight on a removed endpoint finishes harmlessly.
	clk.Advance(time.Second)
	inflightOnE := mustPick(t, u, "", "a:1", "b:1", "c:1", "d:1")
	u.Update([]Endpoint{{Addr: "b:1"}, {Addr: "c:1"}, {Addr: "d:1"}})
	inflightOnE.Done(refuse)
	if u.InFlight() != 0 {
		t.Fatalf("in flight = %d", u.InFlight())
	}
	u.Update([]Endpoint{{Addr: "a:1"}, {Addr: "b:1"}, {Addr: "c:1"}, {Addr: "d:1"}, {Addr: "e:1"}})
	if st := statusOf(t, u, "a:1"); st.Breaker != BreakerClosed || !st.EjectedUntil.IsZero() || st.Requests != 0 {
		t.Fatalf("re-added a kept old state: %+v", st)
	}
	if st := statusOf(t, u, "e:1"); st.Requests != 0 {
		t.Fatalf("re-added e kept old counts: %+v", st)
	}
}

func TestUpdateIgnoresBadEntries(t *testing.T) {
	u, _, _ := newTestUpstream(t, nil)
	u.Update([]Endpoint{{Addr: ""}, {Addr: "a:1", Weight: 2}, {Addr: "a:1", Weight: 7}, {Addr: "b:1", Weight: -3}})
	st := u.Status()
	if len(st) != 2 || st[0].Addr != "a:1" || st[0].Weight != 2 || st[1].Weight != 1 {
		t.Fatalf("status = %+v", st)
	}
}

func TestNoEndpoints(t *testing.T) {
	u, _, _ := newTestUpstream(t, nil)
	if _, err := u.Pick("", nil); !errors.Is(err, ErrNoEndpoints) || !strings.Contains(err.Error(), "files") {
		t.Fatalf("Pick on empty service: %v", err)
	}
	u.Update([]Endpoint{{Addr: "a:1"}})
	mustPick(t, u, "").Done(ok200)
	u.Update(nil)
	if _, err := u.Pick("", nil); !errors.Is(err, ErrNoEndpoints) {
		t.Fatalf("Pick after emptying: %v", err)
	}
	var zero Pick
	zero.Done(ok200) // inert
	if zero.Addr() != "" {
		t.Fatal("zero Pick has an address")
	}
}

func TestMaxInFlightSheds(t *testing.T) {
	u, _, _ := newTestUpstream(t, func(s *Settings) { s.MaxInFlight = 3 }, "a:1", "b:1")
	held := []Pick{mustPick(t, u, ""), mustPick(t, u, ""), mustPick(t, u, "")}
	for range 10 {
		if _, err := u.Pick("", nil); !errors.Is(err, ErrOverloaded) || !strings.Contains(err.Error(), "max_in_flight 3") {
			t.Fatalf("fourth concurrent pick: %v", err)
		}
	}
	if n := u.InFlight(); n != 3 {
		t.Fatalf("shed picks leaked in-flight slots: %d", n)
	}
	held[0].Done(cancel)
	p := mustPick(t, u, "")
	if _, err := u.Pick("", nil); !errors.Is(err, ErrOverloaded) {
		t.Fatalf("limit not restored: %v", err)
	}
	for _, q := range append(held[1:], p) {
		q.Done(ok200)
	}
	if n := u.InFlight(); n != 0 {
		t.Fatalf("in flight = %d", n)
	}
	// A pick that finds nothing available gives its slot back too.
	if _, err := u.Pick("", []string{"a:1", "b:1"}); !errors.Is(err, ErrAllUnavailable) {
		t.Fatalf("all tried: %v", err)
	}
	if n := u.InFlight(); n != 0 {
		t.Fatalf("failed pick leaked: %d", n)
	}
}

// Many goroutines pick and finish while endpoints change and breakers
// trip; run with -race. Afterwards nothing is left in flight.
func TestConcurrentPicksUpdatesAndOutcomes(t *testing.T) {
	for _, b := range []Balancer{BalancerP2C, BalancerRoundRobin, BalancerRandom, BalancerWeighted, BalancerHash} {
		t.Run(string(b), func(t *testing.T) {
			header := ""
			if b == BalancerHash {
				header = "X-User"
			}
			u, clk, _ := newTestUpstream(t, func(s *Settings) {
				balancer(b, header)(s)
				s.MaxInFlight = 64
				s.Breaker.ConsecutiveFailures = 3
				s.Breaker.FailureRatio = 0.5
				s.Breaker.HalfOpenProbes = 2
				s.Outlier.MaxEjectionPercent = 50
			}, "a:1", "b:1", "c:1")
			outcomes := []Outcome{ok200, ok200, ok200, refuse, bad503, cancel, {Result: BodyBroken, Status: 200}}
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Go(func() {
					for i := range 2000 {
						p, err := u.Pick(fmt.Sprint(i%50), nil)
						if err != nil {
							if !errors.Is(err, ErrAllUnavailable) && !errors.Is(err, ErrOverloaded) && !errors.Is(err, ErrNoEndpoints) {
								t.Errorf("Pick: %v", err)
								return
							}
							continue
						}
						if d, _, dec := u.Retry(1, "GET", 0, false, refuse); dec == RetryAllowed && d < 0 {
							t.Errorf("negative backoff")
						}
						p.Done(outcomes[(g+i)%len(outcomes)])
					}
				})
			}
			wg.Go(func() {
				sets := [][]Endpoint{
					{{Addr: "a:1"}, {Addr: "b:1"}, {Addr: "c:1"}},
					{{Addr: "b:1", Weight: 3}, {Addr: "c:1"}, {Addr: "d:1"}},
					{{Addr: "a:1"}, {Addr: "d:1", Weight: 2}},
				}
				for i := range 300 {
					u.Update(sets[i%len(sets)])
					clk.Advance(time.Second)
					_ = u.Status()
				}
			})
			wg.Wait()
			if n := u.InFlight(); n != 0 {
				t.Fatalf("in flight after the storm: %d", n)
			}
			for _, st := range u.Status() {
				if st.InFlight != 0 {
					t.Fatalf("%s in flight %d", st.Addr, st.InFlight)
				}
			}
		})
	}
}

func TestNewUpstreamRejectsBadSettings(t *testing.T) {
	s := DefaultSettings()
	s.Breaker.FailureRatio = 2
	_, err := NewUpstream("files", s)
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Key != "breaker.failure_ratio" || !strings.Contains(err.Error(), `service "files"`) {
		t.Fatalf("NewUpstream: %v", err)
	}
}

// An endpoint that discovery drops and lists again while attempts run on
// it (a health check that flapped) still counts them: p2c must not take
// it for idle and pile new attempts on it.
func TestReaddedEndpointKeepsItsInFlight(t *testing.T) {
	u, _, _ := newTestUpstream(t, nil, "a:1", "b:1")
	var held []Pick
	for range 3 {
		held = append(held, mustPick(t, u, "", "b:1"))
	}
	b := mustPick(t, u, "", "a:1")
	u.Update([]Endpoint{{Addr: "b:1"}})
	u.Update([]Endpoint{{Addr: "a:1"}, {Addr: "b:1"}})
	if st := statusOf(t, u, "a:1"); st.InFlight != 3 {
		t.Fatalf("re-added a shows %d in flight, want 3", st.InFlight)
	}
	// b has one in flight, a three: p2c sends the next attempts to b.
	for range 10 {
		p := mustPick(t, u, "")
		if p.Addr() != "b:1" {
			t.Fatalf("picked %s (a has 3 in flight, b 1)", p.Addr())
		}
		p.Done(ok200)
	}
	for _, p := range held {
		p.Done(ok200)
	}
	b.Done(ok200)
	for _, a := range []string{"a:1", "b:1"} {
		if st := statusOf(t, u, a); st.InFlight != 0 {
			t.Fatalf("%s: %d in flight after every Done", a, st.InFlight)
		}
	}
	// Once its attempts are done, a removed endpoint is forgotten.
	u.Update([]Endpoint{{Addr: "b:1"}})
	u.Update([]Endpoint{{Addr: "a:1"}, {Addr: "b:1"}})
	if st := statusOf(t, u, "a:1"); st.InFlight != 0 || st.Requests != 0 {
		t.Fatalf("re-added idle a: %+v", st)
	}
}

// A retired Upstream (a reload replaced or dropped its service) still
// records what its last attempts did, but tells the Observer of no
// breaker change or ejection: the service's Upstream in force reports.
func TestRetiredUpstreamReportsNoBreakerOrEjection(t *testing.T) {
	u, _, rec := newTestUpstream(t, func(s *Settings) {
		s.Breaker.ConsecutiveFailures = 1
		s.Outlier.Consecutive5xx = 1
		s.Outlier.MaxEjectionPercent = 50
	}, "a:1", "b:1")
	p := mustPick(t, u, "", "b:1")
	u.Retire()
	p.Done(bad503)
	st := statusOf(t, u, "a:1")
	if st.Breaker != BreakerOpen || st.EjectedUntil.IsZero() {
		t.Fatalf("a:1 after a 503: breaker %s, ejected until %v; want open and ejected", st.Breaker, st.EjectedUntil)
	}
	if ev := rec.take(); len(ev) != 0 {
		t.Fatalf("a retired upstream reported %q", ev)
	}
}

// The Upstream that replaces another (a reload changed the service's
// settings) takes over its retry budget: the retries spent before stay
// spent, and the replaced one's later requests and retries count for both.
func TestReplaceCarriesRetryBudget(t *testing.T) {
	spent := func(s *Settings) {
		s.Retry.Budget = BudgetSettings{Ratio: 0.5, MinPerSecond: 0, Window: 10 * time.Second}
	}
	prev, clk, _ := newTestUpstream(t, spent, "a:1", "b:1")
	for range 4 {
		mustPick(t, prev, "").Done(bad503)
	}
	for range 2 {
		if _, _, d := prev.Retry(1, "GET", 0, false, bad503); d != RetryAllowed {
			t.Fatalf("retry within the budget: %v", d)
		}
	}
	s := prev.Settings()
	s.MaxInFlight = 7 // the budget's settings stay, another changes
	u, err := NewUpstream("files", s, WithClock(clk))
	if err != nil {
		t.Fatal(err)
	}
	u.Update([]Endpoint{{Addr: "a:1"}, {Addr: "b:1"}})
	u.Replace(prev)
	if _, _, d := u.Retry(1, "GET", 0, false, bad503); d != RetryBudgetExhausted {
		t.Fatalf("first retry after the replacement: %v, want %v", d, RetryBudgetExhausted)
	}
	mustPick(t, prev, "").Done(ok200) // an exchange still on prev: 5 requests
	mustPick(t, u, "").Done(ok200)    // 6
	if _, _, d := u.Retry(1, "GET", 0, false, bad503); d != RetryAllowed {
		t.Fatalf("retry with 6 requests and 2 retries at ratio 0.5: %v", d)
	}
	if req, ret := prev.Budget().Counts(); req != 6 || ret != 3 {
		t.Fatalf("the replaced upstream's budget: %d requests, %d retries; want the one shared budget's 6 and 3", req, ret)
	}
}

// An attempt kept past its outcome (a tunnel) feeds the breaker at once
// but holds its in-flight slots until released, once however often
// Release is called.
func TestKeepHoldsSlotUntilReleased(t *testing.T) {
	u, _, _ := newTestUpstream(t, func(s *Settings) { s.MaxInFlight = 1 }, "a:1")
	slot, _ := mustPick(t, u, "").Keep(ok200)
	if st := statusOf(t, u, "a:1"); st.Requests != 1 || st.InFlight != 1 {
		t.Fatalf("kept attempt: %d requests, %d in flight; want 1 and 1", st.Requests, st.InFlight)
	}
	if _, err := u.Pick("", nil); !errors.Is(err, ErrOverloaded) {
		t.Fatalf("Pick beside a kept slot: %v, want ErrOverloaded", err)
	}
	slot.Release()
	slot.Release()
	if n, ep := u.InFlight(), statusOf(t, u, "a:1").InFlight; n != 0 || ep != 0 {
		t.Fatalf("after two Releases: %d in flight (endpoint %d), want 0", n, ep)
	}
	mustPick(t, u, "").Done(ok200)
	(&Slot{}).Release() // the zero Slot holds nothing
	zero, _ := Pick{}.Keep(ok200)
	zero.Release()
	if n := u.InFlight(); n != 0 {
		t.Fatalf("%d in flight", n)
	}
}
