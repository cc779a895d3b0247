package sidecar

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/ferrymesh/ferry/resilience"
	"github.com/ferrymesh/ferry/telemetry"
)

// Proxy is the HTTP handler behind one listener (outbound or inbound). It
// matches a route, picks an endpoint of the route's service and relays the
// exchange, streaming both bodies as they arrive. Its routes are an
// immutable table swapped atomically, so a reload never blocks a request.
type Proxy struct {
	// Name is the listener's name ("outbound", "inbound") in logs.
	Name string
	// Log receives proxy failures; nil discards them.
	Log *slog.Logger

	table    atomic.Pointer[routeTable]
	tunnels  *tunnelSet
	tel      *telemetry.Telemetry
	listener telemetry.Listener
	// connectFailed, when not nil, is told of every attempt whose
	// connection to the upstream could not be made (the inbound proxy's:
	// the app refusing, see Sidecar.New).
	connectFailed func()
	propagate     []string // trace headers of the caller, replaced on the way upstream
}

func newProxy(name string, table *routeTable, log *slog.Logger, tunnels *tunnelSet, tel *telemetry.Telemetry) *Proxy {
	p := &Proxy{Name: name, Log: log, tunnels: tunnels, tel: tel, listener: telemetry.Listener(name), propagate: tel.PropagationHeaders()}
	p.table.Store(table)
	return p
}

// ServeHTTP implements http.Handler. Every request gets a server span
// (continuing the caller's trace), metrics and an access log line, ended
// when its last body byte went.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Trailer == nil && len(r.TransferEncoding) > 0 {
		// net/http merges the trailers of a chunked body into r.Trailer
		// as the body ends; with none announced it would set a new map on
		// its own request, which the copies made below (and the upstream
		// request) never see. A map set now is the one they all share.
		r.Trailer = http.Header{}
	}
	if r.Trailer != nil {
		dropForbiddenTrailers(r.Trailer) // the announced names go out in the head
	}
	var ctx context.Context
	var q *telemetry.Request
	var x *exchange
	var h2conn *prefixConn // an h2c request's connection (h2resets.go)
	if r.ProtoMajor == 2 {
		h2conn, _ = r.Context().Value(handedConnKey{}).(*prefixConn)
	}
	if le := laneOwned(r.Context()); le != nil {
		ctx, q = p.tel.StartRequestIn(&le.tq, r, p.listener, le.headTime())
		q.UseSeriesMemo(le.series)
		// StartRequest's context adds values to r's, never a deadline or
		// cancellation of its own (TestStartRequestAddsValuesOnly): it
		// ends exactly when the exchange's does.
		le.ctx = ctx
		x = &le.x
	} else {
		ctx, q = p.tel.StartRequest(r, p.listener)
		x = new(exchange)
	}
	r = r.WithContext(ctx)
	*x = exchange{q: q, h1: r.ProtoMajor == 1, grpc: grpcCall(r), hasBody: r.ContentLength != 0}
	if !x.grpc && r.Method == http.MethodPost { // gRPC-Web calls are POSTs
		x.grpcWeb = grpcWebRequest(r)
	}
	x.closeConn = x.h1 && mustClose(r.Context())
	x.h2conn = h2conn
	defer x.end()
	if h2conn != nil && h2conn.refusePremature() {
		// Its connection was closed for its premature resets: the
		// stream is reset, nothing relayed.
		x.status, x.reason, x.err = 499, telemetry.ReasonClientCanceled, errPrematureResets
		panic(http.ErrAbortHandler)
	}
	table := p.table.Load()
	if r.ProtoMajor >= 2 && table.maxHeader > 0 {
		x.maxTrailer = table.maxHeader
		if n, over := h2HeadOver(r, table.maxHeader); over {
			x.fail(w, failure{status: http.StatusRequestHeaderFieldsTooLarge, reason: fmt.Sprintf("request header list of %d bytes (as HTTP/2 counts it) exceeds limits.max_header_bytes (%d)", n, table.maxHeader), kind: telemetry.ReasonHeaderTooLarge})
			return
		}
	}
	if f, bad := malformed(r); bad {
		x.fail(w, f)
		return
	}
	rt := table.match(r.Host, r.URL.Path)
	if rt == nil {
		x.fail(w, failure{http.StatusNotFound, fmt.Sprintf("no route for host %q path %q", r.Host, r.URL.Path), telemetry.ReasonNoRoute, false, false})
		return
	}
	q.SetRoute(rt.label, rt.up.name)
	p.forward(w, r, rt.up, table.maxBody, x)
}

// errPreface answers the HTTP/2 preface sent where a request was due.
var errPreface = failure{status: http.StatusHTTPVersionNotSupported, reason: "the HTTP/2 preface is not a request", kind: telemetry.ReasonOther, close: true}

// malformed refuses requests that must not be relayed: CONNECT, the
// HTTP/2 preface read as a request, and targets that are not origin-form
// (or absolute-form, or asterisk-form "*"): relaying them would send the
// upstream a different request than the caller's. A malformed head is
// reported as malformed_request, as net/http's and the lane's refusals of
// the same heads over HTTP/1.1 are.
func malformed(r *http.Request) (failure, bool) {
	switch {
	case r.Method == http.MethodConnect:
		return failure{status: http.StatusMethodNotAllowed, reason: "CONNECT is not supported", kind: telemetry.ReasonOther}, true
	case r.Method == "PRI":
		return errPreface, true
	case r.URL.Opaque != "",
		r.URL.Path != "" && r.URL.Path[0] != '/' && r.URL.Path != "*":
		return failure{status: http.StatusBadRequest, reason: fmt.Sprintf("request target %q is not origin-form", r.RequestURI), kind: telemetry.ReasonMalformedRequest, close: true}, true
	case r.ProtoMajor >= 2:
		if f, bad := notForHTTP1(r); bad {
			return f, true
		}
	}
	return failure{}, false
}

// notForHTTP1 refuses an HTTP/2 request whose method, target or authority
// an HTTP/1.1 request line and Host field cannot carry: HTTP/2 lets any
// visible byte into :method and a space into :path's query and into
// :authority, which, written into an HTTP/1.1 upstream's request line
// ("GET /p?a HTTP/1.1 HTTP/1.1"), make it read another request, or none.
// net/http answers such a request line or Host over HTTP/1.1 with 400,
// before ferry sees it.
func notForHTTP1(r *http.Request) (failure, bool) {
	switch {
	case !httpguts.ValidHeaderFieldName(r.Method): // a method is a token
		return failure{status: http.StatusBadRequest, reason: fmt.Sprintf("method %q is not a token", r.Method), kind: telemetry.ReasonMalformedRequest, close: true}, true
	case strings.IndexByte(r.URL.RawQuery, ' ') >= 0:
		return failure{status: http.StatusBadRequest, reason: fmt.Sprintf("request target %q holds a space", r.RequestURI), kind: telemetry.ReasonMalformedRequest, close: true}, true
	case !httpguts.ValidHostHeader(r.Host):
		return failure{status: http.StatusBadRequest, reason: fmt.Sprintf("authority %q is not a valid host", r.Host), kind: telemetry.ReasonMalformedRequest, close: true}, true
	}
	return failure{}, false
}

// forward relays one exchange to up, retrying on another endpoint when the
// policy allows and the request can be replayed without holding its body.
// maxBody > 0 caps the request body.
func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, up *upstream, maxBody int64, x *exchange) {
	if maxBody > 0 && r.ContentLength > maxBody {
		x.fail(w, failure{http.StatusRequestEntityTooLarge, errBodyTooLarge.Error(), telemetry.ReasonOther, true, false})
		return
	}
	snap := up.svc.Snapshot()
	switch {
	case !snap.Ready:
		reason := fmt.Sprintf("service %s: endpoints not resolved yet", up.name)
		if snap.Err != "" {
			reason += ": " + snap.Err
		}
		x.fail(w, failure{http.StatusServiceUnavailable, reason, telemetry.ReasonNoEndpoint, false, false})
		return
	case len(snap.Endpoints) == 0:
		x.fail(w, failure{http.StatusServiceUnavailable, fmt.Sprintf("service %s has no healthy endpoints", up.name), telemetry.ReasonNoEndpoint, false, false})
		return
	}

	p.serveExchange(w, r, up, maxBody, x)
}

