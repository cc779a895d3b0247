package sidecar

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// ferry on IPv6 loopback end to end: listeners, the admin listener, an
// upstream and the local app at [::1], a route to an IPv6 literal host,
// every proxy path (plain HTTP/1.1, a spliced upload, h2c, inbound), and
// the forwarding headers an IPv6 caller gets: X-Forwarded-For the bare
// address, X-Forwarded-Host the Host as it came.
func TestIPv6Loopback(t *testing.T) {
	if ln, err := net.Listen("tcp", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		ln.Close()
	}
	type seen struct {
		host, xff, xfh string
		n              int64
	}
	got := make(chan seen, 8)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		got <- seen{r.Host, r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Host"), n}
		io.WriteString(w, "ok")
	})
	up := originOn(t, "[::1]:0", h)

	sc := startFerry(t, fmt.Sprintf(`
admin: { listen: '[::1]:0' }
outbound:
  listen: '[::1]:0'
  routes: [ { host: '[0:0::1]', service: svc } ]
inbound: { listen: '[::1]:0', app: '%s' }
services:
  svc: { endpoints: ['%s'] }
`, up, up))

	for _, tc := range []struct {
		name, listener string
		client         *http.Client
		body           int
	}{
		{"h1", "outbound", h1Client(), 0},
		{"h1 spliced upload", "outbound", h1Client(), 256 << 10},
		{"h2c", "outbound", h2cClient(), 1000},
		{"inbound", "inbound", h1Client(), 0},
	} {
		addr := sc.Addr(tc.listener)
		if !strings.HasPrefix(addr, "[::1]:") {
			t.Fatalf("%s listens at %s, want [::1]", tc.listener, addr)
		}
		req, _ := http.NewRequest("POST", "http://"+addr+"/x", bytes.NewReader(make([]byte, tc.body)))
		res, err := tc.client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || string(b) != "ok" {
			t.Fatalf("%s: %d %q", tc.name, res.StatusCode, b)
		}
		s := recv(t, got, 5e9, tc.name+" at the upstream")
		if s.host != addr || s.xff != "::1" || s.xfh != addr || s.n != int64(tc.body) {
			t.Errorf("%s: upstream saw Host %q, X-Forwarded-For %q, X-Forwarded-Host %q, %d body bytes; want %q, \"::1\", %q, %d", tc.name, s.host, s.xff, s.xfh, s.n, addr, addr, tc.body)
		}
	}

	for _, path := range []string{"/ready", "/config"} {
		res, err := h1Client().Get("http://" + sc.Addr("admin") + path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Errorf("admin %s from ::1: %d", path, res.StatusCode)
		}
	}
}

// inbound.app with its host in brackets (an injected "[$(POD_IP)]:8080"
// that kubelet filled with an IPv4 address) is the app's endpoint in the
// form every endpoint has, as logs, metrics and spans name it.
func TestAppEndpointForm(t *testing.T) {
	for in, want := range map[string]string{
		"[10.1.2.3]:8080":     "10.1.2.3:8080",
		"[fd00::1:2:3]:8080":  "[fd00::1:2:3]:8080",
		"127.0.0.1:8080":      "127.0.0.1:8080",
		"[::1]:80":            "[::1]:80",
		"app.shop.svc:80":     "app.shop.svc:80",
		"[fe80::1%eth0]:8080": "[fe80::1%eth0]:8080",
	} {
		if got := appEndpoint(in); got != want {
			t.Errorf("appEndpoint(%q) = %q, want %q", in, got, want)
		}
	}
}
