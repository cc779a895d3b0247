package sidecar

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// An h2c upstream may answer before the caller's upload is over: Go's
// HTTP/2 server, whose handler returns without reading the whole body,
// ends its response (END_STREAM) and resets the request's half with
// NO_ERROR (RFC 9113 section 8.1). An HTTP/1.1 caller that sent part of
// its body and waits for the answer before sending more must get that
// answer's end at once: whole (its last chunk) when the upstream's
// response was whole, broken when it broke. ferry held it back until the
// caller sent more or hung up, or body_idle (5 minutes by default) fired:
// closing the upstream's response waited for net/http's HTTP/2 client to
// stop writing the request body, which waits in a read of the caller's.
// (When body_idle fired, an upstream that ended its stream without the
// reset had its whole answer to a Content-Length upload end broken.)
func TestH2CAnswerBeforeUploadEndsReachesHTTP1Caller(t *testing.T) {
	leakCheck(t)
	const first, answer = "first", "the whole answer"
	for _, upstream := range []string{"whole", "broken"} {
		addr := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, err := io.ReadFull(r.Body, make([]byte, len(first))); err != nil {
				return
			}
			// Flushed: the answer has no Content-Length, and its end is
			// the stream's.
			io.WriteString(w, answer)
			http.NewResponseController(w).Flush()
			if upstream == "broken" {
				panic(http.ErrAbortHandler) // RST_STREAM INTERNAL_ERROR
			}
		}))
		for _, framing := range []string{"Content-Length: 100000", "Transfer-Encoding: chunked"} {
			t.Run(upstream+"/"+framing, func(t *testing.T) {
				sc, _ := ferryWithProtocol(t, ProtocolH2C, addr)
				bodies := track(sc)
				c, err := net.Dial("tcp", sc.Addr("outbound"))
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				part := first
				if framing[0] == 'T' {
					part = fmt.Sprintf("%x\r\n%s\r\n", len(first), first)
				}
				// The rest of the upload never comes while the caller
				// waits for the answer.
				fmt.Fprintf(c, "POST /upload HTTP/1.1\r\nHost: svc\r\n%s\r\n\r\n%s", framing, part)
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				res, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					t.Fatalf("reading the answer's head: %v", err)
				}
				body, err := io.ReadAll(res.Body)
				res.Body.Close()
				t.Logf("status %d, %q, %v", res.StatusCode, body, err)
				if isTimeoutErr(err) {
					t.Fatalf("after %q the answer's end did not come (%v): held back until the caller sends more", body, err)
				}
				switch {
				case res.StatusCode != http.StatusOK:
					t.Fatalf("status %d, want the upstream's 200", res.StatusCode)
				case upstream == "whole" && (err != nil || string(body) != answer):
					t.Fatalf("a whole answer reached the caller as %q, %v; want %q and a clean end", body, err, answer)
				case upstream == "broken" && err == nil:
					t.Fatalf("a broken answer reached the caller as %q and a clean end; want it broken", body)
				}
				c.Close()
				waitFor(t, "every upstream body closed", 5*time.Second, func() bool {
					return bodies.opened.Load() == 1 && bodies.closed.Load() == 1
				})
			})
		}
	}
}
