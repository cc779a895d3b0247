package sidecar

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/ferrymesh/ferry/internal/localnet/localnettest"
)

// grpcWebFrame is one gRPC-Web length-prefixed message: flag, 4-byte
// big-endian length, payload. Flag 0x80 marks the trailer frame.
func grpcWebFrame(flag byte, payload []byte) []byte {
	b := make([]byte, 5, 5+len(payload))
	b[0] = flag
	binary.BigEndian.PutUint32(b[1:], uint32(len(payload)))
	return append(b, payload...)
}

// grpcWebResult is how a gRPC-Web client reads an answer: the HTTP
// status and Content-Type, the messages, and grpc-status/grpc-message from
// the trailer frame or, for a trailers-only answer, from the head.
type grpcWebResult struct {
	httpStatus   int
	contentType  string
	messages     int
	trailersOnly bool // no body: the status came in the head
	status       int
	hasStatus    bool
	message      string
	ferryError   string
	originProto  string // X-Origin-Proto: the protocol a test's upstream was spoken to in
}

// readGRPCWeb reads res as a gRPC-Web client does (grpc-web, connect-web):
// the body, base64-decoded chunk by chunk for -text, split into frames;
// the trailer frame's header lines, else the head's fields.
func readGRPCWeb(t *testing.T, res *http.Response) grpcWebResult {
	t.Helper()
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	r := grpcWebResult{httpStatus: res.StatusCode, contentType: res.Header.Get("Content-Type"), ferryError: res.Header.Get("X-Ferry-Error"), originProto: res.Header.Get("X-Origin-Proto")}
	if !strings.HasPrefix(strings.ToLower(r.contentType), "application/grpc-web") {
		r.message = "(not gRPC-Web) " + string(body) // no status a gRPC-Web client can read
		return r
	}
	if strings.HasPrefix(strings.ToLower(r.contentType), "application/grpc-web-text") {
		var dec []byte
		for len(body) >= 4 { // padded base64 chunks: 4 characters at a time
			q, err := base64.StdEncoding.DecodeString(string(body[:4]))
			if err != nil {
				t.Fatalf("-text body %q: %v", body, err)
			}
			dec, body = append(dec, q...), body[4:]
		}
		if len(body) != 0 {
			t.Fatalf("-text body leaves %q", body)
		}
		body = dec
	}
	r.trailersOnly = len(body) == 0
	fields := map[string]string{}
	for k := range res.Header {
		fields[strings.ToLower(k)] = res.Header.Get(k)
	}
	for len(body) > 0 {
		if len(body) < 5 {
			t.Fatalf("a partial frame prefix %q", body)
		}
		n := binary.BigEndian.Uint32(body[1:5])
		if uint32(len(body)-5) < n {
			t.Fatalf("a partial frame: %d of %d bytes", len(body)-5, n)
		}
		payload := body[5 : 5+n]
		if body[0]&0x80 != 0 {
			fields = map[string]string{}
			for _, line := range strings.Split(string(payload), "\r\n") {
				if k, v, ok := strings.Cut(line, ":"); ok {
					fields[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
				}
			}
		} else {
			r.messages++
		}
		body = body[5+n:]
	}
	if s, ok := fields["grpc-status"]; ok {
		r.status, err = strconv.Atoi(s)
		if err != nil {
			t.Fatalf("grpc-status %q", s)
		}
		r.hasStatus = true
	}
	r.message, _ = url.PathUnescape(fields["grpc-message"])
	return r
}

// grpcWebCall posts one empty gRPC-Web message with Content-Type ct
// (the request's body is given by body when not nil).
func grpcWebCall(t *testing.T, c *http.Client, base, host, ct string, body []byte) grpcWebResult {
	t.Helper()
	if body == nil {
		body = grpcWebFrame(0, nil)
		if strings.Contains(ct, "-text") {
			body = []byte(base64.StdEncoding.EncodeToString(body))
		}
	}
	req, _ := http.NewRequest("POST", base+"/grpc.testing.TestService/UnaryCall", bytes.NewReader(body))
	req.Host = host
	req.Header.Set("Content-Type", ct)
	req.Header.Set("X-Grpc-Web", "1")
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("call: %v", err)
	}
	return readGRPCWeb(t, res)
}

var grpcWebClients = []struct {
	name string
	c    func() *http.Client
}{{"http1", h1Client}, {"h2c", h2cClient}}

