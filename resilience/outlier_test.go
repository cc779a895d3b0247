package resilience

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

func outlierOnly(pct int) func(*Settings) {
	return func(s *Settings) {
		s.Breaker.ConsecutiveFailures = 0
		s.Outlier = OutlierSettings{
			Consecutive5xx:     3,
			BaseEjectionTime:   30 * time.Second,
			MaxEjectionTime:    100 * time.Second,
			MaxEjectionPercent: pct,
		}
	}
}

// failOn sends n 5xx outcomes to addr (others excluded).
func failOn(t *testing.T, u *Upstream, addr string, n int, o Outcome) {
	t.Helper()
	var others []string
	for _, st := range u.Status() {
		if st.Addr != addr {
			others = append(others, st.Addr)
		}
	}
	for range n {
		p := mustPick(t, u, "", others...)
		if p.Addr() != addr {
			t.Fatalf("picked %s, want %s", p.Addr(), addr)
		}
		p.Done(o)
	}
}

func ejectedAddrs(u *Upstream) []string {
	var out []string
	for _, st := range u.Status() {
		if !st.EjectedUntil.IsZero() {
			out = append(out, st.Addr)
		}
	}
	return out
}

func TestEjectionNeverRemovesLastEndpoint(t *testing.T) {
	u, _, rec := newTestUpstream(t, outlierOnly(100), "only:1")
	failOn(t, u, "only:1", 50, bad503)
	if got := ejectedAddrs(u); len(got) != 0 {
		t.Fatalf("the only endpoint was ejected: %v", got)
	}
	if ev := rec.take(); len(ev) != 0 {
		t.Fatalf("events: %q", ev)
	}

	// With two endpoints at 100%, one may go but never both.
	u, _, _ = newTestUpstream(t, outlierOnly(100), "a:1", "b:1")
	failOn(t, u, "a:1", 3, bad503)
	failOn(t, u, "b:1", 1, bad503) // a is ejected: b is the only choice anyway
	p := mustPick(t, u, "")
	p.Done(bad503)
	p = mustPick(t, u, "")
	p.Done(bad503)
	if got := ejectedAddrs(u); !slices.Equal(got, []string{"a:1"}) {
		t.Fatalf("ejected = %v, want [a:1]", got)
	}
	if p := mustPick(t, u, ""); p.Addr() != "b:1" {
		t.Fatalf("picked %s", p.Addr())
	} else {
		p.Done(ok200)
	}
}

func TestEjectionRespectsMaxPercent(t *testing.T) {
	for _, tc := range []struct {
		n, pct, want int
	}{
		{10, 10, 1},
		{10, 50, 5},
		{10, 100, 9},
		{3, 10, 1}, // at least one may go
		{4, 0, 1},  // even at 0%: Envoy's "at least one host"
		{1, 50, 0},
	} {
		t.Run(fmt.Sprintf("%d endpoints %d%%", tc.n, tc.pct), func(t *testing.T) {
			addrs := make([]string, tc.n)
			for i := range addrs {
				addrs[i] = fmt.Sprintf("10.0.0.%d:80", i)
			}
			u, _, rec := newTestUpstream(t, outlierOnly(tc.pct), addrs...)
			for _, a := range addrs {
				if slices.Contains(ejectedAddrs(u), a) {
					continue
				}
				var others []string
				for _, b := range addrs {
					if b != a {
						others = append(others, b)
					}
				}
				for range 3 {
					p, err := u.Pick("", others)
					if err != nil {
						t.Fatalf("Pick: %v", err)
					}
					p.Done(Outcome{Result: ConnectFailed})
				}
			}
			if got := len(ejectedAddrs(u)); got != tc.want {
				t.Fatalf("%d ejected, want %d", got, tc.want)
			}
			if got := len(rec.take()); got != tc.want {
				t.Fatalf("%d ejection events, want %d", got, tc.want)
			}
			// Whatever was ejected, a pick still succeeds.
			if _, err := u.Pick("", nil); err != nil {
				t.Fatalf("service unusable after ejections: %v", err)
			}
		})
	}
}

