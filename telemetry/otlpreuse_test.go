package telemetry

import (
	"bytes"
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
	if n := len(spans); n < 60 {
		t.Fatalf("only %d spans", n)
	}
}
