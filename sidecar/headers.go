package sidecar

import (
	"net"
	"net/http"
	"strings"

	"golang.org/x/net/http/httpguts"

	"github.com/ferrymesh/ferry/telemetry"
)

// hopHeaders are the hop-by-hop headers of RFC 9110 section 7.6.1 and the
// legacy ones proxies still see. They describe one connection and never
// cross the proxy.
var hopHeaders = []string{
	"Connection",
	"Proxy-Connection",
	"Keep-Alive",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te",
	"Trailer",
	"Transfer-Encoding",
	"Upgrade",
}

// removeHopHeaders deletes hop-by-hop headers, including every header the
// Connection header names. "TE: trailers" on a request is kept: it tells an
// HTTP/2 or gRPC upstream that the caller accepts trailers.
func removeHopHeaders(h http.Header, isRequest bool) {
	if len(h) < len(hopHeaders) && !hasHopHeader(h) {
		return // and nothing is named by a Connection header that is not there
	}
	// Before the fields Connection names go: RFC 9110 section 10.1.4 has a
	// sender of TE name it in Connection too.
	keepTE := isRequest && teTrailers(h)
	for _, v := range h["Connection"] {
		for name := range strings.SplitSeq(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, k := range hopHeaders {
		delete(h, k)
	}
	if keepTE {
		h["Te"] = []string{"trailers"}
	}
}

// hasHopHeader reports whether h holds a hop-by-hop header. For the few
// fields of a common head this is cheaper than deleting every hop-by-hop
// name, a hash apiece.
func hasHopHeader(h http.Header) bool {
	for k := range h {
		if isHopHeader(k) {
			return true
		}
	}
	return false
}

// isHopHeader reports whether a canonical field name is a hop-by-hop one.
// (A switch: the compiler's length-first comparisons, where a search of
// hopHeaders compared strings one by one; TestRemoveHopHeadersSmall holds
// it to that list.)
func isHopHeader(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

// teTrailers reports whether the TE header lists "trailers".
func teTrailers(h http.Header) bool {
	for _, v := range h["Te"] {
		for tok := range strings.SplitSeq(v, ",") {
			tok, _, _ = strings.Cut(tok, ";")
			if strings.EqualFold(strings.TrimSpace(tok), "trailers") {
				return true
			}
		}
	}
	return false
}

// upgradeType returns the protocols a request or response asks to switch
// to, or "" when the Connection header does not carry "upgrade".
func upgradeType(h http.Header) string {
	if !headerHasToken(h, "Connection", "upgrade") {
		return ""
	}
	return h.Get("Upgrade")
}

// requestUpgrade is upgradeType for a request ferry will relay: "h2c" is
// never passed on. An HTTP/1.1 upgrade to cleartext HTTP/2 through a proxy
// would hand the caller a raw HTTP/2 connection to the upstream, past
// ferry's routing and limits (h2c smuggling); callers speak h2c to ferry
// directly instead. A request offering only h2c goes as a plain request.
func requestUpgrade(h http.Header) string {
	v := upgradeType(h)
	if !strings.Contains(strings.ToLower(v), "h2c") {
		return v
	}
	var keep []string
	for tok := range strings.SplitSeq(v, ",") {
		tok = strings.TrimSpace(tok)
		if tok != "" && !strings.EqualFold(tok, "h2c") {
			keep = append(keep, tok)
		}
	}
	return strings.Join(keep, ", ")
}

// headerHasToken reports whether the comma-separated field name of h holds
// token (case-insensitively).
func headerHasToken(h http.Header, name, token string) bool {
	return hasToken(h[name], token)
}

// hasToken reports whether comma-separated values hold token.
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for tok := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), token) {
				return true
			}
		}
	}
	return false
}

// setForwarded sets X-Forwarded-For (appending the caller's address to any
// list the caller sent), X-Forwarded-Proto and X-Forwarded-Host. Their
// values go in buf, or in one allocation for the three when buf is nil.
// The caller's address goes without the zone of an IPv6 link-local one
// ("fe80::1%eth0" -> "fe80::1"): the zone names an interface of ferry's
// host, nothing the upstream could use.
//
// caller is callerOf(r.RemoteAddr) when the caller worked it out already
// (a lane connection's, once), or nil. prior is out's X-Forwarded-For when
// the caller knows it (a lane request's), or nil: it is looked up.
func setForwarded(out http.Header, r *http.Request, buf *[3]string, caller *callerAddr, prior *[]string) {
	if buf == nil {
		buf = new([3]string)
	}
	forwardedValues(out, r, buf, caller, prior).put(out)
}

// forwarded is what setForwarded sets: the values in vals (For, Proto,
// Host), forOK and hostOK when X-Forwarded-For and X-Forwarded-Host are
// set (a caller's address and a Host are known). vals nil: nothing.
// Where it is written into the head (outRequest.fwd), tp is the
// attempt's traceparent when it goes with them (Attempt.InjectHead), or
// nil.
type forwarded struct {
	vals          *[3]string
	tp            *telemetry.Traceparent
	forOK, hostOK bool
}

