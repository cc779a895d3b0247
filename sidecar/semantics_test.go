package sidecar

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// rawRoundTrip writes raw to addr and returns the first response read back.
func rawRoundTrip(t *testing.T, addr, raw string, method string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	return res, string(b)
}

// The upstream sees the request target the caller sent, byte for byte
// where HTTP lets a proxy keep it: escapes as they came (%2F, %25, lower
// case), dot segments and empty segments not cleaned, and an empty query
// ("/p?") kept, as httputil.ReverseProxy keeps it. On the lane, handed
// over to net/http, and from an h2c caller; to HTTP/1.1 and h2c upstreams.
func TestRequestTargetReachesUpstreamAsSent(t *testing.T) {
	targets := []string{"/p?", "/a%2fb/%25/c?x=%zz&y=%2F;z", "/a/../b//c/./d", "/x?a=b?c", "//x//y", "/%2e%2e/x", "/a%00b", "/;x", "/a?%", "/?a=1&a=2", "/caf%C3%A9/%e2%82%ac?&&"}
	seen := make(chan string, 1)
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.RequestURI
		w.Header().Set("Content-Length", "2")
		io.WriteString(w, "ok")
	}))
	for _, proto := range []string{"http1", "h2c"} {
		sc, _ := ferryWithProtocol(t, proto, up)
		addr := sc.Addr("outbound")
		for _, target := range targets {
			for _, caller := range []string{"lane", "handed-over", "h2c"} {
				switch caller {
				case "lane":
					rawRoundTrip(t, addr, "GET "+target+" HTTP/1.1\r\nHost: svc\r\n\r\n", "GET")
				case "handed-over":
					// A Trailer field is not the lane's: net/http serves it.
					rawRoundTrip(t, addr, "GET "+target+" HTTP/1.1\r\nHost: svc\r\nTrailer: X-T\r\n\r\n", "GET")
				case "h2c":
					req, _ := http.NewRequest("GET", "http://"+addr+target, nil)
					res, err := h2cClient().Do(req)
					if err != nil {
						t.Fatal(err)
					}
					io.Copy(io.Discard, res.Body)
					res.Body.Close()
				}
				if got := recv(t, seen, 5*time.Second, "the upstream request"); got != target {
					t.Errorf("%s caller, %s upstream: sent %q, upstream saw %q", caller, proto, target, got)
				}
			}
		}
	}
}

// Request trailers reach the upstream whether the caller announced them in
// a Trailer field or not, as the README has it. net/http's server merges
// the trailers of a chunked HTTP/1.1 upload into the request's Trailer map
// as the body ends, but into a new map when none was announced, which
// ferry's copy of the request never saw: the upstream got none. (Go's
// HTTP/2 server keeps only announced request trailers, on ferry's h2c
// listener and on an h2c origin alike; the h2c upstream here is a raw one
// that keeps every field.)
func TestRequestTrailersForwardedAnnouncedOrNot(t *testing.T) {
	seen := make(chan string, 1)
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		seen <- fmt.Sprintf("body=%q x-a=%q x-u=%q", b, r.Trailer.Get("X-A"), r.Trailer.Get("X-U"))
	}))
	h2up := rawH2Origin(t, seen)
	for _, upstream := range []struct{ addr, proto string }{{up, "http1"}, {h2up, "h2c"}} {
		sc, _ := ferryWithProtocol(t, upstream.proto, upstream.addr)
		addr := sc.Addr("outbound")
		for _, ann := range []string{"Trailer: X-A\r\n", "Trailer: X-A, X-U\r\n", ""} {
			want := `body="abc" x-a="1" x-u="2"`
			rawRoundTrip(t, addr, "POST /t HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n"+ann+"\r\n3\r\nabc\r\n0\r\nX-A: 1\r\nX-U: 2\r\n\r\n", "POST")
			if got := recv(t, seen, 5*time.Second, "the upstream request"); got != want {
				t.Errorf("%s upstream, caller announced %q: upstream saw %s, want %s", upstream.proto, ann, got, want)
			}
		}
		// An h2c caller's announced trailers.
		pr, pw := io.Pipe()
		req, _ := http.NewRequest("POST", "http://"+addr+"/t", pr)
		req.Trailer = http.Header{"X-A": nil, "X-U": nil}
		go func() {
			pw.Write([]byte("abc"))
			req.Trailer.Set("X-A", "1")
			req.Trailer.Set("X-U", "2")
			pw.Close()
		}()
		res, err := h2cClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if got, want := recv(t, seen, 5*time.Second, "the upstream request"), `body="abc" x-a="1" x-u="2"`; got != want {
			t.Errorf("%s upstream, h2c caller: upstream saw %s, want %s", upstream.proto, got, want)
		}
	}
}

