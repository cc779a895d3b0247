package sidecar

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/resilience"
)

// webAnswer is how a grpcWebAnswering upstream answers a gRPC-Web call.
type webAnswer struct {
	head   string   // grpc-status in the head; "" for none
	frames [][]byte // the body's frames, binary (a -text call gets each base64-encoded on its own)
	length bool     // the body in one write, with Content-Length; else each frame flushed (chunked over HTTP/1.1)
}

// grpcWebAnswering is a gRPC-Web server written by hand that answers
// each call in the request's Content-Type as *answer says.
func grpcWebAnswering(t *testing.T, answer *atomic.Pointer[webAnswer]) string {
	return origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		a := answer.Load()
		ct := r.Header.Get("Content-Type")
		w.Header().Set("Content-Type", ct)
		if a.head != "" {
			w.Header().Set("Grpc-Status", a.head)
		}
		text := strings.Contains(strings.ToLower(ct), "-text")
		frames := make([][]byte, len(a.frames))
		n := 0
		for i, f := range a.frames {
			if text {
				f = []byte(base64.StdEncoding.EncodeToString(f))
			}
			frames[i], n = f, n+len(f)
		}
		if a.length {
			w.Header().Set("Content-Length", strconv.Itoa(n))
			for _, f := range frames {
				w.Write(f)
			}
			return
		}
		w.WriteHeader(http.StatusOK)
		for _, f := range frames {
			w.Write(f)
			w.(http.Flusher).Flush()
		}
	}))
}

// trailerFrame is a gRPC-Web trailer frame of the given header lines.
func trailerFrame(lines ...string) []byte {
	return grpcWebFrame(0x80, []byte(strings.Join(lines, "\r\n")+"\r\n"))
}

// judged waits until addr's endpoint had n attempts judged and returns
// how many of them its breaker counted as failures.
func judged(t *testing.T, sc *Sidecar, addr string, n uint64) uint64 {
	t.Helper()
	var failures uint64
	waitFor(t, fmt.Sprintf("%d attempts judged", n), 5*time.Second, func() bool {
		for _, ep := range upstreamStatus(t, sc, "svc").Endpoints {
			if ep.Addr == addr {
				failures = ep.Failures
				return ep.Requests >= n
			}
		}
		return false
	})
	return failures
}

// The callers of gRPC-Web calls whose answers ferry's own HTTP/1.1 client
// reads (fastH1): a POST without a body, and one whose body of 100 KiB
// is spliced to the upstream.
var ownClientCalls = []struct {
	name string
	body []byte
}{{"bodiless", []byte{}}, {"spliced upload", make([]byte, 100<<10)}}

// A gRPC-Web answer that ferry's own HTTP/1.1 client reads with a
// Content-Length (a server that buffers a unary answer) is judged by its
// grpc-status as any other: UNAVAILABLE, in its trailer frame or its
// trailers-only head, opens the breaker. Before, that client kept such a
// head's fields as they came, without a header map, and the proxy, which
// finds a gRPC-Web answer by the Content-Type in that map, took it for a
// plain 200 success.
func TestGRPCWebStatusOnFerrysOwnClient(t *testing.T) {
	for _, call := range ownClientCalls {
		for _, tc := range []struct {
			name   string
			answer webAnswer
		}{
			{"trailer frame", webAnswer{frames: [][]byte{grpcWebFrame(0, []byte("hi")), trailerFrame("grpc-status: 14")}, length: true}},
			{"trailers-only", webAnswer{head: "14", length: true}},
		} {
			t.Run(call.name+"/"+tc.name, func(t *testing.T) {
				var answer atomic.Pointer[webAnswer]
				answer.Store(&tc.answer)
				addr := grpcWebAnswering(t, &answer)
				sc, _ := resilientFerry(t, resilience.NewManualClock(time.Unix(1_000_000, 0)), grpcBreakerSettings, addr)
				base := "http://" + sc.Addr("outbound")
				c := h1Client()
				defer c.CloseIdleConnections()
				for range 3 {
					if r := grpcWebCall(t, c, base, "svc", "application/grpc-web", call.body); r.httpStatus != 200 || r.status != grpcUnavailable {
						t.Fatalf("relayed: %+v, want the upstream's UNAVAILABLE", r)
					}
				}
				if f := judged(t, sc, addr, 3); f != 3 {
					t.Fatalf("%d of 3 UNAVAILABLE answers counted as failures", f)
				}
				waitBreaker(t, sc, addr, resilience.BreakerOpen)
			})
		}
	}
}

