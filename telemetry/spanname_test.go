package telemetry

import (
	"strconv"
	"sync"
	"testing"
)

// The span name SetRoute gives from spanNames is the one it built per
// request, spanMethod(method) + " " + route, for every method the
// conventions name, others ("HTTP"), and any route; also for routes
// beyond maxRoutes, which are not kept, and from goroutines adding the
// same routes at once.
func TestSpanNamesByRoute(t *testing.T) {
	for _, m := range spanMethods {
		if !knownMethod(m) || spanMethods[methodSlot(m)] != m {
			t.Fatalf("method %q: known %v, slot %d", m, knownMethod(m), methodSlot(m))
		}
	}
	methods := append(spanMethods[:], "PROPFIND", "get", "", "GET ", "QUERY")
	routes := []string{"files", "", "/api/v1/*", "a route", "files "}
	var c spanNames
	check := func(c *spanNames, route string) {
		t.Helper()
		for _, m := range methods {
			if got, want := c.name(m, route), spanMethod(m)+" "+route; got != want {
				t.Errorf("method %q, route %q: span name %q, want %q", m, route, got, want)
			}
		}
	}
	for range 2 {
		for _, r := range routes {
			check(&c, r)
		}
	}
	for i := len(routes); i < maxRoutes; i++ {
		check(&c, "r"+strconv.Itoa(i))
	}
	check(&c, "beyond")
	if n := len(*c.routes.Load()); n != maxRoutes {
		t.Errorf("%d routes kept, want %d", n, maxRoutes)
	}
	for _, r := range routes {
		check(&c, r)
	}

	var fresh spanNames
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 50 {
				r := "route" + strconv.Itoa((i+g)%20)
				if got, want := fresh.name("POST", r), "POST "+r; got != want {
					t.Errorf("route %q: span name %q, want %q", r, got, want)
				}
			}
		})
	}
	wg.Wait()
	if n := len(*fresh.routes.Load()); n != 20 {
		t.Errorf("%d routes kept, want 20", n)
	}
}
