package telemetry

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/encoding/protowire"
)

// The reference: how ferry built its spans' attribute lists before they
// were kept as raw values (the attrList of commit 8031e59, unchanged but
// for names). The spans must carry exactly these, in this order.

func refMethod(l []attribute.KeyValue, m string) []attribute.KeyValue {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return append(l, semconv.HTTPRequestMethodKey.String(m))
	}
	return append(l, semconv.HTTPRequestMethodKey.String("_OTHER"), semconv.HTTPRequestMethodOriginal(m))
}

func refServer(r *http.Request, listener Listener, routes [][2]string, attempts int, endpoint string, o Outcome) []attribute.KeyValue {
	l := []attribute.KeyValue{AttrListener.String(string(listener))}
	l = refMethod(l, r.Method)
	if r.TLS != nil {
		l = append(l, semconv.URLScheme("https"))
	} else {
		l = append(l, semconv.URLScheme("http"))
	}
	l = append(l, semconv.URLPath(r.URL.Path))
	if h, p := splitHostPort(r.Host); h != "" {
		l = append(l, semconv.ServerAddress(h))
		if p > 0 {
			l = append(l, semconv.ServerPort(p))
		}
	}
	if h, p := splitHostPort(r.RemoteAddr); h != "" {
		l = append(l, semconv.ClientAddress(h), semconv.NetworkPeerAddress(h))
		if p > 0 {
			l = append(l, semconv.NetworkPeerPort(p))
		}
	}
	if v, ok := map[[2]int]string{{1, 0}: "1.0", {1, 1}: "1.1", {2, 0}: "2", {3, 0}: "3"}[[2]int{r.ProtoMajor, r.ProtoMinor}]; ok {
		l = append(l, semconv.NetworkProtocolVersion(v))
	} else if r.ProtoMajor == 1 {
		l = append(l, semconv.NetworkProtocolVersion("1."+strconv.Itoa(r.ProtoMinor)))
	}
	if ua := r.UserAgent(); ua != "" {
		l = append(l, semconv.UserAgentOriginal(ua))
	}
	for _, rt := range routes {
		l = append(l, semconv.HTTPRoute(rt[0]), AttrService.String(rt[1]))
	}
	l = append(l, semconv.HTTPRequestBodySize(int(o.BytesIn)), semconv.HTTPResponseBodySize(int(o.BytesOut)),
		AttrBytesIn.Int64(o.BytesIn), AttrBytesOut.Int64(o.BytesOut), AttrAttempts.Int(attempts))
	if o.Status != 0 {
		l = append(l, semconv.HTTPResponseStatusCode(o.Status))
	}
	if endpoint != "" {
		l = append(l, AttrEndpoint.String(endpoint))
	}
	l = refGRPC(l, o)
	return refError(l, o, o.Status >= 500, o.GRPC && slices.Contains([]int{2, 4, 12, 13, 14, 15}, o.GRPCStatus))
}

// refGRPC appends a gRPC call's status attributes.
func refGRPC(l []attribute.KeyValue, o Outcome) []attribute.KeyValue {
	if !o.GRPC {
		return l
	}
	return append(l, semconv.RPCSystemNameGRPC, semconv.RPCResponseStatusCode(refGRPCName(o.GRPCStatus)),
		attribute.Int("rpc.grpc.status_code", o.GRPCStatus))
}

// refGRPCName is a gRPC status code's name (statuscodes.md).
func refGRPCName(code int) string {
	switch code {
	case 0:
		return "OK"
	case 5:
		return "NOT_FOUND"
	case 12:
		return "UNIMPLEMENTED"
	case 14:
		return "UNAVAILABLE"
	case 16:
		return "UNAUTHENTICATED"
	}
	return strconv.Itoa(code)
}

