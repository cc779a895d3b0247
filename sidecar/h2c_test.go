package sidecar

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// ferryWithProtocol starts a ferry whose outbound listener sends every
// request to one service at addr spoken to with the given protocol, and
// returns it with the outbound base URL.
func ferryWithProtocol(t testing.TB, protocol, addr string) (*Sidecar, string) {
	t.Helper()
	sc := startFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound:
  listen: 127.0.0.1:0
  routes: [ { service: svc } ]
services:
  svc: { endpoints: [%s], protocol: %s }
`, addr, protocol))
	return sc, "http://" + sc.Addr("outbound")
}

// h2cFor is h2cClient whose connections close when the test ends, before
// ferry drains (an HTTP/2 server otherwise waits a second for the caller
// to hang up after its GOAWAY).
func h2cFor(t testing.TB) *http.Client {
	c := h2cClient()
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// h1For is h1Client whose connections close when the test ends.
func h1For(t testing.TB) *http.Client {
	c := h1Client()
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// protoOrigin answers every request with the protocol the origin saw, in a
// header and in the body, and records the major version on seen.
func protoOrigin(t testing.TB) (addr string, seen <-chan int) {
	ch := make(chan int, 16)
	addr = origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ch <- r.ProtoMajor
		w.Header().Set("X-Origin-Proto", r.Proto)
		io.WriteString(w, r.Proto)
	}))
	return addr, ch
}

// getProto sends one GET and returns the protocol major version the caller
// spoke to ferry and the one the origin saw.
func getProto(t *testing.T, c *http.Client, url string, seen <-chan int) (caller, atOrigin int) {
	t.Helper()
	res, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", res.StatusCode, body)
	}
	atOrigin = recv(t, seen, 5*time.Second, "the origin to see the request")
	if got := res.Header.Get("X-Origin-Proto"); got != string(body) {
		t.Fatalf("origin protocol header %q, body %q", got, body)
	}
	return res.ProtoMajor, atOrigin
}

func TestH2CAutoFollowsCaller(t *testing.T) {
	leakCheck(t)
	addr, seen := protoOrigin(t)
	_, outURL := ferryWithProtocol(t, ProtocolAuto, addr)
	inbound := startFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
inbound: { listen: 127.0.0.1:0, app: %s }
`, addr))
	inURL := "http://" + inbound.Addr("inbound")

	for _, lst := range []struct{ name, url string }{{"outbound", outURL}, {"inbound", inURL}} {
		t.Run(lst.name+"/h2c-caller", func(t *testing.T) {
			caller, atOrigin := getProto(t, h2cFor(t), lst.url+"/x", seen)
			if caller != 2 {
				t.Fatalf("the %s listener answered an h2c caller with HTTP/%d, want HTTP/2", lst.name, caller)
			}
			if atOrigin != 2 {
				t.Fatalf("origin saw HTTP/%d for an HTTP/2 caller under protocol auto, want HTTP/2", atOrigin)
			}
		})
		t.Run(lst.name+"/http1-caller", func(t *testing.T) {
			caller, atOrigin := getProto(t, h1For(t), lst.url+"/x", seen)
			if caller != 1 {
				t.Fatalf("the %s listener answered an HTTP/1.1 caller with HTTP/%d", lst.name, caller)
			}
			if atOrigin != 1 {
				t.Fatalf("origin saw HTTP/%d for an HTTP/1.1 caller under protocol auto, want HTTP/1.1", atOrigin)
			}
		})
	}
}

