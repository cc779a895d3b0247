package sidecar

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestH2CUpstreamShortOfItsLengthIsBroken proves that an h2c upstream
// response whose stream ends (END_STREAM) before the Content-Length it
// declared reaches no caller as a whole answer. net/http's HTTP/2 client
// reads such a body to a clean io.EOF (it does not check the length at the
// stream's end); the answer is malformed (RFC 9113 section 8.1.1), and an
// HTTP/2 caller would otherwise get the stream ended cleanly, short.
func TestH2CUpstreamShortOfItsLengthIsBroken(t *testing.T) {
	leakCheck(t)
	const sent = "only-part-of-the-body"
	addr := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A handler that declares its length, then stops short and
		// returns: over HTTP/2 its stream ends as if whole.
		w.Header().Set("Content-Length", "100000")
		io.WriteString(w, sent)
		http.NewResponseController(w).Flush()
	}))
	for _, caller := range []string{"h2c", "http1"} {
		t.Run(caller, func(t *testing.T) {
			sc, url := ferryWithProtocol(t, ProtocolH2C, addr)
			bodies := track(sc)
			c := h2cFor(t)
			if caller == "http1" {
				c = h1For(t)
			}
			res, err := c.Get(url + "/short")
			if err != nil {
				// The head may not have gone out before the end was
				// seen: a failed request is just as honest.
				t.Logf("GET failed: %v", err)
			} else {
				body, err := io.ReadAll(res.Body)
				res.Body.Close()
				t.Logf("%s: %d bytes, err %v, proto %s", caller, len(body), err, res.Proto)
				if err == nil {
					t.Fatalf("%s caller read %d of 100000 bytes (%q) and a clean end; want a broken body", caller, len(body), body)
				}
				if caller == "h2c" && !strings.Contains(err.Error(), "stream error") {
					t.Fatalf("body read failed with %v; want an HTTP/2 stream reset", err)
				}
			}
			waitFor(t, "every upstream body closed", 5*time.Second, func() bool {
				return bodies.opened.Load() == 1 && bodies.closed.Load() == 1
			})
		})
	}
}
