package resilience

import (
	"sync/atomic"
	"time"
)

// OutlierSettings configure outlier ejection, which works beside the
// breaker (Envoy's model): an endpoint that answers with consecutive 5xx is
// taken out of the rotation for a while, without waiting for a breaker
// window. Connect failures, timeouts, transport failures and broken bodies
// count as 5xx; client cancellations do not count, any other response resets
// the streak.
type OutlierSettings struct {
	// Consecutive5xx ejects an endpoint after this many 5xx in a row.
	// Default 5; 0 turns outlier ejection off.
	Consecutive5xx int `yaml:"consecutive_5xx"`
	// BaseEjectionTime is how long the first ejection lasts; the n-th
	// ejection in a row lasts n times as long. Every BaseEjectionTime an
	// endpoint spends back in rotation forgives one ejection. Default 30s.
	BaseEjectionTime time.Duration `yaml:"base_ejection_time"`
	// MaxEjectionTime caps one ejection. Default 300s.
	MaxEjectionTime time.Duration `yaml:"max_ejection_time"`
	// MaxEjectionPercent caps the share of the service's endpoints ejected
	// at once. At least one endpoint may always be ejected, but never the
	// last one in rotation (endpoints whose breaker admits nothing, open or
	// half-open with every probe out, are out of it):
	// a service is never ejected whole. Default 10.
	MaxEjectionPercent int `yaml:"max_ejection_percent"`
}

// DefaultOutlierSettings returns the documented defaults.
func DefaultOutlierSettings() OutlierSettings {
	return OutlierSettings{
		Consecutive5xx:     5,
		BaseEjectionTime:   30 * time.Second,
		MaxEjectionTime:    300 * time.Second,
		MaxEjectionPercent: 10,
	}
}

func (o *OutlierSettings) validate(f *fieldErrors) {
	if o.Consecutive5xx < 0 {
		f.add("consecutive_5xx", "must be >= 0 (0 turns ejection off), got %d", o.Consecutive5xx)
	}
	if o.Consecutive5xx <= 0 {
		return
	}
	checkPositive(f, "base_ejection_time", o.BaseEjectionTime)
	if o.MaxEjectionTime < o.BaseEjectionTime {
		f.add("max_ejection_time", "must be >= outlier.base_ejection_time (%s), got %s", o.BaseEjectionTime, o.MaxEjectionTime)
	}
	if o.MaxEjectionPercent < 0 || o.MaxEjectionPercent > 100 {
		f.add("max_ejection_percent", "must be in [0,100], got %d", o.MaxEjectionPercent)
	}
}

// maxEjected is how many of n endpoints may be ejected at once.
func (o *OutlierSettings) maxEjected(n int) int {
	allowed := n * o.MaxEjectionPercent / 100
	if allowed < 1 {
		allowed = 1
	}
	if allowed > n-1 {
		allowed = n - 1
	}
	return allowed
}

// ejectionState is one endpoint's outlier-detection state. The streak and
// the ejection deadline are atomics read on the hot path; ejections and
// lastUntil change only under the Upstream's mutex.
type ejectionState struct {
	streak atomic.Int32
	until  atomic.Int64 // clock UnixNano until which the endpoint is out; 0: in rotation

	ejections int          // ejections in a row (the multiplier)
	shown     atomic.Int32 // ejections, for Status
	lastUntil int64        // end of the last ejection (UnixNano)
	shownEnd  atomic.Int64 // lastUntil, for Status
}

// inARow is the ejections in a row at now, as the next ejection would go
// on from them: every base time back in rotation since the last one ended
// forgives one. Lock-free, for Status.
func (e *ejectionState) inARow(base time.Duration, now int64) int {
	n := int64(e.shown.Load())
	if end := e.shownEnd.Load(); n > 0 && base > 0 && now > end {
		n = max(n-(now-end)/int64(base), 0)
	}
	return int(n)
}

// ejected reports whether the endpoint is out of rotation at now (lazily
// clearing an expired deadline so later checks skip the clock).
func (e *ejectionState) ejected(now *lazyNow) bool {
	until := e.until.Load()
	if until == 0 {
		return false
	}
	if now.get() < until {
		return true
	}
	e.until.CompareAndSwap(until, 0)
	return false
}

// observe counts an outcome; it reports whether the streak reached the
// threshold (the caller then tries to eject, and the streak restarts).
func (e *ejectionState) observe(o Outcome, threshold int32) bool {
	if threshold <= 0 || o.Result == Canceled {
		return false
	}
	if !o.upstreamFault() {
		if e.streak.Load() != 0 {
			e.streak.Store(0)
		}
		return false
	}
	if e.streak.Add(1) < threshold {
		return false
	}
	e.streak.Store(0)
	return true
}

// nextEjection computes the length of a new ejection at now and records it.
// The caller holds the Upstream's mutex.
func (e *ejectionState) nextEjection(s *OutlierSettings, now int64) time.Duration {
	base := int64(s.BaseEjectionTime)
	if e.ejections > 0 && now > e.lastUntil {
		forgiven := int((now - e.lastUntil) / base)
		e.ejections = max(e.ejections-forgiven, 0)
	}
	e.ejections++
	e.shown.Store(int32(min(e.ejections, 1<<30)))
	// base times the ejections in a row, capped; compared by division, as
	// the product may not fit in int64 (it could wrap to any value).
	d := s.MaxEjectionTime
	if int64(e.ejections) <= int64(s.MaxEjectionTime)/base {
		d = time.Duration(base * int64(e.ejections))
	}
	e.lastUntil = addNanos(now, d)
	e.shownEnd.Store(e.lastUntil)
	e.until.Store(e.lastUntil)
	return d
}

// returnAt puts an ejected endpoint back in rotation at now, before its
// ejection ends: its time back in rotation, which forgives ejections,
// counts from now. The caller holds the Upstream's mutex.
func (e *ejectionState) returnAt(now int64) {
	e.lastUntil = min(e.lastUntil, now)
	e.shownEnd.Store(e.lastUntil)
	e.until.Store(0)
}