// serveExchange is the part of forward that sets up what an exchange
// cleans up at its end, in deferred calls, and runs its attempts. It
// returns in two places only and attempts is a function of its own, so
// that Go open-codes those calls (a deferred call in a function with many
// returns, or in a loop, costs a record on the stack and a pass of the
// runtime over it at the end).
func (p *Proxy) serveExchange(w http.ResponseWriter, r *http.Request, up *upstream, maxBody int64, x *exchange) {
	// A reload may retire up's pools while this exchange runs on them.
	defer up.exchangeEnded()
	ctx, cancel, le := exchangeContext(r)
	defer cancel(nil)
	x.lane = le
	if d := up.timeouts.Overall; d > 0 && !le.endBy(d) {
		var stop context.CancelFunc
		ctx, stop = context.WithTimeoutCause(ctx, d, errOverallTimeout)
		defer stop()
	}
	idle := le.idleTimer(up.timeouts.BodyIdle, cancel)
	defer idle.stop()

	var body *requestBody
	if takeOverEligible(w, r, up) {
		cw, sb, answered := p.takeOver(w, r)
		if answered {
			x.status, x.reason, x.err = errDrainOver.status, errDrainOver.kind, errGraceEnded
			return
		}
		if cw != nil {
			// The connection stays tracked until the exchange was
			// reported (x.end), so that a drain's end waits for that
			// report; once the exchange is done with it, closing it
			// cuts nothing (ending).
			x.reported = func() { p.tunnels.remove(cw) }
			defer func() {
				if v := recover(); v != nil {
					cw.abort()
					p.tunnels.remove(cw)
					panic(v)
				}
				cw.end()
				p.tunnels.ending(cw)
			}()
			cw.cut = cancel
			w = cw
			body = &requestBody{rc: sb, limit: maxBody, idle: idle, cancel: cancel}
			x.body = body
		}
	}
	switch {
	case body != nil:
	case r.ContentLength != 0:
		body = &requestBody{rc: r.Body, limit: maxBody, idle: idle, cancel: cancel, trailer: r.Trailer}
		if r.ProtoMajor >= 2 && len(r.Trailer) > 0 {
			body.trailerLimit = x.maxTrailer
		}
		x.body = body
		if r.ProtoMajor == 1 && le == nil {
			// Let the upstream's response stream back while the caller
			// is still uploading (bidirectional streams over HTTP/1.1).
			// The lane's writer does so anyway: asking it made an error
			// (not supported) per request.
			_ = http.NewResponseController(w).EnableFullDuplex()
		}
	default:
		idle.pause() // nothing to upload: the response header timeout rules
	}
	// A transport may read the body after the exchange ended (it answered
	// before the body was whole): that read must not reach the body, nor
	// the connection's idle timer, which the next exchange uses.
	defer body.retire()
	if body != nil {
		// A transport waiting in a Read of the caller's body does not see
		// the exchange end (Go's HTTP/2 client watches its context only
		// once the body is written): a timeout of ferry's must end that
		// Read, or the upstream stream would outlive the exchange.
		// The guard keeps that Read's end from reaching w after the
		// handler returned.
		if le.hookUpload(body) {
			defer le.unhookUpload()
		} else {
			g := afterGuarded(ctx, func() { body.unblock(w) })
			defer g.stop()
		}
	}
	p.attempts(ctx, w, r, up, body, idle, x)
}

// servesExpect says whether ferry's client will send the body of r, a lane
// request with Expect: 100-continue (see expectJudge): its route goes to
// an upstream spoken to in HTTP/1.1 by that client.
func (p *Proxy) servesExpect(r *http.Request) bool {
	rt := p.table.Load().match(r.Host, r.URL.Path)
	if rt == nil {
		return false
	}
	_, own := rt.up.transportFor(r, false).(*fastH1)
	return own
}

