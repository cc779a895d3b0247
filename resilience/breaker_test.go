package resilience

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func breakerOnly(s *Settings) {
	s.Outlier.Consecutive5xx = 0
	s.Breaker = BreakerSettings{
		ConsecutiveFailures: 3,
		OpenDuration:        10 * time.Second,
		HalfOpenProbes:      1,
		FailureStatuses:     []int{502, 503, 504},
	}
}

func TestBreakerOpensSkipsHalfOpensCloses(t *testing.T) {
	u, clk, rec := newTestUpstream(t, breakerOnly, "a:1", "b:1")

	// Three failures on a (a connect failure, a 503, a broken body) open it.
	for _, o := range []Outcome{refuse, bad503, {Result: BodyBroken, Status: 200}} {
		mustPick(t, u, "", "b:1").Done(o)
	}
	if st := statusOf(t, u, "a:1"); st.Breaker != BreakerOpen || !st.OpenUntil.Equal(epoch.Add(10*time.Second)) {
		t.Fatalf("a after 3 failures: breaker %s open until %v", st.Breaker, st.OpenUntil)
	}
	if got := rec.take(); !slices.Equal(got, []string{"breaker files a:1 closed->open"}) {
		t.Fatalf("events = %q", got)
	}

	// Open: every pick goes to b; a alone is unavailable with a reason.
	for range 50 {
		p := mustPick(t, u, "")
		if p.Addr() != "b:1" {
			t.Fatalf("picked %s while its breaker is open", p.Addr())
		}
		p.Done(ok200)
	}
	_, err := u.Pick("", []string{"b:1"})
	var ue *UnavailableError
	if !errors.Is(err, ErrAllUnavailable) || !errors.As(err, &ue) || ue.Open != 1 || ue.Tried != 1 {
		t.Fatalf("Pick with b excluded: %v", err)
	}
	if !strings.Contains(err.Error(), "1 circuit breaker open") {
		t.Fatalf("reason does not say the breaker is open: %v", err)
	}

	// Just before the open period ends nothing changes.
	clk.Advance(10*time.Second - time.Nanosecond)
	if _, err := u.Pick("", []string{"b:1"}); !errors.Is(err, ErrAllUnavailable) {
		t.Fatalf("before open_duration: %v", err)
	}

	// Then one probe (half_open_probes 1) is let through, and only one.
	clk.Advance(time.Nanosecond)
	probe := mustPick(t, u, "", "b:1")
	if probe.Addr() != "a:1" || !probe.Probe() {
		t.Fatalf("probe = %s probe=%v", probe.Addr(), probe.Probe())
	}
	if _, err := u.Pick("", []string{"b:1"}); !errors.As(err, &ue) || ue.Probing != 1 {
		t.Fatalf("second probe admitted or wrong reason: %v", err)
	}
	if st := statusOf(t, u, "a:1"); st.Breaker != BreakerHalfOpen {
		t.Fatalf("state during probe = %s", st.Breaker)
	}
	probe.Done(ok200)
	if st := statusOf(t, u, "a:1"); st.Breaker != BreakerClosed {
		t.Fatalf("after successful probe = %s", st.Breaker)
	}
	want := []string{"breaker files a:1 open->half-open", "breaker files a:1 half-open->closed"}
	if got := rec.take(); !slices.Equal(got, want) {
		t.Fatalf("events = %q, want %q", got, want)
	}
	mustPick(t, u, "", "b:1").Done(ok200)
}

func TestBreakerFailedProbeReopens(t *testing.T) {
	u, clk, _ := newTestUpstream(t, breakerOnly, "a:1")
	for range 3 {
		mustPick(t, u, "").Done(Outcome{Result: TimedOut})
	}
	clk.Advance(10 * time.Second)
	mustPick(t, u, "").Done(Outcome{Result: TransportFailed})
	st := statusOf(t, u, "a:1")
	if st.Breaker != BreakerOpen || !st.OpenUntil.Equal(epoch.Add(20*time.Second)) {
		t.Fatalf("after failed probe: %s until %v", st.Breaker, st.OpenUntil)
	}
	clk.Advance(9 * time.Second)
	if _, err := u.Pick("", nil); !errors.Is(err, ErrAllUnavailable) {
		t.Fatalf("reopened breaker admitted a request: %v", err)
	}
}

