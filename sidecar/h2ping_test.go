package sidecar

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/keepalive"
)

// gRPC servers let a client ping them at most once per keepalive
// enforcement MinTime (5 minutes by default in grpc-go and grpc-java)
// while streams are open, and not at all without, before they answer
// GOAWAY ENHANCE_YOUR_CALM "too_many_pings" and close the connection with
// every call on it. ferry's pings on h2c upstream connections must keep to
// that default. Time is scaled here: the origin's MinTime is
// grpcMinTime, and ferry's ping timings shrink by the same factor.
func TestH2CPingsKeepToGRPCKeepalivePolicy(t *testing.T) {
	const grpcDefaultMinTime = 5 * time.Minute
	const grpcMinTime = 300 * time.Millisecond
	scale := func(d time.Duration) time.Duration { return d / (grpcDefaultMinTime / grpcMinTime) }
	// The ping timeout is not what is under test: kept wide, so that a
	// loaded machine does not find the connection dead.
	defer setH2Ping(t, scale(h2PingAfter), max(scale(h2PingTimeout), 2*time.Second))()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pl := &frameLog{}
	o := &grpcOrigin{arrived: make(chan struct{}, 1), proceed: make(chan struct{})}
	srv := grpc.NewServer(grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: grpcMinTime}))
	testgrpc.RegisterTestServiceServer(srv, o)
	go srv.Serve(teeListener{ln, pl})
	t.Cleanup(srv.Stop)

	sc, _ := ferryWithProtocol(t, "h2c", ln.Addr().String())
	conn, err := grpc.NewClient("passthrough:///"+sc.Addr("outbound"),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := testgrpc.NewTestServiceClient(conn)

	// A call the origin answers only after a quiet spell: long enough
	// for several of ferry's pings at the scaled interval.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	type result struct {
		body string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		res, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("barrier")}})
		done <- result{string(res.GetPayload().GetBody()), err}
	}()
	recv(t, o.arrived, 10*time.Second, "the call at the origin")
	const wantPings = 5 // more than grpc's 1 + maxPingStrikes (2) tolerated
	deadline := time.Now().Add(20 * time.Second)
	for {
		pings, ended := pl.pingsEnded()
		if ended > 0 {
			close(o.proceed)
			r := recv(t, done, 10*time.Second, "the call's end")
			t.Fatalf("the origin closed ferry's connection after %d pings during a call quiet for %v: the call ended %q, %v", pings, grpcMinTime*wantPings, r.body, r.err)
		}
		if pings >= wantPings {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the origin got %d pings in 20 s", pings)
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(o.proceed)
	r := recv(t, done, 10*time.Second, "the call's end")
	if r.err != nil || r.body != "echo:barrier" {
		t.Fatalf("a call quiet for %d of ferry's pings: %q, %v", wantPings, r.body, r.err)
	}
	if _, ended := pl.pingsEnded(); ended > 0 {
		t.Fatalf("the origin closed ferry's connection")
	}
}