func TestH2CProtocolForced(t *testing.T) {
	leakCheck(t)
	addr, seen := protoOrigin(t)
	t.Run("h2c for an HTTP/1.1 caller", func(t *testing.T) {
		_, url := ferryWithProtocol(t, ProtocolH2C, addr)
		caller, atOrigin := getProto(t, h1For(t), url+"/x", seen)
		if caller != 1 {
			t.Fatalf("caller spoke HTTP/%d, want 1", caller)
		}
		if atOrigin != 2 {
			t.Fatalf("protocol h2c: origin saw HTTP/%d, want HTTP/2", atOrigin)
		}
	})
	t.Run("http1 for an HTTP/2 caller", func(t *testing.T) {
		_, url := ferryWithProtocol(t, ProtocolHTTP1, addr)
		caller, atOrigin := getProto(t, h2cFor(t), url+"/x", seen)
		if caller != 2 {
			t.Fatalf("caller spoke HTTP/%d, want 2", caller)
		}
		if atOrigin != 1 {
			t.Fatalf("protocol http1: origin saw HTTP/%d, want HTTP/1.1", atOrigin)
		}
	})
}

// TestH2CStreamsRequestBody proves an HTTP/2 caller's upload reaches the
// origin as it is sent: the origin reads the first part while the caller
// still holds back the rest.
func TestH2CStreamsRequestBody(t *testing.T) {
	leakCheck(t)
	const first, rest = "first-part;", "the-rest"
	gotFirst := make(chan string, 1)
	addr := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, len(first))
		if _, err := io.ReadFull(r.Body, buf); err != nil {
			http.Error(w, "read first part: "+err.Error(), http.StatusBadRequest)
			return
		}
		gotFirst <- string(buf)
		tail, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, "read rest: "+err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "HTTP/%d %s%s", r.ProtoMajor, buf, tail)
	}))
	for _, proto := range []string{ProtocolAuto, ProtocolHTTP1} {
		t.Run(proto, func(t *testing.T) {
			sc, url := ferryWithProtocol(t, proto, addr)
			bodies := track(sc)
			pw, done := postStreaming(t, url+"/upload")
			if _, err := io.WriteString(pw, first); err != nil {
				t.Fatal(err)
			}
			if got := recv(t, gotFirst, 5*time.Second, "the origin to read the first part while the rest is held back"); got != first {
				t.Fatalf("origin read %q first, want %q", got, first)
			}
			io.WriteString(pw, rest)
			pw.Close()
			r := recv(t, done, 5*time.Second, "the response")
			if r.err != nil {
				t.Fatal(r.err)
			}
			body, err := io.ReadAll(r.res.Body)
			r.res.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			want := "HTTP/2 " + first + rest
			if proto == ProtocolHTTP1 {
				want = "HTTP/1 " + first + rest
			}
			if r.res.ProtoMajor != 2 || string(body) != want {
				t.Fatalf("got HTTP/%d %q, want HTTP/2 %q", r.res.ProtoMajor, body, want)
			}
			waitFor(t, "every upstream body closed", 5*time.Second, func() bool {
				return bodies.opened.Load() == 1 && bodies.closed.Load() == 1
			})
		})
	}
}

// TestH2CStreamsResponseBody proves a response of unknown length reaches an
// HTTP/2 caller chunk by chunk: the origin sends its second part only after
// the caller has read the first.
func TestH2CStreamsResponseBody(t *testing.T) {
	leakCheck(t)
	const first, second = "event-one\n", "event-two\n"
	release := make(chan struct{}, 1)
	addr := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, first)
		http.NewResponseController(w).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		case <-time.After(10 * time.Second):
			panic(http.ErrAbortHandler) // never complete the body unreleased
		}
		io.WriteString(w, second)
	}))
	for _, proto := range []string{ProtocolAuto, ProtocolHTTP1} {
		t.Run(proto, func(t *testing.T) {
			sc, url := ferryWithProtocol(t, proto, addr)
			bodies := track(sc)
			res, err := h2cFor(t).Get(url + "/events")
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			if res.ProtoMajor != 2 {
				t.Fatalf("caller got HTTP/%d, want 2", res.ProtoMajor)
			}
			firstRead := make(chan string, 1)
			go func() {
				buf := make([]byte, len(first))
				n, _ := io.ReadFull(res.Body, buf)
				firstRead <- string(buf[:n])
			}()
			if got := recv(t, firstRead, 5*time.Second, "the first part before the origin sends the second"); got != first {
				t.Fatalf("first part %q, want %q", got, first)
			}
			release <- struct{}{}
			tail, err := io.ReadAll(res.Body)
			if err != nil {
				t.Fatal(err)
			}
			if string(tail) != second {
				t.Fatalf("second part %q, want %q", tail, second)
			}
			res.Body.Close()
			waitFor(t, "every upstream body closed", 5*time.Second, func() bool {
				return bodies.opened.Load() == 1 && bodies.closed.Load() == 1
			})
		})
	}
}

