package sidecar

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// rawRoundTrip writes raw to addr and returns the first response read back.
func rawRoundTrip(t *testing.T, addr, raw string, method string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	return res, string(b)
}

// The upstream sees the request target the caller sent, byte for byte
// where HTTP lets a proxy keep it: escapes as they came (%2F, %25, lower
// case), dot segments and empty segments not cleaned, and an empty query
// ("/p?") kept, as httputil.ReverseProxy keeps it. On the lane, handed
// over to net/http, and from an h2c caller; to HTTP/1.1 and h2c upstreams.
func TestRequestTargetReachesUpstreamAsSent(t *testing.T) {
	targets := []string{"/p?", "/a%2fb/%25/c?x=%zz&y=%2F;z", "/a/../b//c/./d", "/x?a=b?c"}
	seen := make(chan string, 1)
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.RequestURI
		w.Header().Set("Content-Length", "2")
		io.WriteString(w, "ok")
	}))
	for _, proto := range []string{"http1", "h2c"} {
		sc := startFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound:
  listen: 127.0.0.1:0
  routes: [ { service: svc } ]
services:
  svc: { endpoints: [%q], protocol: %s }
`, up, proto))
		addr := sc.Addr("outbound")
		for _, target := range targets {
			for _, caller := range []string{"lane", "handed-over", "h2c"} {
				switch caller {
				case "lane":
					rawRoundTrip(t, addr, "GET "+target+" HTTP/1.1\r\nHost: svc\r\n\r\n", "GET")
				case "handed-over":
					// A Trailer field is not the lane's: net/http serves it.
					rawRoundTrip(t, addr, "GET "+target+" HTTP/1.1\r\nHost: svc\r\nTrailer: X-T\r\n\r\n", "GET")
				case "h2c":
					req, _ := http.NewRequest("GET", "http://"+addr+target, nil)
					res, err := h2cClient().Do(req)
					if err != nil {
						t.Fatal(err)
					}
					io.Copy(io.Discard, res.Body)
					res.Body.Close()
				}
				if got := recv(t, seen, 5*time.Second, "the upstream request"); got != target {
					t.Errorf("%s caller, %s upstream: sent %q, upstream saw %q", caller, proto, target, got)
				}
			}
		}
	}
}
