// Package routematch is how ferry's outbound routes match a request, as far
// as the config's validation and the injector's annotation parser both need
// it: routes are matched in order, so one that an earlier route covers can
// never match.
package routematch

import (
	"net/netip"
	"strings"
)

// Key is a route's match: Host is the host it matches, normalized by the
// caller ("" = any host); Prefix is its path prefix without a trailing
// slash ("" = any path).
type Key struct{ Host, Prefix string }

// NewKey is the Key of a route with a normalized host and a path prefix as
// written.
func NewKey(host, prefix string) Key {
	return Key{host, strings.TrimSuffix(prefix, "/")}
}

// PathHasPrefix matches prefix at a segment boundary: "/api" matches
// "/api", "/api/" and "/api/x" but not "/apix".
func PathHasPrefix(path, prefix string) bool {
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	return len(path) == len(prefix) || path[len(prefix)] == '/'
}

// Covers reports whether a route matching k matches every request a route
// matching o would: listed after k, o could never match.
func (k Key) Covers(o Key) bool {
	return (k.Host == "" || k.Host == o.Host) && (k.Prefix == "" || PathHasPrefix(o.Prefix, k.Prefix))
}

// Shadowed returns the index of the first of earlier that covers k, or -1.
func Shadowed(earlier []Key, k Key) int {
	for i, e := range earlier {
		if e.Covers(k) {
			return i
		}
	}
	return -1
}

// ValidHost reports whether a route's host can ever match: a DNS name
// (dot-separated labels of letters, digits, '-' and '_', a trailing dot
// allowed), or an IP literal (IPv6 bare or in brackets, without a zone).
func ValidHost(h string) bool {
	if inner, ok := strings.CutPrefix(h, "["); ok {
		inner, ok = strings.CutSuffix(inner, "]")
		a, err := netip.ParseAddr(inner)
		return ok && err == nil && a.Is6() && a.Zone() == ""
	}
	if a, err := netip.ParseAddr(h); err == nil {
		return a.Zone() == "" // a zone names a local interface, never a Host
	}
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, c := range label {
			switch {
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
			default:
				return false
			}
		}
	}
	return true
}
