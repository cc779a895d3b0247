package sidecar

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/telemetry"
)

// http1OnlyOrigin is a Go HTTP/1.1 server that does not speak h2c: it
// answers HTTP/2's connection preface ("PRI * HTTP/2.0") in HTTP/1.1.
func http1OnlyOrigin(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := new(http.Protocols)
	p.SetHTTP1(true)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	}), Protocols: p}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// http10Origin answers whatever it is sent with an HTTP/1.0 400 and
// closes, as some HTTP/1 servers answer a request line they cannot read.
func http10Origin(t *testing.T) string {
	t.Helper()
	s := startRawServer(t, func(c net.Conn) {
		c.Read(make([]byte, 512))
		io.WriteString(c, "HTTP/1.0 400 Bad Request\r\nContent-Type: text/html\r\n\r\n<html>bad request</html>")
	})
	return s.ln.Addr().String()
}

// An upstream that does not speak HTTP/2, reached over h2c (protocol
// auto for an HTTP/2 caller, or protocol h2c), answers HTTP/2's connection
// preface in HTTP/1. ferry's 502 says so, names the key to set, and is
// recorded as a bad response; net/http's HTTP/2 client saw only a frame
// too large ("http2: frame too large, note that the frame header looked
// like an HTTP/1.1 header").
func TestH2CToUpstreamThatSpeaksOnlyHTTP1(t *testing.T) {
	leakCheck(t)
	h1only, h10 := http1OnlyOrigin(t), http10Origin(t)
	for _, tc := range []struct {
		name, protocol, addr, method string
		h2Caller                     bool
		inbound                      bool
		key, answered                string
	}{
		{"auto/h2c-caller/GET", ProtocolAuto, h1only, "GET", true, false, "services.svc.protocol", `with "HTTP/1.1 `},
		{"auto/h2c-caller/POST", ProtocolAuto, h1only, "POST", true, false, "services.svc.protocol", `with "HTTP/1.1 `},
		{"auto/h2c-caller/HTTP1.0-answer", ProtocolAuto, h10, "GET", true, false, "services.svc.protocol", `with "HTTP/1.0 400 Bad Request"`},
		{"h2c/http1-caller", ProtocolH2C, h1only, "GET", false, false, "services.svc.protocol", `with "HTTP/1.1 `},
		{"inbound/auto/h2c-caller", ProtocolAuto, h1only, "GET", true, true, "inbound.protocol", `with "HTTP/1.1 `},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound:
  listen: 127.0.0.1:0
  routes: [ { service: svc } ]
services:
  svc: { endpoints: [%s], protocol: %s }
`, tc.addr, tc.protocol)
			lst := "outbound"
			if tc.inbound {
				cfg = fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
inbound: { listen: 127.0.0.1:0, app: %s, protocol: %s }
`, tc.addr, tc.protocol)
				lst = "inbound"
			}
			sc, _, logs := tracedFerry(t, cfg)
			c := h1For(t)
			if tc.h2Caller {
				c = h2cFor(t)
			}
			var body io.Reader
			if tc.method == "POST" {
				body = strings.NewReader(strings.Repeat("x", 1000))
			}
			req, err := http.NewRequest(tc.method, "http://"+sc.Addr(lst)+"/x", body)
			if err != nil {
				t.Fatal(err)
			}
			res, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			reason := res.Header.Get("X-Ferry-Error")
			if res.StatusCode != http.StatusBadGateway {
				t.Fatalf("status %d %q, want 502", res.StatusCode, b)
			}
			for _, want := range []string{"does not speak HTTP/2", tc.answered, tc.key + ": http1"} {
				if !strings.Contains(reason, want) {
					t.Errorf("X-Ferry-Error %q does not say %q", reason, want)
				}
			}
			if strings.Contains(reason, "frame") {
				t.Errorf("X-Ferry-Error %q speaks of HTTP/2 frames", reason)
			}
			if string(b) != "ferry: "+reason+"\n" {
				t.Errorf("body %q, want the reason %q", b, reason)
			}
			waitFor(t, "the access log line", 5*time.Second, func() bool { return len(accessLines(t, logs)) == 1 })
			if l := accessLines(t, logs)[0]; l["status"] != float64(502) || l["reason"] != telemetry.ReasonBadResponse {
				t.Errorf("access log status %v reason %v, want 502 %s", l["status"], l["reason"], telemetry.ReasonBadResponse)
			}
		})
	}
}