// TestH2CBrokenResponseResetsStream proves an origin that breaks mid-body
// makes an HTTP/2 caller's read fail (a reset stream), never a clean EOF
// that would pass a truncated body off as whole.
func TestH2CBrokenResponseResetsStream(t *testing.T) {
	leakCheck(t)
	const sent = "only-part-of-the-body"
	addr := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("length") != "" {
			w.Header().Set("Content-Length", "100000")
		}
		io.WriteString(w, sent)
		http.NewResponseController(w).Flush()
		panic(http.ErrAbortHandler)
	}))
	for _, proto := range []string{ProtocolAuto, ProtocolHTTP1} {
		for _, query := range []string{"", "?length=1"} {
			t.Run(proto+query, func(t *testing.T) {
				sc, url := ferryWithProtocol(t, proto, addr)
				bodies := track(sc)
				res, err := h2cFor(t).Get(url + "/broken" + query)
				if err != nil {
					// With a declared length ferry may not have sent the
					// header yet when the origin broke: the reset then
					// fails the request itself, which is just as honest.
					if query == "" || !strings.Contains(err.Error(), "stream error") {
						t.Fatalf("GET failed with %v; want headers, then a reset stream", err)
					}
					waitFor(t, "every upstream body closed", 5*time.Second, func() bool {
						return bodies.opened.Load() == 1 && bodies.closed.Load() == 1
					})
					return
				}
				defer res.Body.Close()
				if res.ProtoMajor != 2 {
					t.Fatalf("caller got HTTP/%d, want 2", res.ProtoMajor)
				}
				body, err := io.ReadAll(res.Body)
				if err == nil {
					t.Fatalf("body read ended cleanly after %q; want a reset stream", body)
				}
				if !strings.Contains(err.Error(), "stream error") {
					t.Fatalf("body read failed with %v; want an HTTP/2 stream reset", err)
				}
				if string(body) != sent {
					t.Fatalf("caller got %q before the reset, want %q", body, sent)
				}
				waitFor(t, "every upstream body closed", 5*time.Second, func() bool {
					return bodies.opened.Load() == 1 && bodies.closed.Load() == 1
				})
			})
		}
	}
}

// TestH2CTrailers proves request trailers reach the origin and response
// trailers reach the caller over HTTP/2, whichever protocol ferry speaks
// upstream.
func TestH2CTrailers(t *testing.T) {
	leakCheck(t)
	addr := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Trailer", "X-Checksum")
		w.WriteHeader(http.StatusOK)
		fmt.Fprintf(w, "got %q with trailer %q", body, r.Trailer.Get("X-Req-Sum"))
		http.NewResponseController(w).Flush()
		w.Header().Set("X-Checksum", "sum-"+string(body))
		w.Header().Set(http.TrailerPrefix+"X-Late", "announced-late")
	}))
	for _, proto := range []string{ProtocolAuto, ProtocolHTTP1, ProtocolH2C} {
		t.Run(proto, func(t *testing.T) {
			sc, url := ferryWithProtocol(t, proto, addr)
			bodies := track(sc)
			req, _ := http.NewRequest(http.MethodPost, url+"/t", io.NopCloser(strings.NewReader("payload")))
			req.Trailer = http.Header{"X-Req-Sum": {"req-7"}}
			res, err := h2cFor(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			body, err := io.ReadAll(res.Body)
			if err != nil {
				t.Fatal(err)
			}
			if res.ProtoMajor != 2 {
				t.Fatalf("caller got HTTP/%d, want 2", res.ProtoMajor)
			}
			if want := `got "payload" with trailer "req-7"`; string(body) != want {
				t.Fatalf("body %q, want %q (request trailer lost?)", body, want)
			}
			if got := res.Trailer.Get("X-Checksum"); got != "sum-payload" {
				t.Fatalf("response trailer X-Checksum = %q, want %q (trailers %v)", got, "sum-payload", res.Trailer)
			}
			if got := res.Trailer.Get("X-Late"); got != "announced-late" {
				t.Fatalf("undeclared response trailer X-Late = %q, want %q (trailers %v)", got, "announced-late", res.Trailer)
			}
			waitFor(t, "every upstream body closed", 5*time.Second, func() bool {
				return bodies.opened.Load() == 1 && bodies.closed.Load() == 1
			})
		})
	}
}

