package sidecar

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ferrymesh/ferry/internal/localnet/localnettest"
)

// Run whose Start fails (a listener's port is taken) returns the error
// with nothing New started left running: the Consul watch of a routed
// service (here failing against an address that refuses, in its backoff),
// the registration's Consul client, telemetry. It returned at once and
// left the watch querying Consul for as long as the process lived.
func TestRunFailedStartLeavesNothingRunning(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	consul := localnettest.RefusedAddr(t)
	cfg := mustParse(t, `
admin: { listen: 127.0.0.1:0 }
outbound:
  listen: `+held.Addr().String()+`
  routes: [ { service: api } ]
inbound: { listen: 127.0.0.1:0, app: 127.0.0.1:1 }
register: { name: web, port: 15006 }
consul: { address: `+consul+` }
services:
  api: {}
telemetry: { access_log: "off" }
`)
	sc, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// The watch is running: it has asked Consul (and failed) at least once.
	waitFor(t, "the Consul watch of api to send its first query", 10*time.Second, func() bool {
		st := sc.state.Load().consul.Stats()
		return len(st) == 1 && st[0].Queries > 0
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = sc.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "outbound.listen") || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("Run with outbound's port taken: %v; want the outbound.listen error", err)
	}
	if err := goleak.Find(leaks); err != nil {
		t.Fatalf("goroutines left after Run's Start failed:\n%v", err)
	}
	// Shutdown after it is harmless, and Start does not begin again.
	if err := sc.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown after the failed Run: %v", err)
	}
	if err := sc.Start(); err == nil {
		t.Fatalf("Start after the failed Run succeeded (outbound at %q)", sc.Addr("outbound"))
	}
}

// Run with a ctx that ended before it began (ferry asked to stop while it
// was starting) starts nothing: no listener, no registration, nothing
// New started left running, and nil.
func TestRunWithEndedContextStartsNothing(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	consul := localnettest.RefusedAddr(t)
	cfg := mustParse(t, `
admin: { listen: 127.0.0.1:0 }
outbound:
  listen: 127.0.0.1:0
  routes: [ { service: api } ]
consul: { address: `+consul+` }
services:
  api: {}
telemetry: { access_log: "off" }
`)
	sc, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := sc.Run(ctx); err != nil {
		t.Fatalf("Run with an ended ctx: %v; want nil", err)
	}
	if a := sc.Addr("outbound") + sc.Addr("admin"); a != "" {
		t.Fatalf("Run with an ended ctx listened at %q", a)
	}
	if err := goleak.Find(leaks); err != nil {
		t.Fatalf("goroutines left after Run with an ended ctx:\n%v", err)
	}
}
