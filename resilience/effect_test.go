package resilience

import (
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Two attempts in flight on one endpoint: the breaker opens on the second
// one's failure, whichever was picked first, and only that attempt's Done
// reports the transition. The observer hears of it once.
func TestDoneReportsTheTransitionItCaused(t *testing.T) {
	for _, order := range []string{"first picked fails last", "last picked fails last"} {
		t.Run(order, func(t *testing.T) {
			u, _, rec := newTestUpstream(t, func(s *Settings) {
				breakerOnly(s)
				s.Breaker.ConsecutiveFailures = 2
			}, "a:1")
			p1, p2 := mustPick(t, u, ""), mustPick(t, u, "")
			if order == "first picked fails last" {
				p1, p2 = p2, p1
			}
			if e := p1.Done(refuse); e != (Effect{}) {
				t.Fatalf("the first failure reports %+v, want nothing (the breaker is still closed)", e)
			}
			if e, want := p2.Done(refuse), (Effect{From: BreakerClosed, To: BreakerOpen}); e != want {
				t.Fatalf("the failure that opened the breaker reports %+v, want %+v", e, want)
			}
			if got := rec.take(); !slices.Equal(got, []string{"breaker files a:1 closed->open"}) {
				t.Fatalf("observer heard %q", got)
			}
		})
	}
}

// An attempt admitted while closed whose outcome comes after another
// attempt's failure opened the breaker reports nothing: it was dropped as
// late, and changed nothing.
func TestDoneOfLateAttemptReportsNothing(t *testing.T) {
	u, _, rec := newTestUpstream(t, func(s *Settings) {
		breakerOnly(s)
		s.Breaker.ConsecutiveFailures = 1
	}, "a:1")
	late, opener := mustPick(t, u, ""), mustPick(t, u, "")
	if e, want := opener.Done(refuse), (Effect{From: BreakerClosed, To: BreakerOpen}); e != want {
		t.Fatalf("opener reports %+v, want %+v", e, want)
	}
	for _, o := range []Outcome{refuse, bad503, ok200, cancel} {
		t.Run(o.Result.String(), func(t *testing.T) {
			if e := late.Done(o); e != (Effect{}) {
				t.Fatalf("late attempt's %v reports %+v, want nothing", o, e)
			}
		})
		late = Pick{} // Done once: later rounds check the zero Pick
	}
	if got := rec.take(); !slices.Equal(got, []string{"breaker files a:1 closed->open"}) {
		t.Fatalf("observer heard %q", got)
	}
}

// Half-open probes: the probe whose success closes the breaker reports
// half-open -> closed, the ones before it nothing; a failed probe reports
// half-open -> open, and a probe of the same period that fails after it
// nothing. The move from open to half-open is a pick's doing, not an
// outcome's: no Done reports it.
func TestDoneReportsProbeTransitions(t *testing.T) {
	u, clk, rec := newTestUpstream(t, func(s *Settings) {
		breakerOnly(s)
		s.Breaker.ConsecutiveFailures = 1
		s.Breaker.HalfOpenProbes = 2
	}, "a:1")
	mustPick(t, u, "").Done(refuse)
	clk.Advance(10 * time.Second)
	q1, q2 := mustPick(t, u, ""), mustPick(t, u, "")
	if !q1.Probe() || !q2.Probe() {
		t.Fatal("picks after the open period are not probes")
	}
	if e := q1.Done(ok200); e != (Effect{}) {
		t.Fatalf("first successful probe of two reports %+v, want nothing", e)
	}
	if e, want := q2.Done(ok200), (Effect{From: BreakerHalfOpen, To: BreakerClosed}); e != want {
		t.Fatalf("the probe that closed the breaker reports %+v, want %+v", e, want)
	}

	mustPick(t, u, "").Done(refuse)
	clk.Advance(10 * time.Second)
	q1, q2 = mustPick(t, u, ""), mustPick(t, u, "")
	if e, want := q1.Done(refuse), (Effect{From: BreakerHalfOpen, To: BreakerOpen}); e != want {
		t.Fatalf("the failed probe reports %+v, want %+v", e, want)
	}
	if e := q2.Done(refuse); e != (Effect{}) {
		t.Fatalf("a probe failing after the breaker reopened reports %+v, want nothing", e)
	}
	want := []string{
		"breaker files a:1 closed->open", "breaker files a:1 open->half-open", "breaker files a:1 half-open->closed",
		"breaker files a:1 closed->open", "breaker files a:1 open->half-open", "breaker files a:1 half-open->open",
	}
	if got := rec.take(); !slices.Equal(got, want) {
		t.Fatalf("observer heard %q, want %q", got, want)
	}
}

// A tunnel's 101 (Keep) reports what it did as Done does.
func TestKeepReportsTheTransitionItCaused(t *testing.T) {
	u, clk, _ := newTestUpstream(t, func(s *Settings) {
		breakerOnly(s)
		s.Breaker.ConsecutiveFailures = 1
	}, "a:1")
	mustPick(t, u, "").Done(refuse)
	clk.Advance(10 * time.Second)
	slot, e := mustPick(t, u, "").Keep(ok200)
	defer slot.Release()
	if want := (Effect{From: BreakerHalfOpen, To: BreakerClosed}); e != want {
		t.Fatalf("the probe's 101 reports %+v, want %+v", e, want)
	}
	if _, e := (Pick{}).Keep(ok200); e != (Effect{}) {
		t.Fatalf("the zero Pick's Keep reports %+v", e)
	}
}

// Ejection: only the outcome that ejected the endpoint reports it, with
// the ejection's length; another attempt failing on the ejected endpoint
// reports nothing, nor does a service without a breaker report breaker
// transitions.
func TestDoneReportsTheEjectionItCaused(t *testing.T) {
	u, _, rec := newTestUpstream(t, func(s *Settings) {
		outlierOnly(50)(s)
		s.Outlier.Consecutive5xx = 1
	}, "a:1", "b:1")
	p1 := mustPick(t, u, "", "b:1")
	p2 := mustPick(t, u, "", "b:1")
	if e, want := p1.Done(bad503), (Effect{Ejected: 30 * time.Second}); e != want {
		t.Fatalf("the ejecting failure reports %+v, want %+v", e, want)
	}
	if e := p2.Done(bad503); e != (Effect{}) {
		t.Fatalf("a failure on the endpoint already ejected reports %+v, want nothing", e)
	}
	if got := rec.take(); !slices.Equal(got, []string{"ejected files a:1 30s #1"}) {
		t.Fatalf("observer heard %q", got)
	}
	if e := mustPick(t, u, "").Done(bad503); e != (Effect{}) {
		t.Fatalf("a failure past max_ejection_percent reports %+v, want nothing", e)
	}
}

// A retired Upstream reports nothing, as its Observer hears nothing: its
// breakers no longer describe the service.
func TestRetiredDoneReportsNothing(t *testing.T) {
	u, _, rec := newTestUpstream(t, func(s *Settings) {
		breakerOnly(s)
		s.Breaker.ConsecutiveFailures = 1
	}, "a:1")
	p := mustPick(t, u, "")
	u.Retire()
	if e := p.Done(refuse); e != (Effect{}) {
		t.Fatalf("retired upstream's Done reports %+v", e)
	}
	if got := rec.take(); len(got) != 0 {
		t.Fatalf("observer heard %q", got)
	}
	if st := statusOf(t, u, "a:1"); st.Breaker != BreakerOpen {
		t.Fatalf("the retired upstream's breaker is %s: the outcome still counts", st.Breaker)
	}
}

// The common outcome reports nothing and allocates nothing.
func TestDoneAllocatesNothing(t *testing.T) {
	u, _, _ := newTestUpstream(t, breakerOnly, "a:1", "b:1")
	if n := testing.AllocsPerRun(1000, func() {
		p, err := u.Pick("", nil)
		if err != nil {
			t.Fatal(err)
		}
		if e := p.Done(ok200); e != (Effect{}) {
			t.Fatalf("a success on a closed breaker reports %+v", e)
		}
	}); n != 0 {
		t.Fatalf("Pick and Done: %v allocations, want 0", n)
	}
}

// Attempts from several goroutines overlap on two endpoints whose
// breakers open, probe, close and reopen and which are ejected and come
// back: every transition and ejection the Observer hears of is reported
// by exactly one Done, and no Done reports one it did not hear of
// (open -> half-open, a Pick's doing, aside). Rounds go on until every
// kind of change was seen (interleavings differ from run to run).
func TestEffectsMatchObserverUnderConcurrency(t *testing.T) {
	u, clk, rec := newTestUpstream(t, func(s *Settings) {
		s.Breaker = BreakerSettings{ConsecutiveFailures: 2, OpenDuration: time.Millisecond, HalfOpenProbes: 2, FailureStatuses: []int{503}}
		s.Outlier = OutlierSettings{Consecutive5xx: 3, BaseEjectionTime: time.Millisecond, MaxEjectionTime: time.Millisecond, MaxEjectionPercent: 50}
	}, "a:1", "b:1")
	seen := map[string]int{}
	for round := 0; round < 100 && (seen["ejected"] == 0 || seen["closed->open"] == 0 || seen["half-open->closed"] == 0 || seen["half-open->open"] == 0); round++ {
		reported := effectsRound(u, clk)
		heard := map[string]int{}
		for _, ev := range rec.take() {
			switch {
			case strings.HasPrefix(ev, "ejected "):
				heard["ejected"]++
			case strings.HasSuffix(ev, "open->half-open"):
			default:
				heard[strings.Fields(ev)[3]]++ // breaker files a:1 from->to
			}
		}
		if !maps.Equal(heard, reported) {
			t.Fatalf("round %d: the Observer heard %v, the Done calls reported %v", round, heard, reported)
		}
		for k, n := range heard {
			seen[k] += n
		}
	}
	if seen["ejected"] == 0 || seen["closed->open"] == 0 || seen["half-open->closed"] == 0 || seen["half-open->open"] == 0 {
		t.Fatalf("100 rounds did not go through every kind of change: %v", seen)
	}
}

// effectsRound runs overlapping attempts from four goroutines, most of
// them failing, and counts the changes their Done calls report.
func effectsRound(u *Upstream, clk *ManualClock) map[string]int {
	var mu sync.Mutex
	reported := map[string]int{}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var held []Pick
			for i := range 1000 {
				if i%7 == 0 {
					clk.Advance(time.Millisecond / 2)
				}
				if p, err := u.Pick("", nil); err == nil {
					held = append(held, p)
				}
				if len(held) == 0 || len(held) < 1+(g+i)%3 {
					continue // keep a few attempts in flight, overlapping others'
				}
				o := ok200
				if (i*(g+1))%5 < 3 {
					o = bad503
				}
				e := held[0].Done(o)
				held = held[1:]
				mu.Lock()
				if e.Transitioned() {
					reported[e.From.String()+"->"+e.To.String()]++
				}
				if e.Ejected > 0 {
					reported["ejected"]++
				}
				mu.Unlock()
			}
			for _, p := range held {
				p.Done(cancel)
			}
		}()
	}
	wg.Wait()
	return reported
}