func TestEjectionTimeGrowsAndDecays(t *testing.T) {
	u, clk, rec := newTestUpstream(t, outlierOnly(50), "a:1", "b:1")
	eject := func() time.Time {
		t.Helper()
		failOn(t, u, "a:1", 3, Outcome{Result: TimedOut})
		return statusOf(t, u, "a:1").EjectedUntil
	}
	if until := eject(); !until.Equal(clk.Now().Add(30 * time.Second)) {
		t.Fatalf("first ejection until %v", until)
	}
	// Ejected: a is skipped, excluded b leaves nothing.
	if _, err := u.Pick("", []string{"b:1"}); !errors.Is(err, ErrAllUnavailable) {
		t.Fatalf("ejected endpoint picked: %v", err)
	}
	clk.Advance(30 * time.Second)
	if until := eject(); !until.Equal(clk.Now().Add(60 * time.Second)) {
		t.Fatalf("second ejection until %v, want 60s", until)
	}
	clk.Advance(60 * time.Second)
	if until := eject(); !until.Equal(clk.Now().Add(90 * time.Second)) {
		t.Fatalf("third ejection until %v, want 90s", until)
	}
	clk.Advance(90 * time.Second)
	if until := eject(); !until.Equal(clk.Now().Add(100 * time.Second)) {
		t.Fatalf("fourth ejection until %v, want the 100s cap", until)
	}
	// 100s out, then 3 x 30s healthy forgives 3 of 4 ejections: the next
	// one is the second in a row.
	clk.Advance(100*time.Second + 90*time.Second)
	if until := eject(); !until.Equal(clk.Now().Add(60 * time.Second)) {
		t.Fatalf("after a healthy spell: until %v, want 60s", until)
	}
	if st := statusOf(t, u, "a:1"); st.Ejections != 2 {
		t.Fatalf("ejections = %d", st.Ejections)
	}
	want := []string{
		"ejected files a:1 30s #1", "ejected files a:1 1m0s #2", "ejected files a:1 1m30s #3",
		"ejected files a:1 1m40s #4", "ejected files a:1 1m0s #2",
	}
	if got := rec.take(); !slices.Equal(got, want) {
		t.Fatalf("events = %q", got)
	}
}

func TestEjectionStreak(t *testing.T) {
	u, _, _ := newTestUpstream(t, outlierOnly(50), "a:1", "b:1")
	// Success resets the streak; cancellations neither count nor reset;
	// a 4xx is not the upstream's fault.
	for _, o := range []Outcome{bad503, bad503, ok200, bad503, cancel, bad503, {Result: Responded, Status: 404}, bad503, bad503} {
		failOn(t, u, "a:1", 1, o)
	}
	if got := ejectedAddrs(u); len(got) != 0 {
		t.Fatalf("ejected without 3 consecutive 5xx: %v", got)
	}
	failOn(t, u, "a:1", 1, Outcome{Result: Responded, Status: 500})
	if got := ejectedAddrs(u); !slices.Equal(got, []string{"a:1"}) {
		t.Fatalf("ejected = %v", got)
	}
}

// An Update that keeps only ejected endpoints must not leave the service
// ejected whole ("never the last one in rotation").
func TestUpdateNeverLeavesServiceWhollyEjected(t *testing.T) {
	u, _, _ := newTestUpstream(t, outlierOnly(50), "a:1", "b:1", "c:1", "d:1")
	failOn(t, u, "a:1", 3, bad503)
	if got := ejectedAddrs(u); len(got) != 1 || got[0] != "a:1" {
		t.Fatalf("ejected = %v", got)
	}
	u.Update([]Endpoint{{Addr: "a:1"}}) // discovery now lists only a
	p, err := u.Pick("", nil)
	if err != nil {
		t.Fatalf("the service's only endpoint stays ejected: %v", err)
	}
	p.Done(ok200)
}

// An endpoint whose breaker is open is out of rotation too: ejecting the
// only other one would leave the service with nothing to send to.
func TestEjectionSparesLastEndpointBesideOpenBreakers(t *testing.T) {
	u, _, _ := newTestUpstream(t, func(s *Settings) {
		s.Breaker.ConsecutiveFailures = 3 // on 502/503/504
		s.Outlier.Consecutive5xx = 5
		s.Outlier.MaxEjectionPercent = 50
	}, "a:1", "b:1")
	failOn(t, u, "a:1", 3, bad503)
	if st := statusOf(t, u, "a:1"); st.Breaker != BreakerOpen {
		t.Fatalf("a's breaker is %s, want open", st.Breaker)
	}
	// b answers 500s: its breaker stays closed, its 5xx streak grows.
	failOn(t, u, "b:1", 5, Outcome{Result: Responded, Status: 500})
	p, err := u.Pick("", nil)
	if err != nil {
		t.Fatalf("a's breaker is open and b was ejected: %v", err)
	}
	if p.Addr() != "b:1" {
		t.Fatalf("picked %s, want b:1", p.Addr())
	}
	p.Done(ok200)
}

