// Package dialhost holds ferry's one rule for the host part of an address
// it will dial (a static endpoint, inbound.app, an endpoint the injector
// writes into a config), so the config loader and the Kubernetes injector
// accept exactly the same hosts.
package dialhost

import "net/netip"

// Valid reports whether host can name something to dial: an IP address
// (an IPv6 one with its zone, if any), or a host name Go's resolver looks
// up (letters, digits, '-', '_' and '.', at most 253 bytes). Any other host
// ("", "a@b", "a?b", "caf\u00e9", a control character) fails every dial.
func Valid(host string) bool {
	if host == "" {
		return false
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	if len(host) > 253 {
		return false
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}