// TestH2CBrokenUploadStaysBroken proves a caller whose upload breaks
// mid-body makes the origin's body read fail: a truncated upload must
// never reach the origin as a complete, shorter one.
func TestH2CBrokenUploadStaysBroken(t *testing.T) {
	leakCheck(t)
	const part = "partial-upload;"
	type seen struct {
		body string
		err  error
	}
	gotPart := make(chan struct{}, 1)
	result := make(chan seen, 1)
	addr := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, len(part))
		if _, err := io.ReadFull(r.Body, buf); err != nil {
			result <- seen{string(buf), err}
			return
		}
		gotPart <- struct{}{}
		rest, err := io.ReadAll(r.Body)
		result <- seen{string(buf) + string(rest), err}
	}))
	for _, proto := range []string{ProtocolAuto, ProtocolHTTP1} {
		t.Run("h2 caller/"+proto, func(t *testing.T) {
			sc, url := ferryWithProtocol(t, proto, addr)
			bodies := track(sc)
			pr, pw := io.Pipe()
			req, _ := http.NewRequest(http.MethodPost, url+"/upload", pr)
			done := make(chan error, 1)
			go func() {
				res, err := h2cFor(t).Do(req)
				if err == nil {
					res.Body.Close()
				}
				done <- err
			}()
			io.WriteString(pw, part)
			recv(t, gotPart, 5*time.Second, "the origin to read the first part")
			pw.CloseWithError(errors.New("caller gave up"))
			s := recv(t, result, 5*time.Second, "the origin's body read to end")
			if s.err == nil {
				t.Fatalf("origin read a clean body %q from a broken upload", s.body)
			}
			recv(t, done, 5*time.Second, "the caller's request to end")
			waitFor(t, "every upstream body closed", 5*time.Second, func() bool {
				return bodies.opened.Load() == bodies.closed.Load()
			})
		})
	}
	for _, proto := range []string{ProtocolHTTP1, ProtocolH2C} {
		t.Run("http1 caller/"+proto, func(t *testing.T) {
			sc, _ := ferryWithProtocol(t, proto, addr)
			bodies := track(sc)
			conn, err := net.Dial("tcp", sc.Addr("outbound"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "POST /upload HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n", len(part), part)
			recv(t, gotPart, 5*time.Second, "the origin to read the first part")
			conn.Close() // no last chunk
			s := recv(t, result, 5*time.Second, "the origin's body read to end")
			if s.err == nil {
				t.Fatalf("origin read a clean body %q from a broken upload", s.body)
			}
			waitFor(t, "every upstream body closed", 5*time.Second, func() bool {
				return bodies.opened.Load() == bodies.closed.Load()
			})
		})
	}
}

// An HTTP/1.1 caller that says "TE: trailers" the way RFC 9110 section
// 10.1.4 requires ("Connection: TE" alongside) must still have its
// "TE: trailers" reach the upstream (gRPC upstreams rely on it).
func TestTETrailersNamedInConnectionReachUpstream(t *testing.T) {
	for _, proto := range []string{ProtocolHTTP1, ProtocolH2C} {
		t.Run(proto, func(t *testing.T) {
			seen := make(chan string, 1)
			addr := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				seen <- r.Header.Get("Te")
			}))
			_, url := ferryWithProtocol(t, proto, addr)
			req, _ := http.NewRequest(http.MethodGet, url+"/te", nil)
			req.Header.Set("Connection", "TE")
			req.Header.Set("TE", "trailers")
			res, err := h1For(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if got := recv(t, seen, 5*time.Second, "the origin's request"); got != "trailers" {
				t.Fatalf("upstream TE = %q, want %q", got, "trailers")
			}
		})
	}
	// The same at the unit level.
}

