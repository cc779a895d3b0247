package resilience

import (
	"fmt"
	"testing"

	"github.com/sony/gobreaker/v2"
)

func benchUpstream(b *testing.B, bal Balancer) *Upstream {
	b.Helper()
	s := DefaultSettings()
	s.Balancer = bal
	if bal == BalancerHash {
		s.HashHeader = "X-User"
	}
	u, err := NewUpstream("bench", s) // the wall clock, as in production
	if err != nil {
		b.Fatal(err)
	}
	eps := make([]Endpoint, 10)
	for i := range eps {
		eps[i] = Endpoint{Addr: fmt.Sprintf("10.0.0.%d:8080", i), Weight: 1 + i%3}
	}
	u.Update(eps)
	return u
}

// BenchmarkPickDone is one attempt's whole resilience cost: balancer pick,
// ejection and breaker admission, concurrency limit, retry-budget deposit,
// and Done feeding the breaker (gobreaker Execute) and outlier detection.
func BenchmarkPickDone(b *testing.B) {
	for _, bal := range []Balancer{BalancerP2C, BalancerRoundRobin, BalancerRandom, BalancerWeighted, BalancerHash} {
		b.Run(string(bal), func(b *testing.B) {
			u := benchUpstream(b, bal)
			b.ReportAllocs()
			for b.Loop() {
				p, err := u.Pick("user-42", nil)
				if err != nil {
					b.Fatal(err)
				}
				p.Done(ok200)
			}
		})
	}
}

// BenchmarkPickDoneRetry is a retry's pick: one endpoint excluded, no
// budget deposit.
func BenchmarkPickDoneRetry(b *testing.B) {
	u := benchUpstream(b, BalancerP2C)
	excluded := []string{"10.0.0.3:8080"}
	b.ReportAllocs()
	for b.Loop() {
		p, err := u.Pick("", excluded)
		if err != nil {
			b.Fatal(err)
		}
		p.Done(ok200)
	}
}

// BenchmarkPickDoneParallel runs attempts from every P at once.
func BenchmarkPickDoneParallel(b *testing.B) {
	u := benchUpstream(b, BalancerP2C)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			p, err := u.Pick("", nil)
			if err != nil {
				b.Fatal(err)
			}
			p.Done(ok200)
		}
	})
}

// BenchmarkPickOpenBreakers: half the endpoints have open breakers, so
// picks skip them.
func BenchmarkPickOpenBreakers(b *testing.B) {
	u := benchUpstream(b, BalancerP2C)
	set := u.set.Load()
	for i, m := range set.members {
		if i%2 == 0 {
			for range 5 {
				gen, probe, _ := m.ep.breaker.admit(&lazyNow{clock: u.clock})
				m.ep.breaker.record(gen, probe, verdictFailure)
			}
			if m.ep.breaker.current() != BreakerOpen {
				b.Fatal("breaker did not open")
			}
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		p, err := u.Pick("", nil)
		if err != nil {
			b.Fatal(err)
		}
		p.Done(ok200)
	}
}

func BenchmarkRetryDecision(b *testing.B) {
	u := benchUpstream(b, BalancerP2C)
	for range 1000 {
		u.Budget().Deposit()
	}
	b.ReportAllocs()
	for b.Loop() {
		u.settings.Retry.Decide(1, "GET", 0, false, refuse)
	}
}

// BenchmarkPickDoneRatioBreaker: with the failure-ratio trigger on, every
// outcome goes through gobreaker (its mutex and two wall-clock reads).
func BenchmarkPickDoneRatioBreaker(b *testing.B) {
	s := DefaultSettings()
	s.Breaker.FailureRatio = 0.5
	u, err := NewUpstream("bench", s)
	if err != nil {
		b.Fatal(err)
	}
	u.Update([]Endpoint{{Addr: "10.0.0.1:80"}, {Addr: "10.0.0.2:80"}, {Addr: "10.0.0.3:80"}})
	b.ReportAllocs()
	for b.Loop() {
		p, err := u.Pick("", nil)
		if err != nil {
			b.Fatal(err)
		}
		p.Done(ok200)
	}
}

// BenchmarkClockNow is the price of one wall-clock read on this machine,
// for reading the figures above.
func BenchmarkClockNow(b *testing.B) {
	var c Clock = SystemClock{}
	b.ReportAllocs()
	for b.Loop() {
		_ = c.Now()
	}
}

// BenchmarkGobreakerTwoStepAllow is what the two-step API would cost per
// request if used directly (Allow, then done): for comparison only.
func BenchmarkGobreakerTwoStepAllow(b *testing.B) {
	cb := gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{Name: "bench"})
	b.ReportAllocs()
	for b.Loop() {
		done, err := cb.Allow()
		if err != nil {
			b.Fatal(err)
		}
		done(nil)
	}
}
