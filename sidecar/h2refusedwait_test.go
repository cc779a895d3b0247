package sidecar

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/telemetry"
	"golang.org/x/net/http2"
)

// An h2c upstream that refuses a stream (REFUSED_STREAM) while ferry waits
// for the caller's request body has not processed it, and the caller did
// nothing wrong. net/http's client closes the body to end its writer,
// which was waiting in a Read of the caller's body, and that closes the
// caller's body; ferry then handed that closed body to the try after it,
// which failed reading it: 400 'reading request body: body closed by
// handler', recorded as the caller's doing (client_canceled). No try can
// read that body again: the caller gets a 502 upstream_reset saying what
// happened, and no second stream goes out.
func TestH2CRefusedWhileWaitingForTheCallersBody(t *testing.T) {
	leakCheck(t)
	up, lg := rvUpstream(t, func(c *rvConn, st *rvStream, ev string) {
		switch {
		case c.n == 1 && ev == "headers":
			c.fr.WriteRSTStream(st.id, http2.ErrCodeRefusedStream)
			c.log.add(fmt.Sprintf("conn%d refused %d", c.n, st.id))
		case ev == "end":
			c.log.add(fmt.Sprintf("conn%d body %q", c.n, st.body.String()))
			c.answer(st.id, "done")
		}
	})
	sc, _, logs := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound:
  listen: 127.0.0.1:0
  routes: [ { service: svc } ]
services:
  svc: { endpoints: [%s], protocol: h2c }
`, up.addr()))
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", "http://"+sc.Addr("outbound")+"/up", pr)
	type result struct {
		res *http.Response
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := h2cFor(t).Do(req)
		done <- result{res, err}
	}()
	waitFor(t, "the upstream to refuse the stream", 5*time.Second, func() bool {
		return strings.Contains(strings.Join(lg.all(), "\n"), "refused")
	})
	// The refusal reached ferry once its stream is gone from the upstream's
	// connection; the body comes after it.
	go func() {
		io.WriteString(pw, "hello")
		pw.Close()
	}()
	r := recv(t, done, 10*time.Second, "the answer")
	if r.err != nil {
		t.Fatal(r.err)
	}
	b, _ := io.ReadAll(r.res.Body)
	r.res.Body.Close()
	waitFor(t, "the access log line", 5*time.Second, func() bool { return len(accessLines(t, logs)) == 1 })
	l := accessLines(t, logs)[0]
	// (When the body's first bytes came just before ferry heard of the
	// refusal, they were read and not all of the body: the reason then
	// says the body was partly sent.)
	said := strings.Contains(string(b), "while ferry waited for the caller's request body") || strings.Contains(string(b), "partly sent and is not held for a replay")
	if r.res.StatusCode != http.StatusBadGateway || l["reason"] != telemetry.ReasonUpstreamReset || !said {
		t.Fatalf("got %d %q, access log %v %v; want 502 upstream_reset saying the stream was refused while ferry waited for the body\nupstream: %s", r.res.StatusCode, b, l["status"], l["reason"], strings.Join(lg.all(), "; "))
	}
	if n := strings.Count(strings.Join(lg.all(), "\n"), "got POST"); n != 1 {
		t.Errorf("the upstream had %d streams, want 1\nupstream: %s", n, strings.Join(lg.all(), "; "))
	}
}
