package sidecar

import (
	"context"
	"math"
	"sync"
	"time"
)

// monoBase anchors monoNow.
var monoBase = time.Now()

// monoNow is the monotonic clock in nanoseconds, cheap to store in an
// atomic and to compare.
func monoNow() int64 { return int64(time.Since(monoBase)) }

// monoOf is t, a time.Now() reading, on monoNow's clock, read from its
// monotonic part: no clock read.
func monoOf(t time.Time) int64 { return int64(t.Sub(monoBase)) }

// monoOr is now, a monoNow() reading its caller took a moment ago with
// nothing waited on since, or a fresh reading when now is 0 (none taken).
// A clock read was the dearest single step of a small proxied request,
// which made about eleven of them; the steps that run within microseconds
// of one another share one reading instead (see laneExchange.headAt).
func monoOr(now int64) int64 {
	if now != 0 {
		return now
	}
	return monoNow()
}

// monoAdd is t+d on the monotonic clock of monoNow, saturating as
// time.Time.Add does: the longest durations a config can give (up to the
// largest time.Duration) must not overflow into a time already past.
func monoAdd(t int64, d time.Duration) int64 {
	if d > 0 && int64(d) > math.MaxInt64-t {
		return math.MaxInt64
	}
	return t + int64(d)
}

// deadlineTimer ends each exchange of a lane connection at its overall
// deadline (timeouts.overall), one after another on one lazyTimer: an
// exchange arms nothing while the timer is due no later than its
// deadline. A context of its own per exchange (WithTimeoutCause) cost a
// small request a timer, two allocations, and took it off the lane's
// paths for its own context (see laneOwned): about 14 thousand
// instructions, which nearly doubled its count.
type deadlineTimer struct {
	mu     sync.Mutex
	lt     lazyTimer
	due    int64                   // monoNow() at which the exchange ends
	cancel context.CancelCauseFunc // the exchange's; nil once fired or released
}

// begin ends the exchange that cancel cancels at due (a monoNow() time),
// unless it ended before; now is a reading of monoNow taken a moment ago,
// or 0. The exchange before, on the same connection, ended: its cancel
// function, a lane exchange's, does nothing any more.
func (dt *deadlineTimer) begin(due int64, cancel context.CancelCauseFunc, now int64) {
	dt.mu.Lock()
	if dt.lt.f == nil {
		dt.lt.f = dt.fire
	}
	dt.due, dt.cancel = due, cancel
	dt.lt.armByAt(due, now)
	dt.mu.Unlock()
}

func (dt *deadlineTimer) fire() {
	dt.mu.Lock()
	dt.lt.fired()
	cancel := dt.cancel
	if cancel == nil {
		dt.mu.Unlock()
		return
	}
	if now := monoNow(); now < dt.due {
		// Armed for an exchange before, or early (see fired).
		dt.lt.armByAt(dt.due, now)
		dt.mu.Unlock()
		return
	}
	dt.cancel = nil
	dt.mu.Unlock()
	cancel(errOverallTimeout)
}

// release disarms the timer for good: its connection ended.
func (dt *deadlineTimer) release() {
	dt.mu.Lock()
	dt.cancel = nil
	dt.lt.stop()
	dt.mu.Unlock()
}

// lazyTimer is a runtime timer that is only ever moved earlier. The
// per-request timeouts of a reused connection (body_idle, an upstream's
// response header) arm one every request; when it is already due no later than asked, arming costs
// nothing. Starting, resetting or stopping a runtime timer per request
// costs more than the timer: the runtime may wake a thread to re-plan
// its sleep each time, which showed as futex calls and context switches
// per request. The owner's callback, called when the timer fires, calls
// fired, looks at its own deadline and, when that is still ahead, arms
// the timer again for it; with nothing due it leaves it disarmed. The
// owner serializes all calls with its own mutex, in the callback too.
type lazyTimer struct {
	t  *time.Timer
	at int64 // monoNow() at which it fires; 0 when disarmed
	f  func()
}

// armBy makes sure the timer fires no later than due (a monoNow() time).
func (lt *lazyTimer) armBy(due int64) { lt.armByAt(due, 0) }

// armByAt is armBy for a caller that read now (see monoOr) a moment ago.
func (lt *lazyTimer) armByAt(due, now int64) {
	if lt.at != 0 && lt.at <= due {
		return
	}
	d := time.Duration(due - monoOr(now))
	if lt.t == nil {
		lt.t = time.AfterFunc(d, lt.f)
	} else {
		lt.t.Reset(d)
	}
	lt.at = due
}

// fired records that the timer went off: the callback's first call. A
// callback already on its way when armBy moved the timer may see it
// early; the owner's look at its deadline covers that.
func (lt *lazyTimer) fired() { lt.at = 0 }

// stop disarms the timer for good (its owner is done), so it holds
// nothing alive.
func (lt *lazyTimer) stop() {
	if lt.t != nil {
		lt.t.Stop()
	}
	lt.at = 0
}
