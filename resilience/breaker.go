package resilience

import (
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
)

// BreakerState is the state of an endpoint's circuit breaker.
type BreakerState uint8

const (
	// BreakerClosed: requests flow.
	BreakerClosed BreakerState = iota
	// BreakerHalfOpen: a few probe requests are let through to test the
	// endpoint.
	BreakerHalfOpen
	// BreakerOpen: the endpoint is skipped until the open duration ends.
	BreakerOpen
	// BreakerDisabled: the service has no breaker.
	BreakerDisabled
)

var breakerStateNames = [...]string{"closed", "half-open", "open", "disabled"}

// String returns "closed", "half-open", "open" or "disabled".
func (s BreakerState) String() string {
	if int(s) < len(breakerStateNames) {
		return breakerStateNames[s]
	}
	return "unknown"
}

// MarshalText makes the state print by name in JSON (admin /upstreams).
func (s BreakerState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

func fromGobreaker(s gobreaker.State) BreakerState {
	switch s {
	case gobreaker.StateOpen:
		return BreakerOpen
	case gobreaker.StateHalfOpen:
		return BreakerHalfOpen
	default:
		return BreakerClosed
	}
}

// breaker is one endpoint's circuit breaker: a gobreaker CircuitBreaker that
// counts outcomes and decides when to trip and when to close again, plus a
// lock-free mirror of its state that Pick reads.
//
// Why not gobreaker's TwoStepCircuitBreaker directly: its Allow returns a
// fresh closure per request (one heap allocation on the hot path) and takes
// the breaker's mutex twice per request; and gobreaker reads time.Now, so an
// open period could only be tested by sleeping. Instead:
//
//   - admission (Pick) reads the mirrored state atomically: closed admits;
//     open admits nothing until OpenDuration has passed on ferry's Clock;
//     half-open admits up to HalfOpenProbes probes (an atomic counter).
//   - the outcome (Done) is recorded with CircuitBreaker.Execute and a
//     static function returning a sentinel error: one synchronous
//     before/after pair, no allocation. Outcomes of attempts admitted
//     under an earlier state are dropped (the generation check below), as
//     gobreaker does with its own generations. A state change gobreaker
//     makes inside that Execute is the outcome's doing, and record
//     returns it for the attempt's Effect: every call into gobreaker that
//     can change its state is made under mu, so no other attempt's change
//     can be taken for this one's. With only the
//     consecutive-failures trigger on, a success while no failure streak
//     runs cannot change anything gobreaker decides, so it is not recorded
//     at all: the common request touches no lock of the breaker.
//   - gobreaker's Timeout is 1ns, so its open state yields to half-open as
//     soon as the wrapper asks (State) once ferry's clock says the open
//     period is over. While the mirror says open nothing calls into
//     gobreaker except Counts, so its own clock never decides anything.
//
// gobreaker's closed-state window (Interval/BucketPeriod) still runs on the
// wall clock.
type breaker struct {
	cb      *gobreaker.CircuitBreaker[struct{}]
	clock   Clock
	openFor time.Duration
	probes  int32
	// notify tells the Observer of a state change; it reports whether it
	// did (a retired Upstream's changes are not reported).
	notify func(from, to BreakerState) bool

	// mu serialises recording outcomes and the open -> half-open move, so
	// a generation check and the Execute it guards are atomic.
	mu sync.Mutex

	// countAll is set when the failure-ratio trigger is on: then every
	// outcome counts. Otherwise only failures and the successes that end a
	// failure streak change gobreaker's decision, and streak tells whether
	// one is running.
	countAll bool
	streak   atomic.Bool

	// moved is the state change made by the Execute that record is
	// running (under mu): from the first change's state to the last's.
	moved    Effect
	movedAny bool

	state      atomic.Uint32 // BreakerState
	gen        atomic.Uint64 // bumped on every state change
	openedAt   atomic.Int64  // clock reading (UnixNano) when last opened
	probesUsed atomic.Int32  // probes admitted in this half-open period
}

var (
	errAttemptFailed  = errors.New("attempt failed")
	errAttemptIgnored = errors.New("attempt canceled by client")
)

func succeeded() (struct{}, error) { return struct{}{}, nil }
func failed() (struct{}, error)    { return struct{}{}, errAttemptFailed }
func ignored() (struct{}, error)   { return struct{}{}, errAttemptIgnored }

// newBreaker returns nil when the settings have no trigger on.
// notify may be nil: then every change counts as reported.
func newBreaker(name string, s *BreakerSettings, clock Clock, notify func(from, to BreakerState) bool) *breaker {
	if !s.Enabled() {
		return nil
	}
	b := &breaker{
		clock:    clock,
		openFor:  s.OpenDuration,
		probes:   int32(s.HalfOpenProbes),
		notify:   notify,
		countAll: s.FailureRatio > 0,
	}
	consecutive := uint32(max(s.ConsecutiveFailures, 0))
	ratio := s.FailureRatio
	minRequests := uint32(max(s.MinRequests, 1))
	st := gobreaker.Settings{
		Name:        name,
		MaxRequests: uint32(s.HalfOpenProbes),
		Timeout:     time.Nanosecond,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			if consecutive > 0 && c.ConsecutiveFailures >= consecutive {
				return true
			}
			done := c.TotalSuccesses + c.TotalFailures
			return ratio > 0 && done >= minRequests && float64(c.TotalFailures) >= ratio*float64(done)
		},
		OnStateChange: b.onStateChange,
		IsExcluded:    func(err error) bool { return err == errAttemptIgnored },
	}
	if s.Window > 0 {
		// gobreaker rounds Interval up to whole buckets by adding a
		// BucketPeriod to it, which overflows for a window of more than
		// about 2329000h and leaves it no bucket at all (the first outcome
		// then panics). A window of maxBreakerWindow, 146 years, clears its
		// counts no sooner than a longer one in any process's life.
		w := min(s.Window, maxBreakerWindow)
		st.Interval = w
		st.BucketPeriod = w / windowBuckets
	}
	b.cb = gobreaker.NewCircuitBreaker[struct{}](st)
	return b
}