// An Update that leaves, beside the ejected endpoints, only endpoints whose
// breaker is open must not leave the service with nothing in rotation
// either: an ejected one goes back.
func TestUpdateSparesLastEndpointBesideOpenBreakers(t *testing.T) {
	u, _, _ := newTestUpstream(t, func(s *Settings) {
		s.Breaker.ConsecutiveFailures = 3 // on 502/503/504
		s.Outlier.Consecutive5xx = 5
		s.Outlier.MaxEjectionPercent = 50
	}, "a:1", "b:1", "c:1")
	failOn(t, u, "a:1", 3, bad503)
	if st := statusOf(t, u, "a:1"); st.Breaker != BreakerOpen {
		t.Fatalf("a's breaker is %s, want open", st.Breaker)
	}
	failOn(t, u, "b:1", 5, Outcome{Result: Responded, Status: 500})
	if got := ejectedAddrs(u); !slices.Equal(got, []string{"b:1"}) {
		t.Fatalf("ejected = %v, want b:1 (c is in rotation)", got)
	}
	u.Update([]Endpoint{{Addr: "a:1"}, {Addr: "b:1"}}) // discovery drops c
	p, err := u.Pick("", nil)
	if err != nil {
		t.Fatalf("a's breaker is open and b stays ejected: %v", err)
	}
	if p.Addr() != "b:1" {
		t.Fatalf("picked %s, want b:1", p.Addr())
	}
	p.Done(ok200)
}

// An endpoint that an Update returned to rotation before its ejection
// ended is in rotation from then on: the time it spends there forgives
// its ejections ("every base_ejection_time back in rotation forgives
// one"), counted from its return, not from when the ejection would have
// ended.
func TestEarlyReturnCountsTowardForgiveness(t *testing.T) {
	u, clk, rec := newTestUpstream(t, outlierOnly(50), "a:1", "b:1")
	failOn(t, u, "a:1", 3, bad503) // #1: 30s
	clk.Advance(30 * time.Second)
	failOn(t, u, "a:1", 3, bad503)      // #2: 60s
	u.Update([]Endpoint{{Addr: "a:1"}}) // discovery lists only a: it goes back at once
	if st := statusOf(t, u, "a:1"); !st.EjectedUntil.IsZero() {
		t.Fatalf("a still ejected until %v", st.EjectedUntil)
	}
	u.Update([]Endpoint{{Addr: "a:1"}, {Addr: "b:1"}})
	// Two base times in rotation forgive both ejections: the next one is
	// the first in a row again.
	clk.Advance(60 * time.Second)
	failOn(t, u, "a:1", 3, bad503)
	want := []string{"ejected files a:1 30s #1", "ejected files a:1 1m0s #2", "ejected files a:1 30s #1"}
	if got := rec.take(); !slices.Equal(got, want) {
		t.Fatalf("events = %q, want %q", got, want)
	}
}

// A half-open breaker whose probes are all out admits nothing more: it is
// not in rotation, and ejecting the only other endpoint would leave the
// service with nothing to send to as soon as the probe fails.
func TestEjectionSparesLastEndpointBesideBusyHalfOpenBreaker(t *testing.T) {
	u, clk, _ := newTestUpstream(t, func(s *Settings) {
		s.Breaker.ConsecutiveFailures = 3 // on 502/503/504
		s.Breaker.OpenDuration = 10 * time.Second
		s.Outlier.Consecutive5xx = 5
		s.Outlier.MaxEjectionPercent = 50
	}, "a:1", "b:1")
	failOn(t, u, "a:1", 3, bad503)
	clk.Advance(10 * time.Second)
	probe := mustPick(t, u, "", "b:1")
	if !probe.Probe() || probe.Addr() != "a:1" {
		t.Fatalf("picked %s (probe %v), want a:1's probe", probe.Addr(), probe.Probe())
	}
	// While a's only probe is out, b answers 500s.
	failOn(t, u, "b:1", 5, Outcome{Result: Responded, Status: 500})
	probe.Done(bad503) // a opens again
	p, err := u.Pick("", nil)
	if err != nil {
		t.Fatalf("a's breaker is open again and b was ejected while a's probe was out: %v", err)
	}
	if p.Addr() != "b:1" {
		t.Fatalf("picked %s, want b:1", p.Addr())
	}
	p.Done(ok200)
}

// The ejection count the admin page shows is the one the next ejection
// would go on from: time back in rotation forgives as it does there, not
// only once another ejection happens.
func TestStatusEjectionsForgiven(t *testing.T) {
	u, clk, _ := newTestUpstream(t, outlierOnly(50), "a:1", "b:1")
	failOn(t, u, "a:1", 3, bad503) // #1: 30s
	clk.Advance(30 * time.Second)
	failOn(t, u, "a:1", 3, bad503) // #2: 60s
	if st := statusOf(t, u, "a:1"); st.Ejections != 2 {
		t.Fatalf("ejections %d, want 2", st.Ejections)
	}
	clk.Advance(60*time.Second + 30*time.Second) // the ejection ends, then one base time back
	if st := statusOf(t, u, "a:1"); st.Ejections != 1 {
		t.Fatalf("ejections %d one base time back in rotation, want 1", st.Ejections)
	}
	clk.Advance(30 * time.Second)
	if st := statusOf(t, u, "a:1"); st.Ejections != 0 {
		t.Fatalf("ejections %d two base times back in rotation, want 0", st.Ejections)
	}
}

