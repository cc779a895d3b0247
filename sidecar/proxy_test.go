package sidecar

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/internal/localnet/localnettest"
	"github.com/ferrymesh/ferry/internal/payload"
)

func get(t *testing.T, c *http.Client, url, host string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if host != "" {
		req.Host = host
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, string(b)
}

func TestNoRouteIs404WithReason(t *testing.T) {
	sc := startFerry(t, `
admin: { listen: 127.0.0.1:0 }
outbound:
  listen: 127.0.0.1:0
  routes: [ { host: files, service: files } ]
services: { files: { endpoints: [127.0.0.1:9] } }
`)
	res, body := get(t, h1Client(), "http://"+sc.Addr("outbound")+"/x", "elsewhere")
	if res.StatusCode != http.StatusNotFound || !strings.Contains(body, `no route for host "elsewhere"`) {
		t.Fatalf("got %d %q", res.StatusCode, body)
	}
	if res.Header.Get("X-Ferry-Error") == "" {
		t.Error("no X-Ferry-Error header")
	}
}

func TestNoEndpointsIs503WithReason(t *testing.T) {
	_, url := outboundTo(t, "")
	res, body := get(t, h1Client(), url+"/x", "")
	if res.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "service svc has no healthy endpoints") {
		t.Fatalf("got %d %q", res.StatusCode, body)
	}
}

func TestConnectRefusedIs502WithReason(t *testing.T) {
	addr := localnettest.RefusedAddr(t)
	_, url := outboundTo(t, "", addr)
	res, body := get(t, h1Client(), url+"/x", "")
	if res.StatusCode != http.StatusBadGateway || !strings.Contains(body, "connect to "+addr+" failed") {
		t.Fatalf("got %d %q", res.StatusCode, body)
	}
}

func TestRoutesByHostAndPath(t *testing.T) {
	a := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "a") }))
	b := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "b") }))
	sc := startFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound:
  listen: 127.0.0.1:0
  routes:
    - { host: files, path_prefix: /b, service: b }
    - { host: files, service: a }
