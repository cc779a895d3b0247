package discovery

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/ferrymesh/ferry/discovery/consultest"
	"github.com/ferrymesh/ferry/internal/localnet"
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

// Reloads in a row while the agent is down: each new resolver replaces one
// whose watch never had an answer of its own, and still starts from the
// endpoints it serves (those it inherited, stale as they are, with the
// same last contact), however many reloads come before the agent answers.
// The second resolver's watch handed on nothing (it had learnt nothing
// itself), so the third's service was not ready until the agent came back.
func TestConsulPriorEndpointsHandedOnAcrossReloadsBeforeAnAnswer(t *testing.T) {
	agent := consultest.Start(t)
	registerTTL(t, agent.Client(), "api", "api-1", 9001, api.HealthPassing)
	cfg := ConsulConfig{Address: agent.HTTPAddr, WaitTime: 10 * time.Second}
	reload := func(prior *Consul) *Consul {
		t.Helper()
		c, err := NewConsul(context.Background(), cfg, ConsulOptions{
			Logger:  testLogger(),
			Backoff: JitterBackoff(50*time.Millisecond, 300*time.Millisecond),
			Watch:   map[string]ConsulWatch{"api": {}},
			Prior:   prior,
		})
		if err != nil {
			t.Fatalf("NewConsul: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	first := reload(nil)
	svc, _ := first.Service("api")
	waitSnapshot(t, svc, 10*time.Second, "api resolved", hasAddrs("127.0.0.1:9001"))

	// The agent stays down until the end: no watch after the first gets
	// an answer of its own before its replacement starts.
	agent.Stop()
	held, _ := waitSnapshot(t, svc, 10*time.Second, "stale while the agent is down", func(s *Snapshot) bool { return s.Stale })
	contact := first.Stats()[0].LastContact

	check := func(c *Consul, what string) *Service {
		t.Helper()
		svc, _ := c.Service("api")
		if s := svc.Snapshot(); !s.Ready || !s.Stale || !hasAddrs("127.0.0.1:9001")(s) || !s.Updated.Equal(held.Updated) {
			t.Fatalf("%s, the agent down: %+v; want the first watch's endpoints at once, stale, updated %v", what, *s, held.Updated)
		}
		if st := c.Stats()[0]; !st.LastContact.Equal(contact) || !st.Failing {
			t.Fatalf("%s: last contact %v, failing %t; want the first watch's %v, failing (the snapshot's age goes on)", what, st.LastContact, st.Failing, contact)
		}
		return svc
	}
	second := reload(first)
	first.Close() // as the sidecar retires the generation it replaced
	check(second, "the second watch")
	// The second watch has had no answer of its own, nor even a query
	// failing yet: the third starts from what it inherited.
	third := reload(second)
	second.Close()
	check(third, "the third watch, started before the second had an answer")
	// One whose own queries failed hands on the same.
	waitUntil(t, 10*time.Second, "the third watch's own queries failing", func() bool {
		return third.Stats()[0].Errors > 0
	})
	fourth := reload(third)
	third.Close()
	next := check(fourth, "the fourth watch, started after the third's queries failed")

	// Its own first answer replaces them.
	agent.Restart() // a -dev agent comes back empty
	registerTTL(t, agent.Client(), "api", "api-2", 9002, api.HealthPassing)
	waitSnapshot(t, next, 30*time.Second, "the new instance once the agent is back", func(s *Snapshot) bool {
		return hasAddrs("127.0.0.1:9002")(s) && !s.Stale
	})
}

// A reload's watch that asks Consul another question than the one it
// replaces (another Consul service, tags or datacenter; another agent,
// default datacenter, namespace or partition) does not start from that
// one's endpoints: they are not the answer to its query. It waits for its
// own first answer, not ready meanwhile, whether the watch it replaces
// had answers of its own or only inherited ones.
func TestConsulPriorEndpointsNotInheritedByAChangedWatch(t *testing.T) {
	agent := consultest.Start(t)
	registerTTL(t, agent.Client(), "api", "api-1", 9001, api.HealthPassing, "v1")
	base := ConsulConfig{Address: agent.HTTPAddr, WaitTime: 10 * time.Second}
	start := func(cfg ConsulConfig, spec ConsulWatch, prior *Consul) (*Consul, *Service) {
		t.Helper()
		c, err := NewConsul(context.Background(), cfg, ConsulOptions{
			Logger:  testLogger(),
			Backoff: JitterBackoff(50*time.Millisecond, 300*time.Millisecond),
			Watch:   map[string]ConsulWatch{"api": spec},
			Prior:   prior,
		})
		if err != nil {
			t.Fatalf("NewConsul: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		svc, _ := c.Service("api")
		return c, svc
	}
	first, svc := start(base, ConsulWatch{}, nil)
	waitSnapshot(t, svc, 10*time.Second, "api resolved", hasAddrs("127.0.0.1:9001"))
	agent.Stop() // no watch started from here on gets an answer
	waitSnapshot(t, svc, 10*time.Second, "stale while the agent is down", func(s *Snapshot) bool { return s.Stale })
	// The same watch again inherits (so the cases below would too, but
	// for what they changed), and hands on what it inherited.
	second, same := start(base, ConsulWatch{}, first)
	if s := same.Snapshot(); !s.Ready || !hasAddrs("127.0.0.1:9001")(s) {
		t.Fatalf("the unchanged watch: %+v; want the prior's endpoints", *s)
	}

	ports, err := localnet.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	with := func(change func(*ConsulConfig)) ConsulConfig {
		cfg := base
		change(&cfg)
		return cfg
	}
	for _, tc := range []struct {
		name string
		cfg  ConsulConfig
		spec ConsulWatch
	}{
		{"consul service", base, ConsulWatch{Service: "api-v2"}},
		{"tags", base, ConsulWatch{Tags: []string{"v1"}}},
		{"datacenter", base, ConsulWatch{Datacenter: "dc2"}},
		{"consul.datacenter", with(func(c *ConsulConfig) { c.Datacenter = "dc2" }), ConsulWatch{}},
		{"namespace", with(func(c *ConsulConfig) { c.Namespace = "team-a" }), ConsulWatch{}},
		{"partition", with(func(c *ConsulConfig) { c.Partition = "part-a" }), ConsulWatch{}},
		{"agent", with(func(c *ConsulConfig) { c.Address = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])) }), ConsulWatch{}},
	} {
		for _, prior := range []struct {
			name string
			c    *Consul
		}{{"answered", first}, {"inherited", second}} {
			t.Run(tc.name+"/"+prior.name, func(t *testing.T) {
				c, svc := start(tc.cfg, tc.spec, prior.c)
				defer c.Close()
				if s := svc.Snapshot(); s.Ready || len(s.Endpoints) > 0 {
					t.Fatalf("the changed watch at once: %+v; want not ready, no endpoints", *s)
				}
				waitUntil(t, 10*time.Second, "the changed watch's own query failing", func() bool {
					return c.Stats()[0].Errors > 0
				})
				if s := svc.Snapshot(); s.Ready || len(s.Endpoints) > 0 || s.Err == "" {
					t.Fatalf("after its own query failed: %+v; want not ready, with the reason", *s)
				}
			})
		}
	}
}

// A watch hands on what it inherited until its own first answer: the
// endpoints it serves, the indexes and the last contact of the watch
// before it. A third watch, started while the second has had only a
// failed query, then holds an empty first answer whose index went below
// the first watch's (Consul's state was reset) as the first would have,
// instead of emptying the service. The second handed on nothing: the
// third started not ready, and took the empty answer.
func TestWatchHandsOnWhatItInherited(t *testing.T) {
	f0 := newFakeConsul(scripted{index: 100, entries: []*consulServiceEntry{entry("10.0.0.1", 80, "n", 1)}})
	w0 := f0.watch(NewService("api", "consul"))
	f0.run(t, w0)
	answered := w0.svc.Snapshot()
	if !hasAddrs("10.0.0.1:80")(answered) {
		t.Fatalf("the first watch: %+v", *answered)
	}
	contact := w0.stats.lastContact.Load()

	f1 := newFakeConsul(scripted{err: errors.New("connection refused")})
	w1 := f1.watch(NewService("api", "consul"))
	w1.inherit(w0.handOn())
	f1.run(t, w1) // its one query fails; the next waits until it is stopped
	m := w1.handOn()
	if m == nil {
		t.Fatalf("the second watch, serving %+v, hands on nothing", *w1.svc.Snapshot())
	}
	if !m.last.Ready || !m.last.Stale || !hasAddrs("10.0.0.1:80")(m.last) || !m.last.Updated.Equal(answered.Updated) ||
		m.lastContact != contact || !m.failing || m.seen[""] != 100 {
		t.Fatalf("the second watch hands on %+v (snapshot %+v); want the first's endpoints, stale, updated %v, last contact %d, failing, index 100",
			*m, *m.last, answered.Updated, contact)
	}

	f2 := newFakeConsul(scripted{index: 5})
	w2 := f2.watch(NewService("api", "consul"))
	w2.resetHold = time.Hour
	w2.inherit(m)
	if s := w2.svc.Snapshot(); !s.Ready || !hasAddrs("10.0.0.1:80")(s) {
		t.Fatalf("the third watch before its first answer: %+v", *s)
	}
	f2.run(t, w2)
	if s := w2.svc.Snapshot(); !s.Ready || !s.Stale || !hasAddrs("10.0.0.1:80")(s) || !strings.Contains(s.Err, "went backwards") {
		t.Fatalf("the third watch after an empty first answer at index 5: %+v; want the endpoints held, stale", *s)
	}
}
