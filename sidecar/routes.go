package sidecar

import (
	"strings"
)

// route is one compiled outbound route.
type route struct {
	host   string // lower case, no port, no trailing dot; "" = any
	prefix string // no trailing slash; "" = any
	name   string // "routes[i]" for logs and errors
	up     *upstream
}

// routeTable is an immutable list of routes matched in order.
type routeTable struct {
	routes  []route
	maxBody int64 // limits.max_request_body_bytes; 0 = none
}

// match returns the first route matching the request's host and path, or
// nil. It does not allocate.
func (t *routeTable) match(host, path string) *route {
	host = hostOnly(host)
	for i := range t.routes {
		r := &t.routes[i]
		if r.host != "" && !strings.EqualFold(r.host, host) {
			continue
		}
		if r.prefix != "" && !pathHasPrefix(path, r.prefix) {
			continue
		}
		return r
	}
	return nil
}

// pathHasPrefix matches prefix at a segment boundary: "/api" matches "/api",
// "/api/" and "/api/x" but not "/apix".
func pathHasPrefix(path, prefix string) bool {
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	return len(path) == len(prefix) || path[len(prefix)] == '/'
}

// hostOnly strips the port and a trailing dot from a Host header value.
func hostOnly(h string) string {
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.Contains(h[i:], "]") {
		h = h[:i]
	}
	if len(h) > 1 && h[0] == '[' && h[len(h)-1] == ']' {
		h = h[1 : len(h)-1]
	}
	return strings.TrimSuffix(h, ".")
}

// normalizeHost is hostOnly plus lower case, for config values.
func normalizeHost(h string) string {
	return strings.ToLower(hostOnly(h))
}
