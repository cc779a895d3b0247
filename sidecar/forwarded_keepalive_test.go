package sidecar

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

// On one caller connection, whose laneHead serves request after request,
// each request's upstream head has its own X-Forwarded-* fields once each
// (the Host differs from request to request: one left from the request
// before would show), and no User-Agent where the caller's head kept none:
// requests whose fields ferry's client writes into the head alternate with
// ones whose fields are in the header map (the caller sent some of its
// own, in any case of name), a HEAD, one whose Connection field names the
// fields, and a body large enough to be spliced.
func TestForwardedFieldsKeepAlive(t *testing.T) {
	type seenReq struct {
		h    http.Header
		n    int64
		host string
	}
	seen := make(chan seenReq, 16)
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		seen <- seenReq{r.Header.Clone(), n, r.Host}
		io.WriteString(w, "ok")
	}))
	_, url := outboundTo(t, "telemetry: { access_log: \"off\" }", up)
	big := strings.Repeat("b", 3*spliceMin/2) // spliced (see socketUpload)
	c := dialRaw(t, url)
	br := bufio.NewReader(c)
	served, reused := laneServed.Load(), laneReused.Load()
	cases := []struct {
		name, fields, body string
		method             string
		wantFor            string
		wantUA             []string
	}{
		{name: "plain", wantFor: "127.0.0.1"},
		{name: "caller's for", fields: "X-Forwarded-For: 203.0.113.9\r\n", wantFor: "203.0.113.9, 127.0.0.1"},
		{name: "plain after for", wantFor: "127.0.0.1"},
		{name: "lower case proto, ua", fields: "x-forwarded-proto: https\r\nuser-agent: ua/1\r\n", wantFor: "127.0.0.1", wantUA: []string{"ua/1"}},
		{name: "plain after proto", wantFor: "127.0.0.1"},
		{name: "head", method: "HEAD", wantFor: "127.0.0.1"},
		{name: "upper case host", fields: "X-FORWARDED-HOST: elsewhere\r\n", wantFor: "127.0.0.1"},
		{name: "connection names them", fields: "Connection: X-Forwarded-For, User-Agent, X-Forwarded-Host\r\nUser-Agent: ua/2\r\nX-Forwarded-For: 198.51.100.1\r\n", wantFor: "127.0.0.1"},
		{name: "connection names them, none sent", fields: "Connection: X-Forwarded-For, X-Forwarded-Proto\r\n", wantFor: "127.0.0.1"},
		{name: "plain after connection", wantFor: "127.0.0.1"},
		{name: "small post", method: "POST", body: "hello", wantFor: "127.0.0.1"},
		{name: "plain after small post", wantFor: "127.0.0.1"},
		{name: "spliced post", method: "POST", body: big, wantFor: "127.0.0.1"},
		{name: "plain after spliced post", wantFor: "127.0.0.1"},
		{name: "spliced post with for", method: "POST", body: big, fields: "X-Forwarded-For: 203.0.113.7\r\n", wantFor: "203.0.113.7, 127.0.0.1"},
		{name: "plain last", wantFor: "127.0.0.1"},
	}
	for i, tc := range cases {
		method := tc.method
		if method == "" {
			method = "GET"
		}
		host := fmt.Sprintf("h%d", i)
		head := fmt.Sprintf("%s /x HTTP/1.1\r\nHost: %s\r\n%s", method, host, tc.fields)
		if tc.body != "" {
			head += fmt.Sprintf("Content-Length: %d\r\n", len(tc.body))
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, head+"\r\n"+tc.body); err != nil {
			t.Fatal(err)
		}
		res, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("%s: status %d", tc.name, res.StatusCode)
		}
		s := recv(t, seen, 5*time.Second, tc.name)
		if s.n != int64(len(tc.body)) || s.host != host {
			t.Errorf("%s: origin read %d bytes for host %q, want %d for %q", tc.name, s.n, s.host, len(tc.body), host)
		}
		for k, want := range map[string][]string{
			"X-Forwarded-For":   {tc.wantFor},
			"X-Forwarded-Proto": {"http"},
			"X-Forwarded-Host":  {host},
			"User-Agent":        tc.wantUA,
		} {
			if got := s.h[k]; !reflect.DeepEqual(got, want) {
				t.Errorf("%s: %s %q reached the origin, want %q", tc.name, k, got, want)
			}
		}
		if got := s.h["Connection"]; got != nil {
			t.Errorf("%s: Connection %q reached the origin", tc.name, got)
		}
	}
	if got := laneServed.Load() - served; got != int64(len(cases)) {
		t.Errorf("the lane served %d requests of %d", got, len(cases))
	}
	if laneReused.Load() == reused {
		t.Error("no request was served in its connection's last laneHead")
	}
}

// ferry's client sends a bodiless request again on a new connection when
// the pooled one it wrote it on closed without an answer: the head it
// writes the second time has the X-Forwarded-* fields once each, as the
// first did. Requests go until one was sent twice so (the first goes on a
// new connection, and a later one finds the pooled connection only once
// ferry put it back, which may come after the caller had its answer).
func TestForwardedFieldsResentOnNewConn(t *testing.T) {
	heads := make(chan http.Header, 16)
	up := startRawServer(t, func(c net.Conn) {
		// Each connection answers its first request and closes on its
		// second unanswered: ferry sends that one again.
		br := bufio.NewReader(c)
		for i := 0; i < 2; i++ {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			heads <- req.Header
			if i == 0 {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}
		}
	})
	_, url := outboundTo(t, "", up.addr())
	resent := false
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; !resent; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("no request of %d was sent again", i)
		}
		c := dialRaw(t, url)
		host := fmt.Sprintf("h%d", i)
		io.WriteString(c, "GET /x HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		c.Close()
		if res.StatusCode != 200 {
			t.Fatalf("request %d: status %d", i, res.StatusCode)
		}
		// Every head of this request reached the upstream before it
		// answered.
		sends := 0
		for len(heads) > 0 {
			h := <-heads
			sends++
			for k, want := range map[string][]string{"X-Forwarded-For": {"127.0.0.1"}, "X-Forwarded-Proto": {"http"}, "X-Forwarded-Host": {host}} {
				if got := h[k]; !reflect.DeepEqual(got, want) {
					t.Errorf("request %d, send %d: %s %q reached the upstream, want %q", i, sends, k, got, want)
				}
			}
			if ua, ok := h["User-Agent"]; ok {
				t.Errorf("request %d, send %d: User-Agent %q reached the upstream", i, sends, ua)
			}
		}
		if sends == 0 || sends > 2 {
			t.Fatalf("request %d reached the upstream %d times", i, sends)
		}
		resent = sends == 2
	}
}
