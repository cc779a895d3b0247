package sidecar

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"sync/atomic"
	"testing"
	"time"
)

// The X-Forwarded-* fields reach the upstream once each, and no
// User-Agent is added where the caller sent none, whichever way ferry's
// client sends a lane request: written into the head by ferry's own
// HTTP/1.1 client (a bodiless GET, the fields never in the header map),
// handed to net/http's Transport (a small POST, whose body is not
// spliced: the fields go into the header first), with the caller's own
// X-Forwarded fields replaced or appended to, and on a retry after the
// first attempt was answered 503.
func TestForwardedFieldsEveryPath(t *testing.T) {
	seen := make(chan http.Header, 8)
	var failNext atomic.Bool
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		seen <- r.Header.Clone()
		if failNext.CompareAndSwap(true, false) {
			http.Error(w, "try the other", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok")
	})
	a, b := origin(t, handler), origin(t, handler)
	sc := startFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound:
  listen: 127.0.0.1:0
  routes: [ { service: svc } ]
services:
  svc:
    endpoints: [%s, %s]
    balancer: round_robin
    retry: { max_retries: 1, on_statuses: [503] }
telemetry: { access_log: "off" }
`, a, b))
	url := "http://" + sc.Addr("outbound")

	check := func(what string, h http.Header, wantFor string) {
		t.Helper()
		for k, want := range map[string][]string{
			"X-Forwarded-For":   {wantFor},
			"X-Forwarded-Proto": {"http"},
			"X-Forwarded-Host":  {"files"},
		} {
			if got := h[k]; !reflect.DeepEqual(got, want) {
				t.Errorf("%s: %s %q reached the origin, want %q", what, k, got, want)
			}
		}
		if ua, ok := h["User-Agent"]; ok {
			t.Errorf("%s: User-Agent %q reached the origin, where the caller sent none", what, ua)
		}
	}
	for _, tc := range []struct {
		name, head, wantFor string
		retry               bool
	}{
		{name: "get", head: "GET /x HTTP/1.1\r\nHost: files\r\n\r\n", wantFor: "127.0.0.1"},
		{name: "small post", head: "POST /x HTTP/1.1\r\nHost: files\r\nContent-Length: 5\r\n\r\nhello", wantFor: "127.0.0.1"},
		{name: "caller's proto and host", head: "GET /x HTTP/1.1\r\nHost: files\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: elsewhere\r\n\r\n", wantFor: "127.0.0.1"},
		{name: "caller's for", head: "GET /x HTTP/1.1\r\nHost: files\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n", wantFor: "203.0.113.9, 127.0.0.1"},
		{name: "retried get", head: "GET /x HTTP/1.1\r\nHost: files\r\n\r\n", wantFor: "127.0.0.1", retry: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			failNext.Store(tc.retry)
			c := dialRaw(t, url)
			if _, err := io.WriteString(c, tc.head); err != nil {
				t.Fatal(err)
			}
			res, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			if res.StatusCode != http.StatusOK || string(body) != "ok" {
				t.Fatalf("%d %q, want 200 \"ok\"", res.StatusCode, body)
			}
			attempts := 1
			if tc.retry {
				attempts = 2
			}
			for i := range attempts {
				check(fmt.Sprintf("attempt %d", i+1), recv(t, seen, 5*time.Second, "origin request"), tc.wantFor)
			}
			select {
			case h := <-seen:
				t.Fatalf("another attempt reached the origin: %v", h)
			default:
			}
		})
	}
}
