package resilience

import (
	"math"
	"math/rand/v2"
	"slices"
	"time"
)

// RetryPolicy decides whether a failed attempt may be tried again on
// another endpoint. ferry never buffers a body to replay it, so an attempt
// is replayable only when the request has no body or no byte of its body has
// been consumed yet.
type RetryPolicy struct {
	// MaxRetries is the number of retries after the first attempt. Default
	// 2; 0 turns retries off.
	MaxRetries int `yaml:"max_retries"`
	// Methods are the methods retried after the request may have reached
	// the upstream (timeouts, transport failures, OnStatuses). Default the
	// idempotent methods: GET, HEAD, OPTIONS, TRACE, PUT, DELETE. A connect
	// failure is retried whatever the method: no byte reached the upstream.
	Methods []string `yaml:"methods"`
	// OnStatuses are the response statuses that are retried (the response
	// is discarded, not relayed). Default [502, 503, 504].
	OnStatuses []int `yaml:"on_statuses"`
	// BaseInterval is the backoff before the first retry; each further
	// retry doubles it, up to MaxInterval. The actual wait is drawn
	// uniformly from [0, that] (full jitter). Default 25ms.
	BaseInterval time.Duration `yaml:"base_interval"`
	// MaxInterval caps the backoff. Default 250ms.
	MaxInterval time.Duration `yaml:"max_interval"`
	// Budget caps retries relative to recent traffic.
	Budget BudgetSettings `yaml:"budget"`
}

// DefaultRetryPolicy returns the documented defaults.
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{
		MaxRetries:   2,
		Methods:      []string{"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"},
		OnStatuses:   []int{502, 503, 504},
		BaseInterval: 25 * time.Millisecond,
		MaxInterval:  250 * time.Millisecond,
		Budget:       DefaultBudgetSettings(),
	}
}

func (p *RetryPolicy) validate(f *fieldErrors) {
	if p.MaxRetries < 0 || p.MaxRetries > 10 {
		f.add("max_retries", "must be in [0,10], got %d", p.MaxRetries)
	}
	for _, m := range p.Methods {
		if m == "" || !isToken(m) {
			f.add("methods", "%q is not an HTTP method", m)
		}
	}
	checkStatuses(f, "on_statuses", p.OnStatuses)
	if p.MaxRetries == 0 {
		return
	}
	checkPositive(f, "base_interval", p.BaseInterval)
	if p.MaxInterval < p.BaseInterval {
		f.add("max_interval", "must be >= retry.base_interval (%s), got %s", p.BaseInterval, p.MaxInterval)
	}
	p.Budget.validate(f.under("budget."))
}

func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == '(' || c == ')' || c == ',' || c == '/' || c == ':' || c == ';' ||
			c == '<' || c == '=' || c == '>' || c == '?' || c == '@' || c == '[' || c == '\\' || c == ']' ||
			c == '{' || c == '}' || c == '"' {
			return false
		}
	}
	return true
}

// RetryDecision is the answer to "may this attempt be retried?", with the
// reason when it may not. Its String is a metric label.
type RetryDecision uint8

const (
	// RetryAllowed: retry on another endpoint after the backoff.
	RetryAllowed RetryDecision = iota
	// RetryNotNeeded: the attempt succeeded or its failure is not one the
	// policy retries (a status outside on_statuses, a broken body, which was
	// already partly relayed, or a client cancellation).
	RetryNotNeeded
	// RetryExhausted: max_retries reached (or retries are off).
	RetryExhausted
	// RetryNotReplayable: part of the request body was already consumed;
	// ferry does not buffer bodies, so it cannot send it again.
	RetryNotReplayable
	// RetryMethodNotAllowed: the method is not in retry.methods and the
	// request may have reached the upstream.
	RetryMethodNotAllowed
	// RetryBudgetExhausted: the retry budget is spent.
	RetryBudgetExhausted
)

var retryDecisionNames = [...]string{
	RetryAllowed:          "allowed",
	RetryNotNeeded:        "not_needed",
	RetryExhausted:        "max_retries",
	RetryNotReplayable:    "body_sent",
	RetryMethodNotAllowed: "method_not_retryable",
	RetryBudgetExhausted:  "budget_exhausted",
}

func (d RetryDecision) String() string {
	if int(d) < len(retryDecisionNames) {
		return retryDecisionNames[d]
	}
	return "unknown"
}

// Decide says whether retry number attempt (1 for the first retry) may
// follow an attempt that ended with o. bodyBytesSent counts the bytes of the
// request body consumed by the attempts so far — read from the client, not
// only written to the wire; hasBody says whether the request has a body at
// all. Decide does not consult the retry budget (Upstream.Retry does).
//
// A Content-Length response whose connection broke after its head but
// before the body's first byte, when nothing of it was relayed, is passed
// here by the proxy as TransportFailed with no status: for the caller it
// is an attempt that broke before its head.
func (p *RetryPolicy) Decide(attempt int, method string, bodyBytesSent int64, hasBody bool, o Outcome) RetryDecision {
	switch o.Result {
	case Responded:
		if !slices.Contains(p.OnStatuses, o.Status) {
			return RetryNotNeeded
		}
	case ConnectFailed:
	case TimedOut, TransportFailed:
		if o.Status != 0 { // the response had started: it is being relayed
			return RetryNotNeeded
		}
	default: // BodyBroken, Canceled
		return RetryNotNeeded
	}
	if attempt > p.MaxRetries || attempt < 1 {
		return RetryExhausted
	}
	if hasBody && bodyBytesSent > 0 {
		return RetryNotReplayable
	}
	if o.Result != ConnectFailed && !slices.Contains(p.Methods, method) {
		return RetryMethodNotAllowed
	}
	return RetryAllowed
}

// Allowed is Decide(1, ...) == RetryAllowed: whether the outcome allows a
// retry at all, leaving the attempt count to the caller.
func (p *RetryPolicy) Allowed(method string, bodyBytesSent int64, hasBody bool, o Outcome) bool {
	return p.MaxRetries > 0 && p.Decide(1, method, bodyBytesSent, hasBody, o) == RetryAllowed
}

// Backoff returns how long to wait before retry number attempt (1 for the
// first): uniformly random in [0, min(MaxInterval, BaseInterval*2^(attempt-1))].
func (p *RetryPolicy) Backoff(attempt int) time.Duration {
	ceil := p.backoffCeiling(attempt)
	if ceil <= 0 {
		return 0
	}
	if ceil == math.MaxInt64 {
		return rand.N(ceil) // ceil+1 does not fit; one nanosecond less
	}
	return rand.N(ceil + 1)
}

func (p *RetryPolicy) backoffCeiling(attempt int) time.Duration {
	ceil := p.BaseInterval
	for i := 1; i < attempt && ceil < p.MaxInterval; i++ {
		if ceil > p.MaxInterval/2 {
			return p.MaxInterval // doubled, it would pass it (or overflow)
		}
		ceil *= 2
	}
	return min(ceil, p.MaxInterval)
}
