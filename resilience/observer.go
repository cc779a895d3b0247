package resilience

import "time"

// Observer is told about the events an operator wants to see: breaker state
// changes, ejections and retry decisions. telemetry implements it (span
// events, metrics); the admin page reads Upstream.Status instead.
//
// Methods are called synchronously on the request path, sometimes while an
// endpoint's breaker lock is held: they must be quick, must not block and
// must not call back into the Upstream that reports them except for Status.
type Observer interface {
	// BreakerChanged reports an endpoint's breaker moving from one state to
	// another.
	BreakerChanged(service, addr string, from, to BreakerState)
	// Ejected reports an endpoint ejected by outlier detection for d; it is
	// the endpoint's ejections-th ejection in a row (the multiplier of the
	// base ejection time).
	Ejected(service, addr string, d time.Duration, ejections int)
	// RetryDecided reports the decision on retry number attempt (1 for the
	// first retry) of a request.
	RetryDecided(service string, attempt int, d RetryDecision)
}

// NopObserver ignores every event.
type NopObserver struct{}

// BreakerChanged does nothing.
func (NopObserver) BreakerChanged(string, string, BreakerState, BreakerState) {}

// Ejected does nothing.
func (NopObserver) Ejected(string, string, time.Duration, int) {}

// RetryDecided does nothing.
func (NopObserver) RetryDecided(string, int, RetryDecision) {}

var _ Observer = NopObserver{}
