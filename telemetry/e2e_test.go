package telemetry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/telemetry/jaegertest"
)

// chainProxy is the smallest proxy that drives the telemetry helpers the way
// the sidecar does: server span, attempt span, header hygiene, streamed body
// with flushes, End at the last byte.
type chainProxy struct {
	tel       *Telemetry
	listener  Listener
	route     string
	service   string
	target    *url.URL
	transport *http.Transport
}

func (p *chainProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx, req := p.tel.StartRequest(r, p.listener)
	req.SetRoute(p.route, p.service)
	out, err := http.NewRequestWithContext(ctx, r.Method, p.target.String()+r.URL.Path, nil)
	if err != nil {
		w.WriteHeader(http.StatusBadGateway)
		req.End(Outcome{Status: http.StatusBadGateway, Reason: ReasonBadResponse, Err: err})
		return
	}
	out.Header = r.Header.Clone()
	for _, h := range p.tel.PropagationHeaders() {
		out.Header.Del(h)
	}
	att := req.StartAttempt(out, AttemptInfo{Endpoint: p.target.Host, Attempt: 1, BreakerState: BreakerClosed})
	att.Inject(out.Header)
	resp, err := p.transport.RoundTrip(out)
	if err != nil {
		att.End(Outcome{Reason: ReasonDialFailed, Err: err})
		w.WriteHeader(http.StatusBadGateway)
		req.End(Outcome{Status: http.StatusBadGateway, Reason: ReasonDialFailed, Err: err})
		return
	}
	defer resp.Body.Close()
	att.SetStatus(resp.StatusCode)
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	buf := make([]byte, 4096)
	var n int64
	var copyErr error
	for {
		k, rerr := resp.Body.Read(buf)
		if k > 0 {
			if _, werr := w.Write(buf[:k]); werr != nil {
				copyErr = werr
				break
			}
			_ = rc.Flush()
			n += int64(k)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			copyErr = rerr
			break
		}
	}
	o := Outcome{Status: resp.StatusCode, BytesIn: n}
	if copyErr != nil {
		o.Reason, o.Err = ReasonBodyBroken, copyErr
	}
	att.End(o)
	req.End(Outcome{Status: resp.StatusCode, BytesOut: n, Reason: o.Reason, Err: o.Err})
}

// TestEndToEndJaeger runs client -> ferry (outbound, OTLP/gRPC) -> ferry
// (inbound, OTLP/HTTP) -> app with a streamed body, and finds the trace in a
// real Jaeger: one trace, server -> client -> server -> client parenting,
// and spans that were still open when the body's last part was released.
func TestEndToEndJaeger(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Jaeger")
	}
	j := jaegertest.Start(t)
	t.Run("tracecontext", func(t *testing.T) {
		runChain(t, j, nil,
			func(h http.Header, traceID, spanID string) { h.Set("traceparent", "00-"+traceID+"-"+spanID+"-01") },
			func(h http.Header) string {
				if len(h.Values("traceparent")) != 1 {
					return "(not exactly one traceparent)"
				}
				return h.Get("traceparent")
			},
			func(traceID, spanID string) string { return "00-" + traceID + "-" + spanID + "-01" })
	})
	t.Run("b3multi", func(t *testing.T) {
		runChain(t, j, []string{"b3multi"},
			func(h http.Header, traceID, spanID string) {
				h.Set("X-B3-TraceId", traceID)
				h.Set("X-B3-SpanId", spanID)
				h.Set("X-B3-Sampled", "1")
			},
			func(h http.Header) string {
				return h.Get("X-B3-TraceId") + "/" + h.Get("X-B3-SpanId") + "/" + h.Get("X-B3-Sampled") + "/" + h.Get("traceparent")
			},
			func(traceID, spanID string) string { return traceID + "/" + spanID + "/1/" })
	})
}

