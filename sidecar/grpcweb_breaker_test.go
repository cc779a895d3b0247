package sidecar

import (
	"encoding/base64"
	"encoding/binary"
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

// grpcWebOrigin is a gRPC-Web server written by hand: it answers each
// call in the request's Content-Type with the status in *code, in the
// head of a trailers-only answer (headOnly) or in a trailer frame after
// one message, each frame flushed on its own and, for -text, base64-
// encoded on its own (padded: the padding lands inside the stream).
func grpcWebOrigin(t *testing.T, code *atomic.Int32, headOnly bool) string {
	return origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		ct := r.Header.Get("Content-Type")
		w.Header().Set("Content-Type", ct)
		w.Header().Set("X-Origin-Proto", r.Proto)
		st := strconv.Itoa(int(code.Load()))
		if headOnly {
			w.Header().Set("Grpc-Status", st)
			w.Header().Set("Grpc-Message", "as%20asked")
			w.WriteHeader(200)
			return
		}
		w.WriteHeader(200)
		text := strings.Contains(ct, "-text")
		trailer := grpcWebFrame(0x80, []byte("grpc-status: "+st+"\r\ngrpc-message: as%20asked\r\nx-extra: "+strings.Repeat("x", 100)+"\r\n"))
		for _, f := range [][]byte{grpcWebFrame(0, []byte("hello")), trailer[:3], trailer[3:]} {
			if text {
				f = []byte(base64.StdEncoding.EncodeToString(f))
			}
			w.Write(f)
			w.(http.Flusher).Flush()
		}
	}))
}

// The breaker judges a gRPC-Web answer by the grpc-status it carries, in
// a trailers-only head or in the trailer frame at the end of its body
// (base64 for -text), as it judges a gRPC one: UNAVAILABLE as a 503, so
// three open it; the caller still gets the answer as the upstream sent
// it, and once the breaker is open, ferry's own UNAVAILABLE in gRPC-Web
// form. Over HTTP/1.1 and h2c to the upstream (the caller's protocol).
func TestGRPCWebUnavailableOpensBreaker(t *testing.T) {
	for _, cl := range grpcWebClients {
		for _, headOnly := range []bool{true, false} {
			for _, ct := range []string{"application/grpc-web+proto", "application/grpc-web-text"} {
				name := fmt.Sprintf("%s/%s/trailer-frame", cl.name, ct)
				if headOnly {
					name = fmt.Sprintf("%s/%s/trailers-only", cl.name, ct)
				}
				t.Run(name, func(t *testing.T) {
					var code atomic.Int32
					code.Store(grpcUnavailable)
					addr := grpcWebOrigin(t, &code, headOnly)
					sc, _ := resilientFerry(t, resilience.NewManualClock(time.Unix(1_000_000, 0)), grpcBreakerSettings, addr)
					base := "http://" + sc.Addr("outbound")
					c := cl.c()
					defer c.CloseIdleConnections()
					for range 3 {
						r := grpcWebCall(t, c, base, "svc", ct, nil)
						if want := map[string]string{"http1": "HTTP/1.1", "h2c": "HTTP/2.0"}[cl.name]; r.originProto != want {
							t.Fatalf("the upstream was spoken to in %q, want %s", r.originProto, want)
						}
						if r.httpStatus != 200 || r.status != grpcUnavailable || r.message != "as asked" || r.trailersOnly != headOnly {
							t.Fatalf("relayed: %+v, want the upstream's UNAVAILABLE", r)
						}
					}
					waitBreaker(t, sc, addr, resilience.BreakerOpen)
					r := grpcWebCall(t, c, base, "svc", ct, nil)
					if r.httpStatus != 200 || !r.trailersOnly || r.status != grpcUnavailable || r.ferryError == "" {
						t.Fatalf("with the breaker open: %+v, want ferry's UNAVAILABLE, trailers-only", r)
					}
				})
			}
		}
	}
}