// rawH2Origin is an h2c upstream that reads requests with the http2
// framer, reports each one's body and the X-A and X-U fields of its
// trailers on seen, whether announced or not, and answers 200.
func rawH2Origin(t *testing.T, seen chan<- string) string {
	s := startRawServer(t, func(c net.Conn) {
		preface := make([]byte, len(http2.ClientPreface))
		if _, err := io.ReadFull(c, preface); err != nil {
			return
		}
		fr := http2.NewFramer(c, c)
		fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
		fr.WriteSettings()
		type stream struct {
			body    bytes.Buffer
			trailer http.Header
		}
		streams := map[uint32]*stream{}
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			if ackControl(fr, f) {
				continue
			}
			id, end := f.Header().StreamID, false
			switch f := f.(type) {
			case *http2.MetaHeadersFrame:
				if st := streams[id]; st == nil {
					streams[id] = &stream{trailer: http.Header{}}
				} else {
					for _, hf := range f.RegularFields() {
						st.trailer.Add(hf.Name, hf.Value)
					}
				}
				end = f.StreamEnded()
			case *http2.DataFrame:
				streams[id].body.Write(f.Data())
				end = f.StreamEnded()
			}
			if end {
				st := streams[id]
				seen <- fmt.Sprintf("body=%q x-a=%q x-u=%q", st.body.String(), st.trailer.Get("X-A"), st.trailer.Get("X-U"))
				var block bytes.Buffer
				hpack.NewEncoder(&block).WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
				fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true})
			}
		}
	})
	return s.addr()
}

// Fields that must not be trailers (framing, routing, connection-specific:
// RFC 9110 section 6.5.1) are dropped from a caller's request trailers;
// the rest go on. An h2c upstream resets a stream whose trailers carry
// one, which made the caller's request fail and counted against the
// endpoint's breaker: a caller could trip it for everyone.
func TestRequestTrailersDropForbiddenFields(t *testing.T) {
	seen := make(chan string, 1)
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		seen <- fmt.Sprintf("body=%q x-a=%q connection=%q host=%q", b, r.Trailer.Get("X-A"), r.Trailer.Get("Connection"), r.Trailer.Get("Host"))
	}))
	for _, proto := range []string{"http1", "h2c"} {
		sc := startFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: svc } ] }
