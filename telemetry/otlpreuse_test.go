package telemetry

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// One encoder, reused for batch after batch as the exporter does, writes
// every span of ferry's helpers as the generic encoder writes its
// attribute list, whatever the span before it: the attribute bytes it
// keeps from a client span for the next ones of an equal head
// (attrEncoder.heads) are copied only where they are the same. The spans
// are those of every attribute case, and client spans of one tracer that
// differ from each other in one value at a time (two endpoints of one
// slot among them), in runs and alternating, in several orders.
func TestOTLPEncoderReusedMatchesGeneric(t *testing.T) {
	var spans []sdktrace.ReadOnlySpan
	for _, c := range attrCases() {
		tel, rec, _ := recorded(t, Config{AccessLog: "off"}, env{})
		c.run(t, tel)
		spans = append(spans, rec.Ended()...)
	}
	tel, rec, _ := recorded(t, Config{AccessLog: "off"}, env{})
	request := func(method, path, route, endpoint string, attempt int, breaker BreakerState, out string) {
		r := incoming(method, "http://files"+path, nil)
		l := Outbound
		if path == "/in" {
			l = Inbound
		}
		_, req := tel.StartRequest(r, l)
		service, route, _ := strings.Cut(route, "/")
		req.SetRoute(route, service)
		up := upstream(t, tel, r, out+path)
		req.StartAttempt(up, AttemptInfo{Endpoint: endpoint, Attempt: attempt, BreakerState: breaker}).End(Outcome{Status: 200, BytesIn: int64(len(path))})
		req.End(Outcome{Status: 200})
	}
	// An endpoint of the same slot in attrEncoder.heads as 10.0.0.7:8080.
	same := ""
	for i := 0; same == ""; i++ {
		if e := fmt.Sprintf("10.1.0.%d:8080", i); headSlot(e) == headSlot("10.0.0.7:8080") {
			same = e
		}
	}
	for range 2 {
		request("GET", "/a", "files/r", "10.0.0.7:8080", 1, BreakerClosed, "http://files")
		request("GET", "/a", "files/r", "10.0.0.7:8080", 1, BreakerClosed, "http://files")
		request("GET", "/b", "files/r", "10.0.0.7:8080", 1, BreakerClosed, "http://files")
		request("GET", "/b", "files/r", same, 1, BreakerClosed, "http://files")
		request("GET", "/b", "files/r", "10.0.0.7:8080", 1, BreakerClosed, "http://files")
		request("PUT", "/b", "files/r", "10.0.0.7:8080", 1, BreakerClosed, "http://files")
		request("PUT", "/b", "files/q", "10.0.0.7:8080", 1, BreakerClosed, "http://files")
		request("PUT", "/b", "other/q", "10.0.0.7:8080", 1, BreakerClosed, "http://files")
		request("PUT", "/b", "files/q", "10.0.0.8:8080", 1, BreakerClosed, "http://files")
		request("PUT", "/b", "files/q", "10.0.0.8:8080", 2, BreakerClosed, "http://files")
		request("PUT", "/b", "files/q", "10.0.0.8:8080", 2, BreakerHalfOpen, "http://files")
		request("PUT", "/b", "files/q", "10.0.0.8:8080", 2, BreakerHalfOpen, "https://files")
		request("PUT", "/b", "files/q", "10.0.0.8:8080", 2, BreakerHalfOpen, "https://files:8443")
		request("PUT", "/b", "files/q", "10.0.0.8:8080", 2, BreakerHalfOpen, "https://files:8443")
		request("PUT", "/b", "files/q", "[::1]:8080", 2, BreakerHalfOpen, "https://files:8443")
		request("PUT", "/in", "files/q", "[::1]:8080", 2, BreakerHalfOpen, "https://files:8443")
		request("PUT", "/b", "files/q", "[::1]:8080", 2, BreakerHalfOpen, "https://files:8443")
	}
	spans = append(spans, rec.Ended()...)

	encodesAsGeneric(t, spans)
	if n := len(spans); n < 60 {
		t.Fatalf("only %d spans", n)
	}
}

// encodesAsGeneric encodes spans with one encoder, in order, reversed and
// shuffled, in batches of 1, 2, 3 and all, and fails where a batch's bytes
// differ from the generic encoder's for the same spans' attribute lists.
func encodesAsGeneric(t *testing.T, spans []sdktrace.ReadOnlySpan) {
	t.Helper()
	orders := map[string][]sdktrace.ReadOnlySpan{"in order": spans}
	var rev, alt []sdktrace.ReadOnlySpan
	for i := len(spans) - 1; i >= 0; i-- {
		rev = append(rev, spans[i])
	}
	for i := range spans {
		alt = append(alt, spans[i], spans[(i*7+3)%len(spans)])
	}
	orders["reversed"], orders["shuffled"] = rev, alt
	var enc otlpEncoder // one for all
	for _, name := range []string{"in order", "reversed", "shuffled", "in order"} {
		batch := orders[name]
		for _, size := range []int{1, 2, 3, len(batch)} {
			for i := 0; i < len(batch); i += size {
				part := batch[i:min(i+size, len(batch))]
				got := bytes.Clone(enc.encode(part, 0))
				stubs := make([]sdktrace.ReadOnlySpan, len(part))
				for j, s := range part {
					stubs[j] = snapshot(s, s.Attributes())
				}
				var ref otlpEncoder
				if want := ref.encode(stubs, 0); !bytes.Equal(got, want) {
					t.Fatalf("%s, batches of %d, at %d: the encoding differs from the generic encoder's:\n got %x\nwant %x", name, size, i, got, want)
				}
			}
		}
	}
}

