package resilience

import (
	"math"
	"sync"
	"time"
)

// Clock tells the time. Production code uses SystemClock; tests inject a
// ManualClock and move it.
type Clock interface {
	Now() time.Time
}

// SystemClock is the wall clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// ManualClock is a Clock that only moves when told to. It is safe for
// concurrent use and meant for tests of packages that use resilience.
type ManualClock struct {
	mu  sync.Mutex
	now time.Time
}

// NewManualClock returns a clock reading start.
func NewManualClock(start time.Time) *ManualClock { return &ManualClock{now: start} }

// Now returns the clock's current reading.
func (c *ManualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *ManualClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// addNanos is t+d for a clock reading t in UnixNano, saturating at the
// largest int64 as time.Time.Add does: the longest durations a config
// takes, added to the time now, must not overflow into a time long past.
func addNanos(t int64, d time.Duration) int64 {
	if d > 0 && int64(d) > math.MaxInt64-t {
		return math.MaxInt64
	}
	return t + int64(d)
}

// lazyNow reads a clock at most once: one Pick needs the time for several
// checks, or none at all, and a clock read is the dearest part of a pick.
// It lives on the caller's stack.
type lazyNow struct {
	clock Clock
	nanos int64
	read  bool
}

func (l *lazyNow) get() int64 {
	if !l.read {
		l.nanos = l.clock.Now().UnixNano()
		l.read = true
	}
	return l.nanos
}

var (
	_ Clock = SystemClock{}
	_ Clock = (*ManualClock)(nil)
)
