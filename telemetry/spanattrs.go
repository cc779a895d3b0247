package telemetry

import (
	"net"
	"net/http"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// A span's attributes are gathered in a pooled list while the span runs
// (those known at start, then those known at End) and handed to the span in
// one call when it ends, with no key twice: ferry's span (tracer.go) then
// copies them once, into a slice of the right size, and has nothing to
// de-duplicate. ferry's samplers never look at attributes, so nothing is
// lost by not passing them at start.

// attrList is a span's attribute list in the making. The span takes the
// slice over when it ends (no copy).
type attrList []attribute.KeyValue

// spanAttrCap holds every attribute ferry puts on a span (at most 23).
const spanAttrCap = 24

func newAttrList() attrList { return make(attrList, 0, spanAttrCap) }

func (l *attrList) add(kv ...attribute.KeyValue) { *l = append(*l, kv...) }

// Attribute values that never change, built once.
var (
	listenerAttrs = map[Listener]attribute.KeyValue{
		Outbound: AttrListener.String(string(Outbound)),
		Inbound:  AttrListener.String(string(Inbound)),
	}
	methodAttrs = func() map[string]attribute.KeyValue {
		m := map[string]attribute.KeyValue{}
		for _, k := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
			http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace} {
			m[k] = semconv.HTTPRequestMethodKey.String(k)
		}
		return m
	}()
	methodOther = semconv.HTTPRequestMethodKey.String("_OTHER")
	schemeHTTP  = semconv.URLScheme("http")
	schemeHTTPS = semconv.URLScheme("https")
	protoAttrs  = map[[2]int]attribute.KeyValue{
		{1, 0}: semconv.NetworkProtocolVersion("1.0"),
		{1, 1}: semconv.NetworkProtocolVersion("1.1"),
		{2, 0}: semconv.NetworkProtocolVersion("2"),
		{3, 0}: semconv.NetworkProtocolVersion("3"),
	}
)

func listenerAttr(l Listener) attribute.KeyValue {
	if kv, ok := listenerAttrs[l]; ok {
		return kv
	}
	return AttrListener.String(string(l))
}

// addMethod adds http.request.method, normalising unknown methods to
// _OTHER (with the original) as the conventions ask.
func (l *attrList) addMethod(m string) {
	if kv, ok := methodAttrs[m]; ok {
		l.add(kv)
		return
	}
	l.add(methodOther, semconv.HTTPRequestMethodOriginal(m))
}

// addHostPort adds the address and, when there is one, the port of hp.
func (l *attrList) addHostPort(hp string, addr func(string) attribute.KeyValue, port func(int) attribute.KeyValue) {
	if h, p := splitHostPort(hp); h != "" {
		l.add(addr(h))
		if p > 0 {
			l.add(port(p))
		}
	}
}

// addServer adds the server span's attributes known from the incoming
// request.
func (l *attrList) addServer(r *http.Request, listener Listener) {
	l.add(listenerAttr(listener))
	l.addMethod(r.Method)
	if r.TLS != nil {
		l.add(schemeHTTPS)
	} else {
		l.add(schemeHTTP)
	}
	l.add(semconv.URLPath(r.URL.Path))
	l.addHostPort(r.Host, semconv.ServerAddress, semconv.ServerPort)
	if h, p := splitHostPort(r.RemoteAddr); h != "" {
		l.add(semconv.ClientAddress(h), semconv.NetworkPeerAddress(h))
		if p > 0 {
			l.add(semconv.NetworkPeerPort(p))
		}
	}
	if kv, ok := protoAttrs[[2]int{r.ProtoMajor, r.ProtoMinor}]; ok {
		l.add(kv)
	} else if r.ProtoMajor == 1 {
		l.add(semconv.NetworkProtocolVersion("1." + strconv.Itoa(r.ProtoMinor)))
	}
	if ua := r.UserAgent(); ua != "" {
		l.add(semconv.UserAgentOriginal(ua))
	}
}

