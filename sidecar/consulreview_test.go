package sidecar

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/ferrymesh/ferry/discovery/consultest"
)

// raiseIndex registers in again (a change of its meta each time) until
// the service's index is well above what a restarted -dev agent starts
// from, so a restart is seen as Consul's state going backwards.
func raiseIndex(t *testing.T, c *api.Client, service string, in instance) {
	t.Helper()
	host, port, _ := net.SplitHostPort(in.addr)
	p, _ := strconv.Atoi(port)
	for i := range 30 {
		err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
			ID: in.id, Name: service, Address: host, Port: p, Meta: map[string]string{"v": fmt.Sprint(i)},
			Check: &api.AgentServiceCheck{CheckID: "check-" + in.id, TTL: "1h", Status: api.HealthPassing},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// After Consul's state is reset (a -dev agent restarted: it lists no
// instance until agents register them again), the watch in force holds
// the last endpoints. A config reload in that window must not swap in a
// generation whose fresh watch takes the empty answer as the truth: the
// README promises neither an empty answer after a reset nor a reload
// empties routing.
func TestReloadDuringStateResetHoldKeepsEndpoints(t *testing.T) {
	agent := consultest.Start(t)
	c := agent.Client()
	raiseIndex(t, c, "api", startInstance(t, c, "api", "a"))
	text := strings.Replace(consulConfig(agent.HTTPAddr, `telemetry: { access_log: "off" }`),
		"consul: { address: "+agent.HTTPAddr, "consul: { wait_time: 1s, address: "+agent.HTTPAddr, 1)
	sc, url, hc := ferryOnA(t, text)

	agent.Restart() // comes back empty, its index lower
	old := sc.state.Load()
	waitFor(t, "the watch in force to hold its endpoints after the reset", 20*time.Second, func() bool {
		s := old.upstreams["api"].svc.Snapshot()
		return s.Stale && strings.Contains(s.Err, "went backwards")
	})
	if got, fails := seen(hc, url, 5); got["a"] != 5 {
		t.Fatalf("held snapshot not serving: %v %q", got, fails)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := sc.Reload(ctx, mustParse(t, text)); err != nil {
		t.Fatalf("reload: %v", err)
	}
	got, fails := seen(hc, url, 5)
	snap := sc.state.Load().upstreams["api"].svc.Snapshot()
	if got["a"] != 5 {
		t.Fatalf("a reload during the hold after Consul's state reset emptied routing: answers %v, failures %q; snapshot %+v", got, fails, *snap)
	}
	if !snap.Stale || !strings.Contains(snap.Err, "went backwards") {
		t.Fatalf("the reloaded generation's snapshot is not the hold's: %+v", *snap)
	}
	// The instance registers again: the new generation's hold ends.
	registerAt(t, agent.Client(), "api", instance{id: "a", addr: snap.Endpoints[0].Addr})
	waitFor(t, "the hold to end once the instance is listed again", 10*time.Second, func() bool {
		s := sc.state.Load().upstreams["api"].svc.Snapshot()
		return !s.Stale && len(s.Endpoints) == 1
	})
}

// A drain ended at once (a second SIGTERM: EndDrain; or Shutdown given a
// context already over) still takes ferry's instance out of Consul:
// otherwise it stays listed, passing, until its TTL runs out, and callers
// are sent to an instance that is gone.
func TestEndedDrainStillDeregisters(t *testing.T) {
	agent := consultest.Start(t)
	app := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	cfg := mustParse(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
inbound: { listen: 127.0.0.1:0, app: %s }
consul: { address: %s }
register: { name: web, id: web-1, port: 18080, ttl: 1h }
telemetry: { access_log: "off" }
`, app, agent.HTTPAddr))
	sc, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	registered := func() bool {
		s, err := agent.Client().Agent().Services()
		return err == nil && s["web-1"] != nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	sc.EndDrain() // the second signal came first: the drain, when it comes, ends at once
	go func() { done <- sc.Run(ctx) }()
	waitFor(t, "web-1 registered", 10*time.Second, registered)
	cancel()
	recv(t, done, 10*time.Second, "Run to return")
	if registered() {
		t.Fatal("web-1 is still registered in Consul after ferry exited (its drain was ended at once)")
	}
}
