package sidecar

import (
	"context"
	"encoding/binary"
	"fmt"
	"go.opentelemetry.io/otel/trace"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ferrymesh/ferry/telemetry"
)

// How brokenStreamOrigin ends a server-streaming call after its three
// whole messages.
const (
	endReset    = "reset"    // the stream (or HTTP/1.1 body) breaks
	endIdle     = "idle"     // nothing more comes: ferry's body_idle fires
	endMidReset = "mid"      // half a fourth message, then the break
	endMidIdle  = "mid-idle" // half a fourth message, then nothing more
)

// brokenStreamOrigin is a gRPC upstream of the TestService's
// StreamingOutputCall that sends three whole messages, each flushed, and
// then ends as its request's path says (see the end* constants): never
// with a status. The gRPC messages are framed by hand, so a break can
// come anywhere.
func brokenStreamOrigin(t *testing.T) string {
	return origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status")
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		for i := range 3 {
			w.Write(grpcFrame(t, &testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: fill(byte('a'+i), 100)}}))
			rc.Flush()
		}
		end := r.Header.Get("End")
		if end == endMidReset || end == endMidIdle {
			f := grpcFrame(t, &testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: fill('d', 100)}})
			w.Write(f[:len(f)/2])
			rc.Flush()
		}
		if end == endIdle || end == endMidIdle {
			<-r.Context().Done() // ferry gives up on the stream
		}
		panic(http.ErrAbortHandler)
	}))
}