services: { svc: { endpoints: [%q], protocol: %s, retry: { max_retries: 0 } } }
`, up, proto))
		for _, ann := range []string{"", "Trailer: X-A, Connection, Host\r\n"} {
			res, body := rawRoundTrip(t, sc.Addr("outbound"), "POST /t HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n"+ann+"\r\n3\r\nabc\r\n0\r\nX-A: 1\r\nConnection: keep-alive\r\nHost: elsewhere\r\n\r\n", "POST")
			if res.StatusCode != 200 {
				t.Fatalf("%s upstream, announced %q: %d %s", proto, ann, res.StatusCode, body)
			}
			want := `body="abc" x-a="1" connection="" host=""`
			if proto == "h2c" && ann == "" {
				// Go's HTTP/2 server keeps announced trailers only (that
				// ferry sends the others: TestRequestTrailersForwardedAnnouncedOrNot).
				want = `body="abc" x-a="" connection="" host=""`
			}
			if got := recv(t, seen, 5*time.Second, "the upstream request"); got != want {
				t.Errorf("%s upstream, announced %q: upstream saw %s, want %s", proto, ann, got, want)
			}
		}
		if eps := upstreamStatus(t, sc, "svc").Endpoints; eps[0].Failures != 0 {
			t.Errorf("%s upstream: %d failures counted against the endpoint", proto, eps[0].Failures)
		}
	}
}

// requestKinds are the ways a caller's request reaches ferry's HTTP/1.1
// clients: without a body (ferry's own client), with a small body of known
// length and one of unknown length (chunked toward the upstream: net/http's
// Transport), and with a body of known length large enough for an HTTP/1.1
// caller's upload to be spliced (ferry's own client again; net/http's for
// an h2c caller).
var requestKinds = []struct {
	name string
	body func() io.Reader // nil: no body
}{
	{"no body", nil},
	{"length", func() io.Reader { return strings.NewReader("abc") }},
	{"chunked", func() io.Reader { return io.MultiReader(strings.NewReader("abc")) }},
	{"upload", func() io.Reader { return bytes.NewReader(make([]byte, uploadSpliceMin+1)) }},
}

// sendKind sends a GET (no body) or a POST of body to url and returns the
// response with its body read.
func sendKind(t *testing.T, c *http.Client, url string, body func() io.Reader) (*http.Response, string) {
	t.Helper()
	method, r := http.MethodGet, io.Reader(nil)
	if body != nil {
		method, r = http.MethodPost, body()
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatalf("%s %s: body: %v", method, res.Proto, err)
	}
	return res, string(b)
}

// readWholeRequest reads a request and its body from br.
func readWholeRequest(br *bufio.Reader) error {
	req, err := http.ReadRequest(br)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, req.Body)
	return err
}

// upstreamRequest is a request an upstream read: the upstream connection
// (1 for the first) and the request's place on it (1 for the first).
type upstreamRequest struct{ conn, req int }

// answeringRawServer answers every request with the bytes answer and
// reports each request it reads on the returned channel.
func answeringRawServer(t *testing.T, answer string) (*rawServer, <-chan upstreamRequest) {
	var mu sync.Mutex
	conns := 0
	got := make(chan upstreamRequest, 16)
	up := startRawServer(t, func(c net.Conn) {
		mu.Lock()
		conns++
		id := conns
		mu.Unlock()
		br := bufio.NewReader(c)
		for n := 1; ; n++ {
			if readWholeRequest(br) != nil {
				return
			}
			got <- upstreamRequest{id, n}
			io.WriteString(c, answer)
		}
	})
	return up, got
}

// A response's "Connection: close" names its own hop-by-hop fields too
// ("Connection: close, X-Hop"): they must not reach the caller. net/http's
// response reader drops a Connection field that says close (the close is
// the response's Close), and ferry's own reader did the same, so the names
// it listed were no longer known when hop-by-hop fields were removed. A
// plain head (ferry's reader) and a chunked one (net/http's, through
// ferry's client), to an HTTP/1.1 and an h2c caller, for each kind of
// request: a request with a body went through net/http's Transport, which
// gave ferry the response without its Connection field.
func TestResponseConnectionCloseNamedFieldsDropped(t *testing.T) {
	heads := map[string]string{
		"plain":   "HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nX-Hop: secret\r\nX-Kept: 1\r\nContent-Length: 2\r\n\r\nok",
		"chunked": "HTTP/1.1 200 OK\r\nX-Hop: secret\r\nConnection: X-Hop, close\r\nX-Kept: 1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
	}
	for name, head := range heads {
		up := startRawServer(t, func(c net.Conn) {
			defer c.Close()
			if readWholeRequest(bufio.NewReader(c)) != nil {
				return
			}
			io.WriteString(c, head)
		})
		sc := ferryBoth(t, up.addr(), "")
		for _, kind := range requestKinds {
			for _, client := range []*http.Client{h1For(t), h2cFor(t)} {
				res, b := sendKind(t, client, "http://"+sc.Addr("outbound")+"/x", kind.body)
				if b != "ok" {
					t.Fatalf("%s, %s, %s: body %q", name, kind.name, res.Proto, b)
				}
				if v, ok := res.Header["X-Hop"]; ok {
					t.Errorf("%s, %s, %s: caller got X-Hop %q, which the upstream's Connection named", name, kind.name, res.Proto, v)
				}
				if res.Header.Get("X-Kept") != "1" {
					t.Errorf("%s, %s, %s: X-Kept %q, want 1", name, kind.name, res.Proto, res.Header.Get("X-Kept"))
				}
			}
		}
	}
}

// An upstream's response trailers lose the fields that must not be
// trailers (framing, connection-specific, hop-by-hop: RFC 9110 section
// 6.5.1), as a caller's request trailers do: an HTTP/1.1 caller got
// "Connection: close" and "Content-Length: 99" as trailers of a body of 5.
// (net/http's HTTP/2 server drops them on its own.)
func TestResponseForbiddenTrailersDropped(t *testing.T) {
	up := startRawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"+
				"5\r\nhello\r\n0\r\nX-Sum: 1\r\nConnection: close\r\nContent-Length: 99\r\nKeep-Alive: x\r\nX-Late: 2\r\n\r\n")
		}
	})
	_, base := ferryWithProtocol(t, "http1", up.addr())
	for name, c := range map[string]*http.Client{"h1": h1For(t), "h2c": h2cFor(t)} {
		res, err := c.Get(base + "/t")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil || string(b) != "hello" {
			t.Fatalf("%s: body %q, %v", name, b, err)
		}
		want := http.Header{"X-Sum": {"1"}, "X-Late": {"2"}}
		if !reflect.DeepEqual(res.Trailer, want) {
			t.Errorf("%s: trailers %v, want %v", name, res.Trailer, want)
		}
	}
}

// An upstream response framed both ways (Transfer-Encoding: chunked and a
// Content-Length) is read chunked, as RFC 9112 section 6.1 has it, but
// such a message may be a smuggling attempt or a response split, and the
// connection it came on must not carry another exchange (section 6.3).
// Ferry reused it: the second of two requests went on the first's
// connection. Each must arrive on a connection of its own, and the caller
// must not get the Content-Length beside the chunked body.
func TestResponseFramedTwiceNotReused(t *testing.T) {
	up, got := answeringRawServer(t, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n2\r\nok\r\n0\r\n\r\n")
	_, base := ferryWithProtocol(t, "http1", up.addr())
	for _, kind := range requestKinds {
		for _, client := range []*http.Client{h1For(t), h2cFor(t)} {
			var at [2]upstreamRequest
			proto := ""
			for i := range at {
				res, b := sendKind(t, client, base+"/x", kind.body)
				if b != "ok" {
					t.Fatalf("%s, %s: body %q", kind.name, res.Proto, b)
				}
				if v, ok := res.Header["Content-Length"]; ok {
					t.Errorf("%s, %s: caller got Content-Length %q with a chunked body", kind.name, res.Proto, v)
				}
				at[i], proto = recv(t, got, 5*time.Second, "the upstream request"), res.Proto
			}
			if at[1].req != 1 {
				t.Errorf("%s, %s: second request was request %d on upstream connection %d, which carried a response framed two ways", kind.name, proto, at[1].req, at[1].conn)
			}
		}
	}
}

// An upstream that announces a field that must not be a trailer
// ("Trailer: Content-Length, X-Sum") sends a whole body all the same: the
// caller gets it, and the trailers that may be trailers, not a 502 (from
// net/http's reader, "bad trailer key"). Ferry drops trailers that must
// not be trailers (TestResponseForbiddenTrailersDropped); their
// announcement goes with them.
func TestResponseForbiddenTrailerAnnouncementDropped(t *testing.T) {
	up := startRawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			if readWholeRequest(br) != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Content-Length, X-Sum\r\nTrailer: Transfer-Encoding\r\n\r\n"+
				"2\r\nok\r\n0\r\nX-Sum: 1\r\n\r\n")
		}
	})
	_, base := ferryWithProtocol(t, "http1", up.addr())
	for _, kind := range requestKinds {
		for _, client := range []*http.Client{h1For(t), h2cFor(t)} {
			res, b := sendKind(t, client, base+"/x", kind.body)
			if res.StatusCode != http.StatusOK || b != "ok" {
				t.Errorf("%s, %s: %d %q, want 200 \"ok\"", kind.name, res.Proto, res.StatusCode, b)
				continue
			}
			if want := (http.Header{"X-Sum": {"1"}}); !reflect.DeepEqual(res.Trailer, want) {
				t.Errorf("%s, %s: trailers %v, want %v", kind.name, res.Proto, res.Trailer, want)
			}
		}
	}
}

// An HTTP/1.0 response framed both ways is read by its Content-Length
// (net/http's reader, as RFC 9112 section 6.1 has it, ignores a
// Transfer-Encoding of HTTP/1.0), and its connection is not reused
// whatever its "Connection: keep-alive" says. The caller gets the body the
// Content-Length framed, at once, though the upstream keeps the connection
// open and sends more after it.
func TestResponseFramedTwiceHTTP10ReadByLength(t *testing.T) {
	up, got := answeringRawServer(t, "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\nokEXTRA")
	_, base := ferryWithProtocol(t, "http1", up.addr())
	for _, kind := range requestKinds {
		for _, client := range []*http.Client{h1For(t), h2cFor(t)} {
			c := *client
			c.Timeout = 5 * time.Second
			var at [2]upstreamRequest
			for i := range at {
				method, body := http.MethodGet, io.Reader(nil)
				if kind.body != nil {
					method, body = http.MethodPost, kind.body()
				}
				req, _ := http.NewRequest(method, base+"/x", body)
				res, err := c.Do(req)
				if err != nil {
					t.Fatalf("%s: %v", kind.name, err)
				}
				b, err := io.ReadAll(res.Body)
				res.Body.Close()
				if err != nil || string(b) != "ok" {
					t.Fatalf("%s, %s: body %q (%v), want \"ok\" as the Content-Length framed it", kind.name, res.Proto, b, err)
				}
				at[i] = recv(t, got, 5*time.Second, "the upstream request")
			}
			if at[1].req != 1 {
				t.Errorf("%s: second request was request %d on upstream connection %d, which carried a response framed two ways", kind.name, at[1].req, at[1].conn)
			}
		}
	}
}

// A response the upstream sent without Content-Type reaches the caller
// without one. net/http's servers (HTTP/1.1 handed over, HTTP/1.0, h2c)
// sniff a body whose header has no Content-Type and add the type they
// guess, as an origin server would; relayed through them, an upstream's
// untyped "<html>..." came out as "text/html; charset=utf-8" (while the
// lane sent it as it came): a proxy labelling content the origin did not
// (RFC 9110 section 8.3 leaves a missing type to the recipient). From an
// HTTP/1.1 upstream (a plain head, which ferry's reader takes, and a
// chunked one) and an h2c one, for each kind of request, to HTTP/1.1 and
// h2c callers, and to an HTTP/1.0 one.
func TestResponseWithoutContentTypeGetsNone(t *testing.T) {
	const page = "<html><body>hi</body></html>"
	heads := map[string]string{
		"plain":   fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(page), page),
		"chunked": fmt.Sprintf("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(page), page),
	}
	bases := map[string]string{}
	for name, head := range heads {
		up, _ := answeringRawServer(t, head)
		_, bases["http1 "+name] = ferryWithProtocol(t, "http1", up.addr())
	}
	h2 := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header()["Content-Type"] = nil // Go's server would sniff one itself
		io.WriteString(w, page)
	}))
	_, bases["h2c"] = ferryWithProtocol(t, "h2c", h2)
	for up, base := range bases {
		for _, kind := range requestKinds {
			for _, client := range []*http.Client{h1For(t), h2cFor(t)} {
				res, b := sendKind(t, client, base+"/x", kind.body)
				if b != page {
					t.Fatalf("%s upstream, %s, %s: body %q", up, kind.name, res.Proto, b)
				}
				if v, ok := res.Header["Content-Type"]; ok {
					t.Errorf("%s upstream, %s, %s: caller got Content-Type %q, which the upstream did not send", up, kind.name, res.Proto, v)
				}
			}
		}
		res, b := rawRoundTrip(t, strings.TrimPrefix(base, "http://"), "GET /x HTTP/1.0\r\nHost: svc\r\n\r\n", http.MethodGet)
		if b != page {
			t.Fatalf("%s upstream, HTTP/1.0: body %q", up, b)
		}
		if v, ok := res.Header["Content-Type"]; ok {
			t.Errorf("%s upstream, HTTP/1.0: caller got Content-Type %q, which the upstream did not send", up, v)
		}
	}
}

// headRecordingOrigin is an HTTP/1.1 upstream that reports the head of
// every request on seen, as the bytes it read, and answers with a chunked
// body whose trailer X-T it sends only to a request whose TE lists
// "trailers" (as RFC 9112 section 7.1.2 lets a server do), closing the
// connection after each answer.
func headRecordingOrigin(t *testing.T, seen chan<- string) string {
	up := startRawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		var head strings.Builder
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			head.WriteString(line)
			if line == "\r\n" {
				break
			}
		}
		req, err := http.ReadRequest(bufio.NewReader(io.MultiReader(strings.NewReader(head.String()), br)))
		if err != nil {
			return
		}
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			return
		}
		seen <- head.String()
		if teTrailers(req.Header) {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\nConnection: close\r\n\r\n2\r\nok\r\n0\r\nX-T: 1\r\n\r\n")
		} else {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\nok\r\n0\r\n\r\n")
		}
	})
	return up.addr()
}

// rawHeadValues returns the values of the fields named name (any case) in a
// raw request head.
func rawHeadValues(head, name string) []string {
	var vals []string
	for _, line := range strings.Split(head, "\r\n")[1:] {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.EqualFold(k, name) {
			vals = append(vals, strings.TrimSpace(v))
		}
	}
	return vals
}

// A caller's "TE: trailers" goes on to an HTTP/1.1 upstream with the "TE"
// connection option RFC 9110 section 10.1.4 requires of a sender of TE
// ("Connection: TE"): ferry sent TE alone. The upstream, which sends its
// trailer only when asked, gets the request on every path (ferry's own
// client, net/http's Transport, a spliced upload; HTTP/1.1 and h2c
// callers, naming TE in Connection or not) and the caller gets the
// trailer. A request without TE gets neither field. An h2c upstream still
// gets "te: trailers", and no Connection field, which HTTP/2 forbids.
func TestTETrailersToHTTP1UpstreamNamedInConnection(t *testing.T) {
	seen := make(chan string, 1)
	sc := ferryBoth(t, headRecordingOrigin(t, seen), "")
	h2seen := make(chan string, 1)
	h2up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		h2seen <- fmt.Sprintf("%s te=%q connection=%q", r.Proto, r.Header.Values("Te"), r.Header.Values("Connection"))
		w.Header().Set("Trailer", "X-T")
		io.WriteString(w, "ok")
		w.Header().Set("X-T", "1")
	}))
	h2sc, _ := ferryWithProtocol(t, ProtocolH2C, h2up)
	for _, kind := range requestKinds {
		for i, client := range []*http.Client{h1For(t), h2cFor(t)} {
			for _, te := range []string{"", "trailers", "trailers+connection"} {
				if te == "trailers+connection" && i == 1 {
					continue // an HTTP/2 request has no Connection field
				}
				for _, target := range []*Sidecar{sc, h2sc} {
					method, body := http.MethodGet, io.Reader(nil)
					if kind.body != nil {
						method, body = http.MethodPost, kind.body()
					}
					req, _ := http.NewRequest(method, "http://"+target.Addr("outbound")+"/te", body)
					if te != "" {
						req.Header.Set("TE", "trailers")
					}
					if te == "trailers+connection" {
						req.Header.Set("Connection", "TE")
					}
					res, err := client.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					b, err := io.ReadAll(res.Body)
					res.Body.Close()
					what := fmt.Sprintf("%s caller, %s, TE %q", res.Proto, kind.name, te)
					if err != nil || string(b) != "ok" {
						t.Fatalf("%s: body %q, %v", what, b, err)
					}
					if wantT := map[bool]string{true: "1"}[te != ""]; res.Trailer.Get("X-T") != wantT && target == sc {
						t.Errorf("%s: caller got trailer X-T %q, want %q", what, res.Trailer.Get("X-T"), wantT)
					}
					if target == h2sc {
						want := `HTTP/2.0 te=[] connection=[]`
						if te != "" {
							want = `HTTP/2.0 te=["trailers"] connection=[]`
						}
						if got := recv(t, h2seen, 5*time.Second, "the h2c upstream's request"); got != want {
							t.Errorf("%s, h2c upstream: saw %s, want %s", what, got, want)
						}
						continue
					}
					head := recv(t, seen, 5*time.Second, "the upstream's request head")
					tes, conn := rawHeadValues(head, "TE"), rawHeadValues(head, "Connection")
					if te == "" {
						if len(tes) != 0 || hasToken(conn, "te") {
							t.Errorf("%s: upstream got TE %q, Connection %q, want neither\n%s", what, tes, conn, head)
						}
						continue
					}
					if len(tes) != 1 || tes[0] != "trailers" || !hasToken(conn, "te") {
						t.Errorf("%s: upstream got TE %q, Connection %q, want TE trailers named in Connection\n%s", what, tes, conn, head)
					}
				}
			}
		}
	}
}