// attempts picks endpoints and makes attempts at them until one answers
// the exchange, a retry is not allowed, or the exchange ends.
func (p *Proxy) attempts(ctx context.Context, w http.ResponseWriter, r *http.Request, up *upstream, body *requestBody, idle *idleTimer, x *exchange) {
	var key string
	if up.hashHeader != "" {
		key = r.Header.Get(up.hashHeader)
	}
	var upgrade string
	if x.lane == nil || x.lane.hopFields {
		// (A lane request's header without hop-by-hop fields has no
		// Connection field to ask for one.)
		upgrade = requestUpgrade(r.Header)
	}
	var tried []string
	// Nothing waited since the lane had the head: the pick takes its
	// reading of the clock (resilience's own clock, when injected, is
	// read as ever).
	pick, err := up.res.PickAt(key, nil, x.lane.headTime())
	if errors.Is(err, resilience.ErrNoEndpoints) {
		// The snapshot has endpoints (checked above): one published a
		// moment ago may not have reached the balancer yet.
		up.sync()
		pick, err = up.res.Pick(key, nil)
	}
	for attempt := 1; ; attempt++ {
		if err != nil {
			var ue *resilience.UnavailableError
			f := failure{http.StatusServiceUnavailable, err.Error(), telemetry.ReasonNoEndpoint, false, false}
			if errors.As(err, &ue) && ue.Open > 0 {
				f.kind = telemetry.ReasonBreakerOpen
			} else if errors.Is(err, resilience.ErrOverloaded) {
				f.kind = telemetry.ReasonOther // shed: max_in_flight reached
			}
			p.logFailure(r, up.name, "", f, err)
			x.fail(w, f)
			return
		}
		addr := pick.Addr()
		// A pick is admitted by a closed breaker (or none), or is a
		// half-open breaker's probe.
		info := telemetry.AttemptInfo{Endpoint: addr, Attempt: attempt, BreakerState: telemetry.BreakerClosed}
		if pick.Probe() {
			info.BreakerState = telemetry.BreakerHalfOpen
		}
		res, actx, a, err := p.try(ctx, w, r, up, addr, upgrade, body, x, info)
		if err != nil {
			if p.connectFailed != nil && errors.As(err, new(*dialError)) {
				p.connectFailed()
			}
			f, gone := classify(actx, up.name, addr, err)
			o := resilience.Outcome{Result: attemptResult(actx, err)}
			ended := func(o resilience.Outcome) {
				e := pick.Done(o)
				a.End(telemetry.Outcome{BytesOut: body.sent(), Reason: f.kind, Err: spanErr(actx, err)})
				x.events(addr, e)
			}
			// An h2c upstream refused the stream unprocessed (h2Tries):
			// it may be sent again whatever its method, as after a
			// failed connect, to another endpoint or, when none is left,
			// to this one (a GOAWAY'd connection is replaced). A try
			// followed by a retry is no failure of the endpoint's (it
			// may refuse streams under load, or rotate its connections);
			// the one that ends the exchange is.
			refused := !gone && ctx.Err() == nil && isH2Refused(actx, err)
			var leave func()
			left := false
			if refused {
				if body != nil && (body.taken() > 0 || body.stopped.Load()) && !body.replayable() {
					// (Refused while the body was still coming: net/http's
					// client closed the caller's body to end its Read, and
					// nothing of the body can be read again.)
					why := errBodyNotReplayable
					if !body.ended.Load() {
						why = errBodyStopped
					}
					f.reason = fmt.Sprintf("%s: %v", f.reason, why)
				}
				leave = func() { left = true; ended(resilience.Outcome{Result: resilience.Canceled}) }
				o = resilience.Outcome{Result: resilience.ConnectFailed}
			} else {
				ended(o)
			}
			p.logFailure(r, up.name, addr, f, err)
			if gone {
				// The caller went away (or half-closed, which the lane
				// takes for it): no answer, and none that looks whole.
				x.status, x.reason = f.status, f.kind
				abortCaller(w, r, body)
			}
			tried = append(tried, addr) // only a retry needs the list
			next, ok := p.retry(ctx, up, attempt, key, tried, r, body, o, x, f.kind, leave, refused)
			if refused && !ok && !left {
				ended(resilience.Outcome{Result: resilience.TransportFailed})
			}
			if ok {
				pick = next
				continue
			}
			if ctx.Err() != nil {
				// The exchange ended while deciding or waiting out the
				// backoff (the caller went away, or a timeout of
				// ferry's): that, not this attempt's failure, is the
				// outcome.
				if f, gone = classify(ctx, up.name, addr, ctx.Err()); gone {
					x.status, x.reason = f.status, f.kind
					abortCaller(w, r, body)
				}
				actx = ctx // its cause, not the attempt's, ended the exchange
			}
			x.err = spanErr(actx, err)
			x.fail(w, f)
			return
		}
		a.SetStatus(res.StatusCode)
		o := resilience.Outcome{Result: resilience.Responded, Status: res.StatusCode}
		if res.StatusCode == http.StatusSwitchingProtocols {
			if testHookSwitchAnswered != nil {
				testHookSwitchAnswered()
			}
			// Never tunnel what the caller did not ask to switch to: the
			// upstream's failure, as the breaker sees it.
			var f failure
			switch chosen := upgradeType(res.Header); {
			case upgrade == "":
				f = failure{status: http.StatusBadGateway, reason: fmt.Sprintf("upstream %s (%s) switched protocols unasked", up.name, addr), kind: telemetry.ReasonBadResponse}
			case !offered(upgrade, chosen):
				f = failure{status: http.StatusBadGateway, reason: fmt.Sprintf("upstream %s (%s) switched to protocol %q, caller asked for %q", up.name, addr, chosen, upgrade), kind: telemetry.ReasonBadResponse}
			}
			if f.status != 0 {
				res.Body.Close()
				o.Result = resilience.TransportFailed
				e := pick.Done(o)
				a.End(telemetry.Outcome{Status: res.StatusCode, Reason: f.kind})
				x.events(addr, e)
				p.logFailure(r, up.name, addr, f, errors.New("switch not asked for"))
				x.fail(w, f)
				return
			}
			if err := x.switchBody.await(ctx, body); err != nil {
				// The body did not go out whole: no tunnel begins. The
				// upstream, which switched already, gets a reset, not an
				// end it could take for the body's and the tunnel's.
				if tc := socketOf(x.upConn); tc != nil {
					_ = tc.SetLinger(0)
				}
				res.Body.Close()
				f, gone := classify(ctx, up.name, addr, err)
				o.Result = attemptResult(ctx, err)
				if errors.Is(err, errSwitchedBeforeBody) {
					f = failure{status: http.StatusBadGateway, reason: fmt.Sprintf("upstream %s (%s): %v", up.name, addr, err), kind: telemetry.ReasonBadResponse, close: true}
					o.Result = resilience.TransportFailed
				}
				x.events(addr, pick.Done(o))
				a.End(telemetry.Outcome{Status: res.StatusCode, BytesOut: body.sent(), Reason: f.kind, Err: err})
				p.logFailure(r, up.name, addr, f, err)
				if gone {
					x.status, x.reason = f.status, f.kind
					abortCaller(w, r, body)
				}
				x.err = err
				x.fail(w, f)
				return
			}
			// The 101 judges the attempt, but the tunnel is as much
			// load as a request until it closes: it keeps its slot of
			// max_in_flight (and of its endpoint's load) until then,
			// however it ends.
			slot, e := pick.Keep(o)
			x.events(addr, e) // a probe's 101 settled its breaker
			idle.stop()
			p.tunnelHeld(slot, w, r, res, upgrade, up, addr, a, x)
			return
		}
		// decided: the policy already ruled on this attempt (its status),
		// and no body failure asks it again.
		decided := false
		if up.settings.Retry.MaxRetries > 0 && slices.Contains(up.settings.Retry.OnStatuses, res.StatusCode) {
			decided = true
			// A retryable status (502/503/504 by default): when the
			// policy, the budget and another endpoint allow, discard this
			// answer unread and ask that endpoint; else relay it.
			x.events(addr, pick.Done(o))
			tried = append(tried, addr)
			// Once the retry is to be made the answer is done with: it is
			// closed and its attempt's span ends before the backoff, which
			// is no part of the attempt.
			leave := func() {
				res.Body.Close()
				ao := telemetry.Outcome{Status: res.StatusCode, BytesOut: body.sent()}
				if x.grpc {
					// Unread: the attempt records what its head says.
					ao.GRPCStatus, ao.GRPC = grpcHeadStatus(res)
				} else if x.grpcWeb != "" {
					ao.GRPCStatus, ao.GRPC = grpcWebHeadStatus(res)
				}
				a.End(ao)
			}
			if next, ok := p.retry(ctx, up, attempt, key, tried, r, body, o, x, telemetry.ReasonOther, leave, false); ok {
				pick = next
				continue
			}
			if ctx.Err() != nil {
				// The exchange ended while deciding (the caller went away,
				// or a timeout of ferry's): this answer's body is gone
				// with it. One that ended in the backoff left the answer
				// and ended its attempt already (End is then a no-op).
				res.Body.Close()
				f, gone := classify(ctx, up.name, addr, ctx.Err())
				a.End(telemetry.Outcome{Status: res.StatusCode, Reason: f.kind})
				if gone {
					x.status, x.reason = f.status, f.kind
					abortCaller(w, r, body)
				}
				x.fail(w, f)
				return
			}
			pick = resilience.Pick{} // Done already reported
		}
		idle.resume()
		x.status = res.StatusCode
		if x.closeConn {
			w.Header().Set("Connection", "close")
		}
		// The cut of writes to the caller is armed once the body's first
		// bytes came: a timeout or the drain's end while they are awaited
		// leaves nothing sent, and the caller must still get that answer
		// whole (a cut made then would break it).
		var result relayResult
		cutMade, cutLate := false, false
		var frames *grpcFrames // a gRPC call's gRPC response's messages
		if x.grpc && grpcResponse(res) {
			frames = &x.frames
		}
		var web *grpcWebStatus // a gRPC-Web response's trailer frame
		if isWeb, text := grpcWebType(res.Header["Content-Type"]); isWeb && res.StatusCode == http.StatusOK {
			x.web = grpcWebStatus{text: text, trailer: x.web.trailer[:0]}
			web = &x.web
		}
		start, firstCut, err := awaitBody(res, idle)
		if err != nil {
			result = relayResult{readErr: err, unsent: true}
		} else {
			if x.h2conn != nil {
				// The answer's head goes out now: a caller that resets
				// its stream after this cancels an answer it was getting,
				// not a stream as it began (h2resets.go).
				x.answerBegan = ctx.Err() == nil
			}
			cut := cutOnCancel(ctx, w, r, frames)
			result = p.respond(w, r, res, idle, start, frames, web)
			if testHookResponded != nil {
				testHookResponded(ctx)
			}
			cutMade = cut.stop()
			if frames != nil {
				cutMade = frames.cut() // not when it spared the caller's stream
			}
			if cutMade && sentWhole(r, res, result) {
				// The cut came once the caller had the whole answer (it
				// hung up after reading it, say): it cut nothing, and the
				// exchange is the success it was. Its connection still
				// closes (the write deadline stays), gracefully.
				cutMade, cutLate = false, true
				if tc := http10Socket(w, r); tc != nil {
					_ = tc.SetLinger(-1) // the cut's reset undone
				}
			}
			if sentWhole(r, res, result) || r.ProtoMajor == 1 && result.readErr == nil && result.writeErr == nil && noBodyFollows(res) {
				// On net/http's path the caller has all of it now (an
				// answer without a body once handedWhole flushed its
				// head), whatever the exchange still does before it
				// ends: a drain's end cuts nothing there.
				handedWhole(w, r)
			}
		}
		if x.lane != nil && body == nil && result.readErr == nil && result.writeErr == nil && !cutMade && !cutLate {
			x.lane.respondDone(res)
		}
		closeResponse(res, body)
		x.out = result.n
		ao := telemetry.Outcome{Status: res.StatusCode, BytesIn: result.n, BytesOut: body.sent()}
		switch {
		case result.readErr != nil:
			o.Result = resilience.BodyBroken
			x.reason, ao.Reason = telemetry.ReasonBodyBroken, telemetry.ReasonBodyBroken
			reason := fmt.Sprintf("upstream %s (%s) broke mid-body after %d bytes: %v", up.name, addr, result.n, result.readErr)
			recorded := result.readErr // the spans' error
			c := context.Cause(ctx)
			tooLarge := errors.Is(c, errBodyTooLarge) || errors.Is(result.readErr, errBodyTooLarge)
			// The caller's body broke first (bad framing), and the
			// transport ended the upload, and with it the answer.
			callerBody := body.brokenByCaller()
			if firstCut {
				c = errBodyIdle // this attempt's, not the exchange's
			}
			if errors.Is(c, errBodyIdle) || errors.Is(c, errOverallTimeout) {
				o.Result = resilience.TimedOut
				x.reason, ao.Reason = telemetry.ReasonTimeout, telemetry.ReasonTimeout
				reason = fmt.Sprintf("upstream %s (%s) cut after %d bytes: %v", up.name, addr, result.n, c)
				recorded = c // the read only failed as ferry's cut closed it
			} else if errors.Is(c, errGraceEnded) {
				o.Result = resilience.Canceled // not the endpoint's doing
				x.reason, ao.Reason = telemetry.ReasonGraceEnded, telemetry.ReasonGraceEnded
				reason = fmt.Sprintf("upstream %s (%s) cut after %d bytes: ferry is shutting down and %v", up.name, addr, result.n, c)
				recorded = c
			} else if tooLarge {
				// The caller's body passed limits.max_request_body_bytes
				// while the answer came (a bidirectional stream, a
				// full-duplex exchange): ferry cut the exchange, as it
				// answers 413 before the answer begins. The caller's
				// doing, not the endpoint's.
				o.Result = resilience.Canceled
				x.reason, ao.Reason = telemetry.ReasonOther, telemetry.ReasonOther
				reason = fmt.Sprintf("upstream %s (%s) cut after %d bytes: %v", up.name, addr, result.n, errBodyTooLarge)
				recorded = errBodyTooLarge
			} else if callerBody != nil {
				// As a 400 before the answer: the caller's doing, not
				// the endpoint's.
				o.Result = resilience.Canceled
				x.reason, ao.Reason = telemetry.ReasonClientCanceled, telemetry.ReasonClientCanceled
				reason = fmt.Sprintf("upstream %s (%s) cut after %d bytes: the caller's request body broke: %v", up.name, addr, result.n, callerBody.err)
				recorded = callerBody
			} else if callerGone(r) {
				o.Result = resilience.Canceled
				x.reason, ao.Reason = telemetry.ReasonClientCanceled, telemetry.ReasonClientCanceled
			}
			x.err, ao.Err = recorded, recorded
			e := pick.Done(o)
			a.End(ao)
			x.events(addr, e)
			if result.unsent && !cutMade && (x.reason != telemetry.ReasonClientCanceled || callerBody != nil && !callerGone(r)) {
				// Nothing of the response went out: the caller gets the
				// failure as a whole answer, or another endpoint's.
				f := failure{http.StatusBadGateway, fmt.Sprintf("upstream %s (%s) answered %d but its body broke before the first byte: %v", up.name, addr, res.StatusCode, result.readErr), x.reason, false, false}
				switch {
				case o.Result == resilience.TimedOut:
					f.status, f.reason = http.StatusGatewayTimeout, fmt.Sprintf("upstream %s (%s) answered %d but its body's first byte did not come: %v", up.name, addr, res.StatusCode, c)
				case tooLarge: // the 413 it would have been before the head
					f = failure{http.StatusRequestEntityTooLarge, errBodyTooLarge.Error(), telemetry.ReasonOther, true, false}
				case callerBody != nil: // the 400 it would have been before the head
					f = failure{http.StatusBadRequest, callerBody.Error(), telemetry.ReasonClientCanceled, true, false}
				case o.Result == resilience.Canceled: // the grace period ended
					f.status, f.reason = http.StatusServiceUnavailable, reason
				}
				p.logFailure(r, up.name, addr, f, result.readErr)
				if (o.Result == resilience.BodyBroken || firstCut) && !decided {
					// The connection closed or reset before the body's
					// first byte, or body_idle cut this attempt then: for
					// the caller, an attempt that broke (TransportFailed)
					// or timed out before its head, with no status,
					// retried as the policy allows that. The breaker
					// heard the outcome above; the response is closed, so
					// its connection is not reused.
					tried = append(tried, addr)
					as, why := resilience.Outcome{Result: resilience.TransportFailed}, telemetry.ReasonBodyBroken
					if firstCut {
						as, why = resilience.Outcome{Result: resilience.TimedOut}, telemetry.ReasonTimeout
					}
					// As before the first attempt, through the backoff too.
					idle.rewind(body == nil)
					if next, ok := p.retry(ctx, up, attempt, key, tried, r, body, as, x, why, nil, false); ok {
						x.status, x.reason, x.err, x.out, x.answerBegan = 0, "", nil, 0, false
						pick = next
						continue
					}
					if ctx.Err() != nil {
						// The exchange ended while deciding or in the
						// backoff: that is the outcome.
						var gone bool
						if f, gone = classify(ctx, up.name, addr, ctx.Err()); gone {
							x.status, x.reason = f.status, f.kind
							abortCaller(w, r, body)
						}
					}
				}
				x.fail(w, f)
				return
			}
			p.logFailure(r, up.name, addr, failure{res.StatusCode, reason, x.reason, false, false}, result.readErr)
			if frames != nil && frames.whole() && !cutMade && x.reason != telemetry.ReasonClientCanceled {
				// A gRPC stream that broke between messages ends with a
				// status, the code ferry's own failure would get: 502 for
				// the upstream's break and 503 for the drain's end
				// (UNAVAILABLE), 504 for a timeout (DEADLINE_EXCEEDED),
				// 413 for the caller's body over the limit
				// (RESOURCE_EXHAUSTED). The telemetry keeps the
				// upstream's status and the reason, as for a reset.
				f := failure{status: http.StatusBadGateway, reason: reason}
				switch {
				case o.Result == resilience.TimedOut:
					f.status = http.StatusGatewayTimeout
				case tooLarge:
					f.status = http.StatusRequestEntityTooLarge
				case o.Result == resilience.Canceled:
					f.status = http.StatusServiceUnavailable
				}
				endGRPCStream(w, f)
				x.grpcSet, x.grpcStatus = true, grpcCode(f) // what the caller is sent
				return
			}
			// The caller must see a broken response, never a clean end.
			resetCaller(w, r)
			if body.uploading() {
				// A Read of the caller's body in progress (the upstream
				// broke before the upload was over) would hold net/http's
				// server, which closes the body before the connection,
				// until the caller sent more.
				body.unblock(w)
			}
			abortCaller(w, r, body)
		case result.writeErr != nil, cutMade:
			// The caller went away or stopped reading, or ferry cut the
			// write (a timeout, the drain's grace period ended); a cut
			// that came as the body ended may still keep its last bytes,
			// still in the writer's buffer, from the caller (the upstream
			// answered whole: no failure of the endpoint's).
			if result.writeErr != nil {
				o.Result = resilience.Canceled
			}
			x.reason = telemetry.ReasonClientCanceled
			switch c := context.Cause(ctx); {
			case errors.Is(c, errBodyIdle), errors.Is(c, errOverallTimeout):
				x.reason = telemetry.ReasonTimeout
			case errors.Is(c, errGraceEnded):
				x.reason = telemetry.ReasonGraceEnded
			}
			ao.Reason = x.reason
		}
		if result.readErr == nil && result.writeErr == nil {
			// The body was read to its end: the trailers are in. The
			// attempt ended with the status the upstream sent (or, for a
			// gRPC call, the one its caller makes of an answer that
			// carries none). respond passed it on to the caller, unless
			// its writes were cut: net/http writes the trailers (a
			// trailers-only head went with the head) as the handler
			// returns, just after the server span ends.
			code, ok := grpcStatus(res)
			switch {
			case web != nil: // a gRPC-Web answer: see grpcWebStatus.status
				code, ok = web.status(res)
			case x.grpcWeb != "":
				// A gRPC-Web call answered otherwise (a plain 503 from a
				// balancer before the upstream, an HTML page): the status
				// its client makes of the HTTP one, as for gRPC.
				code, ok = grpcCodeOfHTTP(res.StatusCode), true
			case !ok && x.grpc:
				code, ok = grpcCallerStatus(res, result.n), true
			}
			if ok {
				ao.GRPC, ao.GRPCStatus = true, code
				if (x.grpc || x.grpcWeb != "") && !cutMade {
					x.grpcSet, x.grpcStatus = true, code
				}
			}
		}
		if o.Result == resilience.Responded {
			// The body was read to its end: a read or a write error
			// made the attempt BodyBroken or Canceled.
			if s := grpcHealthStatus(res, result.n); s != 0 {
				o.Status = s // an HTTP 200 ending a gRPC call UNAVAILABLE, say
			} else if web != nil {
				if s := web.health(res); s != 0 {
					o.Status = s // the same of a gRPC-Web call, or one that ended without a status
				}
			}
		}
		e := pick.Done(o) // the zero Effect when the retry check above reported it
		// The attempt ends with the request's reading, when it took one
		// (doneAt), not after it: its span lies within the request's.
		a.EndAt(ao, x.lane.doneTime())
		x.events(addr, e)
		if (body.broken() || cutMade || cutLate) && r.ProtoMajor == 1 {
			// The caller's body did not end cleanly: its connection
			// must not be read on, or what follows the bad framing
			// would be parsed as another request. Nor can it write on
			// once its writes were cut (cutOnCancel saw to an
			// HTTP/1.0 caller's reset).
			abortCaller(w, r, body)
		}
		return
	}
}

