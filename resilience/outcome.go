package resilience

import (
	"context"
	"errors"
	"net"
)

// Result says how an attempt ended, as far as the upstream endpoint is
// concerned.
type Result uint8

const (
	// Responded: the upstream sent a response and its body was relayed to
	// the end. Outcome.Status says which; whether a 5xx is a failure is
	// decided by the breaker's failure_statuses (breaker) and by ">= 500"
	// (outlier ejection).
	Responded Result = iota
	// ConnectFailed: the connection could not be established (refused,
	// unreachable, TLS handshake failed). No byte reached the upstream.
	ConnectFailed
	// TimedOut: a connect, response-header, per-try or body-idle timeout
	// fired.
	TimedOut
	// TransportFailed: the connection broke before a complete response
	// header arrived (reset, EOF, malformed response).
	TransportFailed
	// BodyBroken: the response started but its body broke mid-stream on
	// the upstream side. The response was not complete.
	BodyBroken
	// Canceled: the client went away or canceled. Not the upstream's fault:
	// it is neither a success nor a failure for the breaker and ejection.
	Canceled
)

var resultNames = [...]string{
	Responded:       "responded",
	ConnectFailed:   "connect_failed",
	TimedOut:        "timed_out",
	TransportFailed: "transport_failed",
	BodyBroken:      "body_broken",
	Canceled:        "canceled",
}

// String returns a snake_case name usable as a metric label.
func (r Result) String() string {
	if int(r) < len(resultNames) {
		return resultNames[r]
	}
	return "unknown"
}

// Outcome is what the proxy reports when an attempt ends (Pick.Done).
type Outcome struct {
	// Result says how the attempt ended.
	Result Result
	// Status is the upstream's response status when a response header
	// arrived (Responded, BodyBroken, or Canceled after headers); 0
	// otherwise.
	Status int
}

// verdict is how one outcome counts against an endpoint.
type verdict uint8

const (
	verdictSuccess verdict = iota
	verdictFailure
	verdictIgnored // client cancellation: neither success nor failure
)

// upstreamFault reports whether the outcome is the upstream's fault in the
// sense of outlier ejection (Envoy's "consecutive 5xx", which counts locally
// originated errors such as connect failures as 5xx too).
func (o Outcome) upstreamFault() bool {
	switch o.Result {
	case Responded:
		return o.Status >= 500
	case Canceled:
		return false
	default:
		return true
	}
}

// ClassifyError maps the error of an attempt that ended before a response
// header arrived (an http.RoundTripper's error) to a Result:
//
//   - context.Canceled anywhere in the chain: Canceled (the client went
//     away; cancel the upstream request with the client's context);
//   - a failed dial (a *net.OpError with Op "dial"), a timed-out one
//     included: ConnectFailed (no byte reached the upstream, so it is
//     retryable whatever the method);
//   - context.DeadlineExceeded or any net.Error that is a Timeout (for
//     example http.Transport's response-header timeout): TimedOut;
//   - anything else (reset, EOF, malformed response): TransportFailed.
//
// A nil error is Responded. Errors while relaying the response body are the
// caller's to classify: BodyBroken, or Canceled/TimedOut as the case is.
func ClassifyError(err error) Result {
	if err == nil {
		return Responded
	}
	if errors.Is(err, context.Canceled) {
		return Canceled
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return ConnectFailed
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return TimedOut
	}
	return TransportFailed
}
