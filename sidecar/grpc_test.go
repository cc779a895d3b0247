package sidecar

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ferrymesh/ferry/internal/localnet/localnettest"
)

// gateBody in a StreamingOutputCall request makes the server wait for a
// release before every message after the first.
const gateBody = "gate"

// grpcOrigin implements the interop TestService for ferry's gRPC tests.
type grpcOrigin struct {
	testgrpc.UnimplementedTestServiceServer
	release chan struct{} // lets a gated stream send its next message
	firstIn chan string   // the first message of a client stream, as it arrives
	gone    chan error    // a gated stream's context ended, with this cause
	arrived chan struct{} // a "barrier" unary call is waiting for proceed
	proceed chan struct{} // closed to let every waiting call answer
}

// trailerFor is the trailer metadata every call ends with, binary value
// included, so a proxy that mangles or drops trailers is caught.
func trailerFor(method string) metadata.MD {
	return metadata.Pairs("x-ferry-method", method, "x-ferry-blob-bin", string([]byte{0, 1, 2, 0xfe, 0xff}))
}

// endWith sets the call's trailers and turns a requested status into the
// call's error.
func endWith(ctx context.Context, method string, st *testgrpc.EchoStatus) error {
	grpc.SetTrailer(ctx, trailerFor(method))
	if st != nil && st.Code != 0 {
		return status.Error(codes.Code(st.Code), st.Message)
	}
	return nil
}

func fill(b byte, n int32) []byte { return bytes.Repeat([]byte{b}, int(n)) }

func (o *grpcOrigin) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	grpc.SetHeader(ctx, metadata.Pairs("x-ferry-header", "unary"))
	if string(req.GetPayload().GetBody()) == "barrier" {
		o.arrived <- struct{}{}
		select {
		case <-o.proceed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err := endWith(ctx, "unary", req.GetResponseStatus()); err != nil {
		return nil, err
	}
	body := append([]byte("echo:"), req.GetPayload().GetBody()...)
	body = append(body, fill('u', req.GetResponseSize())...)
	return &testgrpc.SimpleResponse{Payload: &testgrpc.Payload{Body: body}}, nil
}

func (o *grpcOrigin) StreamingOutputCall(req *testgrpc.StreamingOutputCallRequest, stream grpc.ServerStreamingServer[testgrpc.StreamingOutputCallResponse]) error {
	gated := string(req.GetPayload().GetBody()) == gateBody
	for i, p := range req.GetResponseParameters() {
		if gated && i > 0 {
			select {
			case <-o.release:
			case <-stream.Context().Done():
				o.gone <- stream.Context().Err()
				return stream.Context().Err()
			case <-time.After(10 * time.Second):
				return status.Error(codes.DeadlineExceeded, "never released")
			}
		}
		msg := &testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: fill(byte('a'+i), p.GetSize())}}
		if err := stream.Send(msg); err != nil {
			return err
		}
	}
	return endWith(stream.Context(), "server-stream", req.GetResponseStatus())
}

func (o *grpcOrigin) StreamingInputCall(stream grpc.ClientStreamingServer[testgrpc.StreamingInputCallRequest, testgrpc.StreamingInputCallResponse]) error {
	var total int32
	for n := 0; ; n++ {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			grpc.SetTrailer(stream.Context(), trailerFor("client-stream"))
			return stream.SendAndClose(&testgrpc.StreamingInputCallResponse{AggregatedPayloadSize: total})
		}
		if err != nil {
			return err
		}
		if n == 0 {
			select {
			case o.firstIn <- string(req.GetPayload().GetBody()):
			default:
			}
		}
		total += int32(len(req.GetPayload().GetBody()))
	}
}

func (o *grpcOrigin) FullDuplexCall(stream grpc.BidiStreamingServer[testgrpc.StreamingOutputCallRequest, testgrpc.StreamingOutputCallResponse]) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return endWith(stream.Context(), "bidi", nil)
		}
		if err != nil {
			return err
		}
		if st := req.GetResponseStatus(); st != nil && st.Code != 0 {
			return endWith(stream.Context(), "bidi", st)
		}
		body := append([]byte("pong:"), req.GetPayload().GetBody()...)
		if err := stream.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: body}}); err != nil {
			return err
		}
	}
}

