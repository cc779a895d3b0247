package resilience

import "time"

// Timeouts bound the phases of one proxied request. The proxy enforces them;
// a request that runs out of time is answered 504 with a reason naming the
// timeout, and the attempt is reported as Outcome{Result: TimedOut}. Zero
// turns a timeout off.
//
// None of them cuts a body that keeps flowing: long downloads and
// server-sent events are bounded only by BodyIdle (and Overall, if set).
type Timeouts struct {
	// Connect bounds dialing the endpoint (and the TLS handshake). Default
	// 5s.
	Connect time.Duration `yaml:"connect"`
	// ResponseHeader bounds the wait from the end of writing the request,
	// its body included, to the arrival of the response headers. Default
	// 30s.
	ResponseHeader time.Duration `yaml:"response_header"`
	// PerTry bounds one attempt from the start of dialing to the arrival of
	// the response headers, so a retry gets its own budget. Default 0 (off:
	// Connect and ResponseHeader bound the attempt).
	PerTry time.Duration `yaml:"per_try"`
	// BodyIdle bounds the gap between two body bytes in either direction
	// once the exchange is streaming. Default 5m: event streams and gRPC
	// watches quiet for longer need it raised (a client's HTTP/2 pings
	// move no body byte).
	BodyIdle time.Duration `yaml:"body_idle"`
	// Overall bounds the whole request, retries and body streaming
	// included. Default 0: no overall timeout, because a download or an
	// event stream may rightly last for hours.
	Overall time.Duration `yaml:"overall"`
	// TunnelIdle closes an upgraded connection (a WebSocket, say) on which
	// no byte moved in either direction for this long; BodyIdle and
	// Overall do not apply to tunnels. Default 0: a tunnel lasts until
	// both sides ended it (see TunnelHalfClosed) or either breaks.
	TunnelIdle time.Duration `yaml:"tunnel_idle"`
	// TunnelHalfClosed bounds a tunnel once one side ended its sending (a
	// half-close, passed on to the other side) while the other side may
	// still send: this long after the first such end, a tunnel still open
	// is reset both ways. Default 10s; 0: no limit (tunnel_idle and the
	// drain still bound it).
	TunnelHalfClosed time.Duration `yaml:"tunnel_half_closed"`
}

// DefaultTimeouts returns the documented defaults.
func DefaultTimeouts() Timeouts {
	return Timeouts{
		Connect:          5 * time.Second,
		ResponseHeader:   30 * time.Second,
		BodyIdle:         5 * time.Minute,
		TunnelHalfClosed: 10 * time.Second,
	}
}

func (t *Timeouts) validate(f *fieldErrors) {
	for _, d := range []struct {
		key string
		v   time.Duration
	}{
		{"connect", t.Connect},
		{"response_header", t.ResponseHeader},
		{"per_try", t.PerTry},
		{"body_idle", t.BodyIdle},
		{"overall", t.Overall},
		{"tunnel_idle", t.TunnelIdle},
		{"tunnel_half_closed", t.TunnelHalfClosed},
	} {
		if d.v < 0 {
			f.add(d.key, "must be >= 0 (0 turns it off), got %s", d.v)
		}
	}
	if t.Overall > 0 {
		if t.PerTry > t.Overall {
			f.add("per_try", "%s exceeds timeouts.overall %s", t.PerTry, t.Overall)
		}
		if t.Connect > t.Overall {
			f.add("connect", "%s exceeds timeouts.overall %s", t.Connect, t.Overall)
		}
	}
}