// endSpanAttributes adds the server span's attributes known at its end, and sets
// the span's attributes and status.
func (q *Request) endSpanAttributes(o Outcome) {
	l := q.attrs
	q.attrs = nil
	l.add(semconv.HTTPRequestBodySize(int(o.BytesIn)),
		semconv.HTTPResponseBodySize(int(o.BytesOut)),
		AttrBytesIn.Int64(o.BytesIn),
		AttrBytesOut.Int64(o.BytesOut),
		AttrAttempts.Int(q.attempts))
	if o.Status != 0 {
		l.add(semconv.HTTPResponseStatusCode(o.Status))
	}
	if q.endpoint != "" {
		l.add(AttrEndpoint.String(q.endpoint))
	}
	endSpan(q.span, l, o, o.Status >= 500)
}

// addClient adds the client span's attributes known when the attempt
// starts.
func (l *attrList) addClient(q *Request, out *http.Request, method string, info AttemptInfo) {
	l.addMethod(method)
	l.add(listenerAttr(q.listener), AttrService.String(q.service), AttrEndpoint.String(info.Endpoint), AttrAttempt.Int(info.Attempt))
	if info.BreakerState != "" {
		l.add(AttrBreakerState.String(string(info.BreakerState)))
	}
	if info.Attempt > 1 {
		l.add(semconv.HTTPRequestResendCount(info.Attempt - 1))
	}
	if q.route != "" {
		l.add(semconv.HTTPRoute(q.route))
	}
	// server.* is the logical upstream (the URL host); network.peer.* the
	// endpoint actually dialled.
	if out != nil && out.URL != nil {
		scheme, host, path := out.URL.Scheme, out.URL.Host, out.URL.EscapedPath()
		if host == "" {
			host = out.Host
		}
		if scheme == "" {
			scheme = "http"
		}
		if h, p := splitHostPort(host); h != "" {
			l.add(semconv.ServerAddress(h))
			if p == 0 {
				p = defaultPort(out.URL.Scheme)
			}
			if p > 0 {
				l.add(semconv.ServerPort(p))
			}
		}
		if path != "" && path[0] != '/' {
			path = "/" + path
		}
		l.add(semconv.URLFull(scheme + "://" + host + path))
	}
	l.addHostPort(info.Endpoint, semconv.NetworkPeerAddress, semconv.NetworkPeerPort)
}

// endSpanAttributes adds the client span's attributes known at its end,
// and sets the span's attributes and status.
func (a *Attempt) endSpanAttributes(o Outcome) {
	l := a.attrs
	a.attrs = nil
	l.add(semconv.HTTPRequestBodySize(int(o.BytesOut)),
		semconv.HTTPResponseBodySize(int(o.BytesIn)),
		AttrBytesIn.Int64(o.BytesIn),
		AttrBytesOut.Int64(o.BytesOut))
	status := o.Status
	if status == 0 {
		status = a.status // the headers came; the body did not
	}
	if status != 0 {
		l.add(semconv.HTTPResponseStatusCode(status))
	}
	endSpan(a.span, l, o, o.Status >= 400)
}

// endSpan applies ferry's error rules, then hands sp its attributes in
// one call: a proxy-made failure reason, or a status the conventions call
// an error, or an error value, makes an error status and error.type.
func endSpan(sp trace.Span, l attrList, o Outcome, statusIsError bool) {
	code, desc := codes.Unset, ""
	switch {
	case o.Reason != "":
		l.add(AttrReason.String(o.Reason), semconv.ErrorTypeKey.String(o.Reason))
		code, desc = codes.Error, o.Reason
		if o.Err != nil {
			desc += ": " + o.Err.Error()
		}
	case statusIsError:
		l.add(semconv.ErrorTypeKey.String(strconv.Itoa(o.Status)))
		code = codes.Error
	case o.Err != nil:
		l.add(semconv.ErrorTypeKey.String("_OTHER"))
		code, desc = codes.Error, o.Err.Error()
	}
	if s, ok := sp.(*span); ok {
		s.adoptAttributes(l)
	} else {
		sp.SetAttributes(l...)
	}
	if code != codes.Unset {
		sp.SetStatus(code, desc)
	}
	if o.Err != nil {
		sp.RecordError(o.Err)
	}
}

// splitHostPort splits "host:port" leniently: a missing port gives 0.
func splitHostPort(hp string) (string, int) {
	host, portStr, err := net.SplitHostPort(hp)
	if err != nil {
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
