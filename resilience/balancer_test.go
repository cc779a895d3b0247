package resilience

import (
	"errors"
	"fmt"
	"math"
	"testing"
	"time"
)

func balancer(b Balancer, header string) func(*Settings) {
	return func(s *Settings) {
		s.Balancer = b
		s.HashHeader = header
		s.MaxInFlight = 0
	}
}

// count picks n times with key and Done(ok) each pick at once.
func count(t *testing.T, u *Upstream, n int, key string, excluded ...string) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		p := mustPick(t, u, key, excluded...)
		got[p.Addr()]++
		p.Done(ok200)
	}
	return got
}

func TestP2CPrefersLessLoaded(t *testing.T) {
	u, _, _ := newTestUpstream(t, balancer(BalancerP2C, ""), "a:1", "b:1", "c:1", "d:1")
	// Load a with 20 long requests and b with 5.
	var held []Pick
	for range 20 {
		held = append(held, mustPick(t, u, "", "b:1", "c:1", "d:1"))
	}
	for range 5 {
		held = append(held, mustPick(t, u, "", "a:1", "c:1", "d:1"))
	}
	got := count(t, u, 6000, "")
	// a loses every comparison: it is only picked when drawn... never, since
	// draws are of two distinct endpoints and a is the most loaded.
	if got["a:1"] != 0 {
		t.Fatalf("the most loaded endpoint got %d picks: %v", got["a:1"], got)
	}
	// b wins only against a (1 pair in 6): ~1000 picks; c and d ~2500 each.
	if b := got["b:1"]; b < 700 || b > 1300 {
		t.Fatalf("b got %d picks, want ~1000: %v", b, got)
	}
	if got["c:1"] < 2000 || got["d:1"] < 2000 {
		t.Fatalf("idle endpoints underused: %v", got)
	}
	for _, p := range held {
		p.Done(ok200)
	}
	if n := u.InFlight(); n != 0 {
		t.Fatalf("in flight after all Done: %d", n)
	}
}

func TestRoundRobinEven(t *testing.T) {
	u, _, _ := newTestUpstream(t, balancer(BalancerRoundRobin, ""), "a:1", "b:1", "c:1")
	got := count(t, u, 300, "")
	for _, a := range []string{"a:1", "b:1", "c:1"} {
		if got[a] != 100 {
			t.Fatalf("round robin uneven: %v", got)
		}
	}
}

func TestRandomCoversAll(t *testing.T) {
	u, _, _ := newTestUpstream(t, balancer(BalancerRandom, ""), "a:1", "b:1", "c:1")
	got := count(t, u, 3000, "")
	for _, a := range []string{"a:1", "b:1", "c:1"} {
		if got[a] < 800 || got[a] > 1200 {
			t.Fatalf("random far from uniform: %v", got)
		}
	}
}

func TestWeightedProportional(t *testing.T) {
	u, _, _ := newTestUpstream(t, balancer(BalancerWeighted, ""))
	u.Update([]Endpoint{{Addr: "a:1", Weight: 1}, {Addr: "b:1", Weight: 3}, {Addr: "c:1", Weight: 6}, {Addr: "z:1", Weight: 0}})
	const n = 50000
	got := count(t, u, n, "")
	// z's weight 0 means 1: total 11.
	for addr, w := range map[string]float64{"a:1": 1, "b:1": 3, "c:1": 6, "z:1": 1} {
		want := n * w / 11
		// 5 standard deviations of a binomial count.
		tol := 5 * math.Sqrt(want*(1-w/11))
		if math.Abs(float64(got[addr])-want) > tol {
			t.Fatalf("%s got %d picks, want %.0f±%.0f: %v", addr, got[addr], want, tol, got)
		}
	}
}