// tunnelHeld runs the tunnel of a switch the upstream answered, holding
// its slot (see resilience.Slot) until the tunnel is over, however it
// ends.
func (p *Proxy) tunnelHeld(slot *resilience.Slot, w http.ResponseWriter, r *http.Request, res *http.Response, upgrade string, up *upstream, addr string, a *telemetry.Attempt, x *exchange) {
	defer slot.Release()
	x.tunneled, x.out = p.tunnel(w, r, res, upgrade, up.name, addr, up.timeouts, x)
	res.Body.Close()
	// A switch the tunnel refused (x.fail) failed the attempt too.
	a.End(telemetry.Outcome{Status: res.StatusCode, BytesIn: x.out, BytesOut: x.tunneled, Reason: x.reason})
}

// exchangeContext is the context of one exchange, which ferry cancels
// with a cause (a timeout, a broken body) or when the exchange ends. The
// HTTP/1.1 lane gives each request a context of its own to cancel (and
// returns its exchange); a request from net/http gets a child context.
func exchangeContext(r *http.Request) (context.Context, context.CancelCauseFunc, *laneExchange) {
	if le, ok := r.Context().Value(laneCancelKey{}).(*laneExchange); ok {
		return r.Context(), le.cancel, le
	}
	ctx, cancel := context.WithCancelCause(r.Context())
	return ctx, cancel, nil
}

// idleTimer starts the body_idle timer of an exchange (nil when d <= 0):
// a lane request's connection lends its own; le may be nil.
func (le *laneExchange) idleTimer(d time.Duration, cancel context.CancelCauseFunc) *idleTimer {
	if d <= 0 || le == nil || le.idle == nil {
		return startIdleTimer(d, cancel)
	}
	le.idle.beginAt(d, cancel, le.headNow())
	return le.idle
}

// endBy has the lane end the exchange d after its head came, cancelled
// with errOverallTimeout, and reports whether it will; le may be nil.
func (le *laneExchange) endBy(d time.Duration) bool {
	if le == nil || le.deadline == nil {
		return false
	}
	now := monoOr(le.headNow())
	le.deadline.begin(monoAdd(now, d), le.cancel, now)
	return true
}

// respondDone takes the exchange's reading of the clock as its response
// went out whole (doneAt) when nothing that may wait follows before the
// exchange ends: a bodiless request answered by ferry's own client, whose
// connection goes back to its pool at once (spliceBody.Close). Any other
// exchange's end reads the clock itself.
func (le *laneExchange) respondDone(res *http.Response) {
	if sb, ok := res.Body.(*spliceBody); ok && sb.sent == nil {
		le.doneAt = time.Now()
	}
}

// callerGone reports whether the caller went away (closed or reset its
// connection, or reset its HTTP/2 stream).
func callerGone(r *http.Request) bool {
	ctx := r.Context()
	if ctx.Err() == nil {
		return false
	}
	if _, lane := ctx.Value(laneCancelKey{}).(*laneExchange); lane {
		// The exchange's own context: ferry cancels it for its own
		// reasons too.
		return errors.Is(context.Cause(ctx), errCallerGone)
	}
	return !errors.Is(context.Cause(ctx), errGraceEnded)
}

// retry decides whether attempt, which ended with o, is followed by
// another: the policy and budget must allow it and an endpoint not tried
// yet must be available. It then calls leave, when not nil, before it
// waits the backoff (the attempt's answer, unread, is done with then),
// and returns that endpoint's pick. unprocessed: an h2c upstream refused
// the attempt's stream unprocessed; the body ferry kept whole is sent again
// (see replayAttempt), and the endpoints tried may be picked again when no
// other is left.
func (p *Proxy) retry(ctx context.Context, up *upstream, attempt int, key string, tried []string, r *http.Request, body *requestBody, o resilience.Outcome, x *exchange, why string, leave func(), unprocessed bool) (resilience.Pick, bool) {
	taken := body.taken()
	if body != nil && (body.reading.Load() || body.stopped.Load()) {
		// The attempt's transport may be taking bytes now, or closed the
		// caller's body, which no retry can read then.
		taken = max(taken, 1)
	}
	if unprocessed && body.replayable() {
		taken = 0
	}
	wait, tok, d := up.res.Retry(attempt, r.Method, taken, body != nil, o)
	if d != resilience.RetryAllowed {
		return resilience.Pick{}, false
	}
	// The budget paid for this retry: it gets its token back whenever the
	// retry does not happen after all.
	next, err := up.res.Pick(key, tried)
	if err != nil && unprocessed {
		next, err = up.res.Pick(key, nil)
	}
	if err != nil {
		up.res.RefundRetry(tok) // no endpoint left to retry on
		return resilience.Pick{}, false
	}
	if !body.retire() {
		next.Done(resilience.Outcome{Result: resilience.Canceled})
		up.res.RefundRetry(tok)
		return resilience.Pick{}, false
	}
	if leave != nil {
		leave()
	}
	if !sleepCtx(ctx, wait) {
		next.Done(resilience.Outcome{Result: resilience.Canceled})
		up.res.RefundRetry(tok) // the exchange ended first: no retry made
		return resilience.Pick{}, false
	}
	// Reported once it is made: an exchange that ended during the
	// backoff made no retry.
	x.q.Retry(attempt+1, why)
	return next, true
}