// forwardedValues works out in buf what setForwarded sets in out; out is
// only read (its X-Forwarded-For when prior is nil), and may be nil.
func forwardedValues(out http.Header, r *http.Request, buf *[3]string, caller *callerAddr, prior *[]string) forwarded {
	f := forwarded{vals: buf}
	if caller == nil {
		c := callerOf(r.RemoteAddr)
		caller = &c
	}
	if caller.ok {
		ip := caller.ip
		var p []string
		if prior != nil {
			p = *prior
		} else {
			p = out["X-Forwarded-For"]
		}
		if len(p) > 0 {
			ip = strings.Join(p, ", ") + ", " + ip
		}
		buf[0], f.forOK = ip, true
	}
	buf[1] = "http"
	if r.TLS != nil {
		buf[1] = "https"
	}
	if r.Host != "" {
		buf[2], f.hostOK = r.Host, true
	}
	return f
}

// put sets the fields in h, their values shared with f.vals.
func (f forwarded) put(h http.Header) {
	if f.vals == nil {
		return
	}
	if f.forOK {
		h["X-Forwarded-For"] = f.vals[0:1:1]
	}
	h["X-Forwarded-Proto"] = f.vals[1:2:2]
	if f.hostOK {
		h["X-Forwarded-Host"] = f.vals[2:3:3]
	}
	if f.tp != nil {
		h["Traceparent"] = []string{string(f.tp[:])}
	}
}

// appendTo appends the fields to an HTTP/1.1 head being written, their
// values as they are: only a lane request's go out this way (see
// outgoing), whose values need no trimming or sanitising: an address
// from the caller's socket, the protocol, and a Host the lane took only
// of letters, digits and "-._:[]" (plainHost).
func (f forwarded) appendTo(b []byte) []byte {
	if f.vals == nil {
		return b
	}
	if f.forOK {
		b = append(b, "X-Forwarded-For: "...)
		b = append(b, f.vals[0]...)
		b = append(b, "\r\n"...)
	}
	b = append(b, "X-Forwarded-Proto: "...)
	b = append(b, f.vals[1]...)
	if f.hostOK {
		b = append(b, "\r\nX-Forwarded-Host: "...)
		b = append(b, f.vals[2]...)
	}
	if f.tp != nil {
		b = append(b, "\r\nTraceparent: "...)
		b = append(b, f.tp[:]...)
	}
	return append(b, "\r\n"...)
}

// callerAddr is a caller's address for X-Forwarded-For: the host of its
// "host:port" without an IPv6 zone, ok false when remote is no such pair.
type callerAddr struct {
	ip string
	ok bool
}

func callerOf(remote string) callerAddr {
	ip, _, err := net.SplitHostPort(remote)
	if err != nil {
		return callerAddr{}
	}
	if i := strings.IndexByte(ip, '%'); i >= 0 {
		ip = ip[:i]
	}
	return callerAddr{ip, true}
}

// copyHeader appends every value of src to dst. A field dst does not have
// shares src's values, capped so that an append to either copies.
func copyHeader(dst, src http.Header) {
	for k, vv := range src {
		if prior, ok := dst[k]; ok {
			dst[k] = append(prior, vv...)
		} else {
			dst[k] = vv[:len(vv):len(vv)]
		}
	}
}

// isEventStream reports a server-sent events response, which must be
// flushed on every write.
func isEventStream(h http.Header) bool {
	return isEventStreamType(h.Get("Content-Type"))
}

// isEventStreamType reports whether a Content-Type value is that of
// server-sent events.
func isEventStreamType(v string) bool {
	const want = "text/event-stream"
	// Every response's type is looked at: a value that starts with a
	// visible ASCII character and not with "text/e" (in any case) is told
	// apart by two bytes, without the cut, trim and fold (145 instructions
	// each). One that starts with anything TrimSpace may take away (ASCII
	// or Unicode space) gets the whole check.
	if len(v) < len(want) || (v[0] > ' ' && v[0] < 0x80 && (v[0]|0x20 != 't' || v[5]|0x20 != 'e')) {
		return false
	}
	ct, _, _ := strings.Cut(v, ";")
	return strings.EqualFold(strings.TrimSpace(ct), want)
}

// dropForbiddenTrailers removes from a request's or a response's trailers
// the fields that must not be sent as trailers (framing, routing,
// authentication and connection-specific fields, RFC 9110 section 6.5.1)
// and the hop-by-hop ones. Passed on, they would reach an upstream that
// ignores them at best; an HTTP/2 upstream resets the stream, which fails
// the request and counts against the endpoint's breaker. An HTTP/1.1
// caller would get them as they came.
func dropForbiddenTrailers(h http.Header) {
	for k := range h {
		if !httpguts.ValidTrailerHeader(k) || isHopHeader(k) {
			delete(h, k)
		}
	}
}