func TestBalancersSkipUnavailableAndExcluded(t *testing.T) {
	for _, b := range []Balancer{BalancerP2C, BalancerRoundRobin, BalancerRandom, BalancerWeighted, BalancerHash} {
		t.Run(string(b), func(t *testing.T) {
			header := ""
			if b == BalancerHash {
				header = "x-user"
			}
			u, _, _ := newTestUpstream(t, func(s *Settings) {
				balancer(b, header)(s)
				s.Breaker = BreakerSettings{ConsecutiveFailures: 1, OpenDuration: time.Minute, HalfOpenProbes: 1, FailureStatuses: []int{503}}
				s.Outlier = OutlierSettings{Consecutive5xx: 1, BaseEjectionTime: time.Minute, MaxEjectionTime: time.Minute, MaxEjectionPercent: 100}
			}, "a:1", "b:1", "c:1", "d:1", "e:1")
			// a: a 503 opens its breaker and ejects it; b: a 500 (not in
			// failure_statuses) ejects it with its breaker closed.
			failOn(t, u, "a:1", 1, bad503)
			failOn(t, u, "b:1", 1, Outcome{Result: Responded, Status: 500})
			if st := statusOf(t, u, "b:1"); st.EjectedUntil.IsZero() || st.Breaker != BreakerClosed {
				t.Fatalf("b: %+v", st)
			}
			for i := range 500 {
				p := mustPick(t, u, fmt.Sprint("user", i), "c:1")
				if a := p.Addr(); a != "d:1" && a != "e:1" {
					t.Fatalf("picked %s (open, ejected or excluded)", a)
				}
				p.Done(ok200)
			}
			_, err := u.Pick("k", []string{"c:1", "d:1", "e:1"})
			var ue *UnavailableError
			if !errors.As(err, &ue) || ue.Tried != 3 || ue.Ejected != 2 {
				t.Fatalf("everything unavailable: %v", err)
			}
		})
	}
}

func TestHashSticky(t *testing.T) {
	addrs := []string{"a:1", "b:1", "c:1", "d:1", "e:1", "f:1"}
	u, _, _ := newTestUpstream(t, balancer(BalancerHash, "X-User"), addrs...)
	const keys = 3000
	first := map[string]string{}
	perAddr := map[string]int{}
	for i := range keys {
		k := fmt.Sprint("user-", i)
		p := mustPick(t, u, k)
		first[k] = p.Addr()
		perAddr[p.Addr()]++
		p.Done(ok200)
	}
	// Every endpoint owns a fair share of the key space.
	for _, a := range addrs {
		if perAddr[a] < keys/6/2 || perAddr[a] > keys/6*2 {
			t.Fatalf("hash spread uneven: %v", perAddr)
		}
	}
	// Same key, same endpoint, every time.
	for k, a := range first {
		for range 3 {
			if p := mustPick(t, u, k); p.Addr() != a {
				t.Fatalf("key %s moved from %s to %s", k, a, p.Addr())
			} else {
				p.Done(ok200)
			}
		}
	}

	// Remove c and add g: only c's keys move (and those g takes over).
	u.Update([]Endpoint{{Addr: "a:1"}, {Addr: "b:1"}, {Addr: "d:1"}, {Addr: "e:1"}, {Addr: "f:1"}, {Addr: "g:1"}})
	moved := 0
	for k, was := range first {
		p := mustPick(t, u, k)
		now := p.Addr()
		p.Done(ok200)
		switch {
		case was == "c:1":
			if now == "c:1" {
				t.Fatalf("key %s still on removed c", k)
			}
		case now != was:
			if now != "g:1" {
				t.Fatalf("key %s moved from %s to %s, not to the new endpoint", k, was, now)
			}
			moved++
		}
	}
	// g takes about 1/6 of the keys of the others.
	if moved > keys/6*2 {
		t.Fatalf("%d of %d keys moved to g", moved, keys)
	}

	// An empty key falls back to p2c and still succeeds.
	mustPick(t, u, "").Done(ok200)
}

func TestHashRetryGoesElsewhereAndBack(t *testing.T) {
	u, _, _ := newTestUpstream(t, balancer(BalancerHash, "X-User"), "a:1", "b:1", "c:1")
	home := mustPick(t, u, "alice")
	home.Done(ok200)
	retry := mustPick(t, u, "alice", home.Addr())
	if retry.Addr() == home.Addr() {
		t.Fatal("retry went to the excluded endpoint")
	}
	retry.Done(ok200)
	if p := mustPick(t, u, "alice"); p.Addr() != home.Addr() {
		t.Fatalf("key lost its endpoint after a retry: %s, want %s", p.Addr(), home.Addr())
	} else {
		p.Done(ok200)
	}
}

