package sidecar

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// An h2c upstream that resets every stream with PROTOCOL_ERROR (an HTTP/2
// server that takes ferry's request for malformed) gets the request a
// bounded number of times, and the caller a 502 that says so, at once.
// net/http's HTTP/2 client sends a request again after such a reset and
// no longer uses the connection for new streams; its Transport then dials
// a new connection and starts over, so neither its count of six retries
// nor their backoff ever applied: ferry sent the same request on a new
// connection as fast as the upstream answered, for as long as the caller
// waited (response_header does not end it: each try has its own).
// ferry ends each try where net/http would send it again, and its own
// retries (retry.max_retries, 2 by default) decide what follows.
func TestH2CProtocolErrorResetsAreBounded(t *testing.T) {
	leakCheck(t)
	for _, tc := range []struct{ method, body string }{{"GET", ""}, {"POST", "hello"}} {
		t.Run(tc.method, func(t *testing.T) {
			up, lg := rvUpstream(t, func(c *rvConn, st *rvStream, ev string) {
				// Reset once the request is whole: a POST's body is then
				// read whole and kept for a replay.
				if ev == "end" {
					c.fr.WriteRSTStream(st.id, http2.ErrCodeProtocol)
				}
			})
			sc, url := ferryWithProtocol(t, "h2c", up.addr())
			cl := h2cFor(t)
			cl.Timeout = 10 * time.Second
			start := time.Now()
			got := rvDo(t, cl, tc.method, url+"/x", tc.body)
			took := time.Since(start)
			tries := strings.Count(strings.Join(lg.all(), "\n"), " got "+tc.method+" /x")
			if !strings.HasPrefix(got, "502 ") || !strings.Contains(got, "PROTOCOL_ERROR reset") || took > 3*time.Second {
				t.Fatalf("got %s after %v, the upstream had the request %d times; want a 502 saying the upstream reset the stream, within 3s", trunc(got), took, tries)
			}
			if tries != 3 {
				t.Errorf("the upstream had the request %d times, want 3 (a try and retry.max_retries 2)", tries)
			}
			if f := endpointFailures(t, sc); f != 1 {
				t.Errorf("the endpoint's breaker heard %d failures, want 1", f)
			}
		})
	}
}

func trunc(s string) string {
	if len(s) > 300 {
		return s[:300] + fmt.Sprintf("... (%d bytes)", len(s))
	}
	return s
}
