package sidecar

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A response body the upstream cut short reaches no caller as a whole
// one, however it was framed and whoever asks: an HTTP/1.0 caller, which
// gets a body without a Content-Length delimited by the connection's end;
// an HTTP/1.1 caller, which gets it chunked (no last chunk) or of its
// Content-Length (closed early); an h2c caller (a reset stream). A body
// delimited by the connection's end is whole when the upstream closes
// cleanly (FIN), and cut when it resets (RST): ferry must pass that on,
// and an HTTP/1.0 caller can only tell the two apart by a reset too.
//
// The upstream sends its head and the first part of the body, waits
// until the caller has read that part, then closes or resets.
func TestBodyCutShortNeverLooksWhole(t *testing.T) {
	leakCheck(t)
	const part = 3000
	heads := map[string]string{
		"close-1.0": "HTTP/1.0 200 OK\r\nX-Framing: close\r\n\r\n",
		"close-1.1": "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
		"length":    "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n",
		"chunked":   fmt.Sprintf("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n", part),
	}
	for _, framing := range []string{"close-1.0", "close-1.1", "length", "chunked"} {
		for _, kill := range []string{"rst", "fin"} {
			// Only a body delimited by the connection's end, ended by a
			// FIN, is whole.
			whole := strings.HasPrefix(framing, "close") && kill == "fin"
			killNow := make(chan struct{})
			stop := make(chan struct{})
			o := startRawServer(t, func(c net.Conn) {
				if readWholeRequest(bufio.NewReader(c)) != nil {
					return
				}
				io.WriteString(c, heads[framing]+strings.Repeat("b", part))
				select {
				case <-killNow:
				case <-stop:
				}
				if kill == "rst" {
					reset(c)
				}
			})
			t.Cleanup(func() { close(stop) }) // before the server's cleanup
			base := faultFerry(t, o.addr(), settingsYAML(""))
			for _, caller := range []string{"http1.0", "http1.1", "h2c"} {
				for _, withBody := range []bool{false, true} {
					name := fmt.Sprintf("%s/%s/%s/body=%v", framing, kill, caller, withBody)
					t.Run(name, func(t *testing.T) {
						res, c := cutShortRequest(t, base, caller, withBody)
						if c != nil {
							defer c.Close()
						}
						defer res.Body.Close()
						if res.StatusCode != http.StatusOK {
							t.Fatalf("status %d", res.StatusCode)
						}
						// How the body is framed to the caller: the
						// upstream's Content-Length; else chunked to an
						// HTTP/1.1 caller, the connection's end to an
						// HTTP/1.0 one.
						switch chunked := len(res.TransferEncoding) > 0; {
						case framing == "length" && caller != "h2c" && res.ContentLength != 100000:
							t.Fatalf("Content-Length %d, want the upstream's 100000", res.ContentLength)
						case framing != "length" && caller == "http1.1" && !chunked:
							t.Fatalf("a body without a Content-Length reached an HTTP/1.1 caller unchunked (Content-Length %d)", res.ContentLength)
						case framing != "length" && caller == "http1.0" && (chunked || res.ContentLength != -1):
							t.Fatalf("HTTP/1.0 caller got Transfer-Encoding %q, Content-Length %d; want neither", res.TransferEncoding, res.ContentLength)
						}
						first := make([]byte, part)
						if _, err := io.ReadFull(res.Body, first); err != nil {
							t.Fatalf("the first %d bytes: %v", part, err)
						}
						killNow <- struct{}{}
						rest, err := io.ReadAll(res.Body)
						switch {
						case whole && (err != nil || len(rest) != 0):
							t.Fatalf("a whole body of %d bytes: then %d more and %v; want a clean end", part, len(rest), err)
						case !whole && err == nil:
							t.Fatalf("read %d bytes and a clean end of a body cut short; want an error", part+len(rest))
						case !whole && caller == "http1.0" && strings.HasPrefix(framing, "close") && !errors.Is(err, syscall.ECONNRESET):
							t.Fatalf("body ended with %v; want the connection reset", err)
						case !whole && caller == "h2c" && !strings.Contains(err.Error(), "stream error"):
							t.Fatalf("body ended with %v; want the stream reset (RST_STREAM)", err)
						}
						if err != nil {
							t.Logf("body ended with %v", err)
						}
					})
				}
			}
		}
	}
}

// cutShortRequest sends GET /x (POST /x with a short body when withBody)
// to base as the caller says: over a connection of its own for HTTP/1.x
// (returned, to close), through an h2c client otherwise.
func cutShortRequest(t *testing.T, base, caller string, withBody bool) (*http.Response, net.Conn) {
	t.Helper()
	if caller == "h2c" {
		method, body := http.MethodGet, io.Reader(nil)
		if withBody {
			method, body = http.MethodPost, strings.NewReader("abc")
		}
		req, err := http.NewRequest(method, base+"/x", body)
		if err != nil {
			t.Fatal(err)
		}
		res, err := h2cFor(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return res, nil
	}
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	proto := "HTTP/1.1"
	if caller == "http1.0" {
		proto = "HTTP/1.0"
	}
	var req bytes.Buffer
	if withBody {
		fmt.Fprintf(&req, "POST /x %s\r\nHost: svc\r\nContent-Length: 3\r\n\r\nabc", proto)
	} else {
		fmt.Fprintf(&req, "GET /x %s\r\nHost: svc\r\n\r\n", proto)
	}
	if _, err := c.Write(req.Bytes()); err != nil {
		c.Close()
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	return res, c
}

// An HTTP/1.0 caller that stops reading a body ferry relays without a
// Content-Length (the upstream's was chunked) is cut by body_idle or
// overall; when it reads on, what it was sent must end in a reset, not a
// FIN that passes the part it got off as the whole body.
func TestStalledHTTP10CallerCutSeesReset(t *testing.T) {
	leakCheck(t)
	for _, timeouts := range []string{"body_idle: 300ms", "connect: 200ms, response_header: 200ms, body_idle: 1h, overall: 500ms"} {
		t.Run(timeouts, func(t *testing.T) {
			stopped := make(chan error, 1)
			o := startRawServer(t, func(c net.Conn) {
				if readWholeRequest(bufio.NewReader(c)) != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
				chunk := append(append([]byte("fff0\r\n"), bytes.Repeat([]byte("s"), 0xfff0)...), "\r\n"...)
				for {
					if _, err := c.Write(chunk); err != nil {
						stopped <- err
						return
					}
				}
			})
			base := faultFerry(t, o.addr(), settingsYAML(timeouts))
			res, c := cutShortRequest(t, base, "http1.0", false)
			defer c.Close()
			if res.StatusCode != http.StatusOK || res.ContentLength != -1 {
				t.Fatalf("status %d, Content-Length %d; want 200 and a body delimited by the connection's end", res.StatusCode, res.ContentLength)
			}
			// The caller reads no more until ferry cut the exchange.
			recv(t, stopped, 10*time.Second, "the upstream's connection to close")
			waitFor(t, "the exchange to end", 5*time.Second, func() bool { return handlersRunning() == 0 })
			n, err := io.Copy(io.Discard, res.Body)
			if err == nil {
				t.Fatalf("read %d bytes and a clean end of a body ferry cut; want an error", n)
			}
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("body ended with %v; want the connection reset", err)
			}
		})
	}
}
