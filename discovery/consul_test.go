package discovery

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/discovery/consultest"
	"github.com/hashicorp/consul/api"

	"github.com/ferrymesh/ferry/internal/localnet/localnettest"
)

// propagation is how fast a Consul change must reach the snapshot.
const propagation = time.Second

func TestConsulFollowsInstances(t *testing.T) {
	agent := consultest.Start(t)
	cc := agent.Client()
	registerTTL(t, cc, "api", "api-1", 9001, api.HealthPassing)
	registerTTL(t, cc, "api", "api-2", 9002, api.HealthPassing)

	c := newTestConsul(t, agent, ConsulConfig{})
	svc, err := c.Service("api")
	if err != nil {
		t.Fatal(err)
	}
	if svc.Source() != "consul" || svc.Name() != "api" {
		t.Fatalf("service %q from %q", svc.Name(), svc.Source())
	}
	c.mu.Lock()
	pace := c.watches["api"].w.pace
	c.mu.Unlock()
	if pace != minQueryInterval {
		t.Fatalf("the watch paces its queries %v apart, want %v", pace, minQueryInterval)
	}
	s, _ := waitSnapshot(t, svc, 5*time.Second, "two instances", hasAddrs("127.0.0.1:9001", "127.0.0.1:9002"))
	if s.Stale || s.Err != "" || s.Index == 0 {
		t.Fatalf("first snapshot %+v", s)
	}

	registerTTL(t, cc, "api", "api-3", 9003, api.HealthPassing)
	_, took := waitSnapshot(t, svc, propagation, "third instance", hasAddrs("127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"))
	t.Logf("third instance seen after %s", took)

	if err := cc.Agent().UpdateTTL("ttl:api-2", "failing on purpose", api.HealthCritical); err != nil {
		t.Fatal(err)
	}
	_, took = waitSnapshot(t, svc, propagation, "failed instance gone", hasAddrs("127.0.0.1:9001", "127.0.0.1:9003"))
	t.Logf("failed instance gone after %s", took)

	for _, id := range []string{"api-1", "api-2", "api-3"} {
		if err := cc.Agent().ServiceDeregister(id); err != nil {
			t.Fatal(err)
		}
	}
	s, _ = waitSnapshot(t, svc, propagation, "empty", func(s *Snapshot) bool { return s.Ready && len(s.Endpoints) == 0 })
	if s.Stale || s.Err != "" {
		t.Fatalf("empty snapshot %+v", s)
	}

	st := c.Stats()
	if len(st) != 1 || st[0].Name != "api" || st[0].Queries < 4 || st[0].Errors != 0 || st[0].LastIndex == 0 || st[0].LastContact.IsZero() {
		t.Fatalf("stats %+v", st)
	}
}

func TestConsulTagFilter(t *testing.T) {
	agent := consultest.Start(t)
	cc := agent.Client()
	registerTTL(t, cc, "api", "api-v1", 9001, api.HealthPassing, "v1")
	registerTTL(t, cc, "api", "api-v2", 9002, api.HealthPassing, "v2", "canary")
	registerTTL(t, cc, "api", "api-v2b", 9003, api.HealthPassing, "v2")

	c := newTestConsul(t, agent, ConsulConfig{})
	v2, err := c.Watch("api-v2", ConsulWatch{Service: "api", Tags: []string{"v2"}})
	if err != nil {
		t.Fatal(err)
	}
	canary, err := c.Watch("api-canary", ConsulWatch{Service: "api", Tags: []string{"v2", "canary"}})
	if err != nil {
		t.Fatal(err)
	}
	all, err := c.Service("api")
	if err != nil {
		t.Fatal(err)
	}
	s, _ := waitSnapshot(t, v2, 5*time.Second, "v2 only", hasAddrs("127.0.0.1:9002", "127.0.0.1:9003"))
	if got := strings.Join(s.Endpoints[0].Tags, ","); got != "v2,canary" {
		t.Fatalf("tags %q", got)
	}
	waitSnapshot(t, canary, 5*time.Second, "v2+canary only", hasAddrs("127.0.0.1:9002"))
	waitSnapshot(t, all, 5*time.Second, "all", hasAddrs("127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"))

	if _, err := c.Watch("api-v2", ConsulWatch{Service: "api", Tags: []string{"v1"}}); err == nil {
		t.Fatal("re-watching a name with other filters succeeded")
	}
	if again, err := c.Service("api-v2"); err != nil || again != v2 {
		t.Fatalf("Service of a watched name = %p, %v; want %p", again, err, v2)
	}
}