// webCaller is one way of making gRPC-Web calls through ferry: a client,
// the body of its calls (nil: one empty message), and whether the
// upstream answers with a Content-Length instead of flushing each frame.
type webCaller struct {
	name   string
	c      func() *http.Client
	body   []byte
	length bool
}

var webCallers = []webCaller{
	{"http1", h1Client, nil, false},
	{"h2c", h2cClient, nil, false},
	{"http1 bodiless, Content-Length", h1Client, []byte{}, true}, // ferry's own client (fastH1)
}

// grpcStatus500Settings count a 500 (UNKNOWN, INTERNAL, DATA_LOSS) as a
// breaker failure, as 502, 503 and 504 are by default.
const grpcStatus500Settings = `
    breaker: { consecutive_failures: 3, open_duration: 30s, failure_statuses: [500, 502, 503, 504] }
    outlier: { consecutive_5xx: 0 }
    retry: { max_retries: 0 }`

// grpcStatusCountSettings are grpcStatus500Settings with a breaker that
// stays closed long enough to count every answer of a test.
const grpcStatusCountSettings = `
    breaker: { consecutive_failures: 10, open_duration: 30s, failure_statuses: [500, 502, 503, 504] }
    outlier: { consecutive_5xx: 0 }
    retry: { max_retries: 0 }`

// grpcWebStatusFerry starts a gRPC-Web upstream answering as *answer says
// and a ferry with it as svc's one endpoint, with the given resilience
// settings and a clock that stands still.
func grpcWebStatusFerry(t *testing.T, settings string, answer *atomic.Pointer[webAnswer]) (*Sidecar, string, string) {
	t.Helper()
	addr := grpcWebAnswering(t, answer)
	sc, _ := resilientFerry(t, resilience.NewManualClock(time.Unix(1_000_000, 0)), settings, addr)
	return sc, addr, "http://" + sc.Addr("outbound")
}

// A gRPC-Web answer that ends without a status, in its head or a trailer
// frame (the body ends after its messages, or its trailer frame has no
// grpc-status, or a 200 comes with neither body nor grpc-status), is
// what gRPC makes of a call with no status, UNKNOWN, which the breaker
// counts as a 500: three open a breaker whose failure_statuses list 500.
// Before, each counted as its 200, a success.
func TestGRPCWebMissingStatusOpensBreaker(t *testing.T) {
	msg := grpcWebFrame(0, []byte("hello"))
	for _, cl := range webCallers {
		for _, tc := range []struct {
			name, ct string
			frames   [][]byte
		}{
			{"no trailer frame", "application/grpc-web+proto", [][]byte{msg}},
			{"no trailer frame, -text", "application/grpc-web-text", [][]byte{msg, msg}},
			{"trailer frame without grpc-status", "application/grpc-web", [][]byte{msg, trailerFrame("grpc-message: lost")}},
			{"trailer frame without grpc-status, -text", "application/grpc-web-text+proto", [][]byte{msg, trailerFrame("grpc-message: lost")}},
			{"empty trailer frame", "application/grpc-web", [][]byte{grpcWebFrame(0x80, nil)}},
			{"neither body nor grpc-status", "application/grpc-web", nil},
		} {
			t.Run(cl.name+"/"+tc.name, func(t *testing.T) {
				var answer atomic.Pointer[webAnswer]
				answer.Store(&webAnswer{frames: tc.frames, length: cl.length})
				sc, addr, base := grpcWebStatusFerry(t, grpcStatus500Settings, &answer)
				c := cl.c()
				defer c.CloseIdleConnections()
				for range 3 {
					if r := grpcWebCall(t, c, base, "svc", tc.ct, cl.body); r.httpStatus != 200 || r.hasStatus {
						t.Fatalf("relayed: %+v, want the upstream's 200 without a status", r)
					}
				}
				if f := judged(t, sc, addr, 3); f != 3 {
					t.Fatalf("%d of 3 answers without a status counted as failures", f)
				}
				waitBreaker(t, sc, addr, resilience.BreakerOpen)
			})
		}
	}
}

