package telemetry

import (
	"strings"
	"testing"
)

// Address attributes carry an IPv6 address bare, as the semantic
// conventions ask, whether or not the Host header or URL gives a port:
// "Host: [::1]" (curl http://[::1]/ sends it so) used to show as
// server.address "[::1]", brackets and all.
func TestIPv6AddressAttributesAreBare(t *testing.T) {
	for _, host := range []string{"[::1]", "[::1]:8080"} {
		tel, rec, _ := recorded(t, Config{}, env{})
		r := incoming("GET", "http://"+host+"/x", nil)
		r.RemoteAddr = "[fd00::9]:40000"
		_, req := tel.StartRequest(r, Outbound)
		req.SetRoute("files", "files")
		out := upstream(t, tel, r, "http://[fd00::7]/x")
		att := req.StartAttempt(out, AttemptInfo{Endpoint: "[fd00::7]:8080", Attempt: 1, BreakerState: BreakerClosed})
		att.SetStatus(200)
		att.End(Outcome{Status: 200})
		req.End(Outcome{Status: 200})

		spans := rec.Ended()
		sa, ca := attrMap(spanByKind(t, spans, "server")), attrMap(spanByKind(t, spans, "client"))
		for k, want := range map[string]any{"server.address": "::1", "client.address": "fd00::9", "network.peer.address": "fd00::9", "network.peer.port": int64(40000)} {
			if sa[k] != want {
				t.Errorf("Host %s: server %s = %v, want %v", host, k, sa[k], want)
			}
		}
		for k, want := range map[string]any{"server.address": "fd00::7", "server.port": int64(80), "url.full": "http://[fd00::7]/x", "network.peer.address": "fd00::7", "network.peer.port": int64(8080)} {
			if ca[k] != want {
				t.Errorf("Host %s: client %s = %v, want %v", host, k, ca[k], want)
			}
		}
	}
}

// A client span to an endpoint with an IPv6 zone ("[fe80::7%eth0]:8080")
// has a url.full whose zone separator is percent-encoded, as RFC 6874 has
// it in a URL ("http://[fe80::7%25eth0]:8080/x"): a raw "%" followed by
// other than two hex digits makes no URL. Both the attributes the SDK sees
// and ferry's own OTLP encoding carry it so; the address attributes keep
// the zone as it is.
func TestZonedURLFullPercentEncoded(t *testing.T) {
	tel, rec, _ := recorded(t, Config{}, env{})
	r := incoming("GET", "http://files/x", nil)
	_, req := tel.StartRequest(r, Outbound)
	req.SetRoute("files", "files")
	out := upstream(t, tel, r, "http://[fe80::7%25eth0]:8080/x")
	if out.URL.Host != "[fe80::7%eth0]:8080" {
		t.Fatalf("URL host %q", out.URL.Host)
	}
	att := req.StartAttempt(out, AttemptInfo{Endpoint: "[fe80::7%eth0]:8080", Attempt: 1, BreakerState: BreakerClosed})
	att.SetStatus(200)
	att.End(Outcome{Status: 200})
	req.End(Outcome{Status: 200})

	spans := rec.Ended()
	var enc otlpEncoder
	encoded := string(enc.encode(spans, 0))
	const want = "http://[fe80::7%25eth0]:8080/x"
	if !strings.Contains(encoded, want) || strings.Contains(encoded, "http://[fe80::7%eth0]") {
		t.Errorf("OTLP encoding does not carry url.full %q alone", want)
	}
	ca := attrMap(spanByKind(t, spans, "client"))
	for k, want := range map[string]any{"url.full": want, "server.address": "fe80::7%eth0", "network.peer.address": "fe80::7%eth0"} {
		if ca[k] != want {
			t.Errorf("client %s = %v, want %v", k, ca[k], want)
		}
	}
}
