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

func TestKey(t *testing.T) {
	for _, same := range [][]string{
		{"[::1]:80", "[0:0::1]:80", "[0000::0001]:80"},
		{"127.0.0.1:80", "[::ffff:127.0.0.1]:80"},
		{"localhost:80", "LOCALHOST:80", "LocalHost:80"},
		{"[fe80::1%eth0]:80", "[FE80::1%eth0]:80"},
	} {
		for _, addr := range same[1:] {
			if Key(addr) != Key(same[0]) {
				t.Errorf("Key(%q) = %q, Key(%q) = %q: want the same", addr, Key(addr), same[0], Key(same[0]))
			}
		}
	}
	for _, pair := range [][2]string{
		{"[::1]:80", "[::1]:81"},
		{"[fe80::1%eth0]:80", "[fe80::1%eth1]:80"}, // zones name interfaces, and case matters in their names
		{"[fe80::1%eth0]:80", "[fe80::1%ETH0]:80"},
		{"127.0.0.1:80", "[::1]:80"},
		{"localhost:80", "127.0.0.1:80"}, // what a name resolves to is not known here
	} {
		if Key(pair[0]) == Key(pair[1]) {
			t.Errorf("Key(%q) = Key(%q) = %q: want them apart", pair[0], pair[1], Key(pair[0]))
		}
	}
}

func TestBracket(t *testing.T) {
	for in, want := range map[string]string{
		"fd00::2:8500":      "[fd00::2]:8500",
		"::1:8500":          "[::1]:8500",
		"fe80::1%eth0:8500": "[fe80::1%eth0]:8500",
		"[fd00::2]:8500":    "[fd00::2]:8500",
		"localhost:8500":    "localhost:8500",
		"10.0.0.2:8500":     "10.0.0.2:8500",
		"fd00::2":           "fd00::2",       // "fd00:" is no address: left for the request to fail on
		"fd00::2:0":         "fd00::2:0",     // no port 0
		"fd00::2:08500":     "fd00::2:08500", // nor one with a leading zero
		"fd00::2:99999":     "fd00::2:99999",
		"10.0.0.2":          "10.0.0.2",
	} {
		if got := Bracket(in); got != want {
			t.Errorf("Bracket(%q) = %q, want %q", in, got, want)
		}
	}
}