// brokenStreamFerry is a ferry in front of a brokenStreamOrigin, whose
// routes by authority are its services: h2 (h2c) and h1 (HTTP/1.1) with a
// body_idle of 300ms, overall (h2c) with an overall timeout of 500ms;
// none retries.
func brokenStreamFerry(t *testing.T) *Sidecar {
	up := brokenStreamOrigin(t)
	return startFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound:
  listen: 127.0.0.1:0
  routes:
    - { host: h2, service: h2 }
    - { host: h1, service: h1 }
    - { host: overall, service: overall }
services:
  h2: { endpoints: [%s], protocol: h2c, retry: { max_retries: 0 }, timeouts: { body_idle: 300ms } }
  h1: { endpoints: [%s], protocol: http1, retry: { max_retries: 0 }, timeouts: { body_idle: 300ms } }
  overall: { endpoints: [%s], protocol: h2c, retry: { max_retries: 0 }, timeouts: { overall: 500ms, connect: 200ms, response_header: 400ms } }
`, up, up, up))
}

// grpcFrame is m as one length-prefixed gRPC message, uncompressed.
func grpcFrame(t *testing.T, m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		t.Error(err)
	}
	f := make([]byte, 5, 5+len(b))
	binary.BigEndian.PutUint32(f[1:], uint32(len(b)))
	return append(f, b...)
}

// streamThree makes a server-streaming call through sc (to the route of
// authority) that the origin ends as end says, checks that its three
// whole messages arrive, and returns how the call ended and its trailers.
func streamThree(t *testing.T, sc *Sidecar, authority, end string) (error, metadata.MD) {
	t.Helper()
	client := testgrpc.NewTestServiceClient(grpcConnTo(t, sc, authority))
	ctx := metadata.AppendToOutgoingContext(callCtx(t), "end", end)
	stream, err := client.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return threeThenEnd(t, stream.Recv, nil), stream.Trailer()
}

// threeThenEnd receives three whole messages of 100 bytes each, 'a', 'b'
// and 'c' (calling send before each one when send is not nil), and
// returns how the call ended after them.
func threeThenEnd(t *testing.T, recv func() (*testgrpc.StreamingOutputCallResponse, error), send func(i int)) error {
	t.Helper()
	for i := range 3 {
		if send != nil {
			send(i)
		}
		m, err := recv()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if b := m.GetPayload().GetBody(); len(b) != 100 || b[0] != byte('a'+i) {
			t.Fatalf("message %d: %q", i, b)
		}
	}
	m, err := recv()
	if err == nil {
		t.Fatalf("a fourth message %q, want the call's end", m.GetPayload().GetBody())
	}
	return err
}

// A gRPC stream whose upstream breaks, or falls idle, after whole messages
// ends with a gRPC status carrying ferry's reason, not a reset stream:
// the code of ferry's own 502 for a break (UNAVAILABLE) and 504 for
// body_idle or the overall timeout (DEADLINE_EXCEEDED).
// Before, grpc-go reported "stream terminated by RST_STREAM with error
// code: INTERNAL_ERROR" and ferry's reason was only in its log.
func TestGRPCMidStreamFailureCarriesReason(t *testing.T) {
	leakCheck(t)
	sc := brokenStreamFerry(t)
	for _, tc := range []struct {
		authority, end, reason string
		code                   codes.Code
	}{
		{"h2", endReset, "broke mid-body after 327 bytes: ", codes.Unavailable},
		{"h1", endReset, "broke mid-body after 327 bytes: ", codes.Unavailable},
		{"h2", endIdle, "cut after 327 bytes: " + errBodyIdle.Error(), codes.DeadlineExceeded},
		{"h1", endIdle, "cut after 327 bytes: " + errBodyIdle.Error(), codes.DeadlineExceeded},
		{"overall", endIdle, "cut after 327 bytes: " + errOverallTimeout.Error(), codes.DeadlineExceeded},
	} {
		t.Run(tc.authority+"/"+tc.end, func(t *testing.T) {
			err, trailer := streamThree(t, sc, tc.authority, tc.end)
			ferryFailure(t, err, trailer, tc.code, func(s string) bool {
				return strings.HasPrefix(s, "upstream "+tc.authority+" (") && strings.Contains(s, tc.reason)
			})
		})
	}
}

// A stream that breaks inside a message is still reset: a partial message
// followed by a status must never read as a complete call.
func TestGRPCMidMessageFailureStillResets(t *testing.T) {
	leakCheck(t)
	sc := brokenStreamFerry(t)
	for _, authority := range []string{"h2", "h1"} {
		for _, end := range []string{endMidReset, endMidIdle} {
			t.Run(authority+"/"+end, func(t *testing.T) {
				err, _ := streamThree(t, sc, authority, end)
				st, _ := status.FromError(err)
				if st.Code() != codes.Internal || !strings.Contains(st.Message(), "RST_STREAM") {
					t.Fatalf("status %v %q, want Internal from a reset stream (err %v)", st.Code(), st.Message(), err)
				}
			})
		}
	}
}

// The failure is recorded as for any response broken mid-body: the
// upstream's status, and the reason body_broken or timeout.
func TestGRPCMidStreamFailureTelemetry(t *testing.T) {
	for _, tc := range []struct {
		end, reason string
		code        codes.Code
	}{
		{endReset, telemetry.ReasonBodyBroken, codes.Unavailable},
		{endIdle, telemetry.ReasonTimeout, codes.DeadlineExceeded},
	} {
		t.Run(tc.end, func(t *testing.T) {
			up := brokenStreamOrigin(t)
			sc, rec, logs := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { host: h2, service: h2 } ] }
services: { h2: { endpoints: [%s], protocol: h2c, retry: { max_retries: 0 }, timeouts: { body_idle: 300ms } } }
`, up))
			err, _ := streamThree(t, sc, "h2", tc.end)
			if st, _ := status.FromError(err); st.Code() != tc.code {
				t.Fatalf("call ended %v, want %v (err %v)", st.Code(), tc.code, err)
			}
			expectOutcome(t, rec, logs, http.StatusOK, tc.reason)
			// The status the caller was sent in the trailers, as for an
			// upstream's own.
			if g, ok := accessLines(t, logs)[0]["grpc_status"]; !ok || g != float64(tc.code) {
				t.Errorf("access log grpc_status %v (present: %v), want %d", g, ok, tc.code)
			}
			server := spansOfKind(rec.Ended(), trace.SpanKindServer)[0]
			if got := attr(server, "rpc.grpc.status_code").AsInt64(); got != int64(tc.code) {
				t.Errorf("server span rpc.grpc.status_code %d, want %d", got, tc.code)
			}
			series := fmt.Sprintf(`ferry_requests_total{endpoint=%q,listener="outbound",reason=%q,service="h2",status_class="2xx"} 1`, up, tc.reason)
			if m := metricsText(sc); !strings.Contains(m, series) {
				t.Errorf("no %s in\n%s", series, grep(m, "ferry_requests_total"))
			}
		})
	}
}

