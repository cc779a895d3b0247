package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/ferrymesh/ferry/telemetry"
)

// Causes the proxy attaches to a request's context when it cancels it, so
// the failure can be told apart from a client that went away.
var (
	errBodyIdle       = errors.New("no body byte moved within the body idle timeout")
	errOverallTimeout = errors.New("the overall timeout elapsed")
	// errSparedRead: a gRPC response's relay stopped, between messages,
	// as the exchange ended (see grpcFrames).
	errSparedRead   = errors.New("the exchange ended between gRPC messages")
	errBodyTooLarge = errors.New("request body exceeds limits.max_request_body_bytes")
	// errTrailersTooLarge: an HTTP/2 caller's request trailers are over
	// limits.max_header_bytes (see h2TrailersOver).
	errTrailersTooLarge = errors.New("request trailers exceed limits.max_header_bytes")
	errPerTryTimeout    = errors.New("no response headers within timeouts.per_try")
	errCallerGone       = errors.New("the caller closed its connection")
	errGraceEnded       = errors.New("the drain's grace period ended")
	// errTunnelHalfClosed: a tunnel stayed half-closed (one side ended
	// its sending, the other had not) past timeouts.tunnel_half_closed.
	errTunnelHalfClosed = errors.New("the tunnel stayed half-closed past timeouts.tunnel_half_closed")
	// errBodyNotReplayable: part of a request body was read, and ferry
	// holds no copy to send it again.
	errBodyNotReplayable = errors.New("the request body was partly sent and is not held for a replay")
	// errBodyStopped: the try before was given up while its transport
	// waited for the caller's body, which ferry closed to end that wait
	// (see requestBody.Close): no try after it can read the body.
	errBodyStopped = errors.New("the upstream refused or reset the request's stream while ferry waited for the caller's request body, which cannot be read again for another try")
	// errAttemptRetired ends the body reads of an attempt given up for a
	// retry (see attemptBody).
	errAttemptRetired = errors.New("the attempt was given up for a retry")
	// errRefusedBeforeBody: the upstream gave its final answer to an
	// Expect: 100-continue request before asking for the body, which is
	// then not sent (see informedTrip.answeredFirst).
	errRefusedBeforeBody = errors.New("the upstream answered before asking for the request body")
	// errBadStatus: a response status no server may send (below 100, or of
	// more than 3 digits), which no caller can be given.
	errBadStatus = errors.New("malformed HTTP status code")
	// errHeadTooLarge: an HTTP/1.1 upstream's response head (with the
	// interim heads before it), or an h2c upstream's, ran over
	// maxResponseHeader. Worded as
	// net/http's Transport words its own limit, which it applies to
	// the requests ferry sends through it (newTransport).
	errHeadTooLarge = fmt.Errorf("server response headers exceeded %d bytes; aborted", maxResponseHeader)
)

// dialError marks a failure to connect to an endpoint: nothing was sent.
type dialError struct {
	addr string
	err  error
}

func (e *dialError) Error() string { return fmt.Sprintf("connect to %s: %v", e.addr, e.err) }
func (e *dialError) Unwrap() error { return e.err }

// bodyReadError marks a failure reading the caller's request body: the
// caller's fault, not the upstream's.
type bodyReadError struct{ err error }

func (e *bodyReadError) Error() string { return "reading request body: " + e.err.Error() }
func (e *bodyReadError) Unwrap() error { return e.err }

// failure is a proxy-made answer: a status and a reason the caller can
// read, and its kind (a telemetry.Reason* constant) for metrics and spans.
type failure struct {
	status int
	reason string
	kind   string
	close  bool // the caller's HTTP/1 connection cannot be read on: close it
	// unsent: the request never reached the upstream (a connect that
	// timed out), which a gRPC caller may safely send again (see
	// grpcCode).
	unsent bool
}

// errDrainOver answers an exchange that would take over its caller's
// connection (a tunnel, a spliced upload) once the drain is over
// (tunnelSet.closeAll ran): nothing new may start then.
var errDrainOver = failure{status: http.StatusServiceUnavailable, reason: "ferry is shutting down", kind: telemetry.ReasonGraceEnded, close: true}

