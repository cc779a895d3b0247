package sidecar

import (
	"net/netip"
	"strings"

	"github.com/ferrymesh/ferry/internal/routematch"
)

// route is one compiled outbound route.
type route struct {
	host   string     // lower case, no port, no trailing dot; "" = any
	ip     netip.Addr // host as an IP literal, compared as an address
	prefix string     // no trailing slash; "" = any
	name   string     // "routes[i]": the config entry
	label  string     // "host/prefix": the route in spans, metrics and logs
	up     *upstream
}

// routeTable is an immutable list of routes matched in order.
type routeTable struct {
	routes  []route
	maxBody int64 // limits.max_request_body_bytes; 0 = none
	// maxHeader is limits.max_header_bytes, which ferry holds an HTTP/2
	// caller's head to itself (see h2HeadOver); 0 = none.
	maxHeader int
}

// match returns the first route matching the request's host and path, or
// nil. It does not allocate.
func (t *routeTable) match(host, path string) *route {
	host = hostOnly(host)
	for i := range t.routes {
		r := &t.routes[i]
		if r.ip.IsValid() {
			if a, err := netip.ParseAddr(host); err != nil || a != r.ip {
				continue
			}
		} else if r.host != "" && !strings.EqualFold(r.host, host) {
			continue
		}
		if r.prefix != "" && !routematch.PathHasPrefix(path, r.prefix) {
			continue
		}
		return r
	}
	return nil
}

// hostOnly strips the port, IPv6 brackets and a trailing dot from a Host
// header value, without allocating: "files:8080" -> "files",
// "[::1]:80" -> "::1"; an unbracketed value with several colons is a bare
// IPv6 address and stays whole.
func hostOnly(h string) string {
	if strings.HasPrefix(h, "[") {
		if i := strings.IndexByte(h, ']'); i > 0 {
			h = h[1:i]
		}
	} else if i := strings.IndexByte(h, ':'); i >= 0 && strings.IndexByte(h[i+1:], ':') < 0 {
		h = h[:i]
	}
	return strings.TrimSuffix(h, ".")
}

// normalizeHost is hostOnly plus lower case, for config values; an IPv6
// literal takes its canonical form.
func normalizeHost(h string) string {
	h = strings.ToLower(hostOnly(h))
	if a, err := netip.ParseAddr(h); err == nil {
		return a.String()
	}
	return h
}
