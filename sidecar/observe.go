package sidecar

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/ferrymesh/ferry/discovery"
	"github.com/ferrymesh/ferry/resilience"
	"github.com/ferrymesh/ferry/telemetry"
)

// observer turns resilience events into metrics and log lines. Span events
// for the request that caused them are added by the proxy from the Effect
// its attempt's Done returned (exchange.events), because an observer does
// not know which request it is serving.
type observer struct {
	m   *telemetry.Metrics
	log *slog.Logger
}

func (o observer) BreakerChanged(service, addr string, from, to resilience.BreakerState) {
	o.m.BreakerTransition(service, addr, breakerLabel(to))
	o.log.Warn("circuit breaker changed", "service", service, "endpoint", addr, "from", from.String(), "to", to.String())
}

func (o observer) Ejected(service, addr string, d time.Duration, ejections int) {
	o.m.Ejection(service)
	o.log.Warn("endpoint ejected", "service", service, "endpoint", addr, "for", d.String(), "ejections", ejections)
}

// RetryDecided is counted where the retry happens (exchange.retry).
func (o observer) RetryDecided(string, int, resilience.RetryDecision) {}

var _ resilience.Observer = observer{}

func breakerLabel(s resilience.BreakerState) telemetry.BreakerState {
	switch s {
	case resilience.BreakerOpen:
		return telemetry.BreakerOpen
	case resilience.BreakerHalfOpen:
		return telemetry.BreakerHalfOpen
	default:
		return telemetry.BreakerClosed
	}
}

// exchange is what the telemetry of one proxied request needs to know by
// its end: the status sent, bytes both ways, and why ferry failed it.
type exchange struct {
	q      *telemetry.Request
	status int
	reason string // a telemetry.Reason* constant for proxy-made failures
	err    error
	body   *requestBody
	// maxTrailer: limits.max_header_bytes for an HTTP/2 caller's request
	// trailers (see h2TrailersOver); 0 = none.
	maxTrailer int
	out        int64 // response body (or tunnel) bytes relayed to the caller
	// tunneled: the bytes the caller sent through a tunnel, after the
	// request's body if it had one.
	tunneled int64
	// upConn: the upstream connection an upgrade request went out on
	// (see try), which its tunnel resets when the caller's side breaks.
	upConn net.Conn
	h1     bool // the caller speaks HTTP/1: a failure may close its connection
	// grpc: the request is a gRPC call (grpcCall), answered a failure in
	// gRPC's form.
	grpc bool
	// grpcWeb: the request's Content-Type when it is a gRPC-Web call
	// (grpcWebRequest), answered a failure in gRPC-Web's form; else "".
	grpcWeb string
	// grpcSet: grpcStatus is the gRPC status the gRPC or gRPC-Web call's
	// caller was sent: in the upstream's trailers (a gRPC-Web trailer
	// frame, or either's trailers-only head) relayed whole, or in ferry's
	// failure answer; or the one its client makes of an answer without
	// one.
	grpcSet    bool
	grpcStatus int
	// frames follows the messages of a gRPC call's gRPC response.
	frames grpcFrames
	// web follows a gRPC-Web response's body for its trailer frame's
	// grpc-status.
	web grpcWebStatus
	// closeConn: the caller's HTTP/1 connection must close after this
	// exchange, whatever its outcome (a request framed by both
	// Content-Length and Transfer-Encoding, RFC 9112 section 6.1).
	closeConn bool
	// hasBody: the request came with a body, which a failure answer may
	// leave unread.
	hasBody bool
	// lane is the lane request's exchange; nil for requests from net/http.
	lane *laneExchange
	// reported, when not nil, runs once the exchange was reported (end):
	// a taken-over connection leaves the drain's tunnel set then.
	reported func()
	// switchBody follows the write of an upgrade request's body (see
	// try); nil for a request without one.
	switchBody *switchBody
	// h2conn is the caller's connection of an h2c request, which counts
	// its exchanges' ends (h2resets.go); nil for any other.
	h2conn *prefixConn
	// answerBegan: ferry began relaying the upstream's answer to the
	// caller of an h2c request while its stream was open (h2resets.go:
	// a reset after that is no premature one). Set only with h2conn.
	answerBegan bool
}

