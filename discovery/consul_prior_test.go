package discovery

import (
	"context"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/ferrymesh/ferry/discovery/consultest"
)

// A resolver that replaces another (a config reload) while the agent is
// down starts each shared watch from the endpoints the one it replaces
// serves: its services are ready at once, stale, with the same endpoints
// and the same last contact, so the reload does not wait for an agent
// that may stay away for long. They were not ready until the agent
// answered: every reload during an outage was refused as 'services not
// resolved', even one that changed nothing but a timeout.
func TestConsulPriorEndpointsServeAtOnceWhileTheAgentIsDown(t *testing.T) {
	agent := consultest.Start(t)
	registerTTL(t, agent.Client(), "api", "api-1", 9001, api.HealthPassing)
	cfg := ConsulConfig{Address: agent.HTTPAddr, WaitTime: 10 * time.Second}
	opts := func(prior *Consul) ConsulOptions {
		return ConsulOptions{
			Logger:  testLogger(),
			Backoff: JitterBackoff(50*time.Millisecond, 300*time.Millisecond),
			Watch:   map[string]ConsulWatch{"api": {}},
			Prior:   prior,
		}
	}
	first, err := NewConsul(context.Background(), cfg, opts(nil))
	if err != nil {
		t.Fatalf("NewConsul: %v", err)
	}
	t.Cleanup(func() { first.Close() })
	svc, _ := first.Service("api")
	waitSnapshot(t, svc, 10*time.Second, "api resolved", hasAddrs("127.0.0.1:9001"))

	agent.Stop()
	held, _ := waitSnapshot(t, svc, 10*time.Second, "stale while the agent is down", func(s *Snapshot) bool { return s.Stale })
	contact := first.Stats()[0].LastContact

	second, err := NewConsul(context.Background(), cfg, opts(first))
	if err != nil {
		t.Fatalf("NewConsul with a prior: %v", err)
	}
	t.Cleanup(func() { second.Close() })
	next, _ := second.Service("api")
	s := next.Snapshot()
	if !s.Ready || !s.Stale || !hasAddrs("127.0.0.1:9001")(s) || s.Updated != held.Updated {
		t.Fatalf("the new watch with the agent down: %+v; want the prior's endpoints at once, stale, updated %v", *s, held.Updated)
	}
	st := second.Stats()[0]
	if !st.LastContact.Equal(contact) {
		t.Fatalf("the new watch's last contact %v, want the prior's %v (the snapshot's age goes on)", st.LastContact, contact)
	}
	// Its own failed queries keep the endpoints, stale.
	waitUntil(t, 10*time.Second, "the new watch's own queries failing", func() bool {
		return second.Stats()[0].Errors > 0
	})
	if s := next.Snapshot(); !s.Ready || !s.Stale || !hasAddrs("127.0.0.1:9001")(s) {
		t.Fatalf("after the new watch's failed queries: %+v", *s)
	}

	agent.Restart() // a -dev agent comes back empty
	registerTTL(t, agent.Client(), "api", "api-2", 9002, api.HealthPassing)
	waitSnapshot(t, next, 30*time.Second, "the new instance once the agent is back", func(s *Snapshot) bool {
		return hasAddrs("127.0.0.1:9002")(s) && !s.Stale
	})
}