func refClient(listener Listener, service, route string, out *http.Request, method string, info AttemptInfo, o Outcome, setStatus int) []attribute.KeyValue {
	l := refMethod(nil, method)
	l = append(l, AttrListener.String(string(listener)), AttrService.String(service), AttrEndpoint.String(info.Endpoint), AttrAttempt.Int(info.Attempt))
	if info.BreakerState != "" {
		l = append(l, AttrBreakerState.String(string(info.BreakerState)))
	}
	if info.Attempt > 1 {
		l = append(l, semconv.HTTPRequestResendCount(info.Attempt-1))
	}
	if route != "" {
		l = append(l, semconv.HTTPRoute(route))
	}
	if out != nil && out.URL != nil {
		scheme, host, path := out.URL.Scheme, out.URL.Host, out.URL.EscapedPath()
		if host == "" {
			host = out.Host
		}
		if scheme == "" {
			scheme = "http"
		}
		if h, p := splitHostPort(host); h != "" {
			l = append(l, semconv.ServerAddress(h))
			if p == 0 {
				p = defaultPort(out.URL.Scheme)
			}
			if p > 0 {
				l = append(l, semconv.ServerPort(p))
			}
		}
		if path != "" && path[0] != '/' {
			path = "/" + path
		}
		l = append(l, semconv.URLFull(scheme+"://"+host+path))
	}
	if h, p := splitHostPort(info.Endpoint); h != "" {
		l = append(l, semconv.NetworkPeerAddress(h))
		if p > 0 {
			l = append(l, semconv.NetworkPeerPort(p))
		}
	}
	l = append(l, semconv.HTTPRequestBodySize(int(o.BytesOut)), semconv.HTTPResponseBodySize(int(o.BytesIn)),
		AttrBytesIn.Int64(o.BytesIn), AttrBytesOut.Int64(o.BytesOut))
	status := o.Status
	if status == 0 {
		status = setStatus
	}
	if status != 0 {
		l = append(l, semconv.HTTPResponseStatusCode(status))
	}
	l = refGRPC(l, o)
	return refError(l, o, o.Status >= 400, o.GRPC && o.GRPCStatus != 0)
}

func refError(l []attribute.KeyValue, o Outcome, statusIsError, grpcIsError bool) []attribute.KeyValue {
	switch {
	case o.Reason != "":
		return append(l, AttrReason.String(o.Reason), semconv.ErrorTypeKey.String(o.Reason))
	case statusIsError:
		return append(l, semconv.ErrorTypeKey.String(strconv.Itoa(o.Status)))
	case grpcIsError:
		return append(l, semconv.ErrorTypeKey.String(refGRPCName(o.GRPCStatus)))
	case o.Err != nil:
		return append(l, semconv.ErrorTypeKey.String("_OTHER"))
	}
	return l
}

// attrCase is one request through the helpers: what the sidecar sees and
// does, and the attribute lists the reference gives for it.
type attrCase struct {
	name     string
	method   string
	target   string
	host     string // "" keeps the target's
	remote   string
	ua       string
	tls      bool
	proto    [2]int
	routes   [][2]string
	out      func(r *http.Request) *http.Request // the upstream request; nil result allowed
	info     AttemptInfo
	status   int // Attempt.SetStatus, 0 for none
	attempt  Outcome
	outcome  Outcome
	attempts int // StartAttempt calls (each ended with attempt)
}