// timeouts.body_idle bounds the gap between body bytes "once the exchange
// is streaming", in either direction. A bidirectional HTTP/2 stream whose
// caller half-closes (request body EOF) after the response started, and
// whose upstream then goes quiet, must be cut after body_idle.
func TestBodyIdleAfterCallerEndsUpload(t *testing.T) {
	gotEOF := make(chan struct{}, 1)
	addr := helloThenQuiet(t, func(r *http.Request) {
		io.Copy(io.Discard, r.Body) // the caller half-closes
		gotEOF <- struct{}{}
	})
	sc := startFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: svc } ] }
services: { svc: { endpoints: [%s], protocol: auto, timeouts: { body_idle: 200ms } } }
`, addr))
	pw, done := postStreaming(t, "http://"+sc.Addr("outbound")+"/bidi")
	pw.Write([]byte("x"))
	r := recv(t, done, 5*time.Second, "response headers")
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer r.res.Body.Close()
	first := make([]byte, 5)
	if _, err := io.ReadFull(r.res.Body, first); err != nil {
		t.Fatal(err)
	}
	pw.Close() // half-close: END_STREAM on the request
	recv(t, gotEOF, 5*time.Second, "the upstream to see the request end")
	start := time.Now()
	rest, err := io.ReadAll(r.res.Body)
	if d := time.Since(start); err == nil || d > 2*time.Second {
		t.Fatalf("after the caller's half-close the quiet stream lasted %v and ended with %q, err %v; want a reset after body_idle (200ms)", d.Round(time.Millisecond), rest, err)
	}
}

// ferry's own cancellation of an exchange (here timeouts.overall; body_idle
// goes the same way) must end an HTTP/2 upstream stream whose request body
// is still open but quiet (a gRPC watch, a bidi stream between messages):
// the caller must see its stream reset after the timeout, not wait for the
// upstream.
func TestOverallTimeoutCutsOpenBidiStream(t *testing.T) {
	for _, proto := range []string{ProtocolHTTP1, ProtocolAuto} {
		t.Run(proto, func(t *testing.T) {
			addr := helloThenQuiet(t, nil) // the caller goes quiet too
			sc := startFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: svc } ] }
services: { svc: { endpoints: [%s], protocol: %s, timeouts: { connect: 100ms, response_header: 200ms, overall: 300ms } } }
`, addr, proto))
			pr, pw := io.Pipe()
			defer pw.Close()
			req, _ := http.NewRequest(http.MethodPost, "http://"+sc.Addr("outbound")+"/bidi", pr)
			go pw.Write([]byte("x"))
			res, err := h2cFor(t).Do(req)
			if err == nil {
				defer res.Body.Close()
			}
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			body, err := io.ReadAll(res.Body)
			if d := time.Since(start); err == nil || d > 2*time.Second {
				t.Fatalf("stream lasted %v past its overall timeout (300ms) and ended with %q, err %v; want a reset at 300ms", d.Round(time.Millisecond), body, err)
			}
		})
	}
}

// helloThenQuiet is an origin that reads a byte of the request body,
// answers "hello" at once (an HTTP/1.1 one while the body is still open),
// runs then (if any), and goes quiet until the exchange ends; after 4 s it
// writes "-late", which a test that expects ferry to cut it must not see.
func helloThenQuiet(t *testing.T, then func(r *http.Request)) string {
	return origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.NewResponseController(w).EnableFullDuplex()
		buf := make([]byte, 1)
		if _, err := io.ReadFull(r.Body, buf); err != nil {
			return
		}
		io.WriteString(w, "hello")
		http.NewResponseController(w).Flush()
		if then != nil {
			then(r)
		}
		select {
		case <-r.Context().Done():
		case <-time.After(4 * time.Second):
			io.WriteString(w, "-late")
		}
	}))
}