func TestBreakerCanceledProbeFreesSlot(t *testing.T) {
	u, clk, _ := newTestUpstream(t, breakerOnly, "a:1")
	for range 3 {
		mustPick(t, u, "").Done(refuse)
	}
	clk.Advance(10 * time.Second)
	mustPick(t, u, "").Done(cancel) // says nothing about a
	if st := statusOf(t, u, "a:1"); st.Breaker != BreakerHalfOpen {
		t.Fatalf("after canceled probe: %s", st.Breaker)
	}
	mustPick(t, u, "").Done(ok200)
	if st := statusOf(t, u, "a:1"); st.Breaker != BreakerClosed {
		t.Fatalf("after second probe: %s", st.Breaker)
	}
}

func TestBreakerSeveralProbes(t *testing.T) {
	u, clk, _ := newTestUpstream(t, func(s *Settings) {
		breakerOnly(s)
		s.Breaker.HalfOpenProbes = 3
	}, "a:1")
	for range 3 {
		mustPick(t, u, "").Done(refuse)
	}
	clk.Advance(10 * time.Second)
	probes := []Pick{mustPick(t, u, ""), mustPick(t, u, ""), mustPick(t, u, "")}
	if _, err := u.Pick("", nil); !errors.Is(err, ErrAllUnavailable) {
		t.Fatalf("fourth probe admitted: %v", err)
	}
	for i, p := range probes {
		p.Done(ok200)
		want := BreakerHalfOpen
		if i == 2 {
			want = BreakerClosed
		}
		if st := statusOf(t, u, "a:1"); st.Breaker != want {
			t.Fatalf("after %d successful probes: %s, want %s", i+1, st.Breaker, want)
		}
	}
}

func TestBreakerIgnoresCancellationAndSuccessResets(t *testing.T) {
	u, _, _ := newTestUpstream(t, breakerOnly, "a:1")
	seq := []Outcome{refuse, refuse, cancel, cancel, ok200, refuse, refuse, {Result: Responded, Status: 500}}
	for _, o := range seq {
		mustPick(t, u, "").Done(o)
	}
	// 500 is not in failure_statuses: a success for the breaker.
	if st := statusOf(t, u, "a:1"); st.Breaker != BreakerClosed {
		t.Fatalf("breaker %s after %v", st.Breaker, seq)
	}
	mustPick(t, u, "").Done(refuse)
	mustPick(t, u, "").Done(refuse)
	if st := statusOf(t, u, "a:1"); st.Breaker != BreakerClosed {
		t.Fatalf("two failures after a success opened it")
	}
	mustPick(t, u, "").Done(refuse)
	if st := statusOf(t, u, "a:1"); st.Breaker != BreakerOpen {
		t.Fatalf("three failures in a row left it %s", st.Breaker)
	}
}

func TestBreakerFailureRatio(t *testing.T) {
	u, _, _ := newTestUpstream(t, func(s *Settings) {
		breakerOnly(s)
		s.Breaker.ConsecutiveFailures = 0
		s.Breaker.FailureRatio = 0.5
		s.Breaker.MinRequests = 10
		s.Breaker.Window = time.Hour
	}, "a:1")
	// 4 failures, 4 successes interleaved: 8 < min_requests.
	for range 4 {
		mustPick(t, u, "").Done(refuse)
		mustPick(t, u, "").Done(ok200)
	}
	// Cancellations do not count towards min_requests.
	for range 5 {
		mustPick(t, u, "").Done(cancel)
	}
	mustPick(t, u, "").Done(ok200) // 9 done: 4 failed
	if st := statusOf(t, u, "a:1"); st.Breaker != BreakerClosed {
		t.Fatalf("opened below min_requests: %s", st.Breaker)
	}
	mustPick(t, u, "").Done(refuse) // 10 done: 5 failed = 0.5
	if st := statusOf(t, u, "a:1"); st.Breaker != BreakerOpen {
		t.Fatalf("ratio 0.5 over 10 requests left it %s", st.Breaker)
	}
}

func TestBreakerDropsLateOutcomes(t *testing.T) {
	u, clk, _ := newTestUpstream(t, breakerOnly, "a:1")
	late := mustPick(t, u, "") // admitted while closed
	for range 3 {
		mustPick(t, u, "").Done(refuse)
	}
	clk.Advance(10 * time.Second)
	probe := mustPick(t, u, "")
	// The attempt admitted before the breaker opened succeeds now: it must
	// not count as the probe's success and close the breaker.
	late.Done(ok200)
	if st := statusOf(t, u, "a:1"); st.Breaker != BreakerHalfOpen {
		t.Fatalf("late success changed the half-open breaker to %s", st.Breaker)
	}
	probe.Done(refuse)
	if st := statusOf(t, u, "a:1"); st.Breaker != BreakerOpen {
		t.Fatalf("failed probe left %s", st.Breaker)
	}
}

