package telemetry

import (
	"net/http"
	"sync"
	"sync/atomic"
)

// spanNames holds the server span names SetRoute gives, "METHOD route",
// for each route seen: routes come from the config, a few of them, so a
// name is built once per route instead of once per request (a string
// allocation each). The map is replaced, never changed, so reading it
// takes no lock. At most maxRoutes routes are kept (a config reloaded
// again and again with new route names); the names of a route beyond
// them are built per request, as before.
type spanNames struct {
	routes atomic.Pointer[map[string]*routeNames]
	mu     sync.Mutex // held to add a route
}

// routeNames are one route's span names, by methodSlot.
type routeNames [len(spanMethods) + 1]string

// spanMethods are the methods the HTTP semantic conventions name
// (knownMethod), by slot; every other method's slot is len(spanMethods),
// whose span name says "HTTP".
var spanMethods = [...]string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
	http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace}

// maxRoutes bounds the routes spanNames keeps.
const maxRoutes = 1024

// methodSlot is method's place in routeNames.
func methodSlot(method string) int {
	switch method {
	case http.MethodGet:
		return 0
	case http.MethodHead:
		return 1
	case http.MethodPost:
		return 2
	case http.MethodPut:
		return 3
	case http.MethodPatch:
		return 4
	case http.MethodDelete:
		return 5
	case http.MethodConnect:
		return 6
	case http.MethodOptions:
		return 7
	case http.MethodTrace:
		return 8
	}
	return len(spanMethods)
}

// name is the span name of a request with method on route:
// spanMethod(method) + " " + route.
func (c *spanNames) name(method, route string) string {
	if m := c.routes.Load(); m != nil {
		if rn := (*m)[route]; rn != nil {
			return rn[methodSlot(method)]
		}
	}
	if rn := c.add(route); rn != nil {
		return rn[methodSlot(method)]
	}
	return spanMethod(method) + " " + route
}

// add makes route's names and keeps them; nil when maxRoutes are kept
// already.
func (c *spanNames) add(route string) *routeNames {
	c.mu.Lock()
	defer c.mu.Unlock()
	var old map[string]*routeNames
	if m := c.routes.Load(); m != nil {
		old = *m
	}
	if rn := old[route]; rn != nil {
		return rn
	}
	if len(old) >= maxRoutes {
		return nil
	}
	rn := new(routeNames)
	for i, m := range spanMethods {
		rn[i] = m + " " + route
	}
	rn[len(spanMethods)] = "HTTP " + route
	m := make(map[string]*routeNames, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[route] = rn
	c.routes.Store(&m)
	return rn
}
