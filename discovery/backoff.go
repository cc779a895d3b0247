package discovery

import (
	"context"
	"math/rand/v2"
	"time"
)

// Default retry pacing of the Consul watch and the registrar.
const (
	DefaultBackoffBase = 250 * time.Millisecond
	DefaultBackoffMax  = 10 * time.Second
)

// Backoff returns how long to wait before retry number attempt (1 for the
// first retry after a failure). It is a function so tests can inject a fixed
// or recording one.
type Backoff func(attempt int) time.Duration

// JitterBackoff doubles from base up to max and picks a random wait in the
// upper half of that step, so many sidecars that lost the same agent do not
// come back in lock step. Non-positive base or max take the defaults.
func JitterBackoff(base, max time.Duration) Backoff {
	if base <= 0 {
		base = DefaultBackoffBase
	}
	if max <= 0 {
		max = DefaultBackoffMax
	}
	if max < base {
		max = base
	}
	return func(attempt int) time.Duration {
		d := base
		for i := 1; i < attempt && d < max; i++ {
			d *= 2
		}
		if d > max {
			d = max
		}
		half := d / 2
		return half + rand.N(d-half+1)
	}
}

// sleepCtx waits d or until ctx ends, whichever is first.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
