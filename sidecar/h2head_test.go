package sidecar

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/telemetry"
)

// TestH2CUpstreamResponseHeadBounded proves an h2c upstream's response head
// is held to the bound an HTTP/1.1 upstream's is (maxResponseHeader, 1 MiB):
// one of 512 KiB reaches the caller whole, one of 2 MiB (in 64 KiB fields,
// none over the bound alone) is answered 502 bad_response naming the bound,
// for an h2c and an HTTP/1.1 caller alike, and the upstream connection
// goes on serving the next request.
func TestH2CUpstreamResponseHeadBounded(t *testing.T) {
	leakCheck(t)
	addr := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/"))
		for i := 0; n > 0; i++ {
			k := min(n, 64<<10)
			w.Header().Set(fmt.Sprintf("X-Big-%d", i), strings.Repeat("b", k))
			n -= k
		}
		io.WriteString(w, "ok")
	}))
	for _, caller := range []string{"h2c", "http1"} {
		t.Run(caller, func(t *testing.T) {
			sc, _, logs := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound:
  listen: 127.0.0.1:0
  routes: [ { service: svc } ]
services:
  svc: { endpoints: [%s], protocol: h2c }
`, addr))
			c := h1For(t)
			if caller == "h2c" {
				c = h2cFor(t)
			}
			for i, size := range []int{512 << 10, 2 << 20, 512 << 10} {
				res, err := c.Get(fmt.Sprintf("http://%s/%d", sc.Addr("outbound"), size))
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				got := 0
				for k, v := range res.Header {
					if strings.HasPrefix(k, "X-Big-") {
						got += len(v[0])
					}
				}
				reason := res.Header.Get("X-Ferry-Error")
				waitFor(t, "the access log line", 5*time.Second, func() bool { return len(accessLines(t, logs)) == i+1 })
				l := accessLines(t, logs)[i]
				if size < maxResponseHeader {
					if res.StatusCode != 200 || got != size || string(b) != "ok" {
						t.Fatalf("a %d-byte head: got %d %q with %d header bytes, want 200 and all %d", size, res.StatusCode, reason, got, size)
					}
					continue
				}
				if res.StatusCode != http.StatusBadGateway || !strings.Contains(reason, "response headers exceeded 1048576 bytes") {
					t.Fatalf("a %d-byte head: got %d %q with %d header bytes, want 502 saying the response headers exceeded 1048576 bytes", size, res.StatusCode, reason, got)
				}
				if l["status"] != float64(502) || l["reason"] != telemetry.ReasonBadResponse {
					t.Errorf("access log status %v reason %v, want 502 %s", l["status"], l["reason"], telemetry.ReasonBadResponse)
				}
			}
		})
	}
}