// try makes one attempt at addr and returns the response with the
// attempt's context (which carries its per-try timeout cause) and its
// client span.
func (p *Proxy) try(ctx context.Context, w http.ResponseWriter, r *http.Request, up *upstream, addr, upgrade string, body *requestBody, x *exchange, info telemetry.AttemptInfo) (*http.Response, context.Context, *telemetry.Attempt, error) {
	actx := ctx
	rt := up.transportFor(r, upgrade != "")
	_, own := rt.(*fastH1)
	var tries *h2Tries
	// A lane request without a body or an upgrade goes through ferry's
	// client's bodiless exchange (the lane serves no head with Upgrade or
	// Expect fields, and such a request has no body: see eligible), which
	// bounds the attempt by its per-try deadline itself (see
	// fastH1.exchange): no context, timer and context.AfterFunc of its
	// own, which cost a plain request more than three quarters again of
	// its instructions.
	d := up.timeouts.PerTry
	selfBounded := d > 0 && own && x.lane != nil && upgrade == "" && body == nil
	if selfBounded {
		x.lane.perTryDue = monoAdd(monoOr(x.lane.headNow()), d)
	} else if d > 0 || rt == up.h2c {
		var cancel context.CancelCauseFunc
		actx, cancel = context.WithCancelCause(ctx)
		if d > 0 {
			t := time.AfterFunc(d, func() { cancel(errPerTryTimeout) })
			defer t.Stop()
		}
		// The attempt context must outlive this call when the response
		// streams; it ends with the request's.
		context.AfterFunc(ctx, func() { cancel(nil) })
		if rt == up.h2c {
			tries = &h2Tries{cancel: cancel}
			actx = httptrace.WithClientTrace(actx, tries.trace())
		}
	}
	if x.lane != nil && (!own || upgrade != "") {
		x.lane.escaped = true
	}
	informed := w // the writer the upstream's 1xx answers go to
	if r.ProtoMajor == 1 && r.ProtoMinor == 0 {
		// HTTP/1.0 has no interim answers (RFC 9110 section 15.2): such
		// a caller would read a 103 as the response, the final one as
		// its body.
		informed = nil
	}
	if upgrade != "" {
		// The upstream's socket, which a tunnel resets when the caller's
		// side of it breaks.
		ct := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { x.upConn = i.Conn }}
		x.switchBody = nil
		if body != nil {
			// The upstream may switch before it read the body: the
			// tunnel waits until the body went out whole (see
			// switchBody).
			sb := &switchBody{done: make(chan struct{}), chunked: r.ContentLength < 0}
			ct.GotConn = func(i httptrace.GotConnInfo) { x.upConn, sb.conn = i.Conn, i.Conn }
			ct.WroteRequest = sb.wroteRequest
			x.switchBody = sb
		}
		actx = httptrace.WithClientTrace(actx, ct)
	}
	out := p.outgoing(actx, informed, r, addr, upgrade, body, own, rt != up.h2c, x.lane)
	if tries != nil && out.GetBody != nil {
		out.GetBody = tries.getBody(out.GetBody)
	}
	a := x.q.StartAttempt(out, info)
	// The upstream gets a new trace context whose parent is this
	// attempt's client span, never the caller's headers passed through.
	// (With tracing off there is nothing to replace: the caller's go on
	// as they came.)
	for _, h := range p.propagate {
		delete(out.Header, h)
	}
	if le := x.lane; le != nil && out == &le.first.req && le.first.fwd.vals != nil {
		// ferry's HTTP/1.1 client writes this attempt's X-Forwarded-*
		// fields into the head (see outgoing): its traceparent too.
		if a.InjectHead(out.Header, &le.tp) {
			le.first.fwd.tp = &le.tp
		}
	} else {
		a.Inject(out.Header)
	}
	var res *http.Response
	var err error
	if own {
		res, err = rt.RoundTrip(out)
	} else {
		res, err = roundTripInformed(rt, out, informed)
	}
	x.lane.takeHead() // the round trip waited: no step after it takes that reading
	if selfBounded {
		x.lane.perTryDue = 0
		if errors.Is(err, errPerTryTimeout) {
			// The attempt's context says why it failed, as a
			// cancelled one of its own would (see classify).
			var cancel context.CancelCauseFunc
			actx, cancel = context.WithCancelCause(ctx)
			cancel(errPerTryTimeout)
		}
	}
	if err != nil && rt == up.h2c && actx.Err() == nil {
		err = up.peer.explain(addr, err)
	}
	if err == nil {
		body.dropHeld() // the upstream took the stream: no replay
	}
	if err == nil && (res.StatusCode < 100 || res.StatusCode > 999) {
		// net/http's transports take such a status for a final answer,
		// which WriteHeader would refuse with a panic.
		res.Body.Close()
		res, err = nil, fmt.Errorf("%w %d", errBadStatus, res.StatusCode)
	}
	if err == nil && res.ProtoMajor == 2 && headOver(res.Header, maxResponseHeader) {
		// An h2c upstream's head is held to an HTTP/1.1 upstream's
		// bound. net/http's HTTP/2 client reads up to 10 MiB of it: a
		// lower limit there would close the upstream connection, every
		// stream on it included, over one stream's head (its framer
		// ends a connection whose peer goes past the advertised header
		// list size), where this fails the one exchange. Closing it
		// waits for the request body's writer, which a Read of a caller's
		// body still uploading holds (see closeResponse).
		closeResponse(res, body)
		res, err = nil, errHeadTooLarge
	}
	if err == nil && res.ProtoMajor == 2 && (res.StatusCode == http.StatusNoContent || res.StatusCode == http.StatusNotModified) {
		// A 204 or 304 has no body (RFC 9113 section 8.1.1), but Go's
		// HTTP/2 client gives one whose stream ended with a
		// Content-Length (a 304 may carry the one a 200 would have, RFC
		// 9110 section 8.6) a body that fails when read, as a body cut
		// short. (HTTP/1.1's readers give these none.)
		res.Body.Close()
		res.Body = http.NoBody
	}
	return res, actx, a, err
}

// headOver reports whether a response head with fields h is over max
// bytes, counted as HTTP/1.1 writes it (name, ": ", value, CRLF).
func headOver(h http.Header, max int) bool {
	n := 0
	for k, vs := range h {
		for _, v := range vs {
			if n += len(k) + len(v) + 4; n > max {
				return true
			}
		}
	}
	return false
}

// attemptResult classifies a failed round trip for the breaker: the
// proxy's own timeouts are timeouts, a caller's broken or oversized body is
// the caller's doing (Canceled), the rest as resilience sees it.
func attemptResult(ctx context.Context, err error) resilience.Result {
	cause := context.Cause(ctx)
	var be *bodyReadError
	switch {
	case errors.Is(cause, errBodyIdle), errors.Is(cause, errOverallTimeout), errors.Is(cause, errPerTryTimeout):
		return resilience.TimedOut
	case errors.Is(cause, errBodyTooLarge), errors.Is(err, errBodyTooLarge), errors.As(err, &be):
		return resilience.Canceled
	case isH2Refused(ctx, err):
		return resilience.TransportFailed
	}
	return resilience.ClassifyError(err)
}