// An answer whose status ferry read as OK is a success, in a trailer
// frame or a trailers-only head. One whose status ferry could not read
// (a compressed trailer frame, a -text body that is no base64, a trailer
// frame whose grpc-status line lies past the 8 KiB ferry keeps) is judged
// by its head, and with none there, by its 200: ferry invents no status
// for it.
func TestGRPCWebStatusOKOrUnreadIsNoFailure(t *testing.T) {
	msg := grpcWebFrame(0, []byte("hello"))
	long := "x-long: " + strings.Repeat("y", grpcWebTrailerMax)
	for _, cl := range webCallers {
		for _, tc := range []struct {
			name, ct string
			answer   webAnswer
		}{
			{"OK in the trailer frame", "application/grpc-web", webAnswer{frames: [][]byte{msg, trailerFrame("grpc-status: 0")}}},
			{"OK in the trailer frame, -text", "application/grpc-web-text", webAnswer{frames: [][]byte{msg, trailerFrame("grpc-status: 0")}}},
			{"OK trailers-only", "application/grpc-web", webAnswer{head: "0"}},
			{"NOT_FOUND in the trailer frame", "application/grpc-web", webAnswer{frames: [][]byte{trailerFrame("grpc-status: 5")}}},
			{"compressed trailer frame", "application/grpc-web", webAnswer{frames: [][]byte{msg, grpcWebFrame(0x81, []byte("whatever"))}}},
			{"status past what ferry keeps", "application/grpc-web", webAnswer{frames: [][]byte{msg, trailerFrame(long, "grpc-status: 14")}}},
		} {
			t.Run(cl.name+"/"+tc.name, func(t *testing.T) {
				var answer atomic.Pointer[webAnswer]
				a := tc.answer
				a.length = cl.length
				answer.Store(&a)
				sc, addr, base := grpcWebStatusFerry(t, grpcStatusCountSettings, &answer)
				c := cl.c()
				defer c.CloseIdleConnections()
				for range 4 {
					if r := grpcWebCall(t, c, base, "svc", tc.ct, cl.body); r.httpStatus != 200 {
						t.Fatalf("relayed: %+v, want the upstream's 200", r)
					}
				}
				if f := judged(t, sc, addr, 4); f != 0 {
					t.Fatalf("%d of 4 answers counted as failures", f)
				}
			})
		}
	}
	t.Run("-text that is no base64", func(t *testing.T) {
		addr := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/grpc-web-text")
			io.WriteString(w, "!!!!")
		}))
		sc, _ := resilientFerry(t, resilience.NewManualClock(time.Unix(1_000_000, 0)), grpcStatusCountSettings, addr)
		for range 4 {
			if st, _ := call(t, h1Client(), http.MethodPost, "http://"+sc.Addr("outbound")+"/", nil); st != 200 {
				t.Fatalf("relayed %d, want the upstream's 200", st)
			}
		}
		if f := judged(t, sc, addr, 4); f != 0 {
			t.Fatalf("%d of 4 answers counted as failures", f)
		}
	})
}

// Outlier ejection counts an answer without a status as a 500: of two
// endpoints, the one that ends every call so is ejected, the other not.
func TestGRPCWebMissingStatusEjects(t *testing.T) {
	for _, cl := range webCallers {
		t.Run(cl.name, func(t *testing.T) {
			var bad, good atomic.Pointer[webAnswer]
			bad.Store(&webAnswer{frames: [][]byte{grpcWebFrame(0, []byte("hello"))}, length: cl.length})
			good.Store(&webAnswer{frames: [][]byte{trailerFrame("grpc-status: 0")}, length: cl.length})
			badAddr, goodAddr := grpcWebAnswering(t, &bad), grpcWebAnswering(t, &good)
			sc, _ := resilientFerry(t, resilience.NewManualClock(time.Unix(1_000_000, 0)), `
    balancer: round_robin
    breaker: { consecutive_failures: 0 }
    outlier: { consecutive_5xx: 3, max_ejection_percent: 50 }
    retry: { max_retries: 0 }`, badAddr, goodAddr)
			base := "http://" + sc.Addr("outbound")
			c := cl.c()
			defer c.CloseIdleConnections()
			for range 6 {
				grpcWebCall(t, c, base, "svc", "application/grpc-web", cl.body)
			}
			waitFor(t, "the endpoint without statuses ejected", 5*time.Second, func() bool {
				for _, ep := range upstreamStatus(t, sc, "svc").Endpoints {
					if ep.Addr == badAddr && !ep.EjectedUntil.IsZero() {
						return true
					}
				}
				return false
			})
			for _, ep := range upstreamStatus(t, sc, "svc").Endpoints {
				if ep.Addr == goodAddr && !ep.EjectedUntil.IsZero() {
					t.Fatalf("the endpoint answering OK was ejected too")
				}
			}
		})
	}
}