// A window as long as a duration goes (the config accepts up to
// 2562047h47m16.854775807s) works as a window that never clears. gobreaker
// rounds its interval up to whole buckets by adding a bucket to it, which
// overflowed for windows of more than about 2329000h and left it with no
// bucket: the first outcome recorded panicked (index out of range), so the
// breaker never opened and every request whose attempt failed lost its
// answer to the panic.
func TestBreakerLongestWindow(t *testing.T) {
	for _, w := range []time.Duration{2400000 * time.Hour, math.MaxInt64} {
		for _, ratio := range []float64{0, 0.5} {
			t.Run(fmt.Sprintf("%v/failure_ratio=%v", w, ratio), func(t *testing.T) {
				u, _, _ := newTestUpstream(t, func(s *Settings) {
					breakerOnly(s)
					s.Breaker.Window = w
					if ratio > 0 {
						s.Breaker.ConsecutiveFailures = 0
						s.Breaker.FailureRatio = ratio
						s.Breaker.MinRequests = 3
					}
				}, "a:1")
				for range 3 {
					mustPick(t, u, "").Done(refuse)
				}
				if st := statusOf(t, u, "a:1"); st.Breaker != BreakerOpen {
					t.Fatalf("3 failures in a row left the breaker %s", st.Breaker)
				}
			})
		}
	}
}

// A breaker open for the longest open_duration the config takes
// (2562047h47m16.854775807s) says in its status that it is open until the
// end of time as int64 nanoseconds count it. open_until was the opening
// time plus open_duration, which overflowed: /upstreams showed the breaker
// open until 1733.
func TestBreakerLongestOpenDuration(t *testing.T) {
	u, clk, _ := newTestUpstream(t, func(s *Settings) {
		breakerOnly(s)
		s.Breaker.OpenDuration = math.MaxInt64
	}, "a:1", "b:1")
	for range 3 {
		mustPick(t, u, "", "b:1").Done(refuse)
	}
	clk.Advance(100 * 365 * 24 * time.Hour)
	st := statusOf(t, u, "a:1")
	if st.Breaker != BreakerOpen || !st.OpenUntil.Equal(time.Unix(0, math.MaxInt64)) {
		t.Fatalf("a: breaker %s open until %v, want open until %v", st.Breaker, st.OpenUntil, time.Unix(0, math.MaxInt64).UTC())
	}
	if _, err := u.Pick("", []string{"b:1"}); !errors.Is(err, ErrAllUnavailable) {
		t.Fatalf("the open breaker admitted a pick: %v", err)
	}
}

func TestBreakerDisabled(t *testing.T) {
	u, _, _ := newTestUpstream(t, func(s *Settings) {
		breakerOnly(s)
		s.Breaker.ConsecutiveFailures = 0
	}, "a:1")
	for range 100 {
		mustPick(t, u, "").Done(refuse)
	}
	if st := statusOf(t, u, "a:1"); st.Breaker != BreakerDisabled || st.Failures != 100 {
		t.Fatalf("status = %+v", st)
	}
}

// admit itself enforces the probe limit (Pick also filters with ready, so
// this is what holds when two picks race for the last slot).
func TestBreakerAdmitLimitsProbes(t *testing.T) {
	clk := NewManualClock(epoch)
	s := BreakerSettings{ConsecutiveFailures: 1, OpenDuration: time.Second, HalfOpenProbes: 2}
	b := newBreaker("t", &s, clk, nil)
	now := func() *lazyNow { return &lazyNow{clock: clk} }
	gen, probe, ok := b.admit(now())
	if !ok || probe {
		t.Fatalf("closed breaker: ok=%v probe=%v", ok, probe)
	}
	b.record(gen, probe, verdictFailure)
	if _, _, ok := b.admit(now()); ok {
		t.Fatal("open breaker admitted")
	}
	clk.Advance(time.Second)
	for i := range 2 {
		if _, probe, ok := b.admit(now()); !ok || !probe {
			t.Fatalf("probe %d: ok=%v probe=%v", i, ok, probe)
		}
	}
	if _, _, ok := b.admit(now()); ok {
		t.Fatal("third probe admitted with half_open_probes 2")
	}
}