// sleepCtx waits d, or returns false when ctx ends first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// outgoing builds the upstream request. A request without a body goes out
// without one (never chunked); a body of unknown length goes chunked;
// trailers follow the body. own says ferry's HTTP/1.1 client (fastH1)
// carries it, which takes the 1xx hook from the lane exchange le (nil when
// the request is not the lane's) or the context directly; h1 says it goes
// to the upstream over HTTP/1.1 (by fastH1 or net/http's Transport); w is
// the writer 1xx answers are relayed to, nil for none.
func (p *Proxy) outgoing(ctx context.Context, w http.ResponseWriter, r *http.Request, addr, upgrade string, body *requestBody, own, h1 bool, le *laneExchange) *http.Request {
	// 1xx informational responses (103 Early Hints) pass through. 100
	// Continue is not forwarded here: the server sends it to the caller
	// when the transport starts reading the body, which it does when the
	// upstream sent its own 100.
	// (net/http's transports get theirs in try, see roundTripInformed.)
	switch {
	case w == nil:
	case own && le != nil:
		le.inform = w
	case own:
		ctx = context.WithValue(ctx, informKey{}, w)
	}
	// A shallow copy: every field the copy changes gets a value of its
	// own, the rest (TransferEncoding, Trailer, TLS, ...) is only read.
	// The copy and its URL are one allocation, or none: a lane request's
	// first attempt has them in its exchange.
	var o *outRequest
	if le != nil && !le.headerSent {
		o = &le.first
	} else {
		o = new(outRequest)
	}
	o.req = *r.WithContext(ctx)
	out := &o.req
	switch {
	case le != nil && !le.headerSent:
		// The lane parsed this header for this request alone and reads
		// nothing of it after the first attempt: that attempt takes it
		// as is, without a copy. Later attempts copy it back as it came
		// (the rest of what the attempt changed, it changes again the
		// same way).
		le.headerSent = true
		// What the caller named hop-by-hop goes first: a retry must not
		// restore a field this attempt did not send.
		if le.hopFields {
			removeHopHeaders(r.Header, true)
		}
		if le.forwarded { // (else the lane parsed none)
			le.forwardedFor = r.Header["X-Forwarded-For"]
		}
		out.Header = r.Header
		// The lane serves no head with Upgrade fields, and says when
		// one has Expect: the first attempt's has them only if this
		// adds them (see fastH1.RoundTrip).
		o.bare = upgrade == "" && !le.expect
	case le != nil:
		out.Header = r.Header.Clone()
		delete(out.Header, "X-Forwarded-For")
		if le.forwardedFor != nil {
			out.Header["X-Forwarded-For"] = le.forwardedFor
		}
	default:
		out.Header = r.Header.Clone()
		if out.Header == nil {
			out.Header = http.Header{}
		}
	}
	out.RequestURI = ""
	o.url = url.URL{Scheme: "http", Host: addr, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery, ForceQuery: r.URL.ForceQuery}
	out.URL = &o.url
	out.Host = r.Host
	out.Close = false
	if body == nil {
		out.Body = nil
		out.ContentLength = 0
		out.GetBody = nil
	} else {
		// A retry after an h2c upstream refused the stream unprocessed
		// sends the body ferry kept whole (see keepForReplay).
		var ab *attemptBody
		if body.taken() > 0 {
			ab = body.replayAttempt()
		}
		if ab == nil {
			ab = body.attempt()
		}
		out.Body = ab
		// Request trailers arrive in r.Trailer once the body is read; the
		// transport must see that same map.
		out.Trailer = r.Trailer
		if h1 && len(r.Trailer) > 0 && out.ContentLength > 0 {
			// An h2c caller's body may have a content-length and
			// trailers both; over HTTP/1.1 only a chunked body has
			// trailers, and net/http's Transport sends a body of known
			// length without them.
			out.ContentLength = -1
		}
		// A pooled connection the upstream closed as the request went out
		// fails before any of the body was written; net/http retries that
		// on a fresh connection only when it can get the body again. Until
		// a byte is read the body is still whole, so it can.
		out.GetBody = func() (io.ReadCloser, error) {
			if body.taken() > 0 {
				return nil, errBodyNotReplayable
			}
			if body.stopped.Load() {
				return nil, errBodyStopped
			}
			return ab, nil
		}
		if !h1 {
			// net/http's HTTP/2 client asks for the body again only for
			// a stream the upstream did not process (refused, above a
			// GOAWAY's last stream id): a small body it read whole
			// meanwhile goes again from ferry's copy.
			body.keepForReplay()
			out.GetBody = func() (io.ReadCloser, error) {
				if body.taken() > 0 {
					return body.replay()
				}
				if body.stopped.Load() {
					// The transport closed the body to end a Read
					// waiting on the caller: the caller's body is
					// closed, and nothing of it can be read again.
					return nil, errBodyStopped
				}
				return ab, nil
			}
		}
	}
	if le == nil {
		// (A lane request's header lost its hop-by-hop fields above, on
		// its first attempt; later ones copy it.)
		removeHopHeaders(out.Header, true)
	}
	if upgrade != "" {
		out.Header["Connection"] = []string{"Upgrade"}
		out.Header["Upgrade"] = []string{upgrade}
	}
	// (A lane request's header without hop-by-hop fields has no TE. Nor
	// does it lose its User-Agent to a Connection field naming it: one
	// the lane parsed is there, in a later attempt's copy too.)
	if h1 && (le == nil || le.hopFields) && out.Header["Te"] != nil {
		// The caller's "TE: trailers" (all removeHopHeaders keeps of TE)
		// goes on with the "TE" connection option RFC 9110 section 10.1.4
		// has a sender of TE add: TE is hop-by-hop, and is ferry's own to
		// this upstream, which may send trailers only when asked for them
		// (ferry relays them to the caller). Over HTTP/2 there is no
		// Connection field: te alone says it (RFC 9113 section 8.2.2).
		// (On a lane request's first attempt this header is the caller's
		// own map, which later attempts copy: they go to the same kind of
		// upstream and set the same.)
		if upgrade != "" {
			out.Header["Connection"] = []string{"Upgrade, TE"}
		} else {
			out.Header["Connection"] = []string{"TE"}
		}
	}
	if le != nil && o == &le.first && own && !le.forwarded && !le.forwardedOther {
		// ferry's HTTP/1.1 client writes the X-Forwarded-* fields into
		// the head from these values (writeHead), where setting them in
		// the header (three map assignments, each iterated again as the
		// head is written) was a twentieth of a small request's
		// instructions. The caller sent none that they would replace.
		// Should the client hand the request to net/http's Transport
		// instead, it puts them in the header then, and keeps Go's
		// default User-Agent out (see fastH1.RoundTrip).
		o.fwd = forwardedValues(nil, r, &le.fwd, le.caller, &le.forwardedFor)
		return out
	}
	if le == nil || !le.userAgent || le.hopFields {
		if _, ok := out.Header["User-Agent"]; !ok {
			out.Header["User-Agent"] = nil // do not add Go's default
		}
	}
	var fwd *[3]string
	var caller *callerAddr
	var prior *[]string
	if le != nil {
		if o == &le.first {
			fwd = &le.fwd // the first attempt's, with it
		}
		caller = le.caller
		prior = &le.forwardedFor // what every attempt's header has (above)
	}
	setForwarded(out.Header, r, fwd, caller, prior)
	return out
}

// outRequest is an upstream request and its URL (see outgoing).
type outRequest struct {
	req http.Request
	url url.URL
	// bare: req's header has no Upgrade or Expect field (set for a lane
	// request's first attempt, see outgoing).
	bare bool
	// fwd: the X-Forwarded-* fields that are not in req's header, but
	// go out with it (a lane request's first attempt to an HTTP/1.1
	// upstream, see outgoing); its zero value, none.
	fwd forwarded
}

// informKey carries, in the context of an upstream request, the caller's
// http.ResponseWriter that 1xx informational responses are relayed to,
// unless the lane exchange in that context carries it (see informer).
type informKey struct{}

// informer returns the writer that 1xx responses to the upstream request
// of ctx are relayed to.
func informer(ctx context.Context) (http.ResponseWriter, bool) {
	if le, ok := ctx.Value(laneCancelKey{}).(*laneExchange); ok && le.inform != nil {
		return le.inform, true
	}
	w, ok := ctx.Value(informKey{}).(http.ResponseWriter)
	return w, ok
}

// inform relays an upstream's 1xx informational response (not 100
// Continue, see outgoing) to the caller.
func inform(w http.ResponseWriter, code int, h http.Header) {
	if code == http.StatusContinue {
		return
	}
	dst := w.Header()
	copyHeader(dst, h)
	removeHopHeaders(dst, false) // hop-by-hop in an interim response too
	w.WriteHeader(code)
	clear(dst)
}

// roundTripInformed is rt.RoundTrip(out) through one of net/http's
// transports, relaying 1xx responses to w (none when w is nil). The
// transport reports them from its own goroutine, which may still be
// reading after the round trip gave up (a timeout, the caller gone): a 1xx
// that late is dropped, never written to w beside the failure answer or
// the connection's next response. An HTTP/1.1 connection the request
// takes is told to expect its response head (see headFixConn), and the
// request body that it writes there learns the socket (see sendsTo).
func roundTripInformed(rt http.RoundTripper, out *http.Request, w http.ResponseWriter) (*http.Response, error) {
	s := &informedTrip{w: w, body: out.Body}
	s.trace = httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if !s.over && s.w != nil {
			inform(s.w, code, http.Header(h))
		}
		return nil
	}, Wait100Continue: func() {
		s.mu.Lock()
		s.asked = time.Now()
		s.mu.Unlock()
	}, Got100Continue: func() {
		s.mu.Lock()
		s.got100 = true
		s.mu.Unlock()
	}, GotFirstResponseByte: func() {
		s.mu.Lock()
		s.answered = true
		s.mu.Unlock()
	}, GotConn: func(info httptrace.GotConnInfo) {
		if c, ok := info.Conn.(*headFixConn); ok {
			c.expectHead(out.Method == http.MethodHead)
			if ab, ok := s.body.(*attemptBody); ok {
				if tc, ok := c.Conn.(*net.TCPConn); ok {
					ab.b.sendsTo(tc)
				}
			}
		}
	}}
	if ab, ok := s.body.(*attemptBody); ok && out.Header["Expect"] != nil && out.Header["Upgrade"] == nil {
		s.done = out.Context().Done()
		if _, own := w.(*connWriter); !own && w != nil {
			s.caller = callerSocket(w, out)
		}
		ab.trip = s
	}
	res, err := rt.RoundTrip(out.WithContext(httptrace.WithClientTrace(out.Context(), &s.trace)))
	s.mu.Lock()
	s.over = true
	s.mu.Unlock()
	return res, err
}

// informedTrip is what the hooks of one roundTripInformed share, with
// the trace that holds them: one allocation for all.
type informedTrip struct {
	trace httptrace.ClientTrace
	mu    sync.Mutex
	over  bool // the round trip returned: a 1xx is late
	w     http.ResponseWriter
	body  io.ReadCloser // the request's
	// For a request with Expect: 100-continue: when the transport began
	// to wait for the upstream's 100 (zero: not yet), whether a 100 came,
	// whether any answer's first byte did, and the request's end.
	asked    time.Time
	got100   bool
	answered bool
	done     <-chan struct{}
	caller   *net.TCPConn // the HTTP/1.1 caller's socket net/http serves, when known
}