// Statuses that say the call was at fault leave the breaker closed, and
// INTERNAL, UNKNOWN and DATA_LOSS count as a 500 for outlier ejection.
func TestGRPCWebStatusesJudged(t *testing.T) {
	for _, cl := range grpcWebClients {
		t.Run(cl.name+"/caller's fault", func(t *testing.T) {
			var code atomic.Int32
			addr := grpcWebOrigin(t, &code, false)
			sc, _ := resilientFerry(t, resilience.NewManualClock(time.Unix(1_000_000, 0)), grpcBreakerSettings, addr)
			base := "http://" + sc.Addr("outbound")
			c := cl.c()
			defer c.CloseIdleConnections()
			for _, st := range []int32{0, 3, 4, 5, 8, 9} {
				code.Store(st)
				for range 3 {
					grpcWebCall(t, c, base, "svc", "application/grpc-web-text+proto", nil)
				}
			}
			if got := breakerOf(t, sc, addr); got != resilience.BreakerClosed {
				t.Fatalf("breaker %v after calls that failed by the caller's doing", got)
			}
		})
		for _, st := range []int32{grpcInternal, grpcUnknown, 15} {
			t.Run(fmt.Sprintf("%s/%d", cl.name, st), func(t *testing.T) {
				var code atomic.Int32
				code.Store(st)
				a, b := grpcWebOrigin(t, &code, false), grpcWebOrigin(t, &code, true)
				sc, _ := resilientFerry(t, resilience.NewManualClock(time.Unix(1_000_000, 0)), `
    balancer: round_robin
    breaker: { consecutive_failures: 0 }
    outlier: { consecutive_5xx: 3, max_ejection_percent: 50 }
    retry: { max_retries: 0 }`, a, b)
				base := "http://" + sc.Addr("outbound")
				c := cl.c()
				defer c.CloseIdleConnections()
				for range 6 {
					grpcWebCall(t, c, base, "svc", "application/grpc-web", nil)
				}
				waitFor(t, "an endpoint ejected", 5*time.Second, func() bool {
					for _, ep := range upstreamStatus(t, sc, "svc").Endpoints {
						if !ep.EjectedUntil.IsZero() {
							return true
						}
					}
					return false
				})
			})
		}
	}
}

// grpcWebStatus reads the trailer frame's grpc-status however the body
// is cut into reads, binary or base64 (each frame padded on its own),
// keeps no more than grpcWebTrailerMax of it, and gives up on a -text
// body that is no base64 (judged by its head then).
func TestGRPCWebStatusFollowsTheBody(t *testing.T) {
	body := func(trailer string) []byte {
		return append(append(grpcWebFrame(0, []byte("hello")), grpcWebFrame(0, nil)...), grpcWebFrame(0x80, []byte(trailer))...)
	}
	textOf := func(b []byte) []byte { // frame by frame, as a server flushes
		var out []byte
		for len(b) > 0 {
			n := 5 + int(binary.BigEndian.Uint32(b[1:5]))
			out = append(out, base64.StdEncoding.EncodeToString(b[:n])...)
			b = b[n:]
		}
		return out
	}
	long := "x-long: " + strings.Repeat("y", grpcWebTrailerMax) + "\r\n"
	for _, tc := range []struct {
		name, trailer string
		code          int
		ok            bool
	}{
		{"unavailable", "grpc-status: 14\r\ngrpc-message: down\r\n", 14, true},
		{"mixed case, no last CRLF", "Grpc-Message: x\r\nGRPC-STATUS:13", 13, true},
		{"several: the last", "grpc-status: 0\r\ngrpc-status: 14\r\n", 14, true},
		{"malformed", "grpc-status: five\r\n", grpcUnknown, true},
		{"none", "grpc-message: x\r\n", 0, false},
		{"status past the bound", long + "grpc-status: 14\r\n", 0, false},
		{"status before a long line", "grpc-status: 14\r\n" + long, 14, true},
	} {
		for _, text := range []bool{false, true} {
			b := body(tc.trailer)
			if text {
				b = textOf(b)
			}
			for cut := 0; cut <= len(b); cut++ {
				g := &grpcWebStatus{text: text}
				g.observe(b[:cut])
				g.observe(b[cut:])
				if g.code != tc.code || g.ok != tc.ok {
					t.Fatalf("%s (text %v) cut at %d: %d %v, want %d %v", tc.name, text, cut, g.code, g.ok, tc.code, tc.ok)
				}
				if len(g.trailer) > grpcWebTrailerMax {
					t.Fatalf("%s: kept %d bytes of the trailer frame", tc.name, len(g.trailer))
				}
			}
		}
	}
	// A compressed trailer frame is not read.
	g := &grpcWebStatus{}
	g.observe(grpcWebFrame(0x81, []byte("grpc-status: 14\r\n")))
	if g.ok {
		t.Errorf("a compressed trailer frame read as status %d", g.code)
	}
	// -text that is no base64: nothing read from the body, the head rules.
	g = &grpcWebStatus{text: true}
	g.observe(append([]byte("!!!!"), textOf(body("grpc-status: 14\r\n"))...))
	res := &http.Response{StatusCode: 200, Header: http.Header{"Grpc-Status": {"3"}}}
	if g.ok || g.health(res) != 0 {
		t.Errorf("undecodable -text: status %d %v, health %d", g.code, g.ok, g.health(res))
	}
	res.Header.Set("Grpc-Status", "14")
	if got := g.health(res); got != 503 {
		t.Errorf("trailers-only head UNAVAILABLE: health %d, want 503", got)
	}
	res.StatusCode = 503
	if got := g.health(res); got != 0 {
		t.Errorf("a 503's head: health %d, want 0 (judged by its own status)", got)
	}
}
