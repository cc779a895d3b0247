package resilience

import "time"

// Effect is what one attempt's outcome did to its endpoint (Pick.Done,
// Pick.Keep): the breaker transition it caused, if any, and the ejection
// it caused, if any. It reports only this outcome's doing: an attempt
// whose outcome comes while another attempt's outcome changes the
// endpoint's state gets the zero Effect, however the two overlap, so a
// request's span can show exactly the changes its own attempts made.
//
// The zero Effect means the outcome changed nothing (the common case).
// The move of an open breaker to half-open is made by a Pick, not by an
// outcome, so no Effect carries it; the Observer hears of it.
type Effect struct {
	// From and To are the breaker's states before and after the
	// transition the outcome caused; equal (both BreakerClosed) when it
	// caused none.
	From, To BreakerState
	// Ejected is how long the outcome ejected the endpoint for; 0 when it
	// ejected nothing.
	Ejected time.Duration
}

// Transitioned reports whether the outcome moved the endpoint's breaker.
func (e Effect) Transitioned() bool { return e.From != e.To }