// grpcFrames knows, whatever the chunks the relay writes, whether the
// bytes so far end at a message boundary: after every split of a run of
// messages (an empty one, one of 1 byte, one whose length needs all four
// length bytes), in two chunks or byte by byte.
func TestGRPCFramesBoundaries(t *testing.T) {
	var stream []byte
	boundary := map[int]bool{0: true}
	for _, n := range []int{0, 1, 300, 0, 1 << 24} {
		f := make([]byte, 5+n)
		binary.BigEndian.PutUint32(f[1:], uint32(n))
		stream = append(stream, f...)
		boundary[len(stream)] = true
	}
	cuts := []int{}
	for i := 0; i <= 320; i++ {
		cuts = append(cuts, i)
	}
	cuts = append(cuts, len(stream)-(1<<24)-1, len(stream)-(1<<24), len(stream)-1, len(stream))
	for _, cut := range cuts {
		var g grpcFrames
		g.advance(stream[:cut])
		if g.whole() != boundary[cut] {
			t.Fatalf("after %d bytes in one chunk: whole %v, want %v", cut, g.whole(), boundary[cut])
		}
		g.advance(stream[cut:])
		if !g.whole() {
			t.Fatalf("after the rest from %d: not whole", cut)
		}
	}
	var g grpcFrames
	for i := 0; i < 320; i++ {
		if g.whole() != boundary[i] {
			t.Fatalf("after %d bytes one by one: whole %v, want %v", i, g.whole(), boundary[i])
		}
		g.advance(stream[i : i+1])
	}
	if (*grpcFrames)(nil).whole() != true {
		t.Fatal("no frames followed: not whole")
	}
}

// bidiBreakOrigin is a gRPC upstream of the TestService's FullDuplexCall
// that answers each of the caller's first three messages with its payload,
// flushed, while the caller's stream stays open, and then breaks the
// stream (never a status).
func bidiBreakOrigin(t *testing.T) string {
	return origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status")
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		rc.Flush()
		for range 3 {
			var prefix [5]byte
			if _, err := io.ReadFull(r.Body, prefix[:]); err != nil {
				t.Errorf("origin: reading a message: %v", err)
				panic(http.ErrAbortHandler)
			}
			msg := make([]byte, binary.BigEndian.Uint32(prefix[1:]))
			if _, err := io.ReadFull(r.Body, msg); err != nil {
				t.Errorf("origin: reading a message: %v", err)
				panic(http.ErrAbortHandler)
			}
			var req testgrpc.StreamingOutputCallRequest
			if err := proto.Unmarshal(msg, &req); err != nil {
				t.Errorf("origin: %v", err)
			}
			w.Write(grpcFrame(t, &testgrpc.StreamingOutputCallResponse{Payload: req.GetPayload()}))
			rc.Flush()
		}
		panic(http.ErrAbortHandler)
	}))
}

// A bidirectional call whose upstream breaks between messages, while the
// caller's side is still open and sending, ends as a server-streaming one
// does: UNAVAILABLE with ferry's reason, after every whole message.
func TestGRPCBidiMidStreamFailureCarriesReason(t *testing.T) {
	leakCheck(t)
	sc, _ := ferryWithProtocol(t, ProtocolH2C, bidiBreakOrigin(t))
	client := testgrpc.NewTestServiceClient(grpcConnTo(t, sc, "h2"))
	stream, err := client.FullDuplexCall(callCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	err = threeThenEnd(t, stream.Recv, func(i int) {
		if err := stream.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: fill(byte('a'+i), 100)}}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	})
	ferryFailure(t, err, stream.Trailer(), codes.Unavailable, func(s string) bool {
		return strings.HasPrefix(s, "upstream svc (") && strings.Contains(s, "broke mid-body after 327 bytes: ")
	})
}

// A gRPC stream still open when a drain's grace period ends is cut at a
// message boundary with UNAVAILABLE and ferry's reason, as any other
// mid-stream end: the caller learns ferry was shutting down.
func TestGRPCStreamCutAtDrainEndCarriesReason(t *testing.T) {
	leakCheck(t)
	sc, _ := ferryWithProtocol(t, ProtocolH2C, brokenStreamOrigin(t))
	client := testgrpc.NewTestServiceClient(grpcConnTo(t, sc, "h2"))
	stream, err := client.StreamingOutputCall(metadata.AppendToOutgoingContext(callCtx(t), "end", endIdle), &testgrpc.StreamingOutputCallRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := stream.Recv(); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		drained <- sc.Shutdown(ctx)
	}()
	m, err := stream.Recv()
	if err == nil {
		t.Fatalf("a fourth message %q, want the call's end", m.GetPayload().GetBody())
	}
	ferryFailure(t, err, stream.Trailer(), codes.Unavailable, func(s string) bool {
		return strings.HasPrefix(s, "upstream svc (") && strings.Contains(s, "cut after 327 bytes: ferry is shutting down and "+errGraceEnded.Error())
	})
	if err := <-drained; err == nil {
		t.Fatal("the drain reported a clean end although it cut a stream")
	}
}