// Large Consul weights must not blow the hash ring past its cap (at one
// point per unit of weight, 3<<28 allocated 16 GiB), and the ring still
// splits the key space by weight.
func TestHashRingCappedUnderHugeWeights(t *testing.T) {
	u, _, _ := newTestUpstream(t, balancer(BalancerHash, "X-User"))
	u.Update([]Endpoint{{Addr: "a:1", Weight: 3 << 16}, {Addr: "b:1", Weight: 1 << 16}})
	ring := u.set.Load().ring
	if n := len(ring.points); n > maxRingPoints {
		t.Fatalf("ring has %d points, cap %d", n, maxRingPoints)
	}
	got := count(t, u, 0, "")
	for i := range 4000 {
		p := mustPick(t, u, fmt.Sprint("user-", i))
		got[p.Addr()]++
		p.Done(ok200)
	}
	if got["b:1"] < 600 || got["b:1"] > 1400 {
		t.Fatalf("keys per endpoint %v, want about 3000/1000", got)
	}
}

// Weights as large as Consul accepts keep the weighted balancer's running
// total within int64: a sum that overflowed went negative, and the pick
// panicked (rand.Int64N) after counting the attempt in flight.
func TestWeightedHugeWeights(t *testing.T) {
	u, _, _ := newTestUpstream(t, balancer(BalancerWeighted, ""))
	u.Update([]Endpoint{{Addr: "a:1", Weight: 1 << 62}, {Addr: "b:1", Weight: 1 << 62}, {Addr: "c:1", Weight: 1 << 61}})
	got := count(t, u, 4000, "")
	if got["a:1"] < 1200 || got["b:1"] < 1200 || got["c:1"] < 600 || got["c:1"] > 1400 {
		t.Fatalf("picks %v, want about 1600/1600/800", got)
	}
	if n := u.InFlight(); n != 0 {
		t.Fatalf("%d attempts left in flight", n)
	}
}

// survivors builds a service of ten endpoints, e0:1 to e9:1, and opens the
// breakers of the first eight: only e8:1 and e9:1 are available, and both
// come after a run of unavailable members.
func survivors(t *testing.T, b Balancer) *Upstream {
	t.Helper()
	addrs := make([]string, 10)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("e%d:1", i)
	}
	u, _, _ := newTestUpstream(t, func(s *Settings) {
		balancer(b, "")(s)
		s.Breaker = BreakerSettings{ConsecutiveFailures: 1, OpenDuration: time.Minute, HalfOpenProbes: 1, FailureStatuses: []int{503}}
		s.Outlier.Consecutive5xx = 0
	}, addrs...)
	for _, a := range addrs[:8] {
		failOn(t, u, a, 1, bad503)
	}
	return u
}

// The available endpoints share the picks as the balancer promises,
// wherever the unavailable ones sit in discovery's order: taking the
// first available member after the one drawn gave the member after a run
// of open breakers that whole run's share (e8 got 90% of the picks under
// round_robin and random, 75% under p2c).
func TestBalancersSpreadEvenlyOverSurvivors(t *testing.T) {
	for _, b := range []Balancer{BalancerP2C, BalancerRoundRobin, BalancerRandom, BalancerWeighted} {
		t.Run(string(b), func(t *testing.T) {
			u := survivors(t, b)
			const n = 20000
			got := count(t, u, n, "")
			want, tol := n/2.0, 5*math.Sqrt(n*0.25) // 5 standard deviations
			if b == BalancerRoundRobin {
				tol = 0 // in turn: exactly even
			}
			for _, a := range []string{"e8:1", "e9:1"} {
				if math.Abs(float64(got[a])-want) > tol {
					t.Fatalf("%s got %d picks, want %.0f±%.0f: %v", a, got[a], want, tol, got)
				}
			}
		})
	}
}

// p2c compares two available endpoints whenever two are available, also
// when a draw hit an unavailable one: the busier of the two survivors is
// never picked while the other is idle.
func TestP2CComparesTwoAvailable(t *testing.T) {
	u := survivors(t, BalancerP2C)
	var held []Pick
	for range 5 {
		held = append(held, mustPick(t, u, "", "e9:1"))
	}
	got := count(t, u, 2000, "")
	if got["e9:1"] != 2000 {
		t.Fatalf("picks %v, want all 2000 on the idle e9:1", got)
	}
	for _, p := range held {
		p.Done(ok200)
	}
}