// As TestOTLPEncoderReusedMatchesGeneric, for server spans (whose head
// bytes attrEncoder.servers keeps per caller address): requests that
// differ from each other in one value of the head at a time, from two
// callers whose addresses share a set, in runs and alternating, and from
// three that share it (one more than its ways) in turn.
func TestOTLPEncoderServerHeadsMatchGeneric(t *testing.T) {
	tel, rec, _ := recorded(t, Config{AccessLog: "off"}, env{})
	var sharing []string // addresses in 10.1.2.3:40000's set
	for i := 0; len(sharing) < 2; i++ {
		if a := fmt.Sprintf("10.9.0.%d:%d", i%250, 50000+i); serverSetOf(a) == serverSetOf("10.1.2.3:40000") {
			sharing = append(sharing, a)
		}
	}
	same := sharing[0]
	trio := []string{"10.1.2.3:40000", sharing[0], sharing[1]}
	type req struct {
		method, target, remote, ua string
		major, minor               int // HTTP version
		tls                        bool
		routes                     []string // route/service
		listener                   Listener
	}
	base := req{method: "GET", target: "http://files/a", remote: "10.1.2.3:40000", ua: "ferry-test/1", major: 1, minor: 1, routes: []string{"files/r"}, listener: Outbound}
	vary := []func(*req){
		func(*req) {},
		func(r *req) { r.target = "http://files/b?q=1" },
		func(r *req) { r.remote = same },
		func(r *req) { r.remote = "10.1.2.3:40001" },
		func(r *req) { r.ua = "" },
		func(r *req) { r.ua = "other/2" },
		func(r *req) { r.ua = strings.Repeat("long/", 300) }, // over maxServerMemo: not kept
		func(r *req) { r.method = "PUT" },
		func(r *req) { r.method = "PURGE" },
		func(r *req) { r.target = "http://files:8080/a" },
		func(r *req) { r.target = "http://[::1]/a" },
		func(r *req) { r.minor = 0 },
		func(r *req) { r.minor = 2 },
		func(r *req) { r.major, r.minor = 2, 0 },
		func(r *req) { r.major = 2 }, // 2.1: the major version alone differs
		func(r *req) { r.major, r.minor = 3, 0 },
		func(r *req) { r.tls = true },
		func(r *req) { r.routes = nil },
		func(r *req) { r.routes = []string{"/"} }, // routed, with an empty route and service
		func(r *req) { r.routes = []string{"files/q"} },
		func(r *req) { r.routes = []string{"other/r"} },
		func(r *req) { r.routes = []string{"files/r", "other/q"} },
		func(r *req) { r.listener = Inbound },
	}
	for round := range 3 {
		for i, v := range vary {
			// base, the variant twice, base: each follows one that
			// differs in that value alone, or none.
			for j := range 4 {
				q := base
				switch {
				case round == 1 && i%2 == 1:
					q.remote = same
				case round == 2:
					q.remote = trio[(4*i+j)%3]
				}
				if j == 1 || j == 2 {
					v(&q)
				}
				r := incoming(q.method, q.target, map[string]string{"User-Agent": q.ua})
				if q.ua == "" {
					r.Header.Del("User-Agent")
				}
				r.RemoteAddr, r.ProtoMajor, r.ProtoMinor = q.remote, q.major, q.minor
				if q.tls {
					r.TLS = &tls.ConnectionState{}
				}
				_, sreq := tel.StartRequest(r, q.listener)
				for _, rt := range q.routes {
					service, route, _ := strings.Cut(rt, "/")
					sreq.SetRoute(route, service)
				}
				sreq.End(Outcome{Status: 200, BytesOut: 5})
			}
		}
	}
	// Unrouted after routed with an empty route and service, and back:
	// routed alone tells them apart.
	for _, routed := range []bool{false, true, true, false} {
		_, sreq := tel.StartRequest(incoming("GET", "http://files/a", nil), Outbound)
		if routed {
			sreq.SetRoute("", "")
		}
		sreq.End(Outcome{Status: 200})
	}
	spans := rec.Ended()
	if len(spans) != 3*4*len(vary)+4 {
		t.Fatalf("%d spans", len(spans))
	}
	encodesAsGeneric(t, spans)
}
