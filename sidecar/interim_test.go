package sidecar

import (
	"bufio"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestNoInterimAnswerToHTTP10Caller proves an upstream's 1xx (103 Early
// Hints) never reaches an HTTP/1.0 caller: HTTP/1.0 has no interim
// responses (RFC 9110 section 15.2: a server must not send one to an
// HTTP/1.0 client), and such a caller reads the 103 as the answer, the
// real one as its body. The caller reads exactly one response, the final.
func TestNoInterimAnswerToHTTP10Caller(t *testing.T) {
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		io.WriteString(w, "final")
	}))
	_, url := outboundTo(t, "", up)
	for _, tc := range []struct{ name, head string }{
		{"bodiless", "GET /x HTTP/1.0\r\nHost: s\r\n\r\n"},
		{"with body", "POST /x HTTP/1.0\r\nHost: s\r\nContent-Length: 4\r\n\r\nbody"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, url)
			io.WriteString(c, tc.head)
			raw, err := io.ReadAll(c) // an HTTP/1.0 answer ends with the connection
			if err != nil {
				t.Fatalf("read %q, then %v", raw, err)
			}
			if !strings.HasPrefix(string(raw), "HTTP/1.0 200 ") && !strings.HasPrefix(string(raw), "HTTP/1.1 200 ") {
				t.Fatalf("an HTTP/1.0 caller got %q; want the final 200 first, no interim answer", raw)
			}
			res, err := http.ReadResponse(bufio.NewReader(strings.NewReader(string(raw))), nil)
			if err != nil {
				t.Fatal(err)
			}
			if b, _ := io.ReadAll(res.Body); string(b) != "final" || res.Header.Get("Link") != "" {
				t.Fatalf("got %d %q (Link %q), want 200 \"final\" without Link", res.StatusCode, b, res.Header.Get("Link"))
			}
		})
	}
}