// classify turns the error of an upstream round trip into the answer the
// caller gets. clientGone reports that the caller canceled, in which case no
// answer can be delivered.
func classify(ctx context.Context, service, addr string, err error) (f failure, clientGone bool) {
	cause := context.Cause(ctx)
	var de *dialError
	var be *bodyReadError
	var ne net.Error
	var nh *notHTTP2Error
	switch {
	case errors.Is(cause, errBodyTooLarge) || errors.Is(err, errBodyTooLarge):
		return failure{http.StatusRequestEntityTooLarge, errBodyTooLarge.Error(), telemetry.ReasonOther, true, false}, false
	case errors.Is(cause, errOverallTimeout):
		return failure{http.StatusGatewayTimeout, fmt.Sprintf("upstream %s (%s): %v", service, addr, errOverallTimeout), telemetry.ReasonTimeout, false, false}, false
	case errors.Is(cause, errPerTryTimeout):
		return failure{http.StatusGatewayTimeout, fmt.Sprintf("upstream %s (%s): %v", service, addr, errPerTryTimeout), telemetry.ReasonTimeout, false, false}, false
	case errors.Is(cause, errBodyIdle):
		return failure{http.StatusGatewayTimeout, fmt.Sprintf("upstream %s (%s): %v", service, addr, errBodyIdle), telemetry.ReasonTimeout, false, false}, false
	case errors.Is(cause, errGraceEnded):
		// ferry is ending the exchange, not the caller: whatever broke
		// (the body read, the round trip) broke because of that.
		return failure{http.StatusServiceUnavailable, fmt.Sprintf("upstream %s (%s): ferry is shutting down and %v", service, addr, errGraceEnded), telemetry.ReasonGraceEnded, true, false}, false
	case isH2Refused(ctx, err):
		return failure{http.StatusBadGateway, fmt.Sprintf("upstream %s (%s): %v", service, addr, errH2Refused), telemetry.ReasonUpstreamReset, false, false}, false
	case errors.Is(err, errTrailersTooLarge) && errors.As(err, &be):
		return failure{http.StatusRequestHeaderFieldsTooLarge, be.Error(), telemetry.ReasonHeaderTooLarge, true, false}, ctx.Err() != nil
	case errors.As(err, &be):
		return failure{http.StatusBadRequest, be.Error(), telemetry.ReasonClientCanceled, true, false}, ctx.Err() != nil
	case ctx.Err() != nil:
		return failure{499, "client closed the request", telemetry.ReasonClientCanceled, false, false}, true
	case errors.Is(err, errBadStatus), errors.Is(err, errHeadTooLarge), strings.Contains(err.Error(), "server response headers exceeded"):
		return failure{http.StatusBadGateway, fmt.Sprintf("upstream %s (%s): %v", service, addr, err), telemetry.ReasonBadResponse, false, false}, false
	case errors.As(err, &nh):
		return failure{http.StatusBadGateway, fmt.Sprintf("upstream %s (%s) %v", service, addr, nh), telemetry.ReasonBadResponse, false, false}, false
	case errors.As(err, &de):
		if errors.As(de.err, &ne) && ne.Timeout() {
			return failure{http.StatusGatewayTimeout, fmt.Sprintf("upstream %s: connect to %s timed out (timeouts.connect)", service, addr), telemetry.ReasonTimeout, false, true}, false
		}
		return failure{http.StatusBadGateway, fmt.Sprintf("upstream %s: connect to %s failed: %v", service, addr, unwrapOp(de.err)), telemetry.ReasonDialFailed, false, false}, false
	case errors.As(err, &ne) && ne.Timeout():
		msg := "timed out"
		if strings.Contains(err.Error(), "response headers") {
			msg = "no response headers within timeouts.response_header"
		}
		return failure{http.StatusGatewayTimeout, fmt.Sprintf("upstream %s (%s): %s", service, addr, msg), telemetry.ReasonTimeout, false, false}, false
	default:
		return failure{http.StatusBadGateway, fmt.Sprintf("upstream %s (%s): %v", service, addr, err), telemetry.ReasonUpstreamReset, false, false}, false
	}
}

// spanErr is the error the spans record for err, which ended an attempt
// (or exchange) whose context is ctx. When ferry cancelled ctx for a
// reason of its own (a timeout, the drain's end, a body over the limit),
// err is only what the cancellation left behind ("context canceled", a
// read on the connection ferry closed), and the cause, which classify
// answers the caller with, says what happened.
func spanErr(ctx context.Context, err error) error {
	if ctx.Err() == nil {
		return err
	}
	switch c := context.Cause(ctx); {
	case errors.Is(c, errOverallTimeout), errors.Is(c, errPerTryTimeout), errors.Is(c, errBodyIdle),
		errors.Is(c, errGraceEnded), errors.Is(c, errBodyTooLarge):
		return c
	}
	return err
}

// unwrapOp drops net.OpError's "dial tcp 1.2.3.4:80:" prefix, which the
// reason already says.
func unwrapOp(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err
	}
	return err
}

// writeFailure answers with a proxy-made status and reason. The reason goes
// in the body and, for programs, in the X-Ferry-Error header.
func writeFailure(w http.ResponseWriter, f failure) {
	h := w.Header()
	clear(h)
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Ferry-Error", sanitizeHeaderValue(f.reason))
	if f.close {
		h.Set("Connection", "close")
	}
	body := "ferry: " + f.reason + "\n"
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(f.status)
	io.WriteString(w, body)
}

func sanitizeHeaderValue(s string) string {
	if printableASCII(s) {
		return s // as strings.Map would, without a call per character
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// panicError is a panic recovered on one of an exchange's own goroutines
// (net/http recovers its handlers' panics, the lane its requests', but
// nothing those started): it fails that exchange, with its stack for the
// log, never the process.
type panicError struct {
	v     any
	stack []byte
}

func (e *panicError) Error() string { return fmt.Sprintf("panic: %v", e.v) }

// safely runs f, a goroutine's body, and returns its error, or the panic
// it ended with as a *panicError.
func safely(f func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &panicError{v, debug.Stack()}
		}
	}()
	return f()
}
