package sidecar

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/ferrymesh/ferry/discovery/consultest"
	"github.com/ferrymesh/ferry/internal/localnet/localnettest"
)

// These tests run a real `consul agent -dev` and send traffic through a real
// ferry whose service has no static endpoints.

// instance is an origin registered in Consul under a TTL check the test
// turns passing or critical.
type instance struct {
	id, addr string
}

func startInstance(t *testing.T, c *api.Client, service, id string, tags ...string) instance {
	t.Helper()
	addr := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, id) }))
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: id, Name: service, Address: host, Port: p, Tags: tags,
		Check: &api.AgentServiceCheck{CheckID: "check-" + id, TTL: "1h", Status: api.HealthPassing},
	})
	if err != nil {
		t.Fatal(err)
	}
	return instance{id: id, addr: addr}
}

func setHealth(t *testing.T, c *api.Client, id, status string) {
	t.Helper()
	if err := c.Agent().UpdateTTL("check-"+id, "set by test", status); err != nil {
		t.Fatal(err)
	}
}

// seen sends n requests and returns which instances answered, and any
// failure bodies.
func seen(c *http.Client, url string, n int) (map[string]int, []string) {
	got := map[string]int{}
	var fails []string
	for range n {
		res, err := c.Get(url)
		if err != nil {
			fails = append(fails, err.Error())
			continue
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			fails = append(fails, fmt.Sprintf("%d %s", res.StatusCode, strings.TrimSpace(string(b))))
			continue
		}
		got[string(b)]++
	}
	return got, fails
}

func sameSet(got map[string]int, want ...string) bool {
	if len(got) != len(want) {
		return false
	}
	for _, w := range want {
		if got[w] == 0 {
			return false
		}
	}
	return true
}

func consulFerry(t *testing.T, agent *consultest.Agent, extra string) (*Sidecar, string) {
	t.Helper()
	sc := startFerry(t, consulConfig(agent.HTTPAddr, extra))
	return sc, "http://" + sc.Addr("outbound") + "/"
}

// consulConfig is a config routing every request to the Consul service
// api, Consul at addr, with extra after it.
func consulConfig(addr, extra string) string {
	return fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound:
  listen: 127.0.0.1:0
  routes: [ { service: api } ]
consul: { address: %s }
services:
  api: {}
%s`, addr, extra)
}

func TestConsulRoutingFollowsTheCatalog(t *testing.T) {
	agent := consultest.Start(t)
	c := agent.Client()
	startInstance(t, c, "api", "a")
	b := startInstance(t, c, "api", "b")
	sc, url := consulFerry(t, agent, "")
	hc := h1Client()

	waitFor(t, "traffic on both instances", 10*time.Second, func() bool {
		got, _ := seen(hc, url, 10)
		return sameSet(got, "a", "b")
	})

	startInstance(t, c, "api", "c")
	added := time.Now()
	waitFor(t, "traffic on the third instance", time.Second, func() bool {
		got, _ := seen(hc, url, 6)
		return got["c"] > 0
	})
	t.Logf("new instance took traffic %v after registration", time.Since(added))

	setHealth(t, c, "b", api.HealthCritical)
	failed := time.Now()
	// Out of ferry's endpoints: a sample of requests missing b could be
	// chance while b is still in rotation.
	waitFor(t, "failed instance out of rotation", time.Second, func() bool {
		for _, ep := range upstreamStatus(t, sc, "api").Endpoints {
			if ep.Addr == b.addr {
				return false
			}
		}
		return true
	})
	t.Logf("failed instance left rotation %v after its check went critical", time.Since(failed))
	// And it stays out.
	if got, fails := seen(hc, url, 20); got["b"] > 0 || len(fails) > 0 {
		t.Fatalf("after failing b: %v %v", got, fails)
	}

	for _, id := range []string{"a", "b", "c"} {
		if err := c.Agent().ServiceDeregister(id); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "503 once every instance is gone", 5*time.Second, func() bool {
		_, fails := seen(hc, url, 1)
		return len(fails) == 1 && strings.HasPrefix(fails[0], "503") && strings.Contains(fails[0], "service api has no healthy endpoints")
	})
}

func TestConsulTagFilter(t *testing.T) {
	agent := consultest.Start(t)
	c := agent.Client()
	startInstance(t, c, "api", "blue", "blue")
	startInstance(t, c, "api", "green", "green")
	_, url := consulFerry(t, agent, "")
	// A second ferry service over the same Consul service, blue only.
	sc := startFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound:
  listen: 127.0.0.1:0
  routes: [ { service: api-blue } ]
consul: { address: %s }
services:
  api-blue: { consul: { service: api, tags: [blue] } }
`, agent.HTTPAddr))
	blueURL := "http://" + sc.Addr("outbound") + "/"
	hc := h1Client()
	waitFor(t, "both colours on the unfiltered service", 10*time.Second, func() bool {
		got, _ := seen(hc, url, 10)
		return sameSet(got, "blue", "green")
	})
	waitFor(t, "blue traffic on the filtered service", 10*time.Second, func() bool {
		got, _ := seen(hc, blueURL, 1)
		return got["blue"] == 1
	})
	if got, fails := seen(hc, blueURL, 20); !sameSet(got, "blue") || len(fails) > 0 {
		t.Fatalf("filtered service reached %v %v", got, fails)
	}
}