func attrCases() []attrCase {
	plainOut := func(r *http.Request) *http.Request {
		out, _ := http.NewRequest(r.Method, "http://files/report.pdf?q=1", nil)
		return out
	}
	broken := errors.New("connection reset")
	long := strings.Repeat("ü", 200)
	base := attrCase{
		method: "GET", target: "http://files.mesh:8080/report.pdf", remote: "10.1.2.3:40000", ua: "ferry-test/1",
		proto: [2]int{1, 1}, routes: [][2]string{{"files", "files"}}, out: plainOut,
		info:    AttemptInfo{Endpoint: "10.0.0.7:8080", Attempt: 1, BreakerState: BreakerClosed},
		attempt: Outcome{Status: 200, BytesIn: 1024}, outcome: Outcome{Status: 200, BytesOut: 1024}, attempts: 1,
	}
	var cs []attrCase
	add := func(name string, change func(c *attrCase)) {
		c := base
		c.name = name
		change(&c)
		cs = append(cs, c)
	}
	add("plain", func(*attrCase) {})
	add("unknown method", func(c *attrCase) { c.method = "PURGE" })
	add("tls, no port, ipv6 peer", func(c *attrCase) {
		c.tls, c.target, c.remote = true, "https://files/x", "[::1]:5000"
	})
	add("no remote port, empty ua, http/2", func(c *attrCase) { c.remote, c.ua, c.proto = "10.1.2.3", "", [2]int{2, 0} })
	add("http/1.0", func(c *attrCase) { c.proto = [2]int{1, 0} })
	add("http/1.2", func(c *attrCase) { c.proto = [2]int{1, 2} })
	add("http/3", func(c *attrCase) { c.proto = [2]int{3, 0} })
	add("http/0.9", func(c *attrCase) { c.proto = [2]int{0, 9} })
	add("host header without host", func(c *attrCase) { c.host = ":8080" })
	add("bad port", func(c *attrCase) { c.host, c.remote = "files:http", "10.1.2.3:x" })
	add("no route", func(c *attrCase) { c.routes = nil })
	add("empty route", func(c *attrCase) { c.routes = [][2]string{{"", ""}} })
	add("route set twice", func(c *attrCase) { c.routes = [][2]string{{"a", "files"}, {"b", "other"}} })
	add("long values", func(c *attrCase) { c.ua, c.target = long, "http://files/"+long })
	add("no upstream request", func(c *attrCase) { c.out = func(*http.Request) *http.Request { return nil } })
	add("upstream without URL host, odd path", func(c *attrCase) {
		c.out = func(r *http.Request) *http.Request {
			out, _ := http.NewRequest("GET", "http://x/", nil)
			out.URL.Host, out.URL.Scheme, out.URL.Path, out.Host = "", "", "rel/path", "logical:9000"
			return out
		}
	})
	add("https and ftp upstreams", func(c *attrCase) {
		c.out = func(r *http.Request) *http.Request {
			out, _ := http.NewRequest("GET", "ftp://files/a b", nil)
			return out
		}
	})
	add("https upstream", func(c *attrCase) {
		c.out = func(r *http.Request) *http.Request {
			out, _ := http.NewRequest("POST", "https://files/a%2Fb", nil)
			return out
		}
	})
	add("retries, no breaker state, endpoint without port", func(c *attrCase) {
		c.attempts, c.info = 3, AttemptInfo{Endpoint: "backend", Attempt: 3}
	})
	add("headers then broken body", func(c *attrCase) {
		c.status, c.attempt = 200, Outcome{BytesIn: 10, Reason: ReasonBodyBroken, Err: broken}
		c.outcome = Outcome{Status: 200, BytesOut: 10, Reason: ReasonBodyBroken, Err: broken}
	})
	add("error statuses", func(c *attrCase) {
		c.attempt, c.outcome = Outcome{Status: 404}, Outcome{Status: 503, BytesIn: 7}
	})
	add("error value only", func(c *attrCase) {
		c.attempt, c.outcome = Outcome{Err: broken}, Outcome{Status: 200, Err: broken}
	})
	add("reason without error", func(c *attrCase) {
		c.attempts, c.attempt, c.outcome = 0, Outcome{}, Outcome{Status: 404, Reason: ReasonNoRoute}
	})
	add("grpc OK", func(c *attrCase) {
		c.status, c.attempt = 200, Outcome{Status: 200, GRPC: true}
		c.outcome = Outcome{Status: 200, GRPC: true}
	})
	add("grpc NOT_FOUND: a client error only", func(c *attrCase) {
		c.attempt, c.outcome = Outcome{Status: 200, GRPC: true, GRPCStatus: 5}, Outcome{Status: 200, GRPC: true, GRPCStatus: 5}
	})
	add("grpc UNAVAILABLE: an error of both", func(c *attrCase) {
		c.attempt, c.outcome = Outcome{Status: 200, GRPC: true, GRPCStatus: 14}, Outcome{Status: 200, GRPC: true, GRPCStatus: 14}
	})
	add("grpc code gRPC does not define", func(c *attrCase) {
		c.attempt, c.outcome = Outcome{Status: 200, GRPC: true, GRPCStatus: 99}, Outcome{Status: 200, GRPC: true, GRPCStatus: 99}
	})
	add("grpc failure of ferry's, with an unknown method", func(c *attrCase) {
		c.method, c.attempts, c.attempt = "PURGE", 0, Outcome{}
		c.outcome = Outcome{Status: 404, Reason: ReasonNoRoute, GRPC: true, GRPCStatus: 12}
	})
	add("huge sizes", func(c *attrCase) {
		c.attempt, c.outcome = Outcome{Status: 200, BytesIn: 1 << 40, BytesOut: -1}, Outcome{Status: 299, BytesIn: 1 << 62, BytesOut: 1 << 33}
	})
	return cs
}