// answeredFirst reports that the upstream gave its final answer to an
// Expect: 100-continue request without asking for the body: net/http's
// HTTP/1.1 Transport then sends the body anyway when that answer keeps
// the connection open (one it would otherwise have to close), and
// reading the caller's body for it would make net/http's server send the
// caller a 100 Continue the upstream never gave, for an upload nobody
// reads (the caller's answer then ends only when it sent all of it, or at
// body_idle). The transport reads the body after a 100, after its
// continueTimeout wait (which starts after Wait100Continue), or after a
// final answer: a Read with no 100, an answer begun and less than
// continueTimeout since the wait began can only follow a final answer.
// A 1xx other than 100 and then the timeout's end is read as the timeout.
func (s *informedTrip) answeredFirst() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.asked.IsZero() && !s.got100 && s.answered && time.Since(s.asked) < continueTimeout
}

// bodyStart is what awaitBody read of a body before its head goes out:
// the relay's buffer holding the first bytes, or nil.
type bodyStart struct {
	bp    *[]byte
	first int
	// buffered: the body's first bytes came with the head, and are in
	// the client's buffer (see relay's seen).
	buffered bool
}

// awaitBody awaits a Content-Length body's first bytes before its head is
// written. The head goes out with them anyway (the writers hold it until
// then); awaiting them first means that a body that breaks before its
// first byte leaves nothing sent: forward retries the exchange elsewhere
// when the policy allows, or the caller gets the failure as a whole
// answer: never a head without its body, nor the part of a head
// larger than the writer's buffer that the full buffer let out. A body of
// unknown length or an event stream has its head sent at once instead
// (see respondHeader). An error is the body's, broken before any byte;
// cut says body_idle cut the attempt in that wait (idle's guardFirst).
func awaitBody(res *http.Response, idle *idleTimer) (st bodyStart, cut bool, err error) {
	sb, _ := res.Body.(*spliceBody)
	if !lengthFollows(res) || (sb != nil && sb.remaining <= 0) || isEventStream(res.Header) {
		return st, false, nil
	}
	// While the first byte is awaited, body_idle cuts the attempt, not the
	// exchange (see idleTimer.guardFirst): with nothing sent yet, another
	// endpoint may answer. A first byte already here needs no guard.
	if sb != nil {
		if sb.c.br.Buffered() > 0 {
			st.buffered = true
			return st, false, nil
		}
		idle.guardFirst(sb.c.tc)
		err = sb.awaitFirst()
		if cut = idle.unguardFirst(); cut && err == nil {
			err = errBodyIdle // the byte came as the timer closed the connection
		}
		return st, cut, err
	}
	st.bp = bufPool.Get().(*[]byte)
	idle.guardFirst(res.Body)
	st.first, err = readFirst(res.Body, *st.bp)
	if cut = idle.unguardFirst(); cut && err == nil {
		err = errBodyIdle
	}
	if err != nil {
		bufPool.Put(st.bp)
		return bodyStart{}, cut, err
	}
	return st, cut, nil
}

// respond relays the upstream's status, headers, body and trailers, and
// says how the body copy ended; st is what awaitBody read. On a broken
// body the caller must abort the response (the caller sees a connection
// closed short, no final chunk, or a reset HTTP/2 stream), never end it
// cleanly.
//
// frames follows a gRPC response's messages (see grpcFrames), web a
// gRPC-Web response's trailer frame (see grpcWebStatus); nil for any
// other response. Such a response is relayed, never spliced.
func (p *Proxy) respond(w http.ResponseWriter, r *http.Request, res *http.Response, idle *idleTimer, st bodyStart, frames *grpcFrames, web *grpcWebStatus) relayResult {
	sb, _ := res.Body.(*spliceBody)
	var buf []byte // the relay's, holding first bytes read
	if st.bp != nil {
		defer bufPool.Put(st.bp)
		buf = *st.bp
	}
	asCame := false
	// seen: relay's first read takes bytes buffered since before the idle
	// timer's last look at the clock (see relay), when the head written
	// before them fits in the caller's writer (no write that may wait).
	seen := false
	if sb != nil && sb.fields.lines != "" {
		// A plain response to an HTTP/1.1 caller: its head goes on as it
		// came; to any other, from the header it would have had.
		cw, ok := w.(*connWriter)
		seen = ok && st.buffered && len(sb.fields.lines)+headSlack <= cw.bw.Available()
		if asCame = ok && cw.writeFields(res.StatusCode, &sb.fields); !asCame {
			res.Header = sb.fields.header()
			seen = false
		}
		sb.fields = rawFields{}
	}
	h := res.Header
	if !asCame {
		h = p.respondHeader(w, r, res)
	}
	rc := http.NewResponseController(w)
	var result relayResult
	spliced := false
	dst := callerSocket(w, res.Request)
	if sb != nil && frames == nil && web == nil {
		result, spliced = sb.spliceTo(w, dst, idle)
	}
	if !spliced {
		if buf == nil {
			bp := bufPool.Get().(*[]byte)
			defer bufPool.Put(bp)
			buf = *bp
		}
		result = relay(w, rc, res.Body, dst, idle, buf, st.first, frames, web, seen && frames == nil)
	}
	if result.readErr == nil && result.writeErr == nil {
		if len(res.Trailer) > 0 { // (most have none: no map iteration to start)
			dropForbiddenTrailers(res.Trailer) // as a caller's are
			for k, vv := range res.Trailer {
				h[http.TrailerPrefix+k] = vv
			}
		}
	}
	return result
}

// closeResponse closes the upstream's response body once it was relayed
// (or broke). net/http's HTTP/2 client, closing a response, waits until it
// stopped writing the request body, which a Read of the caller's body in
// progress holds up: an upstream that answered before the caller's upload
// was over (RFC 9113 section 8.1) would keep an HTTP/1.1 caller from its
// answer's end, whole or broken, until that caller sent more of its body
// or hung up (an HTTP/2 caller's body unblocks as it is closed). That
// wait is left to a goroutine of its own: the Read ends with the caller's
// connection, or its next bytes, and nothing more is sent upstream (the
// client stops the stream at once and drops them).
func closeResponse(res *http.Response, body *requestBody) {
	if res.ProtoMajor == 2 && body.uploading() {
		go res.Body.Close()
		return
	}
	res.Body.Close()
}

// callerSocket returns the caller's socket behind w, for the request
// out (made from the caller's): the connection ferry answers on itself,
// or one net/http serves after the lane handed it over; nil for any other
// (an HTTP/2 caller's, whose flow control paces the relay's writes).
func callerSocket(w http.ResponseWriter, out *http.Request) *net.TCPConn {
	if cw, ok := w.(*connWriter); ok {
		return cw.tc
	}
	if out == nil {
		return nil
	}
	if pc, ok := out.Context().Value(handedConnKey{}).(*prefixConn); ok {
		tc, _ := pc.Conn.(*net.TCPConn)
		return tc
	}
	return nil
}

// abortCaller breaks the answer to the caller: the handler panics with
// http.ErrAbortHandler, and net/http resets an HTTP/2 caller's stream or
// closes an HTTP/1.x caller's connection. Before it closes that
// connection, net/http's server reads what is left of the caller's body
// (up to 256 KiB) when it closes the body, and so does ferry's transport
// closing it; a caller that waits for the answer to end before it sends
// more (a full-duplex exchange) sends nothing, and the answer never ends.
// A read deadline in the past does not end those reads for certain:
// net/http, ending the handler, clears the deadline once it has ended a
// read in progress, and the transport goes on reading after that. So the
// read side of such a caller's socket is shut first, when its body did
// not reach its end: every read after it returns what the socket holds
// and then the end, and one waiting returns at once. Nothing is lost: the
// connection closes right after.
func abortCaller(w http.ResponseWriter, r *http.Request, body *requestBody) {
	if r.ProtoMajor == 1 && body.unfinished() {
		if _, own := w.(*connWriter); !own {
			// The lane's own connections (and those taken over from
			// net/http) close without reading on.
			if tc := callerSocket(w, r); tc != nil {
				_ = tc.CloseRead()
			}
		}
	}
	panic(http.ErrAbortHandler)
}

// resetCaller makes an HTTP/1.0 caller's connection end with a reset
// (RST) instead of a FIN when the response begun on it breaks. Such a
// caller's body (one ferry's answer gives no Content-Length) is delimited
// by the connection's end, so a FIN would pass a body cut short off as
// whole. An HTTP/1.1 caller's body is chunked or of a Content-Length, and
// a connection that ends before its framing does tells it; an HTTP/2
// caller's stream is reset. It must come before the connection closes:
// just before the handler panics with http.ErrAbortHandler, or before a
// write to the caller is made to fail (see cutOnCancel).
func resetCaller(w http.ResponseWriter, r *http.Request) {
	if tc := http10Socket(w, r); tc != nil {
		_ = tc.SetLinger(0)
	}
}

// http10Socket is the socket of an HTTP/1.0 caller (see callerSocket);
// nil for any other caller.
func http10Socket(w http.ResponseWriter, r *http.Request) *net.TCPConn {
	if r.ProtoMajor != 1 || r.ProtoMinor != 0 {
		return nil
	}
	return callerSocket(w, r)
}

// sentWhole reports whether an HTTP/1.x caller was sent the whole of res:
// its body, of the length its Content-Length announced, read and written
// (each write flushed by relay, or spliced) without an error. Over HTTP/2
// the stream's end goes out only as the handler returns.
func sentWhole(r *http.Request, res *http.Response, result relayResult) bool {
	return r.ProtoMajor == 1 && result.readErr == nil && result.writeErr == nil &&
		lengthFollows(res) && result.n == res.ContentLength
}

