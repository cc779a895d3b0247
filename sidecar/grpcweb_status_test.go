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