// When an Update leaves nothing in rotation but ejected endpoints, the one
// that goes back is one whose breaker admits: returning one that is also
// behind an open breaker puts nothing back in rotation, and the service
// stays unavailable while an ejected endpoint with a closed breaker could
// serve it.
func TestUpdateReturnsAnEjectedEndpointThatCanServe(t *testing.T) {
	u, clk, _ := newTestUpstream(t, func(s *Settings) {
		s.Breaker = BreakerSettings{ConsecutiveFailures: 1, OpenDuration: 5 * time.Minute, HalfOpenProbes: 1, FailureStatuses: []int{503}}
		s.Outlier = OutlierSettings{Consecutive5xx: 1, BaseEjectionTime: 30 * time.Second, MaxEjectionTime: 300 * time.Second, MaxEjectionPercent: 100}
	}, "a:1", "b:1", "c:1")
	// b's 503 opens its breaker and ejects it; a's 500, a second later,
	// ejects a (c is in rotation) and leaves its breaker closed.
	failOn(t, u, "b:1", 1, bad503)
	clk.Advance(time.Second)
	failOn(t, u, "a:1", 1, Outcome{Result: Responded, Status: 500})
	if got := ejectedAddrs(u); !slices.Equal(got, []string{"a:1", "b:1"}) {
		t.Fatalf("ejected = %v, want a:1 and b:1", got)
	}
	if st := statusOf(t, u, "b:1"); st.Breaker != BreakerOpen {
		t.Fatalf("b's breaker is %s, want open", st.Breaker)
	}
	u.Update([]Endpoint{{Addr: "a:1"}, {Addr: "b:1"}}) // discovery drops c
	p, err := u.Pick("", nil)
	if err != nil {
		t.Fatalf("b's breaker is open and a stays ejected: %v", err)
	}
	if p.Addr() != "a:1" {
		t.Fatalf("picked %s, want a:1", p.Addr())
	}
	p.Done(ok200)
}

// The longest ejection times a config takes (up to 2562047h47m16.854775807s)
// eject for that long, or until the end of time as int64 nanoseconds can
// count it. The end of an ejection was now plus its length, which
// overflowed for one of more than about 236 years from 2026 into a time
// long past: the ejection was announced (Observer.Ejected) but the
// endpoint stayed in rotation. Its length, base_ejection_time times the
// ejections in a row, could overflow too: the fourth ejection of 2^62ns
// in a row wrapped around to 0s.
func TestLongestEjectionTimesEject(t *testing.T) {
	for _, tc := range []struct {
		name      string
		base, max time.Duration
	}{
		{"base and max the largest", math.MaxInt64, math.MaxInt64},
		{"base 250 years", 250 * 365 * 24 * time.Hour, math.MaxInt64},
		{"base 2^62ns", 1 << 62, math.MaxInt64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, clk, rec := newTestUpstream(t, func(s *Settings) {
				outlierOnly(50)(s)
				s.Outlier.BaseEjectionTime, s.Outlier.MaxEjectionTime = tc.base, tc.max
			}, "a:1", "b:1")
			// Each round ejects a, then an Update that leaves a alone puts it
			// back in rotation: the next ejection is the next in a row.
			for n := 1; n <= 4; n++ {
				u.Update([]Endpoint{{Addr: "a:1", Weight: 1}, {Addr: "b:1", Weight: 1}})
				failOn(t, u, "a:1", 3, bad503)
				ev := rec.take()
				if len(ev) != 1 || !strings.HasSuffix(ev[0], fmt.Sprintf(" #%d", n)) {
					t.Fatalf("ejection %d: events %q", n, ev)
				}
				if _, err := u.Pick("", []string{"b:1"}); !errors.Is(err, ErrAllUnavailable) {
					t.Fatalf("ejection %d (%s) left a:1 in rotation: pick without b: %v", n, ev[0], err)
				}
				// At least base_ejection_time, up to 200 years (what fits in
				// int64 nanoseconds from 2026 is about 236).
				if until := statusOf(t, u, "a:1").EjectedUntil; until.Before(clk.Now().Add(min(tc.base, 200*365*24*time.Hour))) {
					t.Fatalf("ejection %d (%s): ejected until %v", n, ev[0], until)
				}
				u.Update([]Endpoint{{Addr: "a:1", Weight: 1}})
			}
		})
	}
}
