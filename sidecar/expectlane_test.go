package sidecar

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"
)

// A request with Expect: 100-continue and a body, to an HTTP/1.1 upstream,
// is served by the lane: the upstream is asked first, the caller gets its
// 100 Continue only then and sends the body, and the connection carries the
// next request (a Content-Length body, then a chunked one). To an h2c
// upstream such a request still goes to net/http's server.
func TestLaneServesExpectContinue(t *testing.T) {
	up, heads, conns := chunkedUpstream(t)
	_, url := outboundTo(t, "", up.addr())
	c := dialRaw(t, url)
	br := bufio.NewReader(c)
	handed := laneHanded.Load()
	for _, tc := range []struct{ head, body, want string }{
		{"Content-Length: 5", "hello", "5 3610a686 te=[] cl=5 trailers=[]"},
		{"Transfer-Encoding: chunked", "5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n", chunkedAnswer("hello", "X-T=1")},
	} {
		fmt.Fprintf(c, "POST /e HTTP/1.1\r\nHost: x\r\n%s\r\nExpect: 100-continue\r\n\r\n", tc.head)
		recv(t, heads, 5*time.Second, "the upstream to have the head")
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		res, err := http.ReadResponse(br, nil)
		if err != nil || res.StatusCode != http.StatusContinue {
			t.Fatalf("before the body: %v %v, want 100 Continue", res, err)
		}
		io.WriteString(c, tc.body)
		readAnswers(t, c, br, tc.want)
	}
	if got := laneHanded.Load() - handed; got != 0 {
		t.Fatalf("%d connections handed to net/http", got)
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("the upstream saw %d connections, want 1", n)
	}

	h2 := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s", r.Proto, b)
	}))
	sc := startFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: svc } ] }
services: { svc: { endpoints: [%s], protocol: h2c } }
`, h2))
	c = dialRaw(t, "http://"+sc.Addr("outbound"))
	io.WriteString(c, "POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	br = bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != http.StatusContinue {
		t.Fatalf("h2c upstream, before the body: %v %v, want 100 Continue", res, err)
	}
	io.WriteString(c, "hello")
	readAnswers(t, c, br, "HTTP/2.0 hello")
	if got := laneHanded.Load() - handed; got != 1 {
		t.Fatalf("%d connections handed to net/http, want the h2c upstream's 1", got)
	}
}