// grpcThroughFerry starts a gRPC origin and a ferry whose outbound listener
// routes the authority "grpc-svc" to it (everything else goes to a dead
// service), and returns a client of the origin that dials ferry.
func grpcThroughFerry(t *testing.T) (testgrpc.TestServiceClient, *grpcOrigin, *bodyCounter) {
	t.Helper()
	o, addr := startGRPCOrigin(t)
	deadAddr := localnettest.RefusedAddr(t)

	sc := startFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound:
  listen: 127.0.0.1:0
  routes:
    - { host: grpc-svc, service: grpc }
    - { service: other }
services:
  grpc: { endpoints: [%s] }
  other: { endpoints: [%s] }
`, addr, deadAddr))
	bodies := track(sc)
	conn, err := grpc.NewClient("passthrough:///"+sc.Addr("outbound"),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority("grpc-svc"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() }) // before ferry drains
	return testgrpc.NewTestServiceClient(conn), o, bodies
}

func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// checkTrailer asserts md is exactly the trailer metadata the origin set.
func checkTrailer(t *testing.T, md metadata.MD, method string) {
	t.Helper()
	want := trailerFor(method)
	for k, vv := range want {
		if got := md.Get(k); len(got) != 1 || got[0] != vv[0] {
			t.Fatalf("trailer %s = %q, want %q (all trailers %v)", k, got, vv, md)
		}
	}
}

// allClosed waits until every upstream body ferry opened is closed.
func allClosed(t *testing.T, bodies *bodyCounter, want int64) {
	t.Helper()
	waitFor(t, "every upstream body closed", 5*time.Second, func() bool {
		return bodies.opened.Load() == want && bodies.closed.Load() == want
	})
}

func TestGRPCUnary(t *testing.T) {
	leakCheck(t)
	client, _, bodies := grpcThroughFerry(t)
	var header, trailer metadata.MD
	res, err := client.UnaryCall(callCtx(t), &testgrpc.SimpleRequest{
		Payload:      &testgrpc.Payload{Body: []byte("hello")},
		ResponseSize: 100000, // several DATA frames
	}, grpc.Header(&header), grpc.Trailer(&trailer))
	if err != nil {
		t.Fatalf("UnaryCall through ferry: %v", err)
	}
	want := append([]byte("echo:hello"), fill('u', 100000)...)
	if !bytes.Equal(res.GetPayload().GetBody(), want) {
		t.Fatalf("payload of %d bytes, want %d bytes %q...", len(res.GetPayload().GetBody()), len(want), want[:12])
	}
	if got := header.Get("x-ferry-header"); len(got) != 1 || got[0] != "unary" {
		t.Fatalf("header metadata x-ferry-header = %q, want [unary]", got)
	}
	checkTrailer(t, trailer, "unary")
	allClosed(t, bodies, 1)
}

// TestGRPCStatusAndTrailers proves a non-OK status, its message and the
// trailer metadata reach the client intact, both as a trailers-only
// response and after streamed messages.
func TestGRPCStatusAndTrailers(t *testing.T) {
	leakCheck(t)
	client, _, bodies := grpcThroughFerry(t)
	const msg = "quota exhausted: 0 of 10 left, retry in 3s ✓"
	t.Run("unary trailers-only", func(t *testing.T) {
		var trailer metadata.MD
		_, err := client.UnaryCall(callCtx(t), &testgrpc.SimpleRequest{
			ResponseStatus: &testgrpc.EchoStatus{Code: int32(codes.ResourceExhausted), Message: msg},
		}, grpc.Trailer(&trailer))
		st, _ := status.FromError(err)
		if st.Code() != codes.ResourceExhausted || st.Message() != msg {
			t.Fatalf("status %v %q, want %v %q (err %v)", st.Code(), st.Message(), codes.ResourceExhausted, msg, err)
		}
		checkTrailer(t, trailer, "unary")
	})
	t.Run("after streamed messages", func(t *testing.T) {
		stream, err := client.StreamingOutputCall(callCtx(t), &testgrpc.StreamingOutputCallRequest{
			ResponseParameters: []*testgrpc.ResponseParameters{{Size: 10}, {Size: 20}},
			ResponseStatus:     &testgrpc.EchoStatus{Code: int32(codes.FailedPrecondition), Message: msg},
		})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			if _, err := stream.Recv(); err != nil {
				t.Fatalf("message %d: %v", i, err)
			}
		}
		_, err = stream.Recv()
		st, _ := status.FromError(err)
		if st.Code() != codes.FailedPrecondition || st.Message() != msg {
			t.Fatalf("status %v %q, want %v %q (err %v)", st.Code(), st.Message(), codes.FailedPrecondition, msg, err)
		}
		checkTrailer(t, stream.Trailer(), "server-stream")
	})
	allClosed(t, bodies, 2)
}

func TestGRPCServerStreaming(t *testing.T) {
	leakCheck(t)
	client, _, bodies := grpcThroughFerry(t)
	sizes := []int32{1, 5000, 70000, 3}
	params := make([]*testgrpc.ResponseParameters, len(sizes))
	for i, s := range sizes {
		params[i] = &testgrpc.ResponseParameters{Size: s}
	}
	stream, err := client.StreamingOutputCall(callCtx(t), &testgrpc.StreamingOutputCallRequest{ResponseParameters: params})
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range sizes {
		m, err := stream.Recv()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !bytes.Equal(m.GetPayload().GetBody(), fill(byte('a'+i), s)) {
			t.Fatalf("message %d: %d bytes, want %d of %q", i, len(m.GetPayload().GetBody()), s, string(rune('a'+i)))
		}
	}
	if _, err := stream.Recv(); err != io.EOF {
		t.Fatalf("after the last message: %v, want io.EOF (status OK)", err)
	}
	checkTrailer(t, stream.Trailer(), "server-stream")
	allClosed(t, bodies, 1)
}

// TestGRPCServerStreamingFlushes proves ferry flushes each message: the
// client receives the first before the server may send the second.
func TestGRPCServerStreamingFlushes(t *testing.T) {
	leakCheck(t)
	client, origin, bodies := grpcThroughFerry(t)
	stream, err := client.StreamingOutputCall(callCtx(t), &testgrpc.StreamingOutputCallRequest{
		Payload:            &testgrpc.Payload{Body: []byte(gateBody)},
		ResponseParameters: []*testgrpc.ResponseParameters{{Size: 7}, {Size: 9}},
	})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv() // the server holds the second until released
	if err != nil {
		t.Fatalf("first message while the server holds the second: %v", err)
	}
	if !bytes.Equal(first.GetPayload().GetBody(), fill('a', 7)) {
		t.Fatalf("first message %q", first.GetPayload().GetBody())
	}
	origin.release <- struct{}{}
	second, err := stream.Recv()
	if err != nil {
		t.Fatalf("second message: %v", err)
	}
	if !bytes.Equal(second.GetPayload().GetBody(), fill('b', 9)) {
		t.Fatalf("second message %q", second.GetPayload().GetBody())
	}
	if _, err := stream.Recv(); err != io.EOF {
		t.Fatalf("end of stream: %v, want io.EOF", err)
	}
	allClosed(t, bodies, 1)
}

// TestGRPCClientStreaming proves the client's messages reach the server as
// they are sent: the server has the first before the client sends the rest.
func TestGRPCClientStreaming(t *testing.T) {
	leakCheck(t)
	client, origin, bodies := grpcThroughFerry(t)
	var trailer metadata.MD
	stream, err := client.StreamingInputCall(callCtx(t), grpc.Trailer(&trailer))
	if err != nil {
		t.Fatal(err)
	}
	parts := [][]byte{[]byte("first"), fill('x', 50000), []byte("last")}
	var total int32
	for i, p := range parts {
		if err := stream.Send(&testgrpc.StreamingInputCallRequest{Payload: &testgrpc.Payload{Body: p}}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		total += int32(len(p))
		if i == 0 {
			if got := recv(t, origin.firstIn, 5*time.Second, "the server to receive the first message before the rest is sent"); got != "first" {
				t.Fatalf("server's first message %q", got)
			}
		}
	}
	res, err := stream.CloseAndRecv()
	if err != nil {
		t.Fatal(err)
	}
	if res.GetAggregatedPayloadSize() != total {
		t.Fatalf("server counted %d bytes, client sent %d", res.GetAggregatedPayloadSize(), total)
	}
	checkTrailer(t, trailer, "client-stream")
	allClosed(t, bodies, 1)
}

// TestGRPCBidiStreaming plays ping-pong: each reply must arrive while the
// client's side of the stream is still open.
func TestGRPCBidiStreaming(t *testing.T) {
	leakCheck(t)
	client, _, bodies := grpcThroughFerry(t)
	t.Run("ping-pong", func(t *testing.T) {
		stream, err := client.FullDuplexCall(callCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		for i := range 5 {
			ping := fmt.Sprintf("ping-%d", i)
			if err := stream.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte(ping)}}); err != nil {
				t.Fatalf("send %s: %v", ping, err)
			}
			m, err := stream.Recv()
			if err != nil {
				t.Fatalf("reply to %s: %v", ping, err)
			}
			if got := string(m.GetPayload().GetBody()); got != "pong:"+ping {
				t.Fatalf("reply %q, want %q", got, "pong:"+ping)
			}
		}
		if err := stream.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != io.EOF {
			t.Fatalf("after CloseSend: %v, want io.EOF", err)
		}
		checkTrailer(t, stream.Trailer(), "bidi")
	})
	t.Run("error mid-stream", func(t *testing.T) {
		stream, err := client.FullDuplexCall(callCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		stream.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte("one")}})
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
		stream.Send(&testgrpc.StreamingOutputCallRequest{ResponseStatus: &testgrpc.EchoStatus{Code: int32(codes.Aborted), Message: "conflict on key 7"}})
		_, err = stream.Recv()
		if st, _ := status.FromError(err); st.Code() != codes.Aborted || st.Message() != "conflict on key 7" {
			t.Fatalf("status %v %q, want Aborted %q (err %v)", st.Code(), st.Message(), "conflict on key 7", err)
		}
		checkTrailer(t, stream.Trailer(), "bidi")
	})
	allClosed(t, bodies, 2)
}

// TestGRPCCancelReachesServer proves a client that cancels a stream
// cancels it at the server too, through ferry.
func TestGRPCCancelReachesServer(t *testing.T) {
	leakCheck(t)
	client, origin, bodies := grpcThroughFerry(t)
	ctx, cancel := context.WithCancel(callCtx(t))
	stream, err := client.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{
		Payload:            &testgrpc.Payload{Body: []byte(gateBody)},
		ResponseParameters: []*testgrpc.ResponseParameters{{Size: 1}, {Size: 1}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := recv(t, origin.gone, 5*time.Second, "the server's stream to be cancelled"); !errors.Is(err, context.Canceled) {
		t.Fatalf("server stream ended with %v, want context.Canceled", err)
	}
	allClosed(t, bodies, 1)
}

// TestGRPCConcurrentStreams proves ferry multiplexes: 32 calls on one
// client connection are all in flight at the server at once, none answered
// until every one arrived.
func TestGRPCConcurrentStreams(t *testing.T) {
	leakCheck(t)
	client, origin, bodies := grpcThroughFerry(t)
	const n = 32
	errs := make(chan error, n)
	ctx := callCtx(t)
	for range n {
		go func() {
			res, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("barrier")}})
			if err == nil && string(res.GetPayload().GetBody()) != "echo:barrier" {
				err = fmt.Errorf("payload %q", res.GetPayload().GetBody())
			}
			errs <- err
		}()
	}
	for i := range n {
		recv(t, origin.arrived, 5*time.Second, fmt.Sprintf("call %d of %d in flight at once", i+1, n))
	}
	close(origin.proceed)
	for range n {
		if err := recv(t, errs, 5*time.Second, "a call to finish"); err != nil {
			t.Fatal(err)
		}
	}
	allClosed(t, bodies, n)
}

// TestGRPCLargeMessages moves 2 MiB up and 4 MiB down in one call: flow control
// windows must open through ferry in both directions.
func TestGRPCLargeMessages(t *testing.T) {
	leakCheck(t)
	client, _, bodies := grpcThroughFerry(t)
	const size = 2<<20 - 1024 // the reply, echo included, stays under gRPC's 4 MiB
	in := fill('q', size)
	res, err := client.UnaryCall(callCtx(t), &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: in}, ResponseSize: size})
	if err != nil {
		t.Fatal(err)
	}
	want := append(append([]byte("echo:"), in...), fill('u', size)...)
	if !bytes.Equal(res.GetPayload().GetBody(), want) {
		t.Fatalf("response of %d bytes, want %d", len(res.GetPayload().GetBody()), len(want))
	}
	allClosed(t, bodies, 1)
}