func TestConsulNodeAddressAndWeights(t *testing.T) {
	agent := consultest.Start(t)
	cc := agent.Client()
	// An external node: its service has no address of its own.
	_, err := cc.Catalog().Register(&api.CatalogRegistration{
		Node:    "ext-node-name",
		Address: "127.0.0.42",
		Service: &api.AgentService{ID: "db-1", Service: "db", Port: 5432, Weights: api.AgentWeights{Passing: 5, Warning: 1}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = cc.Catalog().Register(&api.CatalogRegistration{
		Node:    "ext-node-name",
		Address: "127.0.0.42",
		Service: &api.AgentService{ID: "db-2", Service: "db", Address: "127.0.0.43", Port: 5433},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := newTestConsul(t, agent, ConsulConfig{})
	svc, _ := c.Service("db")
	s, _ := waitSnapshot(t, svc, 5*time.Second, "db", hasAddrs("127.0.0.42:5432", "127.0.0.43:5433"))
	if s.Endpoints[0].Weight != 5 || s.Endpoints[1].Weight != 1 {
		t.Fatalf("weights %+v", s.Endpoints)
	}
	for _, e := range s.Endpoints {
		if strings.Contains(e.Addr, "ext-node-name") {
			t.Fatalf("node name used as address: %+v", e)
		}
	}
}

func TestConsulOutageKeepsSnapshotAndResumes(t *testing.T) {
	agent := consultest.Start(t)
	cc := agent.Client()
	registerTTL(t, cc, "api", "api-1", 9001, api.HealthPassing)
	registerTTL(t, cc, "api", "api-2", 9002, api.HealthPassing)

	c := newTestConsul(t, agent, ConsulConfig{})
	svc, _ := c.Service("api")
	before, _ := waitSnapshot(t, svc, 5*time.Second, "two instances", hasAddrs("127.0.0.1:9001", "127.0.0.1:9002"))

	reg := runRegistrar(t, c, Registration{Name: "self", ID: "self-1", Address: "127.0.0.1", Port: 7000, TTL: 3 * time.Second})
	self, _ := c.Service("self")
	waitSnapshot(t, self, 5*time.Second, "self registered", hasAddrs("127.0.0.1:7000"))
	waitUntil(t, 5*time.Second, "first registration complete", func() bool { return reg.Stats().Registrations == 1 })

	agent.Stop()
	s, _ := waitSnapshot(t, svc, 5*time.Second, "stale", func(s *Snapshot) bool { return s.Stale })
	if !s.Ready || !hasAddrs("127.0.0.1:9001", "127.0.0.1:9002")(s) || s.Index != before.Index || s.Err == "" {
		t.Fatalf("during the outage: %+v", s)
	}
	t.Logf("outage error: %s", s.Err)
	if st := c.Stats(); st[0].Errors == 0 || st[0].LastError == "" {
		t.Fatalf("stats during outage %+v", st)
	}

	agent.Restart() // a -dev agent comes back empty, with a lower index
	// The watch resumes with the instances registered on the new agent
	// (until one is, the last endpoints stay: TestConsulStateResetHolds).
	registerTTL(t, agent.Client(), "api", "api-9", 9009, api.HealthPassing)
	s, _ = waitSnapshot(t, svc, propagation, "new registration after restart", func(s *Snapshot) bool {
		return !s.Stale && hasAddrs("127.0.0.1:9009")(s)
	})
	if s.Err != "" {
		t.Fatalf("after resume: %+v", s)
	}
	// The registrar notices the agent forgot it and registers again.
	waitSnapshot(t, self, 5*time.Second, "self registered again", func(s *Snapshot) bool {
		return !s.Stale && hasAddrs("127.0.0.1:7000")(s)
	})
	waitUntil(t, 5*time.Second, "registrar counted the second registration", func() bool {
		return reg.Stats().Registrations >= 2
	})
	if st := reg.Stats(); st.Status != api.HealthPassing || st.Errors == 0 {
		t.Fatalf("registrar stats %+v", st)
	}
}

func TestRegistrarReadinessAndDeregister(t *testing.T) {
	agent := consultest.Start(t)
	c := newTestConsul(t, agent, ConsulConfig{})
	var notReady = make(chan struct{})
	readiness := func() error {
		select {
		case <-notReady:
			return errors.New("draining")
		default:
			return nil
		}
	}
	reg, err := c.NewRegistrar(Registration{
		Name: "self", ID: "self-1", Port: 7000, Tags: []string{"ferry"}, Meta: map[string]string{"version": "1"},
		TTL: 30 * time.Second, DeregisterCriticalServiceAfter: 2 * time.Minute,
	}, readiness)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runDone := make(chan error, 1)
	go func() { runDone <- reg.Run(ctx) }()

	self, _ := c.Service("self")
	// No address given: the agent's node address (127.0.0.1) is used.
	waitSnapshot(t, self, 5*time.Second, "self passing", hasAddrs("127.0.0.1:7000"))
	cc := agent.Client()
	checks, err := cc.Agent().Checks()
	if err != nil {
		t.Fatal(err)
	}
	chk := checks[reg.CheckID()]
	if chk == nil || chk.Status != api.HealthPassing || chk.ServiceID != "self-1" {
		t.Fatalf("check %+v", chk)
	}
	as, _, err := cc.Agent().Service("self-1", nil)
	if err != nil || as.Meta["version"] != "1" || len(as.Tags) != 1 || as.Tags[0] != "ferry" {
		t.Fatalf("agent service %+v, %v", as, err)
	}

	close(notReady)
	reg.Refresh() // the TTL is 30s: only Refresh can make this fast
	waitSnapshot(t, self, propagation, "not ready leaves the passing set", func(s *Snapshot) bool { return s.Ready && len(s.Endpoints) == 0 })
	checks, _ = cc.Agent().Checks()
	if chk := checks[reg.CheckID()]; chk == nil || chk.Status != api.HealthCritical || !strings.Contains(chk.Output, "draining") {
		t.Fatalf("check after not ready: %+v", chk)
	}

	if err := reg.Deregister(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-runDone; err != nil {
		t.Fatalf("Run after Deregister returned %v", err)
	}
	svcs, err := cc.Agent().Services()
	if err != nil || svcs["self-1"] != nil {
		t.Fatalf("still registered after Deregister: %v %v", svcs, err)
	}
	if err := reg.Run(context.Background()); err != nil {
		t.Fatalf("Run after Deregister = %v, want nil at once", err)
	}
	if err := reg.Deregister(context.Background()); err != nil {
		t.Fatalf("second Deregister: %v", err)
	}
}

func TestConsulNotReadyWhileUnreachable(t *testing.T) {
	const token = "s3cret-token-0123"
	// A port nothing listens on, held for the test's life.
	addr := localnettest.RefusedAddr(t)
	c, err := NewConsul(context.Background(), ConsulConfig{Address: addr, Token: token, WaitTime: time.Second},
		ConsulOptions{Logger: testLogger(), Backoff: JitterBackoff(20*time.Millisecond, 50*time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	svc, _ := c.Service("api")
	s, _ := waitSnapshot(t, svc, 5*time.Second, "reason", func(s *Snapshot) bool { return s.Err != "" })
	if s.Ready || s.Stale || !strings.Contains(s.Err, "connect: connection refused") || strings.Contains(s.Err, token) {
		t.Fatalf("unreachable Consul: %+v", s)
	}
}

func TestConsulErrorsNeverCarryToken(t *testing.T) {
	const token = "s3cret-token-4567"
	// A Consul that fails every query and echoes the request's token in
	// its error body, as a misbehaving proxy in front of Consul might.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no leader; you sent token "+r.Header.Get("X-Consul-Token"), http.StatusInternalServerError)
	}))
	defer srv.Close()
	c, err := NewConsul(context.Background(), ConsulConfig{Address: srv.Listener.Addr().String(), Token: token},
		ConsulOptions{Logger: testLogger(), Backoff: JitterBackoff(20*time.Millisecond, 50*time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	svc, _ := c.Service("api")
	s, _ := waitSnapshot(t, svc, 5*time.Second, "error", func(s *Snapshot) bool { return s.Err != "" })
	if !strings.Contains(s.Err, "you sent token "+redacted) || strings.Contains(s.Err, token) {
		t.Fatalf("snapshot error %q", s.Err)
	}
	if st := c.Stats(); strings.Contains(st[0].LastError, token) {
		t.Fatalf("stats error %q", st[0].LastError)
	}
	reg, err := c.NewRegistrar(Registration{Name: "self", Port: 7000}, func() error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Deregister(context.Background()); err == nil || strings.Contains(err.Error(), token) || !strings.Contains(err.Error(), redacted) {
		t.Fatalf("deregister error %v", err)
	}
}

func TestConsulCloseStopsWatches(t *testing.T) {
	agent := consultest.Start(t)
	c := newTestConsul(t, agent, ConsulConfig{WaitTime: 5 * time.Minute})
	for _, name := range []string{"a", "b", "c"} {
		if _, err := c.Service(name); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, 5*time.Second, "all watches blocking", func() bool {
		for _, st := range c.Stats() {
			if st.Queries < 2 {
				return false
			}
		}
		return true
	})
	// Close must interrupt three 5-minute blocking queries at once; goleak
	// in TestMain checks no goroutine is left.
	start := time.Now()
	c.Close()
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Close took %s", d)
	}
	if _, err := c.Service("d"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Service after Close: %v", err)
	}
}

func TestConsulWatchListStartsEagerly(t *testing.T) {
	agent := consultest.Start(t)
	registerTTL(t, agent.Client(), "api", "api-1", 9001, api.HealthPassing, "v2")
	c, err := NewConsul(context.Background(), ConsulConfig{Address: agent.HTTPAddr}, ConsulOptions{
		Logger: testLogger(),
		Watch:  map[string]ConsulWatch{"backend": {Service: "api", Tags: []string{"v2"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Nobody asked for "backend" yet, but its watch already answered.
	waitUntil(t, 5*time.Second, "eager watch answered", func() bool {
		st := c.Stats()
		return len(st) == 1 && st[0].Name == "backend" && st[0].Service == "api" && st[0].LastIndex != 0
	})
	svc, err := c.Service("backend")
	if err != nil {
		t.Fatal(err)
	}
	// The watch records the answer's index just before it publishes the
	// endpoints: they may take a moment more.
	waitSnapshot(t, svc, 5*time.Second, "the eager watch's endpoints", hasAddrs("127.0.0.1:9001"))

	_, err = NewConsul(context.Background(), ConsulConfig{Address: agent.HTTPAddr}, ConsulOptions{
		Watch: map[string]ConsulWatch{"bad": {Service: "a/b"}},
	})
	if err == nil || !strings.Contains(err.Error(), `service "bad"`) {
		t.Fatalf("bad watch list: %v", err)
	}
	if _, err := NewConsul(context.Background(), ConsulConfig{WaitTime: -time.Second}, ConsulOptions{}); err == nil ||
		!strings.HasPrefix(err.Error(), "consul.wait_time: ") {
		t.Fatalf("bad config: %v", err)
	}
}

// An agent that hangs (its process stopped: connections are accepted, no
// query is ever answered) is an outage like any other: a blocking query
// gets its wait plus Consul's jitter and some slack, then counts as failed,
// so the last endpoints are served marked stale and the watch retries; it
// resumes by itself once the agent answers again.
func TestConsulHungAgentMarksStaleAndResumes(t *testing.T) {
	agent := consultest.Start(t)
	cc := agent.Client()
	registerTTL(t, cc, "api", "api-1", 9001, api.HealthPassing)
	c := newTestConsul(t, agent, ConsulConfig{WaitTime: time.Second})
	svc, _ := c.Service("api")
	waitSnapshot(t, svc, 5*time.Second, "one instance", hasAddrs("127.0.0.1:9001"))

	agent.Pause()
	paused := time.Now()
	s, _ := waitSnapshot(t, svc, 15*time.Second, "stale while the agent hangs", func(s *Snapshot) bool { return s.Stale })
	t.Logf("stale %v after the agent hung: %s", time.Since(paused).Round(time.Millisecond), s.Err)
	if !hasAddrs("127.0.0.1:9001")(s) || s.Err == "" {
		t.Fatalf("while the agent hangs: %+v", s)
	}
	if st := c.Stats(); st[0].Errors == 0 {
		t.Fatalf("no error counted while the agent hangs: %+v", st)
	}
	agent.Resume()
	s, _ = waitSnapshot(t, svc, 15*time.Second, "resumed", func(s *Snapshot) bool { return s.Ready && !s.Stale })
	if s.Err != "" || !hasAddrs("127.0.0.1:9001")(s) {
		t.Fatalf("after the agent answered again: %+v", s)
	}
}

// A token that loses the right to read a service (a policy edited, a role
// unlinked) gets Consul's answer with every instance filtered out: an empty
// list marked X-Consul-Results-Filtered-By-ACLs, not an error. That is no
// news about the service: the last endpoints stay, marked stale with a
// reason, until the token can read it again.
func TestConsulACLFilteredAnswerKeepsEndpoints(t *testing.T) {
	agent := consultest.StartACL(t)
	registerTTL(t, agent.Client(), "api", "api-1", 9001, api.HealthPassing)
	const canRead = `service "api" { policy = "read" }
node_prefix "" { policy = "read" }`
	token, policy := agent.CreateToken(canRead)
	c := newTestConsul(t, agent, ConsulConfig{Token: token, WaitTime: 500 * time.Millisecond})
	svc, _ := c.Service("api")
	waitSnapshot(t, svc, 10*time.Second, "one instance", hasAddrs("127.0.0.1:9001"))

	waitQueriesUnderWay(t, c, "api")
	agent.SetRules(policy, `node_prefix "" { policy = "read" }`)
	// A change to the service's instances wakes the watch's blocking
	// query (a policy change alone does not).
	registerTTL(t, agent.Client(), "api", "api-2", 9002, api.HealthPassing)
	s, _ := waitSnapshot(t, svc, 10*time.Second, "stale once the token may not read the service", func(s *Snapshot) bool {
		return s.Stale || len(s.Endpoints) == 0
	})
	// The kept endpoints are the last ones read: api-1, and api-2 too when
	// the query that api-2's registration woke was answered under the old
	// rules (a clean-clone CI run saw that), the filtered answer coming only
	// on the query after it.
	if !(hasAddrs("127.0.0.1:9001")(s) || hasAddrs("127.0.0.1:9001", "127.0.0.1:9002")(s)) || !strings.Contains(s.Err, "ACL") {
		t.Fatalf("after the token lost service:read: %+v", s)
	}

	agent.SetRules(policy, canRead)
	s, _ = waitSnapshot(t, svc, 10*time.Second, "fresh again", func(s *Snapshot) bool { return s.Ready && !s.Stale })
	if s.Err != "" || !hasAddrs("127.0.0.1:9001", "127.0.0.1:9002")(s) {
		t.Fatalf("after the token could read again: %+v", s)
	}
}

// When Consul's state is reset (its index goes backwards: servers that lost
// their data, a restored snapshot), it lists no instance until their agents
// register them again. Such an empty answer does not empty a service: its
// last endpoints stay, marked stale, until an instance is listed again or
// indexResetHold passes.
func TestConsulStateResetHolds(t *testing.T) {
	agent := consultest.Start(t)
	raise := func(cc *api.Client) {
		// Enough writes to the service that the restarted agent's index
		// starts below it.
		for i := range 30 {
			registerTTL(t, cc, "api", "api-1", 9001, api.HealthPassing, fmt.Sprintf("v%d", i))
		}
	}
	raise(agent.Client())
	c := newTestConsul(t, agent, ConsulConfig{WaitTime: 500 * time.Millisecond})
	svc, _ := c.Service("api")
	before, _ := waitSnapshot(t, svc, 5*time.Second, "one instance", hasAddrs("127.0.0.1:9001"))

	agent.Restart() // a -dev agent comes back empty, with a lower index
	s, _ := waitSnapshot(t, svc, 10*time.Second, "held after the reset", func(s *Snapshot) bool {
		return s.Stale && strings.Contains(s.Err, "went backwards")
	})
	if !hasAddrs("127.0.0.1:9001")(s) {
		t.Fatalf("held snapshot %+v", s)
	}
	if st := c.Stats(); st[0].LastIndex >= before.Index {
		t.Fatalf("index after the restart %d, before %d: the reset was not seen as one", st[0].LastIndex, before.Index)
	}
	registerTTL(t, agent.Client(), "api", "api-2", 9002, api.HealthPassing)
	s, _ = waitSnapshot(t, svc, 10*time.Second, "the instance registered again", func(s *Snapshot) bool {
		return !s.Stale && hasAddrs("127.0.0.1:9002")(s)
	})
	if s.Err != "" {
		t.Fatalf("after an instance came back: %+v", s)
	}

	// A service that stays empty past the hold is empty.
	defer func(d time.Duration) { indexResetHold = d }(indexResetHold)
	indexResetHold = time.Second
	c = newTestConsul(t, agent, ConsulConfig{WaitTime: 500 * time.Millisecond})
	svc, _ = c.Service("api")
	waitSnapshot(t, svc, 5*time.Second, "a watch with a short hold", hasAddrs("127.0.0.1:9002"))
	raise(agent.Client())
	// A reset is an index below one the watch saw: the watch must have
	// seen the raised index before the agent goes. (When the agent began
	// to stop first, the watch's next query no longer blocks and may not
	// reach the stopping agent: it would only ever see the new one's.)
	_, raised, err := agent.Client().Health().Service("api", "", true, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "the watch at the raised index", func() bool { return c.Stats()[0].LastIndex >= raised.LastIndex })
	agent.Restart()
	waitSnapshot(t, svc, 10*time.Second, "held after the second reset", func(s *Snapshot) bool { return s.Stale })
	s, _ = waitSnapshot(t, svc, 10*time.Second, "empty after the hold", func(s *Snapshot) bool { return s.Ready && len(s.Endpoints) == 0 })
	if s.Stale || s.Err != "" {
		t.Fatalf("after the hold: %+v", s)
	}
}

// A state reset is seen when the first answer after a failure comes from
// the other query backend than the last answers before it. A watch's first
// answer and the first after a failure come from Consul's plain backend
// (a query that does not block), its blocking queries from the streaming
// one, so the plain backend's last index can be far older than the
// streaming one's. Here the restarted agent's first answer is above the
// plain backend's old index and below the streaming one's: compared only
// with the plain backend's, it emptied the service.
func TestConsulStateResetSeenAcrossBackends(t *testing.T) {
	agent := consultest.Start(t)
	registerTTL(t, agent.Client(), "api", "api-1", 9001, api.HealthPassing)

	// While armed, the watch's backoff after a failure waits for open:
	// the test decides when the watch first asks the restarted agent.
	var armed atomic.Bool
	open := make(chan struct{})
	var opened sync.Once
	openGate := func() { opened.Do(func() { close(open) }) }
	c, err := NewConsul(context.Background(), ConsulConfig{Address: agent.HTTPAddr, WaitTime: 500 * time.Millisecond}, ConsulOptions{
		Logger: testLogger(),
		Backoff: func(int) time.Duration {
			if armed.Load() {
				<-open
			}
			return 50 * time.Millisecond
		},
	})
	if err != nil {
		t.Fatalf("NewConsul: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	t.Cleanup(openGate) // runs before Close
	svc, _ := c.Service("api")
	first, _ := waitSnapshot(t, svc, 5*time.Second, "one instance", hasAddrs("127.0.0.1:9001"))
	plainIndex := first.Index // the first answer is the plain backend's

	// Blocking queries (the streaming backend) follow the index up.
	for i := range 40 {
		registerTTL(t, agent.Client(), "api", "api-1", 9001, api.HealthPassing, fmt.Sprintf("v%d", i))
	}
	_, meta, err := agent.Client().Health().Service("api", "", true, nil)
	if err != nil {
		t.Fatalf("health: %v", err)
	}
	streamingIndex := meta.LastIndex
	waitUntil(t, 10*time.Second, "the watch at the last write's index", func() bool {
		return c.Stats()[0].LastIndex >= streamingIndex
	})

	armed.Store(true)
	agent.Stop()
	waitSnapshot(t, svc, 10*time.Second, "stale while the agent is down", func(s *Snapshot) bool { return s.Stale })
	agent.Restart() // a -dev agent comes back empty, its index starting over

	// Writes to another service take the new state's index above the
	// plain backend's old one, still below the streaming backend's.
	var index uint64
	for i := 0; index <= plainIndex; i++ {
		if i == 40 {
			t.Fatalf("restarted agent's index %d never went above %d", index, plainIndex)
		}
		registerTTL(t, agent.Client(), "other", "other-1", 9100, api.HealthPassing, fmt.Sprintf("v%d", i))
		_, meta, err := agent.Client().Health().Service("api", "", true, nil)
		if err != nil {
			t.Fatalf("health after the restart: %v", err)
		}
		index = meta.LastIndex
	}
	if index >= streamingIndex {
		t.Fatalf("restarted agent's index %d, want below the streaming backend's %d (plain %d)", index, streamingIndex, plainIndex)
	}
	t.Logf("indexes: plain %d, streaming %d, after the reset %d", plainIndex, streamingIndex, index)
	openGate()

	s, _ := waitSnapshot(t, svc, 10*time.Second, "an answer from the restarted agent", func(s *Snapshot) bool {
		return s.Ready && (len(s.Endpoints) == 0 || strings.Contains(s.Err, "went backwards"))
	})
	if !s.Stale || !hasAddrs("127.0.0.1:9001")(s) {
		t.Fatalf("after the reset: %+v; want the last endpoints held, stale", s)
	}
}
