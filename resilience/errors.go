package resilience

import (
	"errors"
	"fmt"
	"strings"
)

var (
	// ErrNoEndpoints: the service has no endpoints at all (discovery
	// reported none). The proxy answers 503.
	ErrNoEndpoints = errors.New("no endpoints")
	// ErrAllUnavailable: the service has endpoints but none may take this
	// attempt (breakers open, ejected, half-open probes busy, or already
	// tried by this request). The proxy answers 503 at once, without an
	// upstream attempt. Pick returns it as an *UnavailableError.
	ErrAllUnavailable = errors.New("no endpoint available")
	// ErrOverloaded: the service already has max_in_flight requests in
	// flight. The proxy answers 503 at once (load shedding).
	ErrOverloaded = errors.New("too many requests in flight")
)

// UnavailableError says why no endpoint of a service could be picked. It
// matches ErrAllUnavailable with errors.Is. Each endpoint is counted once,
// under the first reason that applies in the order of the fields.
type UnavailableError struct {
	Service   string
	Endpoints int
	// Tried endpoints were excluded because this request already tried them.
	Tried int
	// Ejected endpoints are out of rotation by outlier ejection.
	Ejected int
	// Open endpoints have an open circuit breaker.
	Open int
	// Probing endpoints are half-open with every probe slot taken.
	Probing int
}

func (e *UnavailableError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s (%d endpoints:", e.Service, ErrAllUnavailable, e.Endpoints)
	sep := " "
	for _, r := range []struct {
		n    int
		what string
	}{
		{e.Open, "circuit breaker open"},
		{e.Probing, "half-open, probes busy"},
		{e.Ejected, "ejected as outlier"},
		{e.Tried, "already tried"},
	} {
		if r.n > 0 {
			fmt.Fprintf(&b, "%s%d %s", sep, r.n, r.what)
			sep = ", "
		}
	}
	b.WriteString(")")
	return b.String()
}

// Is makes errors.Is(err, ErrAllUnavailable) true.
func (e *UnavailableError) Is(target error) bool { return target == ErrAllUnavailable }
