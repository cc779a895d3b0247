package resilience

import "time"

// EndpointStatus is one endpoint as the admin /upstreams page shows it.
type EndpointStatus struct {
	Addr   string `json:"addr"`
	Weight int    `json:"weight"`
	// Breaker is the breaker's state ("disabled" when the service has no
	// breaker). An open breaker whose open period is over shows as
	// "half-open": the next pick will probe it.
	Breaker BreakerState `json:"breaker"`
	// OpenUntil is when an open breaker starts letting probes through.
	OpenUntil time.Time `json:"open_until,omitzero"`
	// EjectedUntil is when an ejected endpoint returns to rotation; zero
	// when it is in rotation.
	EjectedUntil time.Time `json:"ejected_until,omitzero"`
	// Ejections is the current ejection multiplier (ejections in a row,
	// less those forgiven by time back in rotation since).
	Ejections int `json:"ejections"`
	// InFlight counts attempts picked and not yet Done, and tunnels
	// still open (Pick.Keep).
	InFlight int64 `json:"in_flight"`
	// Requests and Failures count completed attempts since the endpoint
	// appeared (failures as the breaker counts them; cancellations are in
	// Requests only).
	Requests uint64 `json:"requests"`
	Failures uint64 `json:"failures"`
}

// Status returns the state of every current endpoint, in discovery's order.
// It never blocks the request path and is safe to call from an Observer.
func (u *Upstream) Status() []EndpointStatus {
	set := u.set.Load()
	now := u.clock.Now().UnixNano()
	out := make([]EndpointStatus, 0, len(set.members))
	for _, m := range set.members {
		ep := m.ep
		st := EndpointStatus{
			Addr:      ep.addr,
			Weight:    m.weight,
			Breaker:   ep.breaker.shown(now),
			OpenUntil: ep.breaker.openUntil(now),
			Ejections: ep.eject.inARow(u.settings.Outlier.BaseEjectionTime, now),
			InFlight:  ep.inflight.Load(),
			Requests:  ep.requests.Load(),
			Failures:  ep.failures.Load(),
		}
		if until := ep.eject.until.Load(); until > now {
			st.EjectedUntil = time.Unix(0, until)
		}
		out = append(out, st)
	}
	return out
}
