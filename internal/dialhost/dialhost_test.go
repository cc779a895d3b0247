package dialhost

import "testing"

func TestValid(t *testing.T) {
	for host, want := range map[string]bool{
		"127.0.0.1": true, "::1": true, "fe80::1%eth0": true, "api.service.consul": true, "my_host-1": true,
		"": false, "a@b": false, "a?b": false, "caf\u00e9": false, "a\x00b": false, "a b": false, "a/b": false,
	} {
		if got := Valid(host); got != want {
			t.Errorf("Valid(%q) = %v, want %v", host, got, want)
		}
	}
}
