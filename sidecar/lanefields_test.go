package sidecar

import (
	"bufio"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"
)

// outgoing skips its look-ups of X-Forwarded-For, TE and User-Agent in a
// lane request's header when the lane's parse saw no such field (and no
// hop-by-hop one, which could name it). Each head here has the field the
// skip would miss: a GET (ferry's own client) and a POST (net/http's
// Transport, which adds a User-Agent of its own to a header without the
// field ferry leaves empty), each served by the lane.
func TestLaneFieldsSeenByOutgoing(t *testing.T) {
	seen := make(chan http.Header, 1)
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		seen <- r.Header.Clone()
	}))
	_, base := outboundTo(t, "", up)
	for _, method := range []string{"GET", "POST"} {
		for _, tc := range []struct {
			name, fields string
			check        func(h http.Header) bool
		}{
			{"x-forwarded-for alone", "X-Forwarded-For: 203.0.113.9\r\n", func(h http.Header) bool {
				return h.Get("X-Forwarded-For") == "203.0.113.9, 127.0.0.1"
			}},
			{"te alone", "TE: trailers\r\n", func(h http.Header) bool {
				return h.Get("Te") == "trailers" && h.Get("Connection") == "TE"
			}},
			{"no user-agent", "X-A: 1\r\n", func(h http.Header) bool {
				_, ok := h["User-Agent"]
				return !ok
			}},
			{"user-agent named by connection", "User-Agent: caller/1\r\nConnection: User-Agent\r\n", func(h http.Header) bool {
				_, ok := h["User-Agent"]
				return !ok
			}},
			{"user-agent", "User-Agent: caller/1\r\n", func(h http.Header) bool {
				return h.Get("User-Agent") == "caller/1"
			}},
		} {
			t.Run(method+" "+tc.name, func(t *testing.T) {
				served := laneServed.Load()
				c := dialRaw(t, base)
				defer c.Close()
				head := method + " /x HTTP/1.1\r\nHost: x\r\n" + tc.fields
				if method == "POST" {
					head += "Content-Length: 3\r\n\r\nabc"
				} else {
					head += "\r\n"
				}
				io.WriteString(c, head)
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				res, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					t.Fatal(err)
				}
				res.Body.Close()
				h := recv(t, seen, 5*time.Second, "origin request")
				if res.StatusCode != 200 || !tc.check(h) {
					t.Fatalf("status %d, origin saw %v", res.StatusCode, h)
				}
				if laneServed.Load() == served {
					t.Fatal("the lane did not serve the request")
				}
			})
		}
	}
}

// eligible takes the first attempt's bare mark (no Upgrade or Expect
// field) for that request alone: another request in the lane exchange's
// context (a later attempt's copy) has its header looked at.
func TestEligibleBareFirstAttemptOnly(t *testing.T) {
	le := new(laneExchange)
	u := &url.URL{Scheme: "http", Host: "127.0.0.1:1", Path: "/"}
	le.first.req = http.Request{Method: "GET", URL: u, Header: http.Header{}}
	le.first.bare = true
	if !eligible(&le.first.req, le) {
		t.Fatal("a bare first attempt is not eligible")
	}
	for _, k := range []string{"Upgrade", "Expect"} {
		other := le.first.req
		other.Header = http.Header{k: {"x"}}
		if eligible(&other, le) {
			t.Errorf("another request with %s took the first attempt's bare mark", k)
		}
		if eligible(&other, nil) {
			t.Errorf("a request with %s is eligible", k)
		}
		le.first.bare = false
		le.first.req.Header = http.Header{k: {"x"}}
		if eligible(&le.first.req, le) {
			t.Errorf("a first attempt with %s, not marked bare, is eligible", k)
		}
		le.first.bare = true
		le.first.req.Header = http.Header{}
	}
}
