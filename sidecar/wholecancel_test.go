package sidecar

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// A caller that hangs up once it has read the whole answer cuts nothing:
// the exchange is logged as the success it was, not client_canceled. The
// test holds ferry just after the last byte went out until the exchange's
// context ended, which net/http's server (a chunked upload, an HTTP/1.0
// caller) and the lane's watch (a plain GET) do when they see the caller
// gone: on a loaded machine that order came by itself now and then.
func TestCallerGoneAfterWholeAnswerIsNoCut(t *testing.T) {
	leakCheck(t)
	addr := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Length", "5")
		io.WriteString(w, "hello")
	}))
	sc, logs := cutFerry(t, addr)
	base := sc.Addr("outbound")
	waited := make(chan bool, 1)
	testHookResponded = func(ctx context.Context) {
		select {
		case <-ctx.Done():
			waited <- true
		case <-time.After(5 * time.Second):
			waited <- false
		}
	}
	t.Cleanup(func() { testHookResponded = nil })
	cases := []struct{ name, req string }{
		{"chunked-upload", "POST /x HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"},
		{"http10", "GET /x HTTP/1.0\r\nHost: svc\r\n\r\n"},
		{"lane-get", "GET /x HTTP/1.1\r\nHost: svc\r\n\r\n"},
	}
	for i, tc := range cases {
		c, err := net.Dial("tcp", base)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(c, tc.req); err != nil {
			t.Fatal(err)
		}
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		body, err := io.ReadAll(io.LimitReader(res.Body, res.ContentLength))
		if err != nil || string(body) != "hello" {
			t.Fatalf("%s: body %q, %v", tc.name, body, err)
		}
		c.Close() // the whole answer is in: the caller goes
		if !<-waited {
			t.Fatalf("%s: the exchange's context did not end after the caller left", tc.name)
		}
		l := nthAccessLine(t, logs, i+1)
		if l["status"] != float64(200) || l["reason"] != nil && l["reason"] != "" {
			t.Errorf("%s: a whole answer logged as %v %v", tc.name, l["status"], l["reason"])
		}
	}
}