// runChain sends one request through client -> outbound -> inbound -> app.
// setCaller writes the client's propagation headers, appSaw renders what the
// app received, and want renders what it should have received given the
// inbound client span.
func runChain(t *testing.T, j *jaegertest.Jaeger, propagators []string,
	setCaller func(h http.Header, traceID, spanID string),
	appSaw func(h http.Header) string,
	want func(traceID, inboundClientSpan string) string,
) {
	gate := make(chan struct{})
	appTraceparent := make(chan string, 1)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		appTraceparent <- appSaw(r.Header)
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = io.WriteString(w, "first")
		_ = http.NewResponseController(w).Flush()
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "-last")
	}))
	defer app.Close()

	newTel := func(name, protocol, endpoint string) *Telemetry {
		tel, err := New(t.Context(), Config{
			ServiceName: name, Protocol: protocol, Endpoint: endpoint, Propagators: propagators,
			BatchTimeout: 50 * time.Millisecond, AccessLog: "off",
		}, WithEnv(env{}.get))
		if err != nil {
			t.Fatal(err)
		}
		return tel
	}
	telIn := newTel("ferry-inbound", ProtocolHTTPProtobuf, "http://"+j.OTLPHTTP)
	telOut := newTel("ferry-outbound", ProtocolGRPC, "http://"+j.OTLPGRPC)

	appURL, _ := url.Parse(app.URL)
	trIn, trOut := &http.Transport{}, &http.Transport{}
	defer trIn.CloseIdleConnections()
	defer trOut.CloseIdleConnections()
	inbound := httptest.NewServer(&chainProxy{tel: telIn, listener: Inbound, route: "local-app", service: "files", target: appURL, transport: trIn})
	defer inbound.Close()
	inURL, _ := url.Parse(inbound.URL)
	outbound := httptest.NewServer(&chainProxy{tel: telOut, listener: Outbound, route: "files", service: "files", target: inURL, transport: trOut})
	defer outbound.Close()

	// The client starts the trace.
	var tid [16]byte
	var sid [8]byte
	_, _ = rand.Read(tid[:])
	_, _ = rand.Read(sid[:])
	traceID, clientSpan := hex.EncodeToString(tid[:]), hex.EncodeToString(sid[:])
	req, _ := http.NewRequest("GET", outbound.URL+"/report.pdf", nil)
	setCaller(req.Header, traceID, clientSpan)
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "first" {
		t.Fatalf("first part %q: %v", first, err)
	}
	released := time.Now() // every span must still be open now
	close(gate)
	rest, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(rest) != "-last" {
		t.Fatalf("rest %q: %v", rest, err)
	}

	// Flush both ferries to Jaeger.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := errors.Join(telOut.Shutdown(ctx), telIn.Shutdown(ctx)); err != nil {
		t.Fatalf("shutdown: %v", err)
	}

	var trace jaegertest.Trace
	j.WaitTraces(t, "ferry-outbound", 30*time.Second, func(ts []jaegertest.Trace) bool {
		for _, tr := range ts {
			if tr.TraceID == traceID && len(tr.Spans) == 4 {
				trace = tr
				return true
			}
		}
		return false
	})

	// Identify the four spans by service and kind.
	find := func(service, kind string) jaegertest.Span {
		for _, s := range trace.Spans {
			if k, _ := s.Tag("span.kind"); trace.Service(s) == service && k == kind {
				return s
			}
		}
		t.Fatalf("no %s %s span in %+v", service, kind, trace)
		return jaegertest.Span{}
	}
	outServer, outClient := find("ferry-outbound", "server"), find("ferry-outbound", "client")
	inServer, inClient := find("ferry-inbound", "server"), find("ferry-inbound", "client")

	for _, c := range []struct {
		name         string
		span         jaegertest.Span
		parent, want string
	}{
		{"outbound server", outServer, outServer.ParentSpanID(), clientSpan},
		{"outbound client", outClient, outClient.ParentSpanID(), outServer.SpanID},
		{"inbound server", inServer, inServer.ParentSpanID(), outClient.SpanID},
		{"inbound client", inClient, inClient.ParentSpanID(), inServer.SpanID},
	} {
		if c.parent != c.want {
			t.Errorf("%s (%s) parent %s, want %s", c.name, c.span.OperationName, c.parent, c.want)
		}
		if end := c.span.StartTime + c.span.Duration; end < released.UnixMicro() {
			t.Errorf("%s ended at %d µs, before the last body part was released at %d µs", c.name, end, released.UnixMicro())
		}
	}
	if got, want := <-appTraceparent, want(traceID, inClient.SpanID); got != want {
		t.Errorf("app got propagation %q, want %q", got, want)
	}
	if outServer.OperationName != "GET files" || inServer.OperationName != "GET local-app" {
		t.Errorf("operation names %q %q", outServer.OperationName, inServer.OperationName)
	}
	if v, _ := outClient.Tag("ferry.endpoint"); v != inURL.Host {
		t.Errorf("outbound client ferry.endpoint %v, want %s", v, inURL.Host)
	}
	if v, _ := inClient.Tag("http.response.status_code"); v != float64(200) {
		t.Errorf("inbound client status %v (%T)", v, v)
	}
	if v, _ := outServer.Tag("ferry.bytes_out"); v != float64(10) {
		t.Errorf("outbound server bytes_out %v", v)
	}
}