// What a whole gRPC-Web answer's status is, from what grpcWebStatus read
// of its body and its head's grpc-status.
func TestGRPCWebStatusOfAWholeAnswer(t *testing.T) {
	msg := grpcWebFrame(0, []byte("hello"))
	cat := func(frames ...[]byte) []byte {
		var b []byte
		for _, f := range frames {
			b = append(b, f...)
		}
		return b
	}
	long := "x-long: " + strings.Repeat("y", grpcWebTrailerMax)
	for _, tc := range []struct {
		name, head string
		body       []byte
		text       bool
		code       int
		ok         bool
	}{
		{"trailer frame", "", cat(msg, trailerFrame("grpc-status: 14")), false, 14, true},
		{"the trailer frame's, not the head's", "0", cat(msg, trailerFrame("grpc-status: 13")), false, 13, true},
		{"trailer frame without status", "", cat(msg, trailerFrame("grpc-message: x")), false, grpcUnknown, true},
		{"trailer frame without status, head with one", "0", cat(msg, trailerFrame("grpc-message: x")), false, grpcUnknown, true},
		{"trailers-only", "5", nil, false, 5, true},
		{"trailers-only without status", "", nil, false, grpcUnknown, true},
		{"messages, no trailer frame", "", cat(msg, msg), false, grpcUnknown, true},
		{"cut mid-frame", "", cat(msg, trailerFrame("grpc-status: 0"))[:12], false, grpcUnknown, true},
		{"head status, no trailer frame", "14", msg, false, 14, true},
		{"compressed trailer frame", "", cat(msg, grpcWebFrame(0x81, []byte("x"))), false, 0, false},
		{"compressed trailer frame, head status", "14", cat(msg, grpcWebFrame(0x81, []byte("x"))), false, 14, true},
		{"status past the bound", "", cat(msg, trailerFrame(long, "grpc-status: 14")), false, 0, false},
		{"status within the bound, long trailer frame", "", cat(msg, trailerFrame("grpc-status: 14", long)), false, 14, true},
		{"no base64", "", []byte("!!!!"), true, 0, false},
		{"no base64, head status", "3", []byte("!!!!"), true, 3, true},
		{"-text without status", "", []byte(base64.StdEncoding.EncodeToString(msg)), true, grpcUnknown, true},
	} {
		g := &grpcWebStatus{text: tc.text}
		g.observe(tc.body)
		res := &http.Response{StatusCode: 200, Header: http.Header{}}
		if tc.head != "" {
			res.Header.Set("Grpc-Status", tc.head)
		}
		if code, ok := g.status(res); code != tc.code || ok != tc.ok {
			t.Errorf("%s: status %d %v, want %d %v", tc.name, code, ok, tc.code, tc.ok)
		}
	}
}

// What the attempt span of a gRPC-Web call's answer left unread (a 503
// discarded for a retry) records: the status gRPC-Web clients make of an
// HTTP error; none for a gRPC-Web 200, whose status may be in its body.
func TestGRPCWebHeadStatus(t *testing.T) {
	for _, tc := range []struct {
		status int
		ct     string
		code   int
		ok     bool
	}{
		{503, "text/plain", grpcUnavailable, true},
		{502, "application/grpc-web", grpcUnavailable, true},
		{404, "text/html", grpcUnimplemented, true},
		{200, "text/html", grpcUnknown, true},
		{200, "application/grpc-web+proto", 0, false},
		{200, "application/grpc-web-text", 0, false},
	} {
		res := &http.Response{StatusCode: tc.status, Header: http.Header{"Content-Type": {tc.ct}}}
		if code, ok := grpcWebHeadStatus(res); code != tc.code || ok != tc.ok {
			t.Errorf("%d %s: %d %v, want %d %v", tc.status, tc.ct, code, ok, tc.code, tc.ok)
		}
	}
}
