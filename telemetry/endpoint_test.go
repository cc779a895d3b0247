package telemetry

import "testing"

// The injector writes an endpoint as http://$(HOST_IP):4318; on an IPv6
// node kubelet makes that http://fd00::2:4318, which is no URL. ferry reads
// it as the node's address and port, as it reads CONSUL_HTTP_ADDR.
func TestParseEndpointIPv6WithoutBrackets(t *testing.T) {
	for _, c := range []struct{ in, host, path string }{
		{"http://fd00::2:4318", "[fd00::2]:4318", "/v1/traces"},
		{"https://fd00::2:4318/otlp", "[fd00::2]:4318", "/otlp/v1/traces"},
		{"http://[fd00::2]:4318", "[fd00::2]:4318", "/v1/traces"},
		{"http://10.0.0.2:4318", "10.0.0.2:4318", "/v1/traces"},
	} {
		u, err := parseEndpoint(c.in, ProtocolHTTPProtobuf, true)
		if err != nil {
			t.Errorf("%s: %v", c.in, err)
			continue
		}
		if u.Host != c.host || u.Path != c.path {
			t.Errorf("%s: host %q path %q, want %q and %q", c.in, u.Host, u.Path, c.host, c.path)
		}
	}
	for _, in := range []string{"http://fd00::2", "http://fd00::2:0", "http://fd00::2:99999", "http://fd00::zz:4318"} {
		if u, err := parseEndpoint(in, ProtocolHTTPProtobuf, true); err == nil {
			t.Errorf("%s: accepted as %s, want an error", in, u)
		}
	}
}