// A gRPC-Web caller of a call ferry fails gets the failure as gRPC-Web
// says: a trailers-only answer (HTTP 200, its own gRPC-Web Content-Type,
// no body) whose grpc-status is the code ferry gives a gRPC caller and
// whose grpc-message is ferry's reason, over HTTP/1.1 and h2c, for the
// binary and the -text variants alike; X-Ferry-Error is kept.
func TestGRPCWebFailureAnswers(t *testing.T) {
	dead, tripped := localnettest.RefusedAddr(t), localnettest.RefusedAddr(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	slow := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	sc := startFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound:
  listen: 127.0.0.1:0
  routes:
    - { host: empty, service: empty }
    - { host: dead, service: dead }
    - { host: slow, service: slow }
    - { host: tripped, service: tripped }
services:
  empty: { endpoints: [] }
  dead: { endpoints: [%s], retry: { max_retries: 0 }, breaker: { consecutive_failures: 0 } }
  slow: { endpoints: [%s], retry: { max_retries: 0 }, breaker: { consecutive_failures: 0 }, timeouts: { response_header: 200ms } }
  tripped: { endpoints: [%s], retry: { max_retries: 0 }, breaker: { consecutive_failures: 1, open_duration: 1h } }
limits: { max_request_body_bytes: 64 }
`, dead, slow, tripped))
	base := "http://" + sc.Addr("outbound")
	for _, cl := range grpcWebClients {
		for _, ct := range []string{"application/grpc-web", "application/grpc-web+proto", "application/grpc-web-text", "Application/gRPC-Web-Text+proto"} {
			t.Run(cl.name+"/"+ct, func(t *testing.T) {
				c := cl.c()
				defer c.CloseIdleConnections()
				check := func(what string, r grpcWebResult, code int, reason func(string) bool) {
					t.Helper()
					if r.httpStatus != 200 || r.contentType != ct || !r.trailersOnly || !r.hasStatus || r.status != code || !reason(r.message) || r.ferryError != r.message {
						t.Fatalf("%s: HTTP %d %q, trailers-only %v, grpc-status %d (%v) %q, x-ferry-error %q; want 200 %q trailers-only, grpc-status %d with ferry's reason in both",
							what, r.httpStatus, r.contentType, r.trailersOnly, r.status, r.hasStatus, r.message, r.ferryError, ct, code)
					}
				}
				check("no route", grpcWebCall(t, c, base, "nowhere", ct, nil), grpcUnimplemented,
					equals(`no route for host "nowhere" path "/grpc.testing.TestService/UnaryCall"`))
				check("no endpoints", grpcWebCall(t, c, base, "empty", ct, nil), grpcUnavailable,
					equals("service empty has no healthy endpoints"))
				check("connection refused", grpcWebCall(t, c, base, "dead", ct, nil), grpcUnavailable, func(s string) bool {
					return strings.HasPrefix(s, "upstream dead: connect to "+dead+" failed: ") && strings.Contains(s, "connection refused")
				})
				check("response_header", grpcWebCall(t, c, base, "slow", ct, nil), grpcDeadlineExceeded,
					equals("upstream slow ("+slow+"): no response headers within timeouts.response_header"))
				grpcWebCall(t, c, base, "tripped", ct, nil) // opens its breaker
				check("breaker open", grpcWebCall(t, c, base, "tripped", ct, nil), grpcUnavailable,
					func(s string) bool { return strings.Contains(s, "breaker") })
				check("body over the limit", grpcWebCall(t, c, base, "dead", ct, bytes.Repeat([]byte("A"), 1024)), grpcResourceExhausted,
					equals(errBodyTooLarge.Error()))
			})
		}
	}
}

func TestGRPCWebType(t *testing.T) {
	for _, tc := range []struct {
		ct        string
		web, text bool
	}{
		{"application/grpc-web", true, false},
		{"application/grpc-web+proto", true, false},
		{"application/grpc-web+json; charset=utf-8", true, false},
		{"Application/GRPC-Web", true, false},
		{"application/grpc-web-text", true, true},
		{"application/grpc-web-text+proto", true, true},
		{"application/GRPC-WEB-TEXT;x=y", true, true},
		{"application/grpc-webx", false, false},
		{"application/grpc-web-textx", false, false},
		{"application/grpc-web-", false, false},
		{"application/grpc", false, false},
		{"application/grpc+proto", false, false},
		{"text/plain", false, false},
	} {
		if web, text := grpcWebType([]string{tc.ct}); web != tc.web || text != tc.text {
			t.Errorf("%q: web %v text %v, want %v %v", tc.ct, web, text, tc.web, tc.text)
		}
	}
	if web, _ := grpcWebType([]string{"application/grpc-web", "application/grpc-web"}); web {
		t.Errorf("two Content-Type fields read as gRPC-Web")
	}
}