// Consul down never empties routing: the last snapshot keeps serving, marked
// stale in /upstreams; when the agent returns the watch resumes.
func TestConsulOutageKeepsLastSnapshot(t *testing.T) {
	restore := consulMetricsInterval // after the test's ferry stopped (a cleanup registered before it)
	t.Cleanup(func() { consulMetricsInterval = restore })
	consulMetricsInterval = 20 * time.Millisecond
	agent := consultest.Start(t)
	c := agent.Client()
	startInstance(t, c, "api", "a")
	sc, url := consulFerry(t, agent, "")
	hc := h1Client()
	waitFor(t, "traffic", 10*time.Second, func() bool {
		got, _ := seen(hc, url, 1)
		return got["a"] == 1
	})

	agent.Stop()
	waitFor(t, "/upstreams to say stale", 30*time.Second, func() bool {
		st := upstreamStatus(t, sc, "api")
		return st.Stale && st.Error != "" && len(st.Endpoints) == 1
	})
	// Metrics show it too: watch errors count up, the snapshot ages.
	waitFor(t, "watch errors and snapshot age in /metrics", 10*time.Second, func() bool {
		_, body := get(t, h1Client(), "http://"+sc.Addr("admin")+"/metrics", "")
		return strings.Contains(body, `ferry_consul_watch_errors_total{service="api"}`) &&
			strings.Contains(body, `ferry_consul_snapshot_age_seconds{service="api"}`)
	})
	if got, fails := seen(hc, url, 20); got["a"] != 20 {
		t.Fatalf("with Consul down: %v %v", got, fails)
	}

	agent.Restart() // a -dev agent comes back empty
	c = agent.Client()
	startInstance(t, c, "api", "b")
	waitFor(t, "watch to resume and route to the new catalog", 30*time.Second, func() bool {
		got, _ := seen(hc, url, 4)
		return sameSet(got, "b")
	})
	if st := upstreamStatus(t, sc, "api"); st.Stale || st.Consul == nil || st.Consul.Errors == 0 {
		t.Fatalf("after recovery: %+v", st)
	}
}

// With Consul unreachable from the start, requests get 503 with the reason
// until the first snapshot arrives.
func TestConsulUnreachableAtStartIs503(t *testing.T) {
	dead := localnettest.RefusedAddr(t)
	sc := startFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: api } ] }
consul: { address: %s }
services: { api: {} }
`, dead))
	waitFor(t, "503 naming the Consul failure", 10*time.Second, func() bool {
		_, fails := seen(h1Client(), "http://"+sc.Addr("outbound")+"/", 1)
		return len(fails) == 1 && strings.HasPrefix(fails[0], "503") && strings.Contains(fails[0], "endpoints not resolved yet") && strings.Contains(fails[0], "connection refused")
	})
}

// ferry registers the service it sits beside, with a passing check while
// it and the app are ready; it registers again after the agent forgets it,
// and deregisters on shutdown before draining.
func TestSelfRegistration(t *testing.T) {
	agent := consultest.Start(t)
	app := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	cfg, err := ParseConfig([]byte(fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
inbound: { listen: 127.0.0.1:0, app: %s }
consul: { address: %s }
register: { name: web, id: web-1, port: 18080, tags: [v1], meta: { team: files }, ttl: 2s }
`, app, agent.HTTPAddr)))
	if err != nil {
		t.Fatal(err)
	}
	sc, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := sc.Start(); err != nil {
		t.Fatal(err)
	}
	defer sc.Shutdown(context.Background())
	passing := func() bool {
		entries, _, err := agent.Client().Health().Service("web", "", true, nil)
		return err == nil && len(entries) == 1 && entries[0].Service.ID == "web-1" &&
			entries[0].Service.Port == 18080 && entries[0].Service.Meta["team"] == "files"
	}
	waitFor(t, "web-1 registered and passing", 10*time.Second, passing)

	agent.Restart() // the agent forgets everything
	waitFor(t, "web-1 registered again after the agent restart", 30*time.Second, passing)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sc.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	services, err := agent.Client().Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := services["web-1"]; ok {
		t.Fatal("web-1 still registered after shutdown")
	}
}