// Four goroutines drive one breaker through closed -> open -> half-open ->
// closed cycles as fast as they can: every closed attempt fails (opening
// it), every probe succeeds (closing it). A probe slot must never be lost:
// at the end the breaker must still admit.
func TestHalfOpenProbeSlotNeverLeaks(t *testing.T) {
	clk := NewManualClock(epoch)
	s := BreakerSettings{ConsecutiveFailures: 1, OpenDuration: time.Nanosecond, HalfOpenProbes: 1}
	b := newBreaker("t", &s, clk, nil)
	var wg sync.WaitGroup
	deadline := time.Now().Add(time.Second)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				if i%1024 == 0 && time.Now().After(deadline) {
					return
				}
				clk.Advance(time.Nanosecond)
				gen, probe, ok := b.admit(&lazyNow{clock: clk})
				if !ok {
					continue
				}
				if probe {
					b.record(gen, probe, verdictSuccess)
				} else {
					b.record(gen, probe, verdictFailure)
				}
			}
		}()
	}
	wg.Wait()
	clk.Advance(time.Second)
	if _, _, ok := b.admit(&lazyNow{clock: clk}); !ok {
		t.Fatalf("breaker wedged: state %s, probes used %d of %d, nothing in flight", b.current(), b.probesUsed.Load(), b.probes)
	}
}

// An attempt admitted while the breaker is changing state, between the
// change's writes, is never taken for one of the new state: here one
// picked as the breaker opens. Its success must not close the breaker,
// whose open period (a minute, the clock standing still) has not begun to
// run out.
func TestPickDuringTheBreakersOpeningIsNoProbe(t *testing.T) {
	u, _, _ := newTestUpstream(t, func(s *Settings) {
		breakerOnly(s)
		s.Breaker.ConsecutiveFailures = 1
		s.Breaker.OpenDuration = time.Minute
		s.Breaker.HalfOpenProbes = 1
	}, "a:1")
	first := mustPick(t, u, "")
	var during Pick
	var admitted bool
	testHookStateChanging = func() {
		testHookStateChanging = nil
		p, err := u.Pick("", nil)
		during, admitted = p, err == nil
	}
	defer func() { testHookStateChanging = nil }()
	first.Done(refuse)
	if st := statusOf(t, u, "a:1"); st.Breaker != BreakerOpen {
		t.Fatalf("after the failure the breaker is %s, want open", st.Breaker)
	}
	if !admitted {
		return // refused: nothing of it can count
	}
	e := during.Done(ok200)
	if st := statusOf(t, u, "a:1"); st.Breaker != BreakerOpen || e != (Effect{}) {
		t.Fatalf("the attempt picked as the breaker opened succeeded: the breaker is %s (effect %+v), want open for its minute", st.Breaker, e)
	}
}

// PickAt takes its caller's reading of the clock on the system clock
// only: an injected clock is read as Pick reads it, so a test that moves
// it sees its own time whatever the caller read.
func TestPickAtReadsAnInjectedClock(t *testing.T) {
	u, clk, _ := newTestUpstream(t, breakerOnly, "a:1")
	for range 3 {
		mustPick(t, u, "").Done(refuse)
	}
	// Open until epoch+10s on the injected clock.
	if _, err := u.PickAt("", nil, epoch.Add(time.Hour)); !errors.Is(err, ErrAllUnavailable) {
		t.Fatalf("PickAt with a reading past the open period, the clock before it: %v", err)
	}
	clk.Advance(10 * time.Second)
	if p, err := u.PickAt("", nil, epoch); err != nil || !p.Probe() {
		t.Fatalf("PickAt with a reading before the open period's end, the clock at it: %v (probe %v)", err, p.Probe())
	}
}

// On the system clock PickAt takes the caller's reading for now, and
// Pick reads the clock.
func TestPickAtTakesTheReadingOnTheSystemClock(t *testing.T) {
	s := DefaultSettings()
	breakerOnly(&s)
	s.Breaker.OpenDuration = time.Hour
	u, err := NewUpstream("files", s)
	if err != nil {
		t.Fatal(err)
	}
	u.Update([]Endpoint{{Addr: "a:1", Weight: 1}})
	for range 3 {
		mustPick(t, u, "").Done(refuse)
	}
	if _, err := u.Pick("", nil); !errors.Is(err, ErrAllUnavailable) {
		t.Fatalf("Pick within the open hour: %v", err)
	}
	if _, err := u.PickAt("", nil, time.Time{}); !errors.Is(err, ErrAllUnavailable) {
		t.Fatalf("PickAt with no reading within the open hour: %v", err)
	}
	if p, err := u.PickAt("", nil, time.Now().Add(2*time.Hour)); err != nil || !p.Probe() {
		t.Fatalf("PickAt with a reading past the open hour: %v (probe %v)", err, p.Probe())
	}
}
