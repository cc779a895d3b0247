package sidecar

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// The traceparent naming each attempt's client span reaches the upstream
// once, whichever way ferry's client sends a lane request: written into
// the head with the X-Forwarded-* fields (a bodiless GET, with no
// tracestate), handed to net/http's Transport (a small POST: it goes into
// the header first), on a retry (the first attempt's in the head, the
// second's in the header), replacing the caller's, and on requests that
// follow on the same connection (nothing of one request's is left to the
// next).
func TestTracingTraceparentEveryPath(t *testing.T) {
	hops, up := newHopRecorder(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if strings.HasPrefix(r.URL.Path, "/retry") && n == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok")
	})
	up2 := origin(t, hops.handler)
	sc, rec, _ := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: s } ] }
services:
  s:
    endpoints: [%s, %s]
    retry: { max_retries: 1, on_statuses: [503], base_interval: 1ms, max_interval: 1ms }
`, up, up2))
	c := dialRaw(t, "http://"+sc.Addr("outbound"))
	defer c.Close()
	br := bufio.NewReader(c)
	tid, sid := randomIDs()
	for _, tc := range []struct {
		path, head, parent string
		attempts           int
	}{
		{path: "/get", head: "GET /get HTTP/1.1\r\nHost: files\r\n\r\n", attempts: 1},
		{path: "/again", head: "GET /again HTTP/1.1\r\nHost: files\r\n\r\n", attempts: 1},
		{path: "/child", head: "GET /child HTTP/1.1\r\nHost: files\r\nTraceparent: 00-" + tid + "-" + sid + "-01\r\n\r\n", parent: tid + "-" + sid, attempts: 1},
		{path: "/post", head: "POST /post HTTP/1.1\r\nHost: files\r\nContent-Length: 5\r\n\r\nhello", attempts: 1},
		{path: "/retry", head: "GET /retry HTTP/1.1\r\nHost: files\r\n\r\n", attempts: 2},
		{path: "/retry-child", head: "GET /retry-child HTTP/1.1\r\nHost: files\r\nTraceparent: 00-" + tid + "-" + sid + "-01\r\n\r\n", parent: tid + "-" + sid, attempts: 2},
		{path: "/last", head: "GET /last HTTP/1.1\r\nHost: files\r\n\r\n", attempts: 1},
	} {
		if _, err := io.WriteString(c, tc.head); err != nil {
			t.Fatal(err)
		}
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.path, err)
		}
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusOK || string(body) != "ok" {
			t.Fatalf("%s: %d %q, want 200 \"ok\"", tc.path, res.StatusCode, body)
		}
		checkHop(t, rec, hops, tc.path, tc.parent, tc.attempts, "")
	}
}
