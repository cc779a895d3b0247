package discovery

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/discovery/consultest"
	"github.com/hashicorp/consul/api"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testLogger writes to the test log when -v, else nowhere.
func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// newTestConsul is a resolver on agent with quick retries, closed at the
// end of the test.
func newTestConsul(t *testing.T, agent *consultest.Agent, cfg ConsulConfig) *Consul {
	t.Helper()
	cfg.Address = agent.HTTPAddr
	if cfg.WaitTime == 0 {
		cfg.WaitTime = 10 * time.Second
	}
	c, err := NewConsul(context.Background(), cfg, ConsulOptions{
		Logger:  testLogger(),
		Backoff: JitterBackoff(50*time.Millisecond, 300*time.Millisecond),
	})
	if err != nil {
		t.Fatalf("NewConsul: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitSnapshot waits until cond holds for svc's snapshot, at most d, and
// returns that snapshot and how long it took.
func waitSnapshot(t testing.TB, svc *Service, d time.Duration, what string, cond func(*Snapshot) bool) (*Snapshot, time.Duration) {
	t.Helper()
	start := time.Now()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		changed := svc.Changed()
		s := svc.Snapshot()
		if cond(s) {
			return s, time.Since(start)
		}
		select {
		case <-changed:
		case <-timer.C:
			t.Fatalf("%s: not within %s; snapshot %+v", what, d, *svc.Snapshot())
		}
	}
}

// waitUntil polls cond every 20ms for at most d.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, not synchronising
	}
}

// waitQueriesUnderWay waits for two more of the watch of service's queries
// to be answered, none failing. Consul checks a streaming subscription's
// token when it subscribes and closes the token's subscriptions when the
// token or its policy changes: a subscription made in between lives on
// with what the token could read before. A test that changes a token's
// rights waits first for the watch's blocking queries (the agent's
// subscription for them) to be under way.
func waitQueriesUnderWay(t *testing.T, c *Consul, service string) {
	t.Helper()
	queries := func() (n uint64, failing bool) {
		for _, st := range c.Stats() {
			if st.Service == service {
				return st.Queries, st.Failing
			}
		}
		t.Fatalf("no stats for %s: %+v", service, c.Stats())
		return 0, false
	}
	q0, _ := queries()
	waitUntil(t, 10*time.Second, "two more blocking queries of "+service, func() bool {
		n, failing := queries()
		return n >= q0+3 && !failing
	})
}

// registerTTL registers an instance on the agent with a TTL check in the
// given status.
func registerTTL(t testing.TB, c *api.Client, name, id string, port int, status string, tags ...string) {
	t.Helper()
	err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID:      id,
		Name:    name,
		Address: "127.0.0.1",
		Port:    port,
		Tags:    tags,
		Check:   &api.AgentServiceCheck{CheckID: "ttl:" + id, TTL: "10m", Status: status},
	})
	if err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
}

func hasAddrs(want ...string) func(*Snapshot) bool {
	return func(s *Snapshot) bool {
		if !s.Ready || len(s.Endpoints) != len(want) {
			return false
		}
		for i, e := range s.Endpoints {
			if e.Addr != want[i] {
				return false
			}
		}
		return true
	}
}

// runRegistrar runs a registrar for reg, always ready, until the test ends;
// Run must then return context.Canceled.
// runReadyRegistrar runs a registrar for reg until the test ends, or
// until Deregister; it is ready while notReady holds nil, and not ready
// with the message it holds otherwise (starting, unless it is ""). runDone
// gets what Run returned.
func runReadyRegistrar(t *testing.T, c *Consul, reg Registration, starting string) (r *Registrar, notReady *atomic.Pointer[string], runDone <-chan error) {
	t.Helper()
	notReady = new(atomic.Pointer[string])
	if starting != "" {
		notReady.Store(&starting)
	}
	r, err := c.NewRegistrar(reg, func() error {
		if s := notReady.Load(); s != nil {
			return errors.New(*s)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ended := make(chan struct{})
	go func() {
		done <- r.Run(ctx)
		close(ended)
	}()
	t.Cleanup(func() {
		cancel()
		<-ended
	})
	return r, notReady, done
}

func runRegistrar(t *testing.T, c *Consul, reg Registration) *Registrar {
	t.Helper()
	r, err := c.NewRegistrar(reg, func() error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-runDone; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v", err)
		}
	})
	return r
}
