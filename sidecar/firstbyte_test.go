package sidecar

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// An upstream that sends a Content-Length response's head and then nothing:
// the wait for the body's first byte is cut by ferry's timeout, before any
// of the response went out, so the caller gets a whole 504, as it would
// for a head that never came.
func TestFirstByteTimeoutIsA504(t *testing.T) {
	up := startRawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
		io.Copy(io.Discard, br) // until ferry gives up
	})
	for _, timeouts := range []string{"body_idle: 200ms", "connect: 100ms, response_header: 100ms, overall: 300ms"} {
		_, url := outboundTo(t, fmt.Sprintf("defaults: { retry: { max_retries: 0 }, timeouts: { %s } }", timeouts), up.addr())
		for _, tc := range []struct{ name, head string }{
			{"lane", "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"},
			{"net/http", "GET /a HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n 2\r\n\r\n"}, // obs-fold: handed over
		} {
			t.Run(timeouts+"/"+tc.name, func(t *testing.T) {
				c := dialRaw(t, url)
				io.WriteString(c, tc.head)
				res, body := readWholeAnswer(t, c)
				if res.StatusCode != http.StatusGatewayTimeout || !strings.Contains(res.Header.Get("X-Ferry-Error"), "first byte") {
					t.Fatalf("got %d %q (X-Ferry-Error %q), want a 504 naming the body's first byte", res.StatusCode, body, res.Header.Get("X-Ferry-Error"))
				}
			})
		}
	}
	// An h2c caller, and so an h2c upstream (protocol auto).
	h2up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	for _, timeouts := range []string{"body_idle: 200ms", "connect: 100ms, response_header: 100ms, overall: 300ms"} {
		_, url := outboundTo(t, fmt.Sprintf("defaults: { retry: { max_retries: 0 }, timeouts: { %s } }", timeouts), h2up)
		t.Run(timeouts+"/h2c", func(t *testing.T) {
			res, err := h2cClient().Get(url + "/a")
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			body, err := io.ReadAll(res.Body)
			res.Body.Close()
			if err != nil || res.StatusCode != http.StatusGatewayTimeout {
				t.Fatalf("got %d %q, %v; want a whole 504", res.StatusCode, body, err)
			}
		})
	}
}

// readWholeAnswer reads one response from c, failing the test unless it
// came whole: its head and all of its body.
func readWholeAnswer(t *testing.T, c net.Conn) (*http.Response, []byte) {
	t.Helper()
	var got bytes.Buffer
	br := bufio.NewReader(io.TeeReader(c, &got))
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		io.Copy(io.Discard, br)
		t.Fatalf("no whole answer: %v after %d bytes", err, got.Len())
	}
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("answer %d cut short: %v", res.StatusCode, err)
	}
	return res, body
}