// run drives the helpers through c and returns the reference lists of the
// server span and of each attempt's client span.
func (c attrCase) run(t testing.TB, tel *Telemetry) (server []attribute.KeyValue, clients [][]attribute.KeyValue) {
	r := incoming(c.method, c.target, map[string]string{"traceparent": "00-" + callerTrace + "-" + callerSpan + "-01"})
	if c.host != "" {
		r.Host = c.host
	}
	r.RemoteAddr = c.remote
	r.Header.Set("User-Agent", c.ua)
	if c.tls {
		r.TLS = &tls.ConnectionState{}
	}
	r.ProtoMajor, r.ProtoMinor = c.proto[0], c.proto[1]
	_, q := tel.StartRequest(r, Outbound)
	var route, service string
	for _, rt := range c.routes {
		q.SetRoute(rt[0], rt[1])
		route, service = rt[0], rt[1]
	}
	endpoint := ""
	for i := range c.attempts {
		out := c.out(r)
		info := c.info
		info.Attempt = c.info.Attempt + i
		a := q.StartAttempt(out, info)
		if c.status != 0 {
			a.SetStatus(c.status)
		}
		a.End(c.attempt)
		method := c.method
		if out != nil && out.Method != "" {
			method = out.Method
		}
		clients = append(clients, refClient(Outbound, service, route, out, method, info, c.attempt, c.status))
		endpoint = info.Endpoint
	}
	q.End(c.outcome)
	return refServer(r, Outbound, c.routes, c.attempts, endpoint, c.outcome), clients
}

// snapshot is s as a plain SDK span stub, with attributes attrs.
func snapshot(s sdktrace.ReadOnlySpan, attrs []attribute.KeyValue) sdktrace.ReadOnlySpan {
	return tracetest.SpanStub{
		Name: s.Name(), SpanContext: s.SpanContext(), Parent: s.Parent(), SpanKind: s.SpanKind(),
		StartTime: s.StartTime(), EndTime: s.EndTime(), Attributes: attrs, Events: s.Events(), Links: s.Links(),
		Status: s.Status(), DroppedAttributes: s.DroppedAttributes(), DroppedEvents: s.DroppedEvents(),
		DroppedLinks: s.DroppedLinks(), Resource: s.Resource(), InstrumentationScope: s.InstrumentationScope(),
	}.Snapshot()
}

// The spans of ferry's helpers carry exactly the attributes they carried
// when built as lists, and encode to exactly the bytes the generic encoder
// writes for those lists.
func TestProxySpanAttributesMatchReference(t *testing.T) {
	for _, c := range attrCases() {
		t.Run(c.name, func(t *testing.T) {
			tel, rec, _ := recorded(t, Config{AccessLog: "off"}, env{})
			wantServer, wantClients := c.run(t, tel)
			spans := rec.Ended()
			if len(spans) != 1+len(wantClients) {
				t.Fatalf("%d spans, want %d", len(spans), 1+len(wantClients))
			}
			// Encoded before Attributes() is asked (it builds the list).
			var enc otlpEncoder
			got := bytes.Clone(enc.encode(spans, 0))
			want := make([][]attribute.KeyValue, len(spans))
			copy(want, wantClients)
			want[len(spans)-1] = wantServer
			stubs := make([]sdktrace.ReadOnlySpan, len(spans))
			for i, s := range spans {
				if fmt.Sprint(s.Attributes()) != fmt.Sprint(want[i]) {
					t.Errorf("span %d (%s) attributes\n got %v\nwant %v", i, s.SpanKind(), s.Attributes(), want[i])
				}
				if s.DroppedAttributes() != 0 {
					t.Errorf("span %d: %d attributes dropped", i, s.DroppedAttributes())
				}
				if n := len(want[i]); n > maxProxyAttrs && len(c.routes) < 2 {
					t.Errorf("span %d has %d attributes, more than maxProxyAttrs", i, n)
				}
				stubs[i] = snapshot(s, want[i])
			}
			var ref otlpEncoder
			if wantBytes := ref.encode(stubs, 0); !bytes.Equal(got, wantBytes) {
				t.Errorf("encoding differs from the generic encoder's:\n got %x\nwant %x", got, wantBytes)
			}
			// And again, now that the lists are built.
			if again := enc.encode(spans, 0); !bytes.Equal(again, got) {
				t.Error("second encoding differs")
			}
		})
	}
}

