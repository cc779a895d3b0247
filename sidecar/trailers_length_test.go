package sidecar

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// An HTTP/2 message may carry a Content-Length and trailers at once; an
// HTTP/1.1 one may not (trailers follow only a chunked body). A response
// an h2c upstream sends with both (Go's HTTP/2 server gives a short answer
// whose handler announced trailers a content-length) reaches an HTTP/1.1
// caller chunked, with its trailers, whether the lane or net/http serves
// the caller; an h2c caller gets both as they came. An answer to HEAD
// keeps its Content-Length.
func TestResponseTrailersWithContentLengthReachHTTP1Caller(t *testing.T) {
	up := h2cOrigin(t, nil, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Trailer", "X-Sum")
		if r.Method == http.MethodHead {
			w.Header().Set("Content-Length", "4")
			return
		}
		io.WriteString(w, "body") // not flushed: the head says content-length: 4
		w.Header().Set("X-Sum", "abc")
	}))
	_, url := ferryWithProtocol(t, ProtocolH2C, up)
	for _, c := range []struct {
		name   string
		client *http.Client
		req    func() *http.Request
		h1     bool
	}{
		{"HTTP/1.1 GET (the lane)", h1For(t), func() *http.Request { r, _ := http.NewRequest("GET", url+"/t", nil); return r }, true},
		{"HTTP/1.1 chunked POST (net/http)", h1For(t), func() *http.Request {
			r, _ := http.NewRequest("POST", url+"/t", io.NopCloser(strings.NewReader("up")))
			r.ContentLength = -1
			return r
		}, true},
		{"h2c GET", h2cFor(t), func() *http.Request { r, _ := http.NewRequest("GET", url+"/t", nil); return r }, false},
	} {
		res, err := c.client.Do(c.req())
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		body, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil || string(body) != "body" {
			t.Fatalf("%s: body %q, %v; want \"body\"", c.name, body, err)
		}
		if got := res.Trailer.Get("X-Sum"); got != "abc" {
			t.Errorf("%s: trailer X-Sum = %q, want \"abc\" (response Content-Length %d, Transfer-Encoding %q, trailers %v)",
				c.name, got, res.ContentLength, res.TransferEncoding, res.Trailer)
		}
		if !c.h1 && res.ContentLength != 4 {
			t.Errorf("%s: Content-Length %d, want 4 kept", c.name, res.ContentLength)
		}
	}
	res, err := h1For(t).Head(url + "/t")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.ContentLength != 4 {
		t.Errorf("HEAD: Content-Length %d, want 4 kept", res.ContentLength)
	}
}

// Likewise a request: an h2c caller's upload with a content-length and
// announced trailers goes to an HTTP/1.1 upstream chunked, trailers after
// the body; to an h2c upstream as it came.
func TestRequestTrailersWithContentLengthReachHTTP1Upstream(t *testing.T) {
	seen := make(chan string, 1)
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		seen <- fmt.Sprintf("%s body=%q err=%v x-sum=%q", r.Proto, b, err, r.Trailer.Get("X-Sum"))
	}))
	for _, proto := range []string{ProtocolHTTP1, ProtocolH2C} {
		_, url := ferryWithProtocol(t, proto, up)
		req, _ := http.NewRequest("POST", url+"/t", strings.NewReader("payload"))
		req.Trailer = http.Header{"X-Sum": {"c0ffee"}}
		res, err := h2cFor(t).Do(req)
		if err != nil {
			t.Fatalf("%s upstream: %v", proto, err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		wantProto := "HTTP/1.1"
		if proto == ProtocolH2C {
			wantProto = "HTTP/2.0"
		}
		want := wantProto + ` body="payload" err=<nil> x-sum="c0ffee"`
		if got := recv(t, seen, 5*time.Second, "the upstream request"); got != want {
			t.Errorf("%s upstream: upstream saw %s, want %s", proto, got, want)
		}
	}
}
