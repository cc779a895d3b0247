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
