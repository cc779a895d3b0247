package telemetry

import (
	"net"
	"net/http"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// The attributes of ferry's server and client spans are not built as
// attribute.KeyValues while a request runs: the span keeps the raw values
// they come from (proxyAttrs: the method, the Host header, the remote
// address, the outcome, ...), a few strings and integers copied at start
// and at End. The OTLP encoder writes the attributes straight from them
// (otlpown.go); a processor that asks for Attributes() gets them built, in
// the same order and with the same values, once (each walks them through
// proxyAttrs.each). ferry's samplers never look at attributes, so nothing
// is lost by not passing them at start.

// maxProxyAttrs is the most attributes proxyAttrs.each yields for one span
// (a server span of a gRPC call with an unknown method, every address and
// an error).
const maxProxyAttrs = 26

// proxyAttrs are the attribute values of one of ferry's spans. (Small
// fields, since every span carries one: 240 bytes.)
type proxyAttrs struct {
	listener Listener
	method   string

	// SetRoute's route and service (server); the request's (client).
	route, service string
	moreRoutes     *[]string // route, service pairs of later SetRoute calls

	// host and path: the Host header and the URL path of the incoming
	// request (server); the upstream URL's host (else the Host field) and
	// escaped path (client).
	host, path string
	// Server: the caller's address and User-Agent.
	remote, ua string
	// Client: the upstream URL's scheme ("http" when empty) and the
	// breaker state of the endpoint when picked.
	scheme  string
	breaker BreakerState

	// endpoint: the attempt's (client), the last attempt's (server, at End).
	endpoint string
	reason   string // at End, for errReason

	bytesIn, bytesOut int64 // at End
	// attempt: this attempt's number (client); how many attempts were
	// made (server, at End).
	attempt int32
	status  int32 // at End: http.response.status_code when not 0
	// grpcCode: at End, the gRPC status of a gRPC call (grpc is set).
	grpcCode int32

	protoMajor, protoMinor int32  // server
	defPort                uint16 // client: the port of the URL's scheme when its host has none

	client bool // a client (attempt) span; else a server (request) span
	// done is set when the helper's End has filled in the end values; a
	// span ended another way keeps no attributes of these (as before, when
	// the helper handed them over only at its End).
	done    bool
	routed  bool // server: SetRoute was called
	tls     bool // server
	hasURL  bool // client: the upstream request had a URL
	grpc    bool // at End: a gRPC call with a status (grpcCode)
	errKind errKind
}

// errKind is why a span is an error, as endSpan decides it.
type errKind uint8

const (
	errNone       errKind = iota
	errReason             // a proxy-made failure: ferry.reason and error.type
	errStatusCode         // a status the conventions call an error: error.type is the code
	errOther              // an error value alone: error.type _OTHER
	errGRPCStatus         // a gRPC status the conventions call an error: error.type is its name
)

// attrSink receives a span's attributes in order.
type attrSink interface {
	str(k attribute.Key, v string)
	num(k attribute.Key, v int64)
	// url is one string attribute, the concatenation of parts.
	url(k attribute.Key, parts [5]string)
	// hostPort splits "host:port" as splitHostPort does (the encoder
	// remembers what it split, in slots chosen by a hash of the string).
	hostPort(hp string) (string, int)
}

// knownMethod reports whether m is a method the conventions name.
func knownMethod(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

// each yields the span's attributes in the order ferry has always set
// them.
func (a *proxyAttrs) each(s attrSink) {
	if a.client {
		a.eachClient(s)
	} else {
		a.eachServer(s)
	}
}

// eachMethod yields http.request.method, unknown methods normalised to
// _OTHER with the original, as the conventions ask.
func (a *proxyAttrs) eachMethod(s attrSink) {
	if knownMethod(a.method) {
		s.str(semconv.HTTPRequestMethodKey, a.method)
		return
	}
	s.str(semconv.HTTPRequestMethodKey, "_OTHER")
	s.str(semconv.HTTPRequestMethodOriginalKey, a.method)
}

func (a *proxyAttrs) eachServer(s attrSink) {
	a.eachServerHead(s)
	s.str(semconv.URLPathKey, a.path)
	a.eachServerConn(s)
	a.eachServerTail(s)
}

// serverHead are the values the attributes of eachServerHead and
// eachServerConn come from: the same for most requests on one caller's
// connection (attrEncoder writes them once for a run of equal ones). The
// path, between the two, is not one of them.
type serverHead struct {
	listener                 Listener
	method, host, remote, ua string
	route, service           string
	protoMajor, protoMinor   int32
	tls, routed              bool
}

// serverHead is the span's serverHead; ok is false when later routes
// (moreRoutes) make eachServerConn's attributes depend on more.
func (a *proxyAttrs) serverHead() (h serverHead, ok bool) {
	return serverHead{listener: a.listener, method: a.method, host: a.host, remote: a.remote, ua: a.ua,
		route: a.route, service: a.service, protoMajor: a.protoMajor, protoMinor: a.protoMinor,
		tls: a.tls, routed: a.routed}, a.moreRoutes == nil
}

// eachServerHead yields the server span's first attributes, up to
// url.path.
func (a *proxyAttrs) eachServerHead(s attrSink) {
	s.str(AttrListener, string(a.listener))
	a.eachMethod(s)
	if a.tls {
		s.str(semconv.URLSchemeKey, "https")
	} else {
		s.str(semconv.URLSchemeKey, "http")
	}
}

// eachServerConn yields the server span's attributes after url.path that
// come from its serverHead (and moreRoutes).
func (a *proxyAttrs) eachServerConn(s attrSink) {
	if h, p := s.hostPort(a.host); h != "" {
		s.str(semconv.ServerAddressKey, h)
		if p > 0 {
			s.num(semconv.ServerPortKey, int64(p))
		}
	}
	if h, p := s.hostPort(a.remote); h != "" {
		s.str(semconv.ClientAddressKey, h)
		s.str(semconv.NetworkPeerAddressKey, h)
		if p > 0 {
			s.num(semconv.NetworkPeerPortKey, int64(p))
		}
	}
	switch {
	case a.protoMajor == 1 && a.protoMinor == 0:
		s.str(semconv.NetworkProtocolVersionKey, "1.0")
	case a.protoMajor == 1 && a.protoMinor == 1:
		s.str(semconv.NetworkProtocolVersionKey, "1.1")
	case a.protoMajor == 2 && a.protoMinor == 0:
		s.str(semconv.NetworkProtocolVersionKey, "2")
	case a.protoMajor == 3 && a.protoMinor == 0:
		s.str(semconv.NetworkProtocolVersionKey, "3")
	case a.protoMajor == 1:
		s.str(semconv.NetworkProtocolVersionKey, "1."+strconv.Itoa(int(a.protoMinor)))
	}
	if a.ua != "" {
		s.str(semconv.UserAgentOriginalKey, a.ua)
	}
	if a.routed {
		s.str(semconv.HTTPRouteKey, a.route)
		s.str(AttrService, a.service)
		if a.moreRoutes != nil {
			more := *a.moreRoutes
			for i := 0; i+1 < len(more); i += 2 {
				s.str(semconv.HTTPRouteKey, more[i])
				s.str(AttrService, more[i+1])
			}
		}
	}
}

// eachServerTail yields the server span's last attributes, from the
// values known at its end.
func (a *proxyAttrs) eachServerTail(s attrSink) {
	s.num(semconv.HTTPRequestBodySizeKey, int64(int(a.bytesIn)))
	s.num(semconv.HTTPResponseBodySizeKey, int64(int(a.bytesOut)))
	s.num(AttrBytesIn, a.bytesIn)
	s.num(AttrBytesOut, a.bytesOut)
	s.num(AttrAttempts, int64(a.attempt))
	if a.status != 0 {
		s.num(semconv.HTTPResponseStatusCodeKey, int64(a.status))
	}
	if a.endpoint != "" {
		s.str(AttrEndpoint, a.endpoint)
	}
	a.eachGRPC(s)
	a.eachError(s)
}

func (a *proxyAttrs) eachClient(s attrSink) {
	a.eachClientHead(s)
	a.eachClientURL(s)
	a.eachClientPeer(s)
	a.eachClientTail(s)
}

// clientHead are the values the attributes of eachClientHead and
// eachClientPeer come from, known when the attempt starts: a proxy's
// attempts repeat them (attrEncoder writes them once for a run of equal
// ones). The path, which url.full (eachClientURL) shows, is not one.
type clientHead struct {
	method, service, route, endpoint string
	listener                         Listener
	breaker                          BreakerState
	host                             string
	attempt                          int32
	defPort                          uint16
	hasURL                           bool
}

func (a *proxyAttrs) clientHead() clientHead {
	return clientHead{method: a.method, service: a.service, route: a.route, endpoint: a.endpoint, listener: a.listener,
		breaker: a.breaker, host: a.host, attempt: a.attempt, defPort: a.defPort, hasURL: a.hasURL}
}

// eachClientHead yields the client span's first attributes, up to
// url.full, which come from its clientHead alone.
func (a *proxyAttrs) eachClientHead(s attrSink) {
	a.eachMethod(s)
	s.str(AttrListener, string(a.listener))
	s.str(AttrService, a.service)
	s.str(AttrEndpoint, a.endpoint)
	s.num(AttrAttempt, int64(a.attempt))
	if a.breaker != "" {
		s.str(AttrBreakerState, string(a.breaker))
	}
	if a.attempt > 1 {
		s.num(semconv.HTTPRequestResendCountKey, int64(a.attempt-1))
	}
	if a.route != "" {
		s.str(semconv.HTTPRouteKey, a.route)
	}
	// server.* is the logical upstream (the URL host); network.peer.* the
	// endpoint actually dialled.
	if a.hasURL {
		if h, p := s.hostPort(a.host); h != "" {
			s.str(semconv.ServerAddressKey, h)
			if p == 0 {
				p = int(a.defPort)
			}
			if p > 0 {
				s.num(semconv.ServerPortKey, int64(p))
			}
		}
	}
}

// eachClientURL yields url.full.
func (a *proxyAttrs) eachClientURL(s attrSink) {
	if a.hasURL {
		parts := [5]string{a.scheme, "://", urlHost(a.host), "", a.path}
		if a.path != "" && a.path[0] != '/' {
			parts[3] = "/"
		}
		s.url(semconv.URLFullKey, parts)
	}
}

// eachClientPeer yields network.peer.*, from the clientHead alone.
func (a *proxyAttrs) eachClientPeer(s attrSink) {
	if h, p := s.hostPort(a.endpoint); h != "" {
		s.str(semconv.NetworkPeerAddressKey, h)
		if p > 0 {
			s.num(semconv.NetworkPeerPortKey, int64(p))
		}
	}
}

// eachClientTail yields the client span's last attributes, from the
// values known at its end.
func (a *proxyAttrs) eachClientTail(s attrSink) {
	// The request body went out, the response body came in.
	s.num(semconv.HTTPRequestBodySizeKey, int64(int(a.bytesOut)))
	s.num(semconv.HTTPResponseBodySizeKey, int64(int(a.bytesIn)))
	s.num(AttrBytesIn, a.bytesIn)
	s.num(AttrBytesOut, a.bytesOut)
	if a.status != 0 {
		s.num(semconv.HTTPResponseStatusCodeKey, int64(a.status))
	}
	a.eachGRPC(s)
	a.eachError(s)
}

func (a *proxyAttrs) eachError(s attrSink) {
	switch a.errKind {
	case errReason:
		s.str(AttrReason, a.reason)
		s.str(semconv.ErrorTypeKey, a.reason)
	case errStatusCode:
		s.str(semconv.ErrorTypeKey, strconv.Itoa(int(a.status)))
	case errOther:
		s.str(semconv.ErrorTypeKey, "_OTHER")
	case errGRPCStatus:
		s.str(semconv.ErrorTypeKey, grpcStatusName(a.grpcCode))
	}
}

// urlHost is a URL's host ("[fe80::1%eth0]:80", as net/url keeps it,
// unescaped) as written in a URL: its "%" percent-encoded
// ("[fe80::1%25eth0]:80"), which RFC 6874 asks of an IPv6 zone and
// net/url's String does. A host without one, nearly every host, is
// returned as it is.
func urlHost(h string) string {
	if strings.IndexByte(h, '%') < 0 {
		return h
	}
	return strings.ReplaceAll(h, "%", "%25")
}

// setServer records the server span's values known from the incoming
// request.
func (a *proxyAttrs) setServer(r *http.Request, listener Listener) {
	a.listener = listener
	a.method = r.Method
	a.tls = r.TLS != nil
	a.path = r.URL.Path
	a.host = r.Host
	a.remote = r.RemoteAddr
	a.protoMajor, a.protoMinor = int32(r.ProtoMajor), int32(r.ProtoMinor)
	// r.UserAgent() without its key's canonicalisation, which costs more
	// than the lookup: the key is canonical already.
	a.ua = ""
	if ua := r.Header["User-Agent"]; len(ua) > 0 {
		a.ua = ua[0]
	}
}

// setRoute records SetRoute's route and service.
func (a *proxyAttrs) setRoute(route, service string) {
	if a.routed {
		if a.moreRoutes == nil {
			a.moreRoutes = new([]string)
		}
		*a.moreRoutes = append(*a.moreRoutes, route, service)
		return
	}
	a.routed, a.route, a.service = true, route, service
}

// setClient records the client span's values known when the attempt
// starts.
func (a *proxyAttrs) setClient(q *Request, out *http.Request, method string, info AttemptInfo) {
	a.client = true
	a.method = method
	a.listener, a.service, a.route = q.listener, q.service, q.route
	a.endpoint, a.attempt, a.breaker = info.Endpoint, int32(info.Attempt), info.BreakerState
	if out != nil && out.URL != nil {
		a.hasURL = true
		a.defPort = uint16(defaultPort(out.URL.Scheme))
		a.scheme, a.host, a.path = out.URL.Scheme, out.URL.Host, out.URL.EscapedPath()
		if a.host == "" {
			a.host = out.Host
		}
		if a.scheme == "" {
			a.scheme = "http"
		}
	}
}

// setEnd records the outcome, and which error rule applies: a proxy-made
// failure reason, or a status the conventions call an error (HTTP's, then
// gRPC's), or an error value, makes an error status and error.type. It
// returns the span status to set.
func (a *proxyAttrs) setEnd(o Outcome, status int, statusIsError, grpcIsError bool) (codes.Code, string) {
	a.done = true
	a.bytesIn, a.bytesOut, a.status = o.BytesIn, o.BytesOut, int32(status)
	a.grpc, a.grpcCode = o.GRPC, int32(o.GRPCStatus)
	code, desc := codes.Unset, ""
	switch {
	case o.Reason != "":
		a.errKind, a.reason = errReason, o.Reason
		code, desc = codes.Error, o.Reason
		if o.Err != nil {
			desc += ": " + o.Err.Error()
		}
	case statusIsError:
		a.errKind = errStatusCode // and status is o.Status
		code = codes.Error
	case grpcIsError:
		a.errKind = errGRPCStatus
		code, desc = codes.Error, grpcStatusName(a.grpcCode)
	case o.Err != nil:
		a.errKind = errOther
		code, desc = codes.Error, o.Err.Error()
	}
	return code, desc
}

// endSpanAttributes records the server span's values known at its end,
// and sets the span's status.
func (q *Request) endSpanAttributes(o Outcome) {
	q.ps.pa.attempt, q.ps.pa.endpoint = int32(q.attempts), q.endpoint
	code, desc := q.ps.pa.setEnd(o, o.Status, o.Status >= 500, o.GRPC && grpcServerError(int32(o.GRPCStatus)))
	endStatus(&q.ps.span, o, code, desc)
}

// endSpanAttributes records the client span's values known at its end,
// and sets the span's status.
func (a *Attempt) endSpanAttributes(o Outcome) {
	status := o.Status
	if status == 0 {
		status = a.status // the headers came; the body did not
	}
	code, desc := a.ps.pa.setEnd(o, status, o.Status >= 400, o.GRPC && o.GRPCStatus != 0)
	endStatus(&a.ps.span, o, code, desc)
}

// endStatus sets the span's error status and records the error value.
func endStatus(sp *span, o Outcome, code codes.Code, desc string) {
	if code != codes.Unset {
		sp.SetStatus(code, desc)
	}
	if o.Err != nil {
		sp.RecordError(o.Err)
	}
}

// kvList builds the attributes as attribute.KeyValues.
type kvList []attribute.KeyValue

func (l *kvList) str(k attribute.Key, v string) { *l = append(*l, k.String(v)) }
func (l *kvList) num(k attribute.Key, v int64)  { *l = append(*l, k.Int64(v)) }
func (l *kvList) url(k attribute.Key, p [5]string) {
	*l = append(*l, k.String(p[0]+p[1]+p[2]+p[3]+p[4]))
}
func (l *kvList) hostPort(hp string) (string, int) { return splitHostPort(hp) }

// keyValues returns the span's attributes as attribute.KeyValues.
func (a *proxyAttrs) keyValues() []attribute.KeyValue {
	n := maxProxyAttrs
	if a.moreRoutes != nil {
		n += len(*a.moreRoutes)
	}
	l := make(kvList, 0, n)
	a.each(&l)
	return l
}

// splitHostPort splits "host:port" leniently: a missing port gives 0. An
// IPv6 host comes without its brackets, port or not ("[::1]" -> "::1"), as
// the semantic conventions' address attributes want it.
func splitHostPort(hp string) (string, int) {
	host, portStr, err := net.SplitHostPort(hp)
	if err != nil {
		if inner, ok := strings.CutPrefix(hp, "["); ok {
			if inner, ok := strings.CutSuffix(inner, "]"); ok {
				return inner, 0
			}
		}
		return hp, 0
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return host, 0
	}
	return host, port
}

func defaultPort(scheme string) int {
	switch scheme {
	case "https":
		return 443
	case "http", "":
		return 80
	}
	return 0
}