services: { a: { endpoints: [%s] }, b: { endpoints: [%s] } }
`, a, b))
	base := "http://" + sc.Addr("outbound")
	for path, want := range map[string]string{"/b/x": "b", "/bx": "a", "/": "a"} {
		if _, body := get(t, h1Client(), base+path, "files:8080"); body != want {
			t.Errorf("%s -> %q, want %q", path, body, want)
		}
	}
}

func TestInboundReachesApp(t *testing.T) {
	app := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "app saw %s %s", r.Method, r.URL.RequestURI())
	}))
	sc := startFerry(t, fmt.Sprintf("admin: { listen: 127.0.0.1:0 }\ninbound: { listen: 127.0.0.1:0, app: %s }\n", app))
	_, body := get(t, h1Client(), "http://"+sc.Addr("inbound")+"/a/b?c=d", "anything")
	if body != "app saw GET /a/b?c=d" {
		t.Fatalf("body %q", body)
	}
}

// rawOrigin accepts one connection, records the request bytes it reads up
// to the end of the headers (plus body per Content-Length), and answers a
// fixed response.
func rawOrigin(t *testing.T, response string) (string, <-chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		var head bytes.Buffer
		for {
			line, err := br.ReadString('\n')
			head.WriteString(line)
			if err != nil || line == "\r\n" {
				break
			}
		}
		// Whatever else arrives within a moment would be a body (or a
		// chunk terminator) that should not be there.
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		rest, _ := io.ReadAll(br)
		head.Write(rest)
		io.WriteString(c, response)
		got <- head.String()
	}()
	return ln.Addr().String(), got
}

// A request without a body goes upstream without one: no Transfer-Encoding,
// no chunk terminator (Ocelot #1971).
func TestBodilessRequestGoesWithoutBody(t *testing.T) {
	for _, method := range []string{"GET", "POST", "DELETE"} {
		t.Run(method, func(t *testing.T) {
			addr, got := rawOrigin(t, "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
			_, url := outboundTo(t, "", addr)
			req, _ := http.NewRequest(method, url+"/x", nil)
			if method == "POST" {
				req.Body = http.NoBody
				req.ContentLength = 0
				req.Header.Set("Content-Length", "0")
			}
			res, err := h1Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			raw := recv(t, got, 5*time.Second, "request at origin")
			// Everything after the head is a body (a chunk terminator,
			// say) that should not be there. (The head's own last line
			// may end in "0": a port of the X-Forwarded-Host.)
			head, rest, whole := strings.Cut(raw, "\r\n\r\n")
			if !whole {
				t.Fatalf("no whole head reached the origin:\n%q", raw)
			}
			if strings.Contains(strings.ToLower(head), "transfer-encoding") || rest != "" {
				t.Fatalf("bodiless %s went upstream with a body:\n%q", method, raw)
			}
		})
	}
}

func TestContentLengthPreservedBothWays(t *testing.T) {
	const size = 100_000
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Req-CL", fmt.Sprint(r.ContentLength))
		w.Header().Set("X-Req-TE", strings.Join(r.TransferEncoding, ","))
		w.Header().Set("X-Req-N", fmt.Sprint(n))
		w.Header().Set("Content-Length", fmt.Sprint(size))
		w.Write(bytes.Repeat([]byte("x"), size))
	}))
	_, url := outboundTo(t, "", up)
	res, err := h1Client().Post(url+"/x", "application/octet-stream", bytes.NewReader(make([]byte, 12345)))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	n, _ := io.Copy(io.Discard, res.Body)
	if res.Header.Get("X-Req-CL") != "12345" || res.Header.Get("X-Req-TE") != "" || res.Header.Get("X-Req-N") != "12345" {
		t.Errorf("origin saw CL=%s TE=%q n=%s", res.Header.Get("X-Req-CL"), res.Header.Get("X-Req-TE"), res.Header.Get("X-Req-N"))
	}
	if res.ContentLength != size || len(res.TransferEncoding) != 0 || n != size {
		t.Errorf("client saw CL=%d TE=%v n=%d", res.ContentLength, res.TransferEncoding, n)
	}
}

func TestUnknownLengthBodiesPassChunked(t *testing.T) {
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Req", fmt.Sprintf("%d %v %d", r.ContentLength, r.TransferEncoding, n))
		w.Write([]byte("part1"))
		w.(http.Flusher).Flush()
		w.Write([]byte("part2"))
	}))
	_, url := outboundTo(t, "", up)
	pr, pw := io.Pipe()
	go func() { pw.Write(make([]byte, 5000)); pw.Close() }()
	req, _ := http.NewRequest("PUT", url+"/x", pr)
	res, err := h1Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if got := res.Header.Get("X-Req"); got != "-1 [chunked] 5000" {
		t.Errorf("origin saw %q, want chunked request of 5000 bytes", got)
	}
	if res.ContentLength != -1 || len(res.TransferEncoding) != 1 || res.TransferEncoding[0] != "chunked" || string(body) != "part1part2" {
		t.Errorf("client saw CL=%d TE=%v body=%q", res.ContentLength, res.TransferEncoding, body)
	}
}

func TestTrailersForwardedBothWays(t *testing.T) {
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Trailer", "X-Announced")
		w.Header().Set("X-Req-Trailer", r.Trailer.Get("X-Checksum"))
		w.WriteHeader(200)
		w.Write([]byte("body"))
		w.Header().Set("X-Announced", "a1")
		w.Header().Set(http.TrailerPrefix+"X-Late", "l1")
	}))
	_, url := outboundTo(t, "", up)
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", url+"/x", pr)
	req.Trailer = http.Header{"X-Checksum": nil}
	go func() {
		pw.Write([]byte("payload"))
		req.Trailer.Set("X-Checksum", "c0ffee")
		pw.Close()
	}()
	res, err := h1Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	io.ReadAll(res.Body)
	if got := res.Header.Get("X-Req-Trailer"); got != "c0ffee" {
		t.Errorf("origin saw request trailer %q", got)
	}
	if res.Trailer.Get("X-Announced") != "a1" || res.Trailer.Get("X-Late") != "l1" {
		t.Errorf("client saw trailers %v", res.Trailer)
	}
}

// Small heads (fewer fields than hop-by-hop names) lose their hop-by-hop
// fields as big ones do.
func TestRemoveHopHeadersSmall(t *testing.T) {
	for _, k := range hopHeaders {
		h := http.Header{"X-A": {"1"}, k: {"x"}}
		removeHopHeaders(h, false)
		if len(h) != 1 || h.Get("X-A") != "1" {
			t.Errorf("%s: left %v, want only X-A", k, h)
		}
	}
	h := http.Header{"Connection": {"X-B"}, "X-B": {"1"}, "X-A": {"1"}}
	removeHopHeaders(h, false)
	if len(h) != 1 || h.Get("X-A") != "1" {
		t.Errorf("a field the Connection header names: left %v, want only X-A", h)
	}
	h = http.Header{"Te": {"trailers"}, "X-A": {"1"}}
	removeHopHeaders(h, true)
	if len(h) != 2 || h.Get("Te") != "trailers" {
		t.Errorf("a request's TE: trailers: left %v, want it kept", h)
	}
	h = http.Header{"Connection": {"TE"}, "Te": {"trailers"}, "X-A": {"1"}}
	removeHopHeaders(h, true)
	if len(h) != 2 || h.Get("Te") != "trailers" {
		t.Errorf("a request's TE: trailers named in Connection (RFC 9110 section 10.1.4): left %v, want it kept", h)
	}
	h = http.Header{"X-A": {"1"}, "Content-Type": {"text/plain"}}
	removeHopHeaders(h, false)
	if len(h) != 2 {
		t.Errorf("end-to-end fields: left %v, want both", h)
	}
}

// A 103 Early Hints from the upstream reaches the caller before the final
// response, with its own header fields, on every caller protocol.
func TestInformationalResponsesRelayed(t *testing.T) {
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		w.Write([]byte("final"))
	}))
	_, url := outboundTo(t, "", up)
	for name, client := range map[string]*http.Client{"h1": h1Client(), "h2c": h2cClient()} {
		t.Run(name, func(t *testing.T) {
			var got []string
			trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
				got = append(got, fmt.Sprintf("%d %s", code, h.Get("Link")))
				return nil
			}}
			req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, url+"/x", nil)
			res, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if want := "103 </style.css>; rel=preload"; len(got) != 1 || got[0] != want || res.StatusCode != http.StatusOK || string(b) != "final" || res.Header.Get("Link") != "" {
				t.Fatalf("1xx seen %q, then %d %q (Link %q); want [%q], then 200 \"final\" without Link", got, res.StatusCode, b, res.Header.Get("Link"), want)
			}
		})
	}
}

func TestHopByHopRemovedAndForwardedSet(t *testing.T) {
	seen := make(chan http.Header, 1)
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Clone()
		h.Set("Host", r.Host)
		seen <- h
		w.Header().Set("Connection", "X-Resp-Hop")
		w.Header().Set("X-Resp-Hop", "secret")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("X-End", "kept")
	}))
	_, url := outboundTo(t, "", up)
	req, _ := http.NewRequest("GET", url+"/x", nil)
	req.Host = "files"
	req.Header.Set("Connection", "X-Hop, keep-alive")
	req.Header.Set("X-Hop", "1")
	req.Header.Set("Keep-Alive", "timeout=5")
	req.Header.Set("Proxy-Authorization", "Basic Zm9v")
	req.Header.Set("Proxy-Connection", "keep-alive")
	req.Header.Set("Te", "trailers, deflate")
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	req.Header.Set("X-End", "kept")
	res, err := h1Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	h := recv(t, seen, 5*time.Second, "origin request")
	for _, k := range []string{"X-Hop", "Keep-Alive", "Proxy-Authorization", "Proxy-Connection"} {
		if v, ok := h[k]; ok {
			t.Errorf("hop-by-hop request header %s=%v reached the origin", k, v)
		}
	}
	if h.Get("Te") != "trailers" {
		t.Errorf("TE = %q, want just trailers", h.Get("Te"))
	}
	// ferry's own Connection field: the TE option its TE needs (RFC 9110
	// section 10.1.4), none of the caller's.
	if v := h["Connection"]; len(v) != 1 || v[0] != "TE" {
		t.Errorf("Connection %q reached the origin, want ferry's TE only", v)
	}
	if h.Get("X-End") != "kept" || h.Get("Host") != "files" {
		t.Errorf("end-to-end headers lost: %v", h)
	}
	if got := h.Get("X-Forwarded-For"); got != "203.0.113.9, 127.0.0.1" {
		t.Errorf("X-Forwarded-For = %q", got)
	}
	if h.Get("X-Forwarded-Proto") != "http" || h.Get("X-Forwarded-Host") != "files" {
		t.Errorf("X-Forwarded-Proto/Host = %q/%q", h.Get("X-Forwarded-Proto"), h.Get("X-Forwarded-Host"))
	}
	if h.Get("User-Agent") != "Go-http-client/1.1" {
		// The client's own User-Agent passes; ferry adds none of its own.
		t.Errorf("User-Agent = %q", h.Get("User-Agent"))
	}
	if res.Header.Get("X-Resp-Hop") != "" || res.Header.Get("Keep-Alive") != "" || res.Header.Get("X-End") != "kept" {
		t.Errorf("response headers: %v", res.Header)
	}
}

// The first bytes of a response reach the client while the origin is still
// holding the rest: nothing waits for the whole body.
func TestResponseStreamsBeforeOriginFinishes(t *testing.T) {
	release := make(chan struct{})
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "10")
		w.Write([]byte("first"))
		w.(http.Flusher).Flush()
		<-release
		w.Write([]byte("-last"))
	}))
	_, url := outboundTo(t, "", up)
	res, err := h1Client().Get(url + "/x")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	first := make(chan string, 1)
	go func() {
		b := make([]byte, 5)
		_, err := io.ReadFull(res.Body, b)
		if err != nil {
			first <- err.Error()
			return
		}
		first <- string(b)
	}()
	if got := recv(t, first, 5*time.Second, "first bytes before the origin finished"); got != "first" {
		t.Fatalf("got %q", got)
	}
	close(release)
	rest, _ := io.ReadAll(res.Body)
	if string(rest) != "-last" {
		t.Fatalf("rest %q", rest)
	}
}

// The origin sees the first part of an upload while the client still holds
// the rest.
func TestRequestStreamsBeforeClientFinishes(t *testing.T) {
	gotFirst := make(chan string, 1)
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := make([]byte, 5)
		io.ReadFull(r.Body, b)
		gotFirst <- string(b)
		rest, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s", rest)
	}))
	_, url := outboundTo(t, "", up)
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", url+"/x", pr)
	req.ContentLength = 10
	done := make(chan string, 1)
	go func() {
		res, err := h1Client().Do(req)
		if err != nil {
			done <- err.Error()
			return
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		done <- string(b)
	}()
	pw.Write([]byte("first"))
	if got := recv(t, gotFirst, 5*time.Second, "origin reading the first part"); got != "first" {
		t.Fatalf("origin got %q", got)
	}
	pw.Write([]byte("-last"))
	pw.Close()
	if got := recv(t, done, 5*time.Second, "response"); got != "-last" {
		t.Fatalf("response %q", got)
	}
}

// isEventStreamType's quick refusal refuses no type the whole check
// accepts: every case and blank variant of an event stream's type, with
// parameters, and the other types, spelled byte by byte.
func TestIsEventStreamType(t *testing.T) {
	whole := func(v string) bool {
		ct, _, _ := strings.Cut(v, ";")
		return strings.EqualFold(strings.TrimSpace(ct), "text/event-stream")
	}
	cases := []string{"", "text/event-stream", "TEXT/EVENT-STREAM", "Text/Event-Stream; charset=utf-8", " text/event-stream",
		"\ttext/event-stream ", "text/event-stream;", "text/event-streams", "text/plain", "application/octet-stream",
		"text/eventstream", "text/event-strea", "\vtext/event-stream", "\x00ext/event-stream", "Tekt/event-stream",
		"\u0085text/event-stream", "\u00a0Text/Event-Stream", "\u2003text/event-stream", "text/event-\u017ftream", "TEXT/EVENT-\u017fTREAM;q"}
	base := "text/event-stream; x=1"
	for i := range len(base) {
		for _, c := range []byte{' ', '\t', '\v', '\f', '\r', '\n', 'T', 'E', 'e' ^ 0x20, 0x54 ^ 0x80, 0xc2, 0} {
			b := []byte(base)
			b[i] = c
			cases = append(cases, string(b), string(b[:i]), string(b[i:]))
		}
	}
	for _, v := range cases {
		if got, want := isEventStreamType(v), whole(v); got != want {
			t.Fatalf("isEventStreamType(%q) = %v, want %v", v, got, want)
		}
	}
}

// Server-sent events are flushed on every write: the first event reaches the
// client while the origin is still waiting (Ocelot #941).
func TestEventStreamFlushedPerEvent(t *testing.T) {
	for _, tc := range []struct{ name, ctype string }{
		{"sse", "text/event-stream"},
		{"unknown length", "application/octet-stream"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			sent := make(chan time.Time, 1)
			up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tc.ctype)
				w.WriteHeader(200)
				w.Write([]byte("data: one\n\n"))
				w.(http.Flusher).Flush()
				sent <- time.Now()
				<-release
				w.Write([]byte("data: two\n\n"))
			}))
			_, url := outboundTo(t, "", up)
			res, err := h1Client().Get(url + "/events")
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			defer close(release)
			line := make(chan string, 1)
			go func() {
				l, _ := bufio.NewReader(res.Body).ReadString('\n')
				line <- l
			}()
			if got := recv(t, line, 5*time.Second, "first event before the origin's second write"); got != "data: one\n" {
				t.Fatalf("got %q", got)
			}
			t.Logf("first event reached the client %v after the origin flushed it", time.Since(<-sent))
		})
	}
}

func TestExpectContinue(t *testing.T) {
	t.Run("upstream accepts", func(t *testing.T) {
		up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "got %s expect=%q", b, r.Header.Get("Expect"))
		}))
		_, url := outboundTo(t, "", up)
		c := dialRaw(t, url)
		fmt.Fprintf(c, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
		br := bufio.NewReader(c)
		if line, _ := br.ReadString('\n'); !strings.HasPrefix(line, "HTTP/1.1 100") {
			t.Fatalf("first line %q, want 100 Continue before the body is sent", line)
		}
		for l, _ := br.ReadString('\n'); l != "\r\n" && l != ""; l, _ = br.ReadString('\n') {
		}
		io.WriteString(c, "hello")
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != 200 || string(b) != `got hello expect="100-continue"` {
			t.Fatalf("got %d %q", res.StatusCode, b)
		}
	})
	t.Run("upstream refuses", func(t *testing.T) {
		read := make(chan int, 1)
		up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			read <- 0
			http.Error(w, "too big for me", http.StatusRequestEntityTooLarge)
		}))
		_, url := outboundTo(t, "", up)
		c := dialRaw(t, url)
		fmt.Fprintf(c, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\nExpect: 100-continue\r\n\r\n")
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("status %d, want the origin's 413 without a 100 first", res.StatusCode)
		}
		recv(t, read, 5*time.Second, "origin handler")
	})
}

func dialRaw(t *testing.T, url string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

// readRawResponse reads one response from c, its body whole.
func readRawResponse(t *testing.T, c net.Conn) *http.Response {
	t.Helper()
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res
}

// An upstream that breaks mid-body makes the client see a broken response,
// never a clean, shorter one.
func TestUpstreamBreakMidBodyIsVisible(t *testing.T) {
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if !chunked {
					w.Header().Set("Content-Length", "100000")
				}
				w.WriteHeader(200)
				w.Write(bytes.Repeat([]byte("a"), 40000))
				w.(http.Flusher).Flush()
				panic(http.ErrAbortHandler) // the origin dies mid-body
			}))
			sc, url := outboundTo(t, "", up)
			bodies := track(sc)
			res, err := h1Client().Get(url + "/x")
			if err != nil {
				t.Fatal(err)
			}
			n, err := io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if err == nil {
				t.Fatalf("client read %d bytes and a clean end; want an error", n)
			}
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Logf("client error: %v", err)
			}
			waitFor(t, "upstream body closed", 5*time.Second, func() bool { return bodies.opened.Load() == 1 && bodies.closed.Load() == 1 })
		})
	}
}

func TestClientDisconnectCancelsUpstream(t *testing.T) {
	canceled := make(chan struct{})
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		for {
			select {
			case <-r.Context().Done():
				close(canceled)
				return
			default:
			}
			if _, err := w.Write(make([]byte, 4096)); err != nil {
				close(canceled)
				return
			}
			w.(http.Flusher).Flush()
		}
	}))
	sc, url := outboundTo(t, "", up)
	bodies := track(sc)
	c := dialRaw(t, url)
	fmt.Fprintf(c, "GET /forever HTTP/1.1\r\nHost: a\r\n\r\n")
	br := bufio.NewReader(c)
	if _, err := http.ReadResponse(br, nil); err != nil {
		t.Fatal(err)
	}
	io.ReadFull(br, make([]byte, 10000))
	c.Close()
	recv(t, canceled, 10*time.Second, "origin to see the cancellation")
	waitFor(t, "upstream body closed", 5*time.Second, func() bool { return bodies.opened.Load() == 1 && bodies.closed.Load() == 1 })
}

func TestUpstreamBodiesClosedOnEveryPath(t *testing.T) {
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			io.WriteString(w, "ok")
		case "/head":
			w.Header().Set("Content-Length", "5")
		case "/500":
			http.Error(w, "boom", 500)
		case "/304":
			w.WriteHeader(http.StatusNotModified)
		}
	}))
	sc, url := outboundTo(t, "", up)
	bodies := track(sc)
	c := h1Client()
	for _, p := range []string{"/ok", "/500", "/304"} {
		res, err := c.Get(url + p)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
	res, err := c.Head(url + "/head")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.ContentLength != 5 {
		t.Errorf("HEAD Content-Length = %d, want 5", res.ContentLength)
	}
	waitFor(t, "every upstream body closed", 5*time.Second, func() bool { return bodies.opened.Load() == 4 && bodies.closed.Load() == 4 })
}

func TestRequestBodyLimit(t *testing.T) {
	reached, started := make(chan int64, 4), make(chan struct{}, 4)
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		n, _ := io.Copy(io.Discard, r.Body)
		reached <- n
	}))
	_, url := outboundTo(t, "limits: { max_request_body_bytes: 1000 }", up)
	t.Run("declared", func(t *testing.T) {
		res, err := h1Client().Post(url+"/x", "text/plain", bytes.NewReader(make([]byte, 1001)))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(body), "max_request_body_bytes") {
			t.Fatalf("got %d %q", res.StatusCode, body)
		}
		select {
		case n := <-reached:
			t.Fatalf("origin was called (%d bytes)", n)
		default:
		}
	})
	chunkedHead := "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
	t.Run("chunked", func(t *testing.T) {
		// The start of the stream goes upstream before the rest comes.
		c := dialRaw(t, url)
		io.WriteString(c, chunkedHead+"1f4\r\n"+strings.Repeat("a", 500)+"\r\n")
		recv(t, started, 5*time.Second, "the origin to have the request")
		io.WriteString(c, "9c4\r\n"+strings.Repeat("b", 2500)+"\r\n0\r\n\r\n")
		if res := readRawResponse(t, c); res.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("got %d", res.StatusCode)
		}
		// The origin saw the start of the stream, never more than the limit.
		if n := recv(t, reached, 5*time.Second, "origin"); n > 1000 {
			t.Fatalf("origin read %d bytes past the limit", n)
		}
	})
	t.Run("chunked at hand", func(t *testing.T) {
		// The whole body came with its head: ferry knows it is too large
		// before anything goes upstream.
		c := dialRaw(t, url)
		io.WriteString(c, chunkedHead+"bb8\r\n"+strings.Repeat("a", 3000)+"\r\n0\r\n\r\n")
		if res := readRawResponse(t, c); res.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("got %d", res.StatusCode)
		}
		select {
		case <-started:
			t.Fatal("origin was called")
		default:
		}
	})
	t.Run("within", func(t *testing.T) {
		res, err := h1Client().Post(url+"/x", "text/plain", bytes.NewReader(make([]byte, 1000)))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("status %d", res.StatusCode)
		}
		recv(t, started, 5*time.Second, "the origin to have the request")
		if n := recv(t, reached, 5*time.Second, "origin"); n != 1000 {
			t.Fatalf("origin read %d", n)
		}
	})
}

func TestHeaderLimitIs431(t *testing.T) {
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	_, url := outboundTo(t, "limits: { max_header_bytes: 1024 }", up)
	req, _ := http.NewRequest("GET", url+"/x", nil)
	req.Header.Set("X-Big", strings.Repeat("b", 8000))
	res, err := h1Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("status %d, want 431", res.StatusCode)
	}
}

func TestResponseHeaderTimeoutIs504(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	_, url := outboundTo(t, "defaults: { timeouts: { response_header: 200ms } }", up)
	res, body := get(t, h1Client(), url+"/x", "")
	if res.StatusCode != http.StatusGatewayTimeout || !strings.Contains(body, "timeouts.response_header") {
		t.Fatalf("got %d %q", res.StatusCode, body)
	}
}

func TestBodyIdleTimeoutBreaksResponse(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		w.Write([]byte("part"))
		w.(http.Flusher).Flush()
		<-release
	}))
	_, url := outboundTo(t, "defaults: { timeouts: { body_idle: 200ms } }", up)
	res, err := h1Client().Get(url + "/x")
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(res.Body)
	res.Body.Close()
	if err == nil {
		t.Fatal("idle body ended cleanly; want a broken response")
	}
}

// A slow but moving body is not idle, however long it takes in total.
func TestBodyIdleAllowsSlowSteadyBody(t *testing.T) {
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "10")
		for range 10 {
			w.Write([]byte("x"))
			w.(http.Flusher).Flush()
			time.Sleep(60 * time.Millisecond) // the origin's pace, not synchronisation
		}
	}))
	_, url := outboundTo(t, "defaults: { timeouts: { body_idle: 300ms } }", up)
	res, err := h1Client().Get(url + "/x")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || len(b) != 10 {
		t.Fatalf("read %d bytes, err %v", len(b), err)
	}
}

// Timeouts hold on connections that served requests before: one caller
// connection and one pooled upstream connection carry quick exchanges,
// then a response header that never comes (504 after response_header),
// then a body that stops (broken after body_idle); quick exchanges work
// between and after.
func TestTimeoutsOnReusedConnections(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	var conns atomic.Int64
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/head":
			<-release
		case "/body":
			w.Header().Set("Content-Length", "100")
			w.Write([]byte("part"))
			w.(http.Flusher).Flush()
			<-release
		default:
			w.Write([]byte("ok"))
		}
	}))
	_, url := outboundTo(t, "defaults: { retry: { max_retries: 0 }, timeouts: { response_header: 300ms, body_idle: 300ms } }", up)
	tr := &http.Transport{Proxy: nil, DisableCompression: true, MaxConnsPerHost: 1}
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conns.Add(1)
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	client := &http.Client{Transport: tr}
	quick := func(n int) {
		t.Helper()
		for range n {
			if res, body := get(t, client, url+"/ok", ""); res.StatusCode != http.StatusOK || body != "ok" {
				t.Fatalf("quick exchange: %d %q", res.StatusCode, body)
			}
		}
	}
	quick(3)
	start := time.Now()
	res, body := get(t, client, url+"/head", "")
	if d := time.Since(start); res.StatusCode != http.StatusGatewayTimeout || !strings.Contains(body, "timeouts.response_header") || d < 300*time.Millisecond || d > 5*time.Second {
		t.Fatalf("header never sent: %d %q after %v, want 504 naming timeouts.response_header after about 300ms", res.StatusCode, body, d)
	}
	quick(3)
	start = time.Now()
	res, err := client.Get(url + "/body")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if d := time.Since(start); err == nil || string(b) != "part" || d < 300*time.Millisecond || d > 5*time.Second {
		t.Fatalf("body stopped: read %q, err %v after %v; want the 4 bytes sent, then a break after about 300ms", b, err, d)
	}
	quick(3)
	// One caller connection for the first two phases; the broken body
	// closed it, so the last phase took a second one.
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d caller connections, want 2", n)
	}
}

func TestOverallTimeout(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	_, url := outboundTo(t, "defaults: { timeouts: { overall: 200ms, connect: 100ms } }", up)
	res, body := get(t, h1Client(), url+"/x", "")
	if res.StatusCode != http.StatusGatewayTimeout || !strings.Contains(body, "overall timeout") {
		t.Fatalf("got %d %q", res.StatusCode, body)
	}
}

// An upstream's 1xx interim response is relayed without its hop-by-hop
// fields: Connection, Keep-Alive and the fields Connection names describe
// the upstream's connection, not the caller's.
func TestInformationalDropsHopByHop(t *testing.T) {
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.Header().Set("Connection", "X-Secret")
		w.Header().Set("X-Secret", "upstream-hop")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.WriteHeader(http.StatusEarlyHints)
		for _, k := range []string{"Link", "Connection", "X-Secret", "Keep-Alive"} {
			w.Header().Del(k)
		}
		w.Write([]byte("final"))
	}))
	_, url := outboundTo(t, "", up)
	c := dialRaw(t, url)
	io.WriteString(c, "GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	var interim bytes.Buffer
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the interim head: %v (read %q)", err, interim.String())
		}
		interim.WriteString(line)
		if line == "\r\n" {
			break
		}
	}
	head := interim.String()
	if !strings.HasPrefix(head, "HTTP/1.1 103 ") || !strings.Contains(head, "Link: </style.css>; rel=preload") {
		t.Fatalf("first head %q, want the 103 with its Link", head)
	}
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 || string(body) != "final" {
		t.Fatalf("final %d %q", res.StatusCode, body)
	}
	for _, k := range []string{"Connection:", "Keep-Alive:", "X-Secret:"} {
		if strings.Contains(head, k) {
			t.Errorf("hop-by-hop field %s relayed in the 103: %q", k, head)
		}
	}
}

// A caller that half-closes its side after sending a request (shutdown
// SHUT_WR, as HTTP/1.0-era tools do) while the upstream is slow: ferry
// takes it for gone; it must not then answer with a fabricated
// "200 OK, Content-Length: 0" as though the exchange had succeeded.
func TestHalfClosedCallerGetsNoFakeSuccess(t *testing.T) {
	for _, tc := range []struct{ name, head string }{
		{"lane/HTTP/1.1", "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"lane/HTTP/1.0", "GET /slow HTTP/1.0\r\nHost: x\r\n\r\n"},
		{"net/http/HTTP/1.0", "GET /slow HTTP/1.0\r\n\r\n"}, // no Host: handed over
	} {
		t.Run(tc.name, func(t *testing.T) { halfClosedCaller(t, tc.head) })
	}
}

func halfClosedCaller(t *testing.T, head string) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "real answer")
	}))
	_, url := outboundTo(t, "", up)
	c := dialRaw(t, url)
	io.WriteString(c, head)
	c.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, _ := io.ReadAll(c)
	res, err := http.ReadResponse(bufio.NewReader(strings.NewReader(string(got))), nil)
	if err != nil {
		return // no answer, or a broken one: not passed off as a success
	}
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode == http.StatusOK && string(b) != "real answer" {
		t.Fatalf("upstream never answered, yet the caller got a clean %d with body %q:\n%q", res.StatusCode, b, got)
	}
}

// A failure answered before the request body was read (503: no endpoints)
// on a keep-alive connection: net/http discards a small unread body and
// keeps serving the connection; if ferry must close instead, its answer
// has to say "Connection: close" so the caller does not send its next
// request into a connection about to close.
func TestFailureWithUnreadBodyAnnouncesClose(t *testing.T) {
	_, url := outboundTo(t, "") // no endpoints: 503 before the body is read
	c := dialRaw(t, url)
	io.WriteString(c, "POST /1 HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789")
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(res.Body)
	if res.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d", res.StatusCode)
	}
	if res.Close {
		return // announced: fine
	}
	// Not announced: the connection must carry the next request.
	io.WriteString(c, "GET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
	res2, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("first answer kept the connection open (no Connection: close), but the next request on it got: %v", err)
	}
	res2.Body.Close()
}

// lateInformer is a transport that reports a 1xx only after its round trip
// returned, as net/http's may from its read goroutine once ferry gave the
// attempt up.
type lateInformer struct{ trace chan *httptrace.ClientTrace }

func (l lateInformer) RoundTrip(r *http.Request) (*http.Response, error) {
	tr := httptrace.ContextClientTrace(r.Context())
	tr.Got1xxResponse(http.StatusEarlyHints, textproto.MIMEHeader{"Link": {"</a.css>"}})
	l.trace <- tr
	return nil, errors.New("gave up")
}

// A 1xx reported while the round trip runs reaches the caller; one
// reported after it returned is dropped, never written beside the answer
// that follows.
func TestLateInformationalDropped(t *testing.T) {
	w := &interimCounter{h: http.Header{}}
	l := lateInformer{make(chan *httptrace.ClientTrace, 1)}
	if _, err := roundTripInformed(l, httptest.NewRequest(http.MethodGet, "http://up/", nil), w); err == nil {
		t.Fatal("the round trip's error was lost")
	}
	if w.interim != 1 {
		t.Fatalf("%d 1xx written during the round trip, want 1", w.interim)
	}
	(<-l.trace).Got1xxResponse(http.StatusEarlyHints, textproto.MIMEHeader{"Link": {"</b.css>"}})
	if w.interim != 1 {
		t.Fatalf("a 1xx reported after the round trip returned reached the caller (%d written)", w.interim)
	}
}

// interimCounter is a ResponseWriter that counts the 1xx heads written.
type interimCounter struct {
	h       http.Header
	interim int
}

func (c *interimCounter) Header() http.Header         { return c.h }
func (c *interimCounter) Write(p []byte) (int, error) { return len(p), nil }
func (c *interimCounter) WriteHeader(code int) {
	if code < 200 {
		c.interim++
	}
}

// Once guardedAfter.stop returns, its function has finished and will not
// run: a run already begun when the context ended is waited for, so it
// cannot reach the handler's writer after the handler returned.
func TestGuardedAfterStopWaitsForRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	started, release := make(chan struct{}), make(chan struct{})
	var finished atomic.Bool
	g := afterGuarded(ctx, func() {
		close(started)
		<-release
		finished.Store(true)
	})
	cancel()
	<-started
	stopped := make(chan bool)
	go func() { stopped <- g.stop() }()
	select {
	case <-stopped:
		t.Fatal("stop returned while the function was still running")
	case <-time.After(50 * time.Millisecond): // a bound on a wrong answer, not synchronisation
	}
	close(release)
	if ran := <-stopped; !ran || !finished.Load() {
		t.Fatalf("stop = %v, finished = %v", ran, finished.Load())
	}

	ctx2, cancel2 := context.WithCancel(context.Background())
	g2 := afterGuarded(ctx2, func() { t.Error("ran after stop") })
	if g2.stop() {
		t.Fatal("stop before the context ended reports a run")
	}
	cancel2()
}

// A status no server may send (below 100: net/http's transports take it
// for a final answer, ferry's client for an interim one) is the upstream's
// bad response: a 502 that says so, on ferry's client (GET) and net/http's
// (a POST with a body), with the endpoint's request over. Relaying it made
// WriteHeader panic: the caller's connection closed with no answer and the
// endpoint kept a request in flight for good (max_in_flight, least-request
// picks, a half-open breaker's probe).
func TestUpstreamStatusBelow100IsBadResponse(t *testing.T) {
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		t.Run(method, func(t *testing.T) {
			up := startRawServer(t, func(c net.Conn) {
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				io.Copy(io.Discard, req.Body)
				io.WriteString(c, "HTTP/1.1 099 Odd\r\nContent-Length: 2\r\n\r\nok")
			})
			sc, url := outboundTo(t, "", up.addr())
			var body io.Reader
			if method == http.MethodPost {
				body = strings.NewReader("abc")
			}
			req, _ := http.NewRequest(method, url+"/", body)
			res, err := h1Client().Do(req)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			res.Body.Close()
			if res.StatusCode != http.StatusBadGateway || !strings.Contains(res.Header.Get("X-Ferry-Error"), "malformed HTTP status code 99") {
				t.Fatalf("got %d %q, want 502 naming the malformed status", res.StatusCode, res.Header.Get("X-Ferry-Error"))
			}
			if n := sc.allUpstreams()[0].res.InFlight(); n != 0 {
				t.Fatalf("%d requests still in flight to the endpoint", n)
			}
		})
	}
}

// An upstream that sends a Content-Length response head and dies before the
// first body byte gets the caller a whole 502 naming the failure, whatever
// the head's size: a head larger than the caller's writer buffer (4 KiB)
// must not go out in part, nor a small one as a head without its body. On
// the lane, through net/http (a handed-over connection) and on a taken-over
// upload's connection alike.
func TestUpstreamDeadBeforeBodyIsA502(t *testing.T) {
	const upload = 2 << 20
	for _, pad := range []int{100, 6000, 40000} {
		up := startRawServer(t, func(c net.Conn) {
			br := bufio.NewReader(c)
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			// The head, then the end: no body byte.
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nX-Pad: %s\r\n\r\n", strings.Repeat("a", pad))
		})
		_, url := outboundTo(t, "defaults: { retry: { max_retries: 0 } }", up.addr())
		for _, tc := range []struct{ name, head string }{
			{"lane", "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"},
			{"net/http", "GET /a HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n 2\r\n\r\n"}, // obs-fold: handed over
			{"taken over", fmt.Sprintf("POST /a HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n 2\r\nContent-Length: %d\r\n\r\n", upload)},
		} {
			t.Run(fmt.Sprintf("%s/head=%d", tc.name, pad), func(t *testing.T) {
				c := dialRaw(t, url)
				io.WriteString(c, tc.head)
				if strings.HasPrefix(tc.head, "POST") {
					go io.Copy(c, payload.NewReader(upload))
				}
				res, body := readWholeAnswer(t, c)
				if res.StatusCode != http.StatusBadGateway || !strings.Contains(res.Header.Get("X-Ferry-Error"), "body") {
					t.Fatalf("got %d %q (X-Ferry-Error %q), want a 502 naming the body", res.StatusCode, body, res.Header.Get("X-Ferry-Error"))
				}
			})
		}
	}
}