// end reports the request: server span end, metrics, access log. It runs
// deferred, so it also runs while a broken response is being aborted.
func (x *exchange) end() {
	x.q.EndAt(telemetry.Outcome{Status: x.status, BytesIn: x.body.sent() + x.tunneled, BytesOut: x.out, Reason: x.reason, Err: x.err,
		GRPC: x.grpcSet, GRPCStatus: x.grpcStatus}, x.lane.doneTime())
	if x.reported != nil {
		x.reported()
	}
	if x.h2conn != nil {
		x.h2conn.streamEnded(x)
	}
}

// fail answers the caller with a proxy-made failure and records it. The
// telemetry records f's status and reason whatever form the answer takes:
// a gRPC or gRPC-Web call's failure is answered as a 200 carrying
// grpc-status, but reported as the failure it is.
func (x *exchange) fail(w http.ResponseWriter, f failure) {
	x.status, x.reason = f.status, f.kind
	if x.grpc {
		writeGRPCFailure(w, f)
		x.grpcSet, x.grpcStatus = true, grpcCode(f)
		return
	}
	// An HTTP/1 connection closes after a failure when it must anyway, and
	// when the request has a body: what the failure left unread of it
	// would be read as the next request, so the connection cannot go on,
	// and the answer says so. HTTP/2 streams end on their own.
	f.close = (f.close || x.closeConn || x.hasBody) && x.h1
	if x.grpcWeb != "" {
		writeGRPCWebFailure(w, f, x.grpcWeb, x.h1, f.close)
		x.grpcSet, x.grpcStatus = true, grpcCode(f)
		return
	}
	writeFailure(w, f)
}

// events adds span events for what one attempt's outcome did to its
// endpoint, as Pick.Done (or Keep) reported it: the breaker transition and
// the ejection that outcome caused. A change another request's outcome
// made meanwhile is that request's to show, never this one's, however the
// two overlap; the metrics count each change once, through the observer.
func (x *exchange) events(addr string, e resilience.Effect) {
	if !e.Transitioned() && e.Ejected == 0 || !x.q.Span().IsRecording() {
		return
	}
	if e.Transitioned() {
		x.q.Span().AddEvent(telemetry.EventBreakerTransition, trace.WithAttributes(
			telemetry.AttrEndpoint.String(addr),
			telemetry.AttrFromState.String(string(breakerLabel(e.From))),
			telemetry.AttrToState.String(string(breakerLabel(e.To)))))
	}
	if e.Ejected > 0 {
		x.q.Span().AddEvent(telemetry.EventEjection, trace.WithAttributes(
			telemetry.AttrEndpoint.String(addr), telemetry.AttrReason.String("consecutive_5xx")))
	}
}

// reportConsul counts the Consul watch errors of a generation's services
// in ferry_consul_watch_errors_total until ctx ends. (The snapshot age is
// read at each scrape: Sidecar.consulSnapshots.)
func (st *state) reportConsul(ctx context.Context, m *telemetry.Metrics, every time.Duration) {
	if st.consul == nil {
		return
	}
	errs := map[string]uint64{}
	countErrors := func(s discovery.ConsulServiceStats) {
		for ; errs[s.Name] < s.Errors; errs[s.Name]++ {
			m.WatchError(s.Name)
		}
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		for _, s := range st.consul.Stats() {
			countErrors(s)
		}
		select {
		case <-ctx.Done():
			// Retired (a reload, or shutdown): the errors since the last
			// report still count.
			for _, s := range st.consul.Stats() {
				countErrors(s)
			}
			return
		case <-t.C:
		}
	}
}
