package sidecar

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// An endpoint with an IPv6 zone ("[::1%lo]:port") is dialled through its
// interface, and the zone, which names an interface of ferry's host, never
// reaches the upstream's Host header: an HTTP/1.0 request without a Host
// goes on with the endpoint as its Host, as net/http writes it.
func TestZonedEndpointHostHeader(t *testing.T) {
	lo := loopbackInterface(t)
	got := make(chan string, 4)
	up := originOn(t, "[::1]:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Host
		io.WriteString(w, "ok")
	}))
	_, port, _ := net.SplitHostPort(up)
	zoned := "[::1%" + lo + "]:" + port
	_, base := outboundTo(t, "", "'"+zoned+"'")

	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET /x HTTP/1.0\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("status %d", res.StatusCode)
	}
	if h := recv(t, got, 5*time.Second, "the upstream request"); h != "[::1]:"+port {
		t.Fatalf("upstream Host %q, want %q", h, "[::1]:"+port)
	}
}

// loopbackInterface names the interface of ::1, or skips the test.
func loopbackInterface(t *testing.T) string {
	t.Helper()
	ifs, _ := net.Interfaces()
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagLoopback == 0 {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.Equal(net.IPv6loopback) {
				return ifc.Name
			}
		}
	}
	t.Skip("no interface holds ::1")
	return ""
}

// X-Forwarded-For never carries the zone of a caller's IPv6 address: the
// zone ("%eth0") names an interface of ferry's host, which means nothing
// upstream (and no reader of the field expects one).
func TestForwardedForWithoutZone(t *testing.T) {
	for _, tc := range []struct{ remote, prior, want string }{
		{"[fe80::1%eth0]:40000", "", "fe80::1"},
		{"[fe80::1%eth0]:40000", "203.0.113.9", "203.0.113.9, fe80::1"},
		{"[fd00::9]:40000", "", "fd00::9"},
		{"192.0.2.7:40000", "", "192.0.2.7"},
	} {
		// Worked out per request, or once per connection (the lane's).
		worked := callerOf(tc.remote)
		for _, known := range []*callerAddr{nil, &worked} {
			r := &http.Request{RemoteAddr: tc.remote, Header: http.Header{}}
			out := http.Header{}
			if tc.prior != "" {
				out["X-Forwarded-For"] = []string{tc.prior}
			}
			setForwarded(out, r, nil, known, nil)
			if got := out.Get("X-Forwarded-For"); got != tc.want {
				t.Errorf("caller %s, prior %q, worked out before %v: X-Forwarded-For %q, want %q", tc.remote, tc.prior, known != nil, got, tc.want)
			}
		}
	}
}

// A caller that reaches ferry from a link-local address (which the kernel
// reports with its zone) is named upstream without the zone, over ferry's
// own HTTP/1.1 lane and over net/http's server (h2c) alike.
func TestZonedCallerForwardedFor(t *testing.T) {
	ip, zone := linkLocalAddress(t)
	got := make(chan string, 4)
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("X-Forwarded-For")
		io.WriteString(w, "ok")
	}))
	sc := startFerry(t, `
admin: { listen: 127.0.0.1:0 }
outbound:
  listen: '[::]:0'
  routes: [ { service: svc } ]
services:
  svc: { endpoints: [`+up+`] }
`)
	_, port, _ := net.SplitHostPort(sc.Addr("outbound"))
	url := "http://" + net.JoinHostPort(ip+"%25"+zone, port) + "/x"
	for name, c := range map[string]*http.Client{"http1": h1For(t), "h2c": h2cFor(t)} {
		res, err := c.Get(url)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("%s: status %d", name, res.StatusCode)
		}
		if xff := recv(t, got, 5*time.Second, "the upstream request"); xff != ip {
			t.Errorf("%s: X-Forwarded-For %q, want %q", name, xff, ip)
		}
	}
}

// linkLocalAddress returns an IPv6 link-local address of an interface that
// is up, and that interface's name, or skips the test.
func linkLocalAddress(t *testing.T) (ip, zone string) {
	t.Helper()
	ifs, _ := net.Interfaces()
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() == nil && n.IP.IsLinkLocalUnicast() {
				return n.IP.String(), ifc.Name
			}
		}
	}
	t.Skip("no interface that is up has an IPv6 link-local address")
	return "", ""
}

// The client span of an attempt on a zoned endpoint has a url.full that
// is a URL: the zone's "%" percent-encoded (RFC 6874).
func TestZonedEndpointURLFull(t *testing.T) {
	lo := loopbackInterface(t)
	up := originOn(t, "[::1]:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	_, port, _ := net.SplitHostPort(up)
	sc, rec, _ := tracedFerry(t, `
admin: { listen: 127.0.0.1:0 }
outbound:
  listen: 127.0.0.1:0
  routes: [ { service: svc } ]
services:
  svc: { endpoints: ['[::1%`+lo+`]:`+port+`'] }
`)
	res, err := h1For(t).Get("http://" + sc.Addr("outbound") + "/x")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	want := "http://[::1%25" + lo + "]:" + port + "/x"
	var got []string
	waitFor(t, "the client span", 5*time.Second, func() bool {
		got = got[:0]
		for _, s := range rec.Ended() {
			for _, kv := range s.Attributes() {
				if kv.Key == "url.full" {
					got = append(got, kv.Value.AsString())
				}
			}
		}
		return len(got) > 0
	})
	if len(got) != 1 || got[0] != want {
		t.Fatalf("url.full %q, want [%q]", got, want)
	}
}
