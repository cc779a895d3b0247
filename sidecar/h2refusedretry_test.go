package sidecar

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/telemetry"
	"golang.org/x/net/http2"
)

// refusingUpstream is an h2c upstream that never processes a request: it
// refuses each stream once the request is whole (RST_STREAM
// REFUSED_STREAM), or sends a GOAWAY whose last stream id is below it. A
// POST's small body is then read whole, and kept for a replay.
func refusingUpstream(t *testing.T, how string) (*rawServer, *rvLog) {
	return rvUpstream(t, func(c *rvConn, st *rvStream, ev string) {
		if ev != "end" {
			return
		}
		switch how {
		case "refused":
			c.fr.WriteRSTStream(st.id, http2.ErrCodeRefusedStream)
		case "goaway":
			last := uint32(0) // stream ids are odd: none below the first
			if st.id > 2 {
				last = st.id - 2
			}
			c.fr.WriteGoAway(last, http2.ErrCodeNo, nil)
		}
		c.log.add(fmt.Sprintf("conn%d %s %d", c.n, how, st.id))
	})
}

// A request an h2c upstream refused unprocessed (REFUSED_STREAM, a GOAWAY
// below its stream) is sent again at once to another endpoint of the
// service, whatever its method, and the caller gets that endpoint's
// answer. net/http's HTTP/2 client sent it again to the same endpoint
// only, 7 times over about 31 s (its backoff of 1, 2, 4, 8 and 16 s), and
// the caller then got a 502.
func TestH2CRefusedStreamRetriedOnAnotherEndpoint(t *testing.T) {
	leakCheck(t)
	for _, how := range []string{"refused", "goaway"} {
		for _, tc := range []struct{ method, body string }{{"GET", ""}, {"POST", "hello"}} {
			t.Run(how+"/"+tc.method, func(t *testing.T) {
				bad, badLog := refusingUpstream(t, how)
				good, goodLog := rvUpstream(t, func(c *rvConn, st *rvStream, ev string) {
					if ev == "end" {
						c.log.add(fmt.Sprintf("conn%d body %q", c.n, st.body.String()))
						c.answer(st.id, "done")
					}
				})
				sc := startFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound:
  listen: 127.0.0.1:0
  routes: [ { service: svc } ]
services:
  svc: { endpoints: [%s, %s], protocol: h2c }
`, bad.addr(), good.addr()))
				url := "http://" + sc.Addr("outbound") + "/x"
				cl := h2cFor(t)
				cl.Timeout = 10 * time.Second
				// Until the refusing endpoint was picked for a few of them.
				refusedAt := func() int { return strings.Count(strings.Join(badLog.all(), "\n"), " "+how+" ") }
				for i := 0; i < 30 && refusedAt() < 3; i++ {
					start := time.Now()
					got := rvDo(t, cl, tc.method, url, tc.body)
					took := time.Since(start)
					if got != `200 "done" readErr=<nil>` || took > 3*time.Second {
						t.Fatalf("request %d: got %s after %v, want 200 \"done\" from the other endpoint within 3s\nrefusing upstream: %s", i, trunc(got), took.Round(time.Millisecond), strings.Join(badLog.all(), "; "))
					}
				}
				if refusedAt() < 3 {
					t.Fatalf("the refusing endpoint was picked %d times in 30 requests", refusedAt())
				}
				if tc.body != "" {
					for _, l := range goodLog.all() {
						if strings.Contains(l, " body ") && !strings.Contains(l, `body "hello"`) {
							t.Errorf("the other endpoint got %s, want the whole body", l)
						}
					}
				}
				if f := endpointFailures(t, sc); f != 0 {
					t.Errorf("the breakers heard %d failures, want none: every request was answered", f)
				}
			})
		}
	}
}

// An h2c service whose every endpoint refuses a request unprocessed
// answers it at once with a 502 upstream_reset that says so, after the
// retries retry.max_retries allows (2 by default) and their backoff; not
// after net/http's 7 tries over about 31 s.
func TestH2CRefusedEverywhereFailsFast(t *testing.T) {
	leakCheck(t)
	for _, how := range []string{"refused", "goaway"} {
		for _, tc := range []struct{ method, body string }{{"GET", ""}, {"POST", "hello"}} {
			t.Run(how+"/"+tc.method, func(t *testing.T) {
				up, lg := refusingUpstream(t, how)
				sc, _, logs := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound:
  listen: 127.0.0.1:0
  routes: [ { service: svc } ]
services:
  svc: { endpoints: [%s], protocol: h2c }
`, up.addr()))
				cl := h2cFor(t)
				cl.Timeout = 10 * time.Second
				start := time.Now()
				got := rvDo(t, cl, tc.method, "http://"+sc.Addr("outbound")+"/x", tc.body)
				took := time.Since(start)
				t.Logf("%s %s refused everywhere: answered after %v: %s", how, tc.method, took.Round(time.Millisecond), trunc(got))
				tries := strings.Count(strings.Join(lg.all(), "\n"), " got "+tc.method+" /x")
				if !strings.HasPrefix(got, "502 ") || !strings.Contains(got, "refused the request's stream unprocessed") || took > 3*time.Second {
					t.Fatalf("got %s after %v, the upstream had the request %d times; want a 502 saying the stream was refused, within 3s", trunc(got), took.Round(time.Millisecond), tries)
				}
				if tries != 3 {
					t.Errorf("the upstream had the request %d times, want 3 (a try and retry.max_retries 2)\nupstream: %s", tries, strings.Join(lg.all(), "; "))
				}
				waitFor(t, "the access log line", 5*time.Second, func() bool { return len(accessLines(t, logs)) == 1 })
				if l := accessLines(t, logs)[0]; l["reason"] != telemetry.ReasonUpstreamReset {
					t.Errorf("access log reason %v, want %s", l["reason"], telemetry.ReasonUpstreamReset)
				}
			})
		}
	}
}