// maxBreakerWindow is the longest window handed to gobreaker: any longer
// one never clears either, and its arithmetic stays within int64.
const maxBreakerWindow = time.Duration(math.MaxInt64 / 2)

// testHookStateChanging, when set, runs in the middle of a state change,
// between its two writes (tests).
var testHookStateChanging func()

// onStateChange runs inside gobreaker, under its mutex, in the goroutine
// that caused the change (which holds b.mu).
func (b *breaker) onStateChange(_ string, from, to gobreaker.State) {
	f, t := fromGobreaker(from), fromGobreaker(to)
	switch t {
	case BreakerOpen:
		b.openedAt.Store(b.clock.Now().UnixNano())
	case BreakerHalfOpen:
		b.probesUsed.Store(0)
	}
	b.streak.Store(false) // gobreaker cleared its counts
	// The state before the generation: admit, which reads them the other
	// way round without the lock, then never pairs the new generation
	// with the old state. (The other order let an attempt admitted by the
	// closed breaker take the open one's generation, and its outcome,
	// counted in the half-open state gobreaker moves to at once, could
	// close the breaker the moment it opened.)
	b.state.Store(uint32(t))
	if testHookStateChanging != nil {
		testHookStateChanging()
	}
	b.gen.Add(1)
	if b.notify != nil && !b.notify(f, t) {
		return // not reported: no outcome's Effect claims it either
	}
	if !b.movedAny {
		b.moved.From, b.movedAny = f, true
	}
	b.moved.To = t
}

// current returns the mirrored state.
func (b *breaker) current() BreakerState {
	if b == nil {
		return BreakerDisabled
	}
	return BreakerState(b.state.Load())
}

// shown is the state as the admin page shows it at now (UnixNano).
func (b *breaker) shown(now int64) BreakerState {
	st := b.current()
	if st == BreakerOpen && now-b.openedAt.Load() >= int64(b.openFor) {
		return BreakerHalfOpen
	}
	return st
}