// noBodyFollows reports whether no body follows the response's head: an
// answer to HEAD, a 204 or 304, or a Content-Length of 0.
func noBodyFollows(res *http.Response) bool {
	return res.StatusCode >= 200 && (res.ContentLength == 0 || res.StatusCode == http.StatusNoContent ||
		res.StatusCode == http.StatusNotModified || res.Request != nil && res.Request.Method == http.MethodHead)
}

// lengthFollows reports whether a body of the response's Content-Length
// (more than none) follows its head: not so for an answer to HEAD, nor a
// 1xx, 204 or 304, whatever their Content-Length says.
func lengthFollows(res *http.Response) bool {
	return res.ContentLength > 0 && res.Body != http.NoBody && res.StatusCode >= 200 &&
		res.StatusCode != http.StatusNoContent && res.StatusCode != http.StatusNotModified &&
		(res.Request == nil || res.Request.Method != http.MethodHead)
}

// writeCut ends a write to the caller of a response body once the
// exchange's context ended: a caller that stops reading holds the relay
// in a write that nothing else ends, past ferry's timeouts and a drain's
// end. A write deadline in the past ends it, which resets an HTTP/2
// caller's stream and breaks an HTTP/1.1 caller's connection.
type writeCut struct {
	le *laneExchange // the lane request's own hook, or
	af *guardedAfter // context.AfterFunc's
}

// cutOnCancel arms the cut of writes to w for the context of the
// exchange: through the lane request's exchange when ctx ends only with
// it (see closeOnCancel), else with context.AfterFunc. What the caller
// of r was sent is short then: an HTTP/1.0 caller's connection is made to
// end with a reset (resetCaller) before the write fails, as net/http's
// server closes a connection whose write failed at once.
//
// A gRPC response's relay waiting for the upstream at a message boundary
// (frames, nil for any other response) is spared the cut: it writes
// nothing more, and its stream can end with a status (see grpcFrames).
func cutOnCancel(ctx context.Context, w http.ResponseWriter, r *http.Request, frames *grpcFrames) writeCut {
	if le := laneOwned(ctx); le != nil {
		if cw, ok := w.(*connWriter); ok {
			le.writer.Store(cw)
			if ctx.Err() != nil {
				le.fire() // cancelled before the hook was seen
			}
			return writeCut{le: le}
		}
	}
	// The socket, not r: a function that keeps r would move every
	// request to the heap.
	tc := http10Socket(w, r)
	return writeCut{af: afterGuarded(ctx, func() {
		if frames.spare() {
			return
		}
		if tc != nil {
			_ = tc.SetLinger(0) // as resetCaller
		}
		_ = http.NewResponseController(w).SetWriteDeadline(time.Unix(1, 0))
	})}
}

// stop disarms the cut; true when it was made (or is being made): an
// HTTP/1.1 connection must not carry that deadline to its next exchange.
func (c writeCut) stop() bool {
	if c.le != nil {
		return c.le.writer.Swap(nil) == nil
	}
	return c.af.stop()
}

// guardedAfter is context.AfterFunc for a function that touches the
// handler's http.ResponseWriter. context.AfterFunc runs it on a goroutine
// of its own, and its stop does not wait for a run already begun: the run
// could reach the writer after the handler returned, when net/http no
// longer owns it (an HTTP/2 writer is cleared then, and a call on it
// panics on that goroutine, which ends the process). Once stop returned,
// the function has finished and will not run.
type guardedAfter struct {
	mu     sync.Mutex
	over   bool
	stopFn func() bool
}

// testHookGuardedRun, set by tests only, runs at the start of every
// guardedAfter run: a test holds it to have stop come first.
var testHookGuardedRun atomic.Pointer[func()]

// afterGuarded arranges for f to run when ctx ends, unless stop comes
// first.
func afterGuarded(ctx context.Context, f func()) *guardedAfter {
	g := &guardedAfter{}
	g.stopFn = context.AfterFunc(ctx, func() {
		if h := testHookGuardedRun.Load(); h != nil {
			(*h)()
		}
		g.mu.Lock()
		defer g.mu.Unlock()
		if !g.over {
			f()
		}
	})
	return g
}

// stop disarms g, waiting for a run in progress; true when f ran (or was
// about to).
func (g *guardedAfter) stop() bool {
	if g.stopFn() {
		return false
	}
	g.mu.Lock()
	g.over = true
	g.mu.Unlock()
	return true
}

// respondHeader writes the status and header of res to w, and returns the
// header w sends (for the trailers that follow the body). A 204 or 304
// goes without Content-Length, to every caller as net/http's HTTP/1.1
// server and the lane write it: RFC 9110 section 8.6 forbids one on a 204,
// and on a 304 it is optional; over HTTP/2, with the end of the stream
// after the head, Go's client takes it for a body that came short. (An
// answer to HEAD keeps its own.) A body with trailers goes to an HTTP/1.1
// caller chunked (trailersNeedChunks).
func (p *Proxy) respondHeader(w http.ResponseWriter, r *http.Request, res *http.Response) http.Header {
	removeHopHeaders(res.Header, false)
	if res.StatusCode == http.StatusNoContent || res.StatusCode == http.StatusNotModified {
		delete(res.Header, "Content-Length")
	}
	if trailersNeedChunks(r, res) {
		delete(res.Header, "Content-Length")
		res.ContentLength = -1 // whole at its last chunk, not at a length (sentWhole)
	}
	var h http.Header
	if a, ok := w.(interface{ adoptHeader(http.Header) bool }); ok && a.adoptHeader(res.Header) {
		h = res.Header // nothing else reads the upstream's header after this
	} else {
		h = w.Header()
		copyHeader(h, res.Header)
		if _, typed := h["Content-Type"]; !typed {
			// net/http's servers would sniff the body's first bytes for
			// a type the upstream did not give: a nil value (written as
			// no field) tells them not to. (The lane's writer adopts the
			// header above and never sniffs.)
			h["Content-Type"] = nil
		}
	}
	if n := len(res.Trailer); n > 0 {
		names := make([]string, 0, n)
		for k := range res.Trailer {
			names = append(names, k)
		}
		h["Trailer"] = []string{strings.Join(names, ", ")}
	}
	w.WriteHeader(res.StatusCode)
	if res.ContentLength == -1 && !firstChunkAtHand(res) || isEventStream(res.Header) {
		// Headers first, so a caller of a quiet event stream or a
		// long-poll knows at once that it is connected.
		_ = http.NewResponseController(w).Flush()
	}
	return h
}

// firstChunkAtHand reports whether a chunked body that ferry's client reads
// has its first chunk's size line, a size above zero, and some of the
// chunk's bytes in the connection's buffer already: the relay's first read
// returns them at once, and the head goes out with them in one write
// rather than alone before them (a small chunked answer took three writes
// to an HTTP/1.1 caller: the head, the chunk, the last chunk).
func firstChunkAtHand(res *http.Response) bool {
	sb, ok := res.Body.(*spliceBody)
	if !ok || res.TransferEncoding == nil || sb.c == nil || sb.c.br == nil {
		return false
	}
	buf, _ := sb.c.br.Peek(sb.c.br.Buffered())
	return chunkSizeAbove0(buf)
}

// chunkSizeAbove0 reports whether buf starts with a chunk-size line (one to
// eight hex digits, then an extension or the line's end) of a size above
// zero, and holds at least one byte after that line. Anything else (a size
// net/http's decoder might refuse among them) is left to the relay.
func chunkSizeAbove0(buf []byte) bool {
	i := bytes.IndexByte(buf, '\n')
	if i < 1 || i+1 >= len(buf) || buf[i-1] != '\r' {
		return false
	}
	above0 := false
	for k, c := range buf[:i-1] {
		switch {
		case k >= 8 && c != ';':
			return false
		case '1' <= c && c <= '9', 'a' <= c && c <= 'f', 'A' <= c && c <= 'F':
			above0 = true
		case c == '0':
		case c == ';' && k > 0:
			return above0
		default:
			return false
		}
	}
	return above0
}

// trailersNeedChunks reports whether res, a response with a Content-Length
// and announced trailers, can reach the HTTP/1.1 caller of r with those
// trailers only chunked, without its Content-Length. An HTTP/2 message may
// carry both (Go's HTTP/2 server gives a short answer whose handler
// announced trailers a content-length); over HTTP/1.1 only a chunked body
// has trailers, and with the Content-Length kept the caller would be told
// of trailers that never come. An HTTP/1.0 caller can be sent none either
// way and keeps the length, as does an answer without a body. Trailers an
// upstream did not announce are known only after the body: they reach an
// HTTP/1.1 caller only when its body went chunked anyway.
func trailersNeedChunks(r *http.Request, res *http.Response) bool {
	return len(res.Trailer) > 0 && res.ContentLength >= 0 && r.ProtoMajor == 1 && r.ProtoMinor >= 1 &&
		r.Method != http.MethodHead && res.StatusCode >= 200 &&
		res.StatusCode != http.StatusNoContent && res.StatusCode != http.StatusNotModified
}

func (p *Proxy) logFailure(r *http.Request, service, addr string, f failure, err error) {
	if p.Log == nil {
		return
	}
	p.Log.LogAttrs(r.Context(), slog.LevelWarn, "proxy failure",
		slog.String("listener", p.Name), slog.String("service", service), slog.String("endpoint", addr),
		slog.String("method", r.Method), slog.Int("status", f.status), slog.String("reason", f.reason),
		slog.String("error", err.Error()))
}

// testHookResponded, set by tests only, runs when respond returned, before
// the cut of the caller's writes is disarmed.
var testHookResponded func(ctx context.Context)
