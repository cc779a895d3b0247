package sidecar

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/telemetry"
)

// rawExchange writes raw to a new connection to addr and returns the
// statuses of the want responses that come back.
func rawExchange(t *testing.T, addr, raw string, want int) []int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	var got []int
	for len(got) < want {
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("after statuses %v: %v", got, err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		got = append(got, res.StatusCode)
	}
	return got
}

// metricsText is the sidecar's /metrics page.
func metricsText(sc *Sidecar) string {
	rr := httptest.NewRecorder()
	sc.tel.MetricsHandler().ServeHTTP(rr, httptest.NewRequest("GET", "/metrics", nil))
	return rr.Body.String()
}

// Requests net/http's server answers on its own, before ferry's handler
// sees them, show in ferry_requests_total and the access log with the
// status net/http answered and a reason: a 431 for a head over
// limits.max_header_bytes, a 400 for a malformed request line or Host (also
// one pipelined behind a request net/http served), a 501 for an unknown
// transfer coding, a 417 for an unknown expectation; "OPTIONS *" as the
// 200 it got, to an HTTP/1.0 request as to an HTTP/1.1 one. So does the 505 the lane
// answers to an HTTP/2 preface after a request. net/http's answers stay as
// they were. Requests served through ferry's handler (handed over to
// net/http, or h2c) are reported once, as before, never also as answered
// by net/http.
func TestNetHTTPRefusalsReported(t *testing.T) {
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	sc, _, logs := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: s } ] }
services: { s: { endpoints: [%s] } }
limits: { max_header_bytes: 1024 }
`, up))
	addr := sc.Addr("outbound")
	cases := []struct {
		name, raw string
		want      []int  // statuses the caller gets
		reason    string // of the last
	}{
		{"head over max_header_bytes", "GET /x HTTP/1.1\r\nHost: s\r\nX-Big: " + strings.Repeat("b", 8000) + "\r\n\r\n", []int{431}, telemetry.ReasonHeaderTooLarge},
		{"bad Host", "GET /x HTTP/1.1\r\nHost: a b\r\n\r\n", []int{400}, telemetry.ReasonMalformedRequest},
		{"malformed request line", "G@T /x HTTP/1.1\r\nHost: s\r\n\r\n", []int{400}, telemetry.ReasonMalformedRequest},
		// Served by net/http through ferry's handler (Expect), then a
		// refusal pipelined behind it.
		{"refused after one served", "GET /1 HTTP/1.1\r\nHost: s\r\nExpect: 100-continue\r\n\r\nGET /2 HTTP/1.1\r\nHost: s\r\nHost: t\r\n\r\n", []int{200, 400}, telemetry.ReasonMalformedRequest},
		{"unknown transfer coding", "POST /x HTTP/1.1\r\nHost: s\r\nTransfer-Encoding: gzip\r\n\r\nabc", []int{501}, telemetry.ReasonUnsupportedRequest},
		{"OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: s\r\n\r\n", []int{200}, ""},
		// An HTTP/1.0 request gets an HTTP/1.0 status line.
		{"OPTIONS *, HTTP/1.0", "OPTIONS * HTTP/1.0\r\nHost: s\r\n\r\n", []int{200}, ""},
		{"unknown expectation", "GET /x HTTP/1.1\r\nHost: s\r\nExpect: x\r\n\r\n", []int{417}, telemetry.ReasonUnsupportedRequest},
		{"unknown expectation, HTTP/1.0", "GET /x HTTP/1.0\r\nHost: s\r\nExpect: x\r\n\r\n", []int{417}, telemetry.ReasonUnsupportedRequest},
		{"preface after a request", "GET /1 HTTP/1.1\r\nHost: s\r\n\r\nPRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", []int{200, 505}, telemetry.ReasonOther},
	}
	var statuses []any
	for _, c := range cases {
		got := rawExchange(t, addr, c.raw, len(c.want))
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Fatalf("%s: statuses %v, want %v", c.name, got, c.want)
		}
		for _, s := range c.want {
			statuses = append(statuses, float64(s))
		}
		waitFor(t, c.name+": its access log lines", 5*time.Second, func() bool { return len(accessLines(t, logs)) >= len(statuses) })
		l := accessLines(t, logs)[len(statuses)-1]
		level := map[bool]string{true: "WARN", false: "INFO"}[c.reason != ""]
		if l["status"] != statuses[len(statuses)-1] || l["reason"] != c.reason || l["level"] != level || l["listener"] != "outbound" {
			t.Errorf("%s: access log line %v, want status %d reason %q at %s on outbound", c.name, l, c.want[len(c.want)-1], c.reason, level)
		}
	}
	if res, _ := get(t, h2cClient(), "http://"+addr+"/h2", ""); res.StatusCode != 200 || res.ProtoMajor != 2 {
		t.Fatalf("h2c: %d over HTTP/%d", res.StatusCode, res.ProtoMajor)
	}
	statuses = append(statuses, float64(200))
	waitFor(t, "the h2c request's access log line", 5*time.Second, func() bool { return len(accessLines(t, logs)) >= len(statuses) })
	var got []any
	for _, l := range accessLines(t, logs) {
		got = append(got, l["status"])
	}
	if fmt.Sprint(got) != fmt.Sprint(statuses) {
		t.Errorf("access log statuses %v, want %v (one line per request)", got, statuses)
	}
	body := metricsText(sc)
	for _, want := range []string{
		`ferry_requests_total{endpoint="",listener="outbound",reason="header_too_large",service="",status_class="4xx"} 1`,
		`ferry_requests_total{endpoint="",listener="outbound",reason="malformed_request",service="",status_class="4xx"} 3`,
		`ferry_requests_total{endpoint="",listener="outbound",reason="unsupported_request",service="",status_class="5xx"} 1`,
		`ferry_requests_total{endpoint="",listener="outbound",reason="other",service="",status_class="5xx"} 1`,
		`ferry_requests_total{endpoint="",listener="outbound",reason="unsupported_request",service="",status_class="4xx"} 2`,
		`ferry_requests_total{endpoint="",listener="outbound",reason="",service="",status_class="2xx"} 2`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("no %s in:\n%s", want, grepLines(body, "ferry_requests_total"))
		}
	}
}

// A request ferry's handler refuses because its head is malformed (a
// request target not in origin form over HTTP/1.1; over HTTP/2 a method
// that is not a token, a query holding a space, an authority that is not a
// valid host) is reported as the malformed request it is, with reason
// malformed_request, as net/http's and the lane's refusals of the same
// heads over HTTP/1.1 are: on the access log line, the server span and
// ferry_requests_total. It is no failure of ferry's own ("other").
func TestMalformedRequestsRefusedByTheHandlerAreMalformed(t *testing.T) {
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	sc, rec, logs := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: s } ] }
services: { s: { endpoints: [%s] } }
`, up))
	addr := sc.Addr("outbound")
	h2 := func(method, authority, path string) [][2]string {
		return [][2]string{{":method", method}, {":scheme", "http"}, {":authority", authority}, {":path", path}}
	}
	cases := []struct {
		name   string
		raw    string      // an HTTP/1.1 request, or
		fields [][2]string // an HTTP/2 one
	}{
		{name: "HTTP/1.1 target not in origin form", raw: "GET a:b HTTP/1.1\r\nHost: s\r\n\r\n"},
		{name: "HTTP/2 method not a token", fields: h2("G(T", "s", "/p")},
		{name: "HTTP/2 query with a space", fields: h2("GET", "s", "/p?a HTTP/1.1")},
		{name: "HTTP/2 authority not a host", fields: h2("GET", "s x", "/p")},
	}
	for i, c := range cases {
		if c.raw != "" {
			if got := rawExchange(t, addr, c.raw, 1); got[0] != 400 {
				t.Fatalf("%s: status %d, want 400", c.name, got[0])
			}
		} else if res := h2Raw(t, addr, c.fields, ""); res.status != 400 {
			t.Fatalf("%s: got %v, want 400", c.name, res)
		}
		waitFor(t, c.name+": its access log line", 5*time.Second, func() bool { return len(accessLines(t, logs)) > i })
		l := accessLines(t, logs)[i]
		if l["status"] != float64(400) || l["reason"] != telemetry.ReasonMalformedRequest {
			t.Errorf("%s: access log line has status %v reason %q, want 400 %q", c.name, l["status"], l["reason"], telemetry.ReasonMalformedRequest)
		}
	}
	waitFor(t, "the server spans", 5*time.Second, func() bool { return len(rec.Ended()) >= len(cases) })
	for _, s := range rec.Ended() {
		for _, a := range s.Attributes() {
			if a.Key == telemetry.AttrReason && a.Value.AsString() != telemetry.ReasonMalformedRequest {
				t.Errorf("span %q has ferry.reason %q, want %q", s.Name(), a.Value.AsString(), telemetry.ReasonMalformedRequest)
			}
		}
	}
	body := metricsText(sc)
	want := fmt.Sprintf(`ferry_requests_total{endpoint="",listener="outbound",reason="malformed_request",service="",status_class="4xx"} %d`, len(cases))
	if !strings.Contains(body, want) {
		t.Errorf("no %s in:\n%s", want, grepLines(body, "ferry_requests_total"))
	}
}
