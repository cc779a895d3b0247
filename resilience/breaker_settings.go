package resilience

import (
	"math"
	"time"
)

// BreakerSettings configure the circuit breaker of every endpoint of a
// service. The breaker opens when either trigger fires; with both triggers
// off (ConsecutiveFailures 0 and FailureRatio 0) there is no breaker.
//
// Failures are: connect failures, timeouts, transport failures, bodies that
// break mid-stream and responses whose status is in FailureStatuses. A
// client cancellation counts neither way.
type BreakerSettings struct {
	// ConsecutiveFailures opens the breaker after this many failures in a
	// row. Default 5; 0 turns this trigger off.
	ConsecutiveFailures int `yaml:"consecutive_failures"`
	// FailureRatio opens the breaker when failures/(failures+successes)
	// within Window reaches it, once at least MinRequests attempts have
	// completed in the window. Default 0 (trigger off); otherwise in (0,1].
	FailureRatio float64 `yaml:"failure_ratio"`
	// MinRequests is the number of completed attempts in the window below
	// which FailureRatio is not applied. Default 20; must be >= 1.
	MinRequests int `yaml:"min_requests"`
	// Window is the rolling period over which the closed breaker counts
	// outcomes (in 10 buckets, on the wall clock). Default 10s; with
	// failure_ratio on it must be >= 10ms; 0 (only without failure_ratio)
	// means counts are never cleared while closed.
	Window time.Duration `yaml:"window"`
	// OpenDuration is how long an open breaker rejects requests before it
	// lets half-open probes through. Default 30s.
	OpenDuration time.Duration `yaml:"open_duration"`
	// HalfOpenProbes is the number of concurrent probe requests a half-open
	// breaker admits; that many successes in a row close it, one failure
	// opens it again. Default 1.
	HalfOpenProbes int `yaml:"half_open_probes"`
	// FailureStatuses are the response statuses counted as failures.
	// Default [502, 503, 504].
	FailureStatuses []int `yaml:"failure_statuses"`
}

// DefaultBreakerSettings returns the documented defaults.
func DefaultBreakerSettings() BreakerSettings {
	return BreakerSettings{
		ConsecutiveFailures: 5,
		MinRequests:         20,
		Window:              10 * time.Second,
		OpenDuration:        30 * time.Second,
		HalfOpenProbes:      1,
		FailureStatuses:     []int{502, 503, 504},
	}
}

// Enabled reports whether any trigger is on.
func (b *BreakerSettings) Enabled() bool {
	return b.ConsecutiveFailures > 0 || b.FailureRatio > 0
}

const windowBuckets = 10

func (b *BreakerSettings) validate(f *fieldErrors) {
	if b.Window < 0 {
		f.add("window", "must be >= 0, got %s", b.Window)
	}
	// gobreaker counts in uint32: a larger value would wrap (2^32+1 would
	// trip on the first failure).
	if b.ConsecutiveFailures < 0 {
		f.add("consecutive_failures", "must be >= 0 (0 turns it off), got %d", b.ConsecutiveFailures)
	} else if int64(b.ConsecutiveFailures) > math.MaxUint32 {
		f.add("consecutive_failures", "must be <= %d, got %d", uint32(math.MaxUint32), b.ConsecutiveFailures)
	}
	if b.FailureRatio != 0 && !(b.FailureRatio > 0 && b.FailureRatio <= 1) {
		f.add("failure_ratio", "must be in (0,1] (or 0 to turn it off), got %v", b.FailureRatio)
	}
	checkStatuses(f, "failure_statuses", b.FailureStatuses)
	if !b.Enabled() {
		return
	}
	if b.FailureRatio > 0 {
		if b.MinRequests < 1 {
			f.add("min_requests", "must be >= 1, got %d", b.MinRequests)
		} else if int64(b.MinRequests) > math.MaxUint32 {
			f.add("min_requests", "must be <= %d, got %d", uint32(math.MaxUint32), b.MinRequests)
		}
		if b.Window < 10*time.Millisecond {
			f.add("window", "must be >= 10ms, got %s", b.Window)
		}
	}
	checkPositive(f, "open_duration", b.OpenDuration)
	if b.HalfOpenProbes < 1 || b.HalfOpenProbes > 1000 {
		f.add("half_open_probes", "must be in [1,1000], got %d", b.HalfOpenProbes)
	}
}