// ready reports, without side effects, whether admit would likely succeed.
func (b *breaker) ready(now *lazyNow) bool {
	if b == nil {
		return true
	}
	switch BreakerState(b.state.Load()) {
	case BreakerClosed:
		return true
	case BreakerOpen:
		return b.openElapsed(now)
	default:
		return b.probesUsed.Load() < b.probes
	}
}

// admitsAt is ready at now (UnixNano): whether the breaker would admit an
// attempt, so that its endpoint counts as in rotation.
func (b *breaker) admitsAt(now int64) bool {
	return b.ready(&lazyNow{nanos: now, read: true})
}

func (b *breaker) openElapsed(now *lazyNow) bool {
	return now.get()-b.openedAt.Load() >= int64(b.openFor)
}

// admit asks to send one attempt. It returns the generation to hand back to
// record, and whether the attempt is a half-open probe.
func (b *breaker) admit(now *lazyNow) (gen uint64, probe, ok bool) {
	if b == nil {
		return 0, false, true
	}
	gen = b.gen.Load() // before the state: a change in between makes gen stale
	switch BreakerState(b.state.Load()) {
	case BreakerClosed:
		return gen, false, true
	case BreakerOpen:
		if !b.openElapsed(now) || !b.toHalfOpen() {
			return 0, false, false
		}
	}
	// Half-open: the probe slot and its generation are taken together,
	// under the lock state changes take. A probe holding a slot of one
	// half-open period with the generation of another would have its
	// outcome dropped, and the slot would never come back: the breaker
	// would refuse everything for good.
	b.mu.Lock()
	defer b.mu.Unlock()
	if BreakerState(b.state.Load()) != BreakerHalfOpen || b.probesUsed.Load() >= b.probes {
		return 0, false, false
	}
	b.probesUsed.Add(1)
	return b.gen.Load(), true, true
}

// toHalfOpen moves an open breaker whose open period is over to half-open.
// It reports whether the breaker is half-open afterwards.
func (b *breaker) toHalfOpen() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if BreakerState(b.state.Load()) == BreakerOpen {
		// gobreaker's own 1ns timeout has long expired: State moves it to
		// half-open, and onStateChange updates the mirror.
		b.cb.State()
	}
	return BreakerState(b.state.Load()) == BreakerHalfOpen
}

// record reports the outcome of an attempt admitted under generation gen.
// It returns the state change that outcome caused, if any (only From and
// To are set).
func (b *breaker) record(gen uint64, probe bool, v verdict) Effect {
	if b == nil {
		return Effect{}
	}
	if v != verdictFailure && !b.countAll && !b.streak.Load() && BreakerState(b.state.Load()) == BreakerClosed {
		// A closed breaker that counts consecutive failures only, with no
		// failure since the last success: this outcome changes nothing
		// gobreaker decides on (only its success and request totals), so
		// skip its mutex and its two clock reads. This is the hot path.
		return Effect{}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.moved, b.movedAny = Effect{}, false
	if b.gen.Load() == gen {
		if probe && v == verdictIgnored {
			b.probesUsed.Add(-1) // the probe told nothing: let another one go
		}
		switch v {
		case verdictSuccess:
			_, _ = b.cb.Execute(succeeded)
			b.streak.Store(false)
		case verdictFailure:
			_, _ = b.cb.Execute(failed)
			b.streak.Store(BreakerState(b.state.Load()) == BreakerClosed)
		default:
			_, _ = b.cb.Execute(ignored)
		}
	}
	// An attempt admitted under an earlier generation (another outcome
	// changed the state since) changes nothing: the zero Effect.
	return b.moved
}

// openUntil returns when an open breaker will let probes through.
func (b *breaker) openUntil(now int64) time.Time {
	if b == nil || b.shown(now) != BreakerOpen {
		return time.Time{}
	}
	return time.Unix(0, addNanos(b.openedAt.Load(), b.openFor))
}

// counts returns gobreaker's counts for the current generation.
func (b *breaker) counts() gobreaker.Counts {
	if b == nil {
		return gobreaker.Counts{}
	}
	return b.cb.Counts()
}
