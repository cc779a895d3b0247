package telemetry

import "testing"

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
