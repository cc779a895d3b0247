package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"strings"
	"sync/atomic"
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

	table   atomic.Pointer[routeTable]
	tunnels *tunnelSet
}

func newProxy(name string, table *routeTable, log *slog.Logger, tunnels *tunnelSet) *Proxy {
	p := &Proxy{Name: name, Log: log, tunnels: tunnels}
	p.table.Store(table)
	return p
}

// ServeHTTP implements http.Handler.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect {
		writeFailure(w, failure{http.StatusMethodNotAllowed, "CONNECT is not supported"})
		return
	}
	table := p.table.Load()
	rt := table.match(r.Host, r.URL.Path)
	if rt == nil {
		writeFailure(w, failure{http.StatusNotFound, fmt.Sprintf("no route for host %q path %q", r.Host, r.URL.Path)})
		return
	}
	p.forward(w, r, rt.up, table.maxBody)
}

// forward relays one exchange to up. maxBody > 0 caps the request body.
func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, up *upstream, maxBody int64) {
	if maxBody > 0 && r.ContentLength > maxBody {
		writeFailure(w, failure{http.StatusRequestEntityTooLarge, errBodyTooLarge.Error()})
		return
	}
	snap := up.svc.Snapshot()
	switch {
	case !snap.Ready:
		reason := fmt.Sprintf("service %s: endpoints not resolved yet", up.name)
		if snap.Err != "" {
			reason += ": " + snap.Err
		}
		writeFailure(w, failure{http.StatusServiceUnavailable, reason})
		return
	case len(snap.Endpoints) == 0:
		writeFailure(w, failure{http.StatusServiceUnavailable, fmt.Sprintf("service %s has no healthy endpoints", up.name)})
		return
	}
	addr := up.pick(snap)

	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	if up.timeouts.Overall > 0 {
		var stop context.CancelFunc
		ctx, stop = context.WithTimeoutCause(ctx, up.timeouts.Overall, errOverallTimeout)
		defer stop()
	}
	idle := startIdleTimer(up.timeouts.BodyIdle, cancel)
	defer idle.stop()

	upgrade := upgradeType(r.Header)
	out, body := p.outgoing(ctx, w, r, addr, upgrade, maxBody, idle, cancel)
	if body == nil {
		idle.pause() // nothing to upload: the response header timeout rules
	}
	res, err := up.transportFor(r, upgrade != "").RoundTrip(out)
	if err != nil {
		f, gone := classify(ctx, up.name, addr, err)
		p.logFailure(r, up.name, addr, f, err)
		if !gone {
			writeFailure(w, f)
		}
		return
	}
	defer res.Body.Close()
	idle.resume()

	if res.StatusCode == http.StatusSwitchingProtocols {
		idle.stop()
		p.tunnel(w, r, res, upgrade, up.name, addr)
		return
	}
	p.respond(ctx, w, r, res, up.name, addr, idle)
}

// outgoing builds the upstream request. A request without a body goes out
// without one (never chunked); a body of unknown length goes chunked;
// trailers follow the body.
func (p *Proxy) outgoing(ctx context.Context, w http.ResponseWriter, r *http.Request, addr, upgrade string, maxBody int64, idle *idleTimer, cancel context.CancelCauseFunc) (*http.Request, *requestBody) {
	out := r.Clone(ctx)
	out.RequestURI = ""
	out.URL = &url.URL{Scheme: "http", Host: addr, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
	out.Host = r.Host
	out.Close = false
	var body *requestBody
	if r.ContentLength == 0 {
		out.Body = nil
		out.ContentLength = 0
	} else {
		body = &requestBody{rc: r.Body, limit: maxBody, idle: idle, cancel: cancel}
		out.Body = body
		// Request trailers arrive in r.Trailer once the body is read; the
		// transport must see that same map, not Clone's copy.
		out.Trailer = r.Trailer
		if r.ProtoMajor == 1 {
			// Let the upstream's response stream back while the caller
			// is still uploading (bidirectional streams over HTTP/1.1).
			_ = http.NewResponseController(w).EnableFullDuplex()
		}
	}
	removeHopHeaders(out.Header, true)
	if upgrade != "" {
		out.Header["Connection"] = []string{"Upgrade"}
		out.Header["Upgrade"] = []string{upgrade}
	}
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header["User-Agent"] = nil // do not add Go's default
	}
	setForwarded(out.Header, r)
	// 1xx informational responses (103 Early Hints) pass through. 100
	// Continue is not forwarded here: the server sends it to the caller
	// when the transport starts reading the body, which it does when the
	// upstream sent its own 100.
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		if code == http.StatusContinue {
			return nil
		}
		dst := w.Header()
		copyHeader(dst, http.Header(h))
		w.WriteHeader(code)
		clear(dst)
		return nil
	}}
	return out.WithContext(httptrace.WithClientTrace(ctx, trace)), body
}

// respond relays the upstream's status, headers, body and trailers. A body
// that breaks mid-stream aborts the caller's response so the caller sees a
// broken response (connection closed short, no final chunk, or a reset
// HTTP/2 stream), never a clean end.
func (p *Proxy) respond(ctx context.Context, w http.ResponseWriter, r *http.Request, res *http.Response, service, addr string, idle *idleTimer) {
	removeHopHeaders(res.Header, false)
	h := w.Header()
	copyHeader(h, res.Header)
	if n := len(res.Trailer); n > 0 {
		names := make([]string, 0, n)
		for k := range res.Trailer {
			names = append(names, k)
		}
		h["Trailer"] = []string{strings.Join(names, ", ")}
	}
	rc := http.NewResponseController(w)
	w.WriteHeader(res.StatusCode)
	if res.ContentLength == -1 || isEventStream(res.Header) {
		// Headers first, so a caller of a quiet event stream or a
		// long-poll knows at once that it is connected.
		_ = rc.Flush()
	}
	result := relay(w, rc, res.Body, idle)
	switch {
	case result.readErr != nil:
		reason := fmt.Sprintf("upstream %s (%s) broke mid-body after %d bytes: %v", service, addr, result.n, result.readErr)
		if c := context.Cause(ctx); errors.Is(c, errBodyIdle) || errors.Is(c, errOverallTimeout) {
			reason = fmt.Sprintf("upstream %s (%s) cut after %d bytes: %v", service, addr, result.n, c)
		}
		p.logFailure(r, service, addr, failure{res.StatusCode, reason}, result.readErr)
		panic(http.ErrAbortHandler)
	case result.writeErr != nil:
		// The caller went away; closing res.Body (deferred) cancels the
		// upstream exchange.
		return
	}
	for k, vv := range res.Trailer {
		h[http.TrailerPrefix+k] = vv
	}
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