func upstreamStatus(t *testing.T, sc *Sidecar, name string) UpstreamStatus {
	t.Helper()
	for _, st := range sc.upstreamsStatus(time.Now()) {
		if st.Service == name {
			return st
		}
	}
	t.Fatalf("no upstream %q", name)
	return UpstreamStatus{}
}

// An agent that hangs at shutdown must not eat the drain: deregistration
// gets a bounded time (like every call of the registrar's), then the
// listeners close and the exchange in flight finishes within the grace.
func TestShutdownWithHungAgentStillDrains(t *testing.T) {
	agent := consultest.Start(t)
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	app := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-release
		io.WriteString(w, "done")
	}))
	cfg, err := ParseConfig([]byte(fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
inbound: { listen: 127.0.0.1:0, app: %s }
consul: { address: %s }
register: { name: web, id: web-1, port: 18080, ttl: 3s }
shutdown: { grace: 8s }
telemetry: { access_log: "off" }
`, app, agent.HTTPAddr)))
	if err != nil {
		t.Fatal(err)
	}
	sc, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := sc.Start(); err != nil {
		t.Fatal(err)
	}
	defer sc.Shutdown(context.Background())
	waitFor(t, "web-1 registered and passing", 10*time.Second, func() bool {
		entries, _, err := agent.Client().Health().Service("web", "", true, nil)
		return err == nil && len(entries) == 1
	})
	in := sc.Addr("inbound")
	answer := getInBackground("http://" + in + "/")
	recv(t, started, 5*time.Second, "the request to reach the app")

	agent.Pause() // takes requests, never answers
	grace := cfg.Shutdown.Grace
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	begun := time.Now()
	shut := make(chan error, 1)
	go func() { shut <- sc.Shutdown(ctx) }()
	// The app answers once ferry drains (its inbound port stops accepting).
	waitFor(t, "the inbound listener to close", grace+2*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", in, time.Second)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	close(release)
	if got := recv(t, answer, grace, "the answer"); got != "200 done <nil>" {
		t.Fatalf("the exchange in flight at shutdown got %q after %v", got, time.Since(begun).Round(time.Millisecond))
	}
	if err := recv(t, shut, grace, "Shutdown"); err != nil {
		t.Fatalf("Shutdown after %v: %v", time.Since(begun).Round(time.Millisecond), err)
	}
	t.Logf("drained in %v with the agent hung", time.Since(begun).Round(time.Millisecond))
}

// ferry_consul_snapshot_age_seconds (and /upstreams' snapshot_age_seconds)
// says how long the routing of a service has gone without Consul
// confirming it: zero while the watch's blocking
// query waits on a healthy agent (a change would end it at once), however
// long that wait, and growing from the last answer once queries fail.
func TestConsulSnapshotAgeOnlyGrowsWhileFailing(t *testing.T) {
	restore := consulMetricsInterval // after the test's ferry stopped (a cleanup registered before it)
	t.Cleanup(func() { consulMetricsInterval = restore })
	consulMetricsInterval = 20 * time.Millisecond
	agent := consultest.Start(t)
	startInstance(t, agent.Client(), "api", "a")
	sc := startFerry(t, strings.Replace(consulConfig(agent.HTTPAddr, ""), "consul: {", "consul: { wait_time: 1s,", 1))
	age := func() (float64, bool) {
		_, body := get(t, h1Client(), "http://"+sc.Addr("admin")+"/metrics", "")
		line := grepLines(body, `ferry_consul_snapshot_age_seconds{service="api"}`)
		if line == "" {
			return 0, false
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		return v, true
	}
	waitFor(t, "the snapshot age in /metrics", 10*time.Second, func() bool { _, ok := age(); return ok })
	// Over three of the watch's 1 s waits, each ending in an answer with
	// nothing new, the age stays near zero.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
		if v, _ := age(); v > 0.5 {
			t.Fatalf("snapshot age %.3fs while the watch is healthy", v)
		}
		if st := upstreamStatus(t, sc, "api"); st.AgeSec > 0.5 || st.Consul == nil || st.Consul.Failing {
			t.Fatalf("/upstreams while the watch is healthy: %+v %+v", st, st.Consul)
		}
		time.Sleep(50 * time.Millisecond) // a sampling pace, not synchronisation
	}
	agent.Stop()
	waitFor(t, "the snapshot age to grow while Consul is down", 30*time.Second, func() bool {
		v, _ := age()
		st := upstreamStatus(t, sc, "api")
		return v > 1 && st.AgeSec > 1 && st.Consul.Failing
	})
}

// A service no route leads to (a typo'd or leftover one) is warned about
// and otherwise left alone: not watched in Consul, not in /upstreams, and
// not waited for by a reload. Here the leftover names a datacenter the
// agent has no path to, so it could never resolve: a reload that waited
// for it was rejected after the resolve timeout, keeping the old config.
func TestUnusedServiceNotResolved(t *testing.T) {
	restore := reloadResolveTimeout // after the test's ferry stopped (a cleanup registered before it)
	t.Cleanup(func() { reloadResolveTimeout = restore })
	reloadResolveTimeout = 2 * time.Second
	agent := consultest.Start(t)
	startInstance(t, agent.Client(), "api", "a")
	leftover := "  leftover: { consul: { datacenter: no-such-dc } }\n"
	withLeftover := strings.Replace(consulConfig(agent.HTTPAddr, ""), "  api: {}\n", "  api: {}\n"+leftover, 1)
	if !strings.Contains(withLeftover, "leftover") {
		t.Fatal("test config lacks the leftover service")
	}
	sc, url, hc := ferryOnA(t, withLeftover)
	watched := func() []string {
		var names []string
		if c := sc.state.Load().consul; c != nil {
			for _, st := range c.Stats() {
				names = append(names, st.Name)
			}
		}
		return names
	}
	listed := func() []string {
		var names []string
		for _, st := range sc.upstreamsStatus(time.Now()) {
			names = append(names, st.Service)
		}
		return names
	}
	if w, l := watched(), listed(); fmt.Sprint(w) != "[api]" || fmt.Sprint(l) != "[api]" {
		t.Errorf("at start: Consul watches %v, /upstreams lists %v; want only api", w, l)
	}

	// A reload that changes api's settings and keeps the leftover.
	cfg := mustParse(t, withLeftover+"defaults: { timeouts: { connect: 3s } }\n")
	cfg.Telemetry.AccessLog = "off"
	began := time.Now()
	if err := sc.Reload(context.Background(), cfg); err != nil {
		t.Fatalf("reload with an unused service that cannot resolve, after %v: %v", time.Since(began), err)
	}
	if w, l := watched(), listed(); fmt.Sprint(w) != "[api]" || fmt.Sprint(l) != "[api]" {
		t.Fatalf("after the reload: Consul watches %v, /upstreams lists %v; want only api", w, l)
	}
	if got, fails := seen(hc, url, 3); got["a"] != 3 {
		t.Fatalf("after the reload: %v %q", got, fails)
	}
}

// An app that stops accepting connections while ferry runs (as one does
// when it exits before a native sidecar) has ferry's registration turn
// critical at the first request that could not reach it, not at the
// check's next refresh (every TTL/3, 10 s here): Consul stops sending
// callers to this instance meanwhile. Before, the check stayed passing
// until that refresh.
func TestAppRefusingTurnsTheCheckCriticalAtOnce(t *testing.T) {
	agent := consultest.Start(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}
	go app.Serve(ln)
	t.Cleanup(func() { app.Close() })
	sc := startFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
inbound: { listen: 127.0.0.1:0, app: %s }
consul: { address: %s }
register: { name: web, id: web-1, port: 18080, ttl: 30s }
`, ln.Addr(), agent.HTTPAddr))
	check := func() (status, output string) {
		checks, _, err := agent.Client().Health().Checks("web", nil)
		if err != nil || len(checks) != 1 {
			return "", ""
		}
		return checks[0].Status, checks[0].Output
	}
	waitFor(t, "web-1 registered and passing", 10*time.Second, func() bool {
		s, _ := check()
		return s == "passing"
	})
	app.Close() // the app exits; ferry goes on
	start := time.Now()
	res, err := h1Client().Get("http://" + sc.Addr("inbound") + "/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusBadGateway {
		t.Fatalf("a request to the app gone: %d, want 502", res.StatusCode)
	}
	waitFor(t, "the check critical soon after the first request the app refused", 3*time.Second, func() bool {
		s, out := check()
		return s == "critical" && strings.Contains(out, "not accepting connections")
	})
	t.Logf("critical %v after the refused request (the refresh is every 10 s)", time.Since(start).Round(time.Millisecond))
}