// With limits that cut, or attributes set through the API, the helpers'
// spans get what the SDK's rules give for the reference list.
func TestProxySpanAttributesUnderLimits(t *testing.T) {
	c := attrCases()[0]
	c.ua = "a-long-user-agent"
	for _, e := range []env{
		{"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "5"},
		{"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": strconv.Itoa(maxProxyAttrs)},
		{"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "3"},
		{"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "-1"},
	} {
		t.Run(fmt.Sprint(e), func(t *testing.T) {
			e["OTEL_TRACES_EXPORTER"] = "otlp" // limits are read when tracing is configured
			tel, rec, _ := recorded(t, Config{AccessLog: "off"}, e)
			limits, _ := resolveSpanLimits(e.get)
			wantServer, wantClients := c.run(t, tel)
			spans := rec.Ended()
			for i, want := range [][]attribute.KeyValue{wantClients[0], wantServer} {
				dropped := 0
				if limits.attributes >= 0 && len(want) > limits.attributes {
					want, dropped = want[:limits.attributes], len(want)-limits.attributes
				}
				for j := range want {
					want[j] = limits.truncate(want[j])
				}
				if got := spans[i].Attributes(); fmt.Sprint(got) != fmt.Sprint(want) || spans[i].DroppedAttributes() != dropped {
					t.Errorf("span %d: %v (%d dropped)\nwant %v (%d dropped)", i, got, spans[i].DroppedAttributes(), want, dropped)
				}
			}
		})
	}

	t.Run("SetAttributes", func(t *testing.T) {
		tel, rec, _ := recorded(t, Config{AccessLog: "off"}, env{})
		r := incoming("GET", "http://files/x", nil)
		_, q := tel.StartRequest(r, Outbound)
		q.Span().SetAttributes(attribute.String("app", "x"), AttrBytesIn.Int64(99))
		q.End(Outcome{Status: 200, BytesIn: 5})
		got := attrMap(rec.Ended()[0])
		if got["app"] != "x" || got["ferry.bytes_in"] != int64(5) || len(got) != len(rec.Ended()[0].Attributes()) {
			t.Errorf("attributes %v: want app=x and the helper's ferry.bytes_in, no key twice", got)
		}
	})

	t.Run("span ended before its helper", func(t *testing.T) {
		tel, rec, _ := recorded(t, Config{AccessLog: "off"}, env{})
		_, q := tel.StartRequest(incoming("GET", "http://files/x", nil), Outbound)
		q.Span().End()
		q.End(Outcome{Status: 200})
		if s := rec.Ended()[0]; len(s.Attributes()) != 0 {
			t.Errorf("attributes %v, want none (the helper had not handed them over)", s.Attributes())
		}
	})
}

// appendStringKV and appendIntKV write what appendKeyValue writes.
func TestAppendKVMatchesGeneric(t *testing.T) {
	for _, n := range []int{0, 1, 100, 115, 116, 117, 127, 128, 200, 16383, 16384, 70000} {
		v := strings.Repeat("v", n)
		for _, key := range []string{"k", "", strings.Repeat("k", 130)} {
			want := appendKeyValue([]byte{1}, fSpanAttributes, attribute.String(key, v))
			got := appendStringKV([]byte{1}, fSpanAttributes, key, v[:n/3], "", v[n/3:n/2], v[n/2:], "")
			if !bytes.Equal(got, want) {
				t.Errorf("string of %d, key %d: %x, want %x", n, len(key), got, want)
			}
		}
	}
	for _, v := range []int64{0, 1, 127, 128, -1, 1 << 40, -1 << 63} {
		want := appendKeyValue(nil, fSpanAttributes, attribute.Int64("ferry.bytes_in", v))
		if got := appendIntKV(nil, fSpanAttributes, "ferry.bytes_in", v); !bytes.Equal(got, want) {
			t.Errorf("int %d: %x, want %x", v, got, want)
		}
	}
	// The encoder's one-byte-length shortcuts, on both sides of their
	// bounds.
	var w attrEncoder
	for kl := range 130 {
		key := attribute.Key(strings.Repeat("k", kl))
		for _, vl := range []int{0, 1, 50, 100 - kl, 115 - kl, 116 - kl, 117 - kl, 121 - kl, 122 - kl, 123 - kl, 200} {
			if vl < 0 {
				continue
			}
			v := strings.Repeat("v", vl)
			w.b = nil
			w.str(key, v)
			if want := appendKeyValue(nil, fSpanAttributes, key.String(v)); !bytes.Equal(w.b, want) {
				t.Fatalf("str key %d value %d: %x, want %x", kl, vl, w.b, want)
			}
		}
		for _, v := range []int64{0, 127, 128, -1, 1 << 62} {
			w.b = nil
			w.num(key, v)
			if want := appendKeyValue(nil, fSpanAttributes, key.Int64(v)); !bytes.Equal(w.b, want) {
				t.Fatalf("num key %d value %d: %x, want %x", kl, v, w.b, want)
			}
		}
	}
	// A field number beyond one tag byte.
	want := appendKeyValue(nil, protowire.Number(20), attribute.String("k", "v"))
	if got := appendStringKV(nil, 20, "k", "v", "", "", "", ""); !bytes.Equal(got, want) {
		t.Errorf("field 20: %x, want %x", got, want)
	}
}

// The contexts StartRequest and StartAttempt return carry the span they
// started, recording or not. An attempt's context (made on the first call
// of Context when it records) is the same context at every call, also
// from goroutines calling at once, and holds the request context's values
// (its baggage) beneath its span.
func TestHelpersContextsCarryTheirSpans(t *testing.T) {
	for _, sampler := range []string{"always_on", "always_off", "parentbased_always_on"} {
		t.Run(sampler, func(t *testing.T) {
			tel, _, _ := recorded(t, Config{AccessLog: "off"}, env{"OTEL_TRACES_SAMPLER": sampler})
			r := incoming("GET", "http://files/x", map[string]string{"traceparent": "00-" + callerTrace + "-" + callerSpan + "-01", "baggage": "k=v"})
			ctx, q := tel.StartRequest(r, Outbound)
			// (A span that does not record is in the context as its span
			// context, as the API puts it there.)
			if got := trace.SpanFromContext(ctx); (q.Span().IsRecording() && got != q.Span()) || !got.SpanContext().Equal(q.Span().SpanContext()) || ctx != q.Context() {
				t.Errorf("StartRequest's context carries %v, want the server span %v", got.SpanContext(), q.Span().SpanContext())
			}
			if q.Span().SpanContext().SpanID().String() == callerSpan {
				t.Error("the server span is the caller's")
			}
			a := q.StartAttempt(nil, AttemptInfo{Endpoint: "10.0.0.7:8080", Attempt: 1})
			ctxs := make([]context.Context, 4)
			var wg sync.WaitGroup
			for i := range ctxs {
				wg.Go(func() { ctxs[i] = a.Context() })
			}
			wg.Wait()
			for i, actx := range append(ctxs, a.Context()) {
				if actx != ctxs[0] {
					t.Errorf("the attempt's context %d is not the first one", i)
				}
			}
			if got := trace.SpanFromContext(a.Context()); (a.Span().IsRecording() && got != a.Span()) || !got.SpanContext().Equal(a.Span().SpanContext()) {
				t.Errorf("the attempt's context carries %v, want the client span %v", got.SpanContext(), a.Span().SpanContext())
			}
			if got := baggage.FromContext(a.Context()).Member("k").Value(); got != "v" {
				t.Errorf("the attempt's context has baggage k=%q, want the request's v", got)
			}
			if a.Span().IsRecording() != (sampler != "always_off") || q.Span().IsRecording() != (sampler != "always_off") {
				t.Errorf("recording: server %v client %v", q.Span().IsRecording(), a.Span().IsRecording())
			}
			a.End(Outcome{Status: 200})
			q.End(Outcome{Status: 200})
			if q.Span().IsRecording() || a.Span().IsRecording() {
				t.Error("spans still record after End")
			}
		})
	}
}