// streamed is the outcome of a request sent by postStreaming.
type streamed struct {
	res *http.Response
	err error
}

// postStreaming starts an h2c POST to url whose body the test writes to
// the returned pipe as it goes; the outcome arrives on the channel.
func postStreaming(t testing.TB, url string) (*io.PipeWriter, <-chan streamed) {
	pr, pw := io.Pipe()
	req, _ := http.NewRequest(http.MethodPost, url, pr)
	done := make(chan streamed, 1)
	go func() {
		res, err := h2cFor(t).Do(req)
		done <- streamed{res, err}
	}()
	return pw, done
}

// ferry's timeouts (body_idle, overall) must end an exchange whose caller
// stops reading the response: the relay then waits in a write to the
// caller (HTTP/2 flow control, a full socket), which the exchange's
// cancellation did not reach, so the caller's stream stayed open and
// ferry's exchange in flight for as long as the caller held on. An HTTP/2
// caller must see its stream reset, an HTTP/1.1 caller's exchange must end.
func TestTimeoutsCutCallerThatStopsReading(t *testing.T) {
	for _, to := range []string{"body_idle: 300ms", "connect: 100ms, overall: 500ms"} {
		for _, caller := range []string{"h2", "http1"} {
			t.Run(caller+"/"+to, func(t *testing.T) {
				ended := make(chan struct{}, 1)
				addr := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					defer func() { ended <- struct{}{} }()
					chunk := strings.Repeat("d", 16<<10)
					for r.Context().Err() == nil {
						if _, err := io.WriteString(w, chunk); err != nil {
							return
						}
						if http.NewResponseController(w).Flush() != nil {
							return
						}
					}
				}))
				sc := startFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: svc } ] }
services: { svc: { endpoints: [%s], protocol: auto, timeouts: { %s } } }
`, addr, to))
				c, err := net.Dial("tcp", sc.Addr("outbound"))
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if caller == "http1" {
					c.(*net.TCPConn).SetReadBuffer(4 << 10)
					io.WriteString(c, "GET /firehose HTTP/1.1\r\nHost: svc\r\n\r\n")
					// The caller reads nothing.
				} else {
					// The caller reads frames but opens no flow-control
					// window: ferry's writes to the stream wait.
					rst := h2StalledGet(t, c, "/firehose")
					if err := recv(t, rst, 5*time.Second, "the caller's stream to be reset"); err != nil {
						t.Fatal(err)
					}
				}
				recv(t, ended, 5*time.Second, "the upstream's stream to end")
				waitFor(t, "the exchange to end", 5*time.Second, func() bool {
					_, body := get(t, h1Client(), "http://"+sc.Addr("admin")+"/metrics", "")
					return strings.Contains(body, "\nferry_requests_in_flight{listener=\"outbound\"} 0\n")
				})
			})
		}
	}
}

// h2StalledGet sends a GET over HTTP/2 with prior knowledge on c, then
// reads frames without ever granting flow-control window; nil arrives
// when the stream is reset, an error when it ends any other way.
func h2StalledGet(t *testing.T, c net.Conn, path string) <-chan error {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, http2.ClientPreface)
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.WriteSettings()
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "svc"}, {":path", path}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		got := 0
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				done <- fmt.Errorf("after %d body bytes: %v; want the stream reset", got, err)
				return
			}
			if ackControl(fr, f) {
				continue
			}
			switch f := f.(type) {
			case *http2.DataFrame:
				got += len(f.Data())
				if f.StreamEnded() {
					done <- fmt.Errorf("clean end after %d body bytes; want the stream reset", got)
					return
				}
			case *http2.RSTStreamFrame:
				done <- nil
				return
			}
		}
	}()
	return done
}
