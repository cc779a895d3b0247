package sidecar

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/ferrymesh/ferry/discovery/consultest"
	"github.com/ferrymesh/ferry/internal/syncbuf"
)

// Consul faults under traffic, through a real ferry and a real
// `consul agent -dev`: the agent is killed with SIGKILL and restarted while
// requests flow, and instances flap between passing and critical every
// 100 ms. Each test ends with no goroutine or file descriptor left
// (faultCheck) and the live heap back to where it was before the fault.

// trafficTimeout bounds one request of the traffic loops: an answer that
// takes longer is a hang, and a failure.
const trafficTimeout = 10 * time.Second

// outcome is one finished request of a traffic loop.
type outcome struct {
	started time.Time
	proto   string
	status  int
	body    string
	reason  string // X-Ferry-Error
	err     error
}

func (o outcome) String() string {
	if o.err != nil {
		return fmt.Sprintf("%s: %v", o.proto, o.err)
	}
	return fmt.Sprintf("%s: %d %q (X-Ferry-Error %q)", o.proto, o.status, strings.TrimSpace(o.body), o.reason)
}

// traffic is a set of goroutines sending GET requests through ferry in a
// loop until stopped. judge names what is wrong with an outcome, or
// returns "" when it is acceptable.
type traffic struct {
	judge func(outcome) string
	stop  chan struct{}
	wg    sync.WaitGroup

	total atomic.Int64
	mu    sync.Mutex
	by    map[string]int // 200 answers per body (instance id)
	codes map[int]int    // every status seen
	bad   []string       // the first unacceptable outcomes
	nbad  int
}

// startTraffic starts workers goroutines, alternating HTTP/1.1 and h2c
// callers. Stop it (or let the test's cleanup) before the checks that need
// it idle.
func startTraffic(t *testing.T, url string, workers int, judge func(outcome) string) *traffic {
	t.Helper()
	tr := &traffic{judge: judge, stop: make(chan struct{}), by: map[string]int{}, codes: map[int]int{}}
	clients := faultClients(t)
	for i := range workers {
		proto := "h1"
		if i%2 == 1 {
			proto = "h2c"
		}
		c := clients[proto]
		tr.wg.Add(1)
		go func() {
			defer tr.wg.Done()
			for {
				select {
				case <-tr.stop:
					return
				default:
				}
				tr.record(exchangeOnce(c, proto, url))
			}
		}()
	}
	t.Cleanup(tr.halt)
	return tr
}

func exchangeOnce(c *http.Client, proto, url string) outcome {
	o := outcome{started: time.Now(), proto: proto}
	ctx, cancel := context.WithTimeout(context.Background(), trafficTimeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	res, err := c.Do(req)
	if err != nil {
		o.err = err
		return o
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	o.status, o.body, o.reason = res.StatusCode, string(b), res.Header.Get("X-Ferry-Error")
	if err != nil {
		o.err = fmt.Errorf("status %d, body broken after %d bytes: %w", res.StatusCode, len(b), err)
	}
	return o
}

func (tr *traffic) record(o outcome) {
	tr.total.Add(1)
	verdict := tr.judge(o)
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if o.err == nil {
		tr.codes[o.status]++
		if o.status == http.StatusOK {
			tr.by[o.body]++
		}
	}
	if verdict != "" {
		tr.nbad++
		if len(tr.bad) < 20 {
			tr.bad = append(tr.bad, fmt.Sprintf("%s: %s (%s)", o.started.Format("15:04:05.000"), verdict, o))
		}
	}
}

// halt stops the workers and waits for their last requests.
func (tr *traffic) halt() {
	select {
	case <-tr.stop:
	default:
		close(tr.stop)
	}
	tr.wg.Wait()
}

// answered is how many 200 answers instance id gave so far.
func (tr *traffic) answered(id string) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.by[id]
}

func (tr *traffic) report() (by map[string]int, codes map[int]int, nbad int, bad []string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	by, codes = map[string]int{}, map[int]int{}
	for k, v := range tr.by {
		by[k] = v
	}
	for k, v := range tr.codes {
		codes[k] = v
	}
	return by, codes, tr.nbad, append([]string(nil), tr.bad...)
}

// liveHeap is the live heap after a full collection.
func liveHeap() int64 {
	runtime.GC()
	runtime.GC()
	h, _ := readMem()
	return int64(h)
}

// heapBack fails the test unless the live heap comes back within
// maxHeapGrowth of base; it polls, as pooled connections and timers of the
// last requests are released asynchronously.
func heapBack(t *testing.T, base int64, what string) {
	t.Helper()
	var now int64
	deadline := time.Now().Add(10 * time.Second)
	for {
		now = liveHeap()
		if now-base <= maxHeapGrowth || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%s: live heap %.2f MiB before, %.2f MiB after (%+.2f MiB; bound %d MiB)",
		what, float64(base)/float64(mib), float64(now)/float64(mib), float64(now-base)/float64(mib), maxHeapGrowth/mib)
	if now-base > maxHeapGrowth {
		t.Errorf("%s: live heap grew by %d bytes and did not come back, bound %d", what, now-base, maxHeapGrowth)
	}
}

// consulGate is a TCP relay between ferry and the Consul agent that the
// test can shut. A -dev agent comes back from a restart with an empty
// catalog, which a real agent with its data directory would not: the gate
// stays shut until the test has registered the instances again, so what
// ferry sees is an agent that was away and came back with its catalog.
type consulGate struct {
	ln     net.Listener
	target string
	open   atomic.Bool
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
}

func startConsulGate(t *testing.T, target string) *consulGate {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &consulGate{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	g.open.Store(true)
	g.wg.Add(1)
	go g.serve()
	t.Cleanup(func() {
		ln.Close()
		g.dropAll()
		g.wg.Wait()
	})
	return g
}

func (g *consulGate) addr() string { return g.ln.Addr().String() }

func (g *consulGate) serve() {
	defer g.wg.Done()
	for {
		c, err := g.ln.Accept()
		if err != nil {
			return
		}
		if !g.open.Load() {
			c.Close()
			continue
		}
		g.wg.Add(1)
		go g.relay(c)
	}
}

func (g *consulGate) relay(c net.Conn) {
	defer g.wg.Done()
	up, err := net.DialTimeout("tcp", g.target, 2*time.Second)
	if err != nil {
		c.Close()
		return
	}
	if !g.track(c, up) {
		return
	}
	var pair sync.WaitGroup
	pair.Add(2)
	pipe := func(dst, src net.Conn) {
		defer pair.Done()
		io.Copy(dst, src)
		dst.Close()
		src.Close()
	}
	go pipe(up, c)
	go pipe(c, up)
	pair.Wait()
	g.mu.Lock()
	delete(g.conns, c)
	delete(g.conns, up)
	g.mu.Unlock()
}

// track registers a relayed pair, or closes it when the gate shut
// meanwhile.
func (g *consulGate) track(c, up net.Conn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.open.Load() {
		c.Close()
		up.Close()
		return false
	}
	g.conns[c], g.conns[up] = struct{}{}, struct{}{}
	return true
}

// shut refuses new connections and breaks the relayed ones.
func (g *consulGate) shut() {
	g.open.Store(false)
	g.dropAll()
}

func (g *consulGate) reopen() { g.open.Store(true) }

func (g *consulGate) dropAll() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for c := range g.conns {
		c.Close()
	}
}

// registerAt registers an instance at an address that already serves (an
// origin that outlived an agent restart), with a passing TTL check.
func registerAt(t *testing.T, c *api.Client, service string, in instance) {
	t.Helper()
	host, port, _ := net.SplitHostPort(in.addr)
	p, _ := strconv.Atoi(port)
	err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: in.id, Name: service, Address: host, Port: p,
		Check: &api.AgentServiceCheck{CheckID: "check-" + in.id, TTL: "1h", Status: api.HealthPassing},
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The agent is killed (SIGKILL) while four callers loop requests through
// ferry: the last snapshot keeps serving, marked stale, and not one
// request fails. The agent restarts empty, the instances are registered
// again plus a new one, and the watch resumes: traffic reaches the new
// instance and /upstreams is no longer stale.
func TestConsulFaultAgentKilledUnderTraffic(t *testing.T) {
	faultCheck(t)
	agent := consultest.Start(t)
	c := agent.Client()
	a := startInstance(t, c, "api", "a")
	b := startInstance(t, c, "api", "b")
	gate := startConsulGate(t, agent.HTTPAddr)
	sc := startFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: api } ] }
consul: { address: %s }
services: { api: {} }
`, gate.addr()))
	url := "http://" + sc.Addr("outbound") + "/"

	hc := faultClients(t)["h1"]
	waitFor(t, "traffic on a and b", 20*time.Second, func() bool {
		got, _ := seen(hc, url, 10)
		return sameSet(got, "a", "b")
	})
	baseHeap := liveHeap()
	tr := startTraffic(t, url, 4, func(o outcome) string {
		if o.err != nil || o.status != http.StatusOK || (o.body != "a" && o.body != "b" && o.body != "c") {
			return "not a clean answer of an instance"
		}
		return ""
	})
	waitFor(t, "warm traffic", 10*time.Second, func() bool { return tr.total.Load() > 50 })

	killAgent(t, agent)
	killed := time.Now()
	waitFor(t, "/upstreams to mark api stale", 30*time.Second, func() bool {
		st := upstreamStatus(t, sc, "api")
		return st.Stale && st.Error != "" && len(st.Endpoints) == 2
	})
	t.Logf("stale %v after SIGKILL", time.Since(killed).Round(time.Millisecond))
	// Long enough for the watch to fail and back off several times.
	during := tr.total.Load()
	waitFor(t, "traffic while Consul is down, over three failed watch queries", 30*time.Second, func() bool {
		st := upstreamStatus(t, sc, "api")
		return tr.total.Load() > during+300 && st.Consul != nil && st.Consul.Errors >= 3
	})
	t.Logf("Consul down for %v", time.Since(killed).Round(time.Millisecond))
	downA, downB := tr.answered("a"), tr.answered("b")

	gate.shut()
	agent.Restart() // a -dev agent comes back empty
	c = agent.Client()
	registerAt(t, c, "api", a)
	registerAt(t, c, "api", b)
	newcomer := startInstance(t, c, "api", "c")
	gate.reopen()
	restarted := time.Now()
	waitFor(t, "the watch to resume and route to the new instance", 30*time.Second, func() bool { return tr.answered(newcomer.id) > 20 })
	t.Logf("new instance took traffic %v after the agent came back", time.Since(restarted).Round(time.Millisecond))
	waitFor(t, "/upstreams to clear stale", 10*time.Second, func() bool {
		st := upstreamStatus(t, sc, "api")
		return !st.Stale && st.Error == "" && len(st.Endpoints) == 3
	})
	tr.halt()

	by, codes, nbad, bad := tr.report()
	t.Logf("%d requests through the kill and restart: %v by instance, statuses %v (a and b answered %d and %d while Consul was down)",
		tr.total.Load(), by, codes, downA, downB)
	if nbad > 0 {
		t.Fatalf("%d requests failed across the Consul outage:\n%s", nbad, strings.Join(bad, "\n"))
	}
	if st := upstreamStatus(t, sc, "api"); st.Consul == nil || st.Consul.Errors == 0 {
		t.Fatalf("the watch counted no error over the outage: %+v", st.Consul)
	}
	heapBack(t, baseHeap, "Consul kill and restart")
}

// Three instances flap between passing and critical every 100 ms under
// traffic; while critical an instance is really down (it aborts every
// exchange). Every answer is an instance's clean 200 or ferry's documented
// 502/503 with X-Ferry-Error, within trafficTimeout. When the flapping
// stops with a and b passing and c critical, traffic settles on a and b
// and no request fails any more.
func TestConsulFaultInstancesFlapping(t *testing.T) {
	faultCheck(t)
	agent := consultest.Start(t)
	c := agent.Client()
	ids := []string{"a", "b", "c"}
	down := map[string]*atomic.Bool{}
	for _, id := range ids {
		down[id] = new(atomic.Bool)
		flag := down[id]
		addr := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if flag.Load() {
				panic(http.ErrAbortHandler) // h1: connection closed; h2: stream reset
			}
			io.WriteString(w, id)
		}))
		registerAt(t, c, "api", instance{id: id, addr: addr})
	}
	// Short breaker and ejection periods, so the settling is measured in
	// seconds; the rest are the defaults.
	sc, url := consulFerry(t, agent, `defaults: { breaker: { open_duration: 500ms }, outlier: { base_ejection_time: 500ms } }`)
	hc := faultClients(t)["h1"]
	waitFor(t, "traffic on a, b and c", 20*time.Second, func() bool {
		got, _ := seen(hc, url, 12)
		return sameSet(got, "a", "b", "c")
	})
	baseHeap := liveHeap()

	var settledAt atomic.Pointer[time.Time]
	tr := startTraffic(t, url, 6, func(o outcome) string {
		if o.err != nil {
			return "no answer"
		}
		if s := settledAt.Load(); s != nil && o.started.After(*s) {
			if o.status != http.StatusOK || (o.body != "a" && o.body != "b") {
				return "after settling, not a or b"
			}
			return ""
		}
		switch o.status {
		case http.StatusOK:
			if o.body != "a" && o.body != "b" && o.body != "c" {
				return "200 not from an instance"
			}
		case http.StatusBadGateway, http.StatusServiceUnavailable:
			if o.reason == "" || !strings.HasPrefix(o.body, "ferry: ") {
				return "5xx without ferry's reason"
			}
		default:
			return "undocumented status"
		}
		return ""
	})

	// Each instance flips every 100 ms, a third of a period apart, so at
	// times none is passing.
	ctx, cancel := context.WithCancel(context.Background())
	var flappers sync.WaitGroup
	var flips, flipErrs atomic.Int64
	for i, id := range ids {
		flappers.Add(1)
		go func() {
			defer flappers.Done()
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Duration(i) * 33 * time.Millisecond):
			}
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for critical := true; ; critical = !critical {
				status := api.HealthPassing
				if critical {
					status = api.HealthCritical
				}
				// Down before critical, passing before up: Consul never
				// vouches for an instance that is down... except for the
				// propagation delay, which ferry must absorb.
				if critical {
					down[id].Store(true)
				}
				if err := c.Agent().UpdateTTL("check-"+id, "flap", status); err != nil {
					flipErrs.Add(1)
				}
				if !critical {
					down[id].Store(false)
				}
				flips.Add(1)
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
			}
		}()
	}
	start := tr.total.Load()
	waitFor(t, "flapping under traffic", 30*time.Second, func() bool { return flips.Load() >= 90 && tr.total.Load() > start+300 })
	cancel()
	flappers.Wait()
	if n := flipErrs.Load(); n > 0 {
		t.Fatalf("%d of %d check updates failed", n, flips.Load())
	}
	_, codes, nbad, bad := tr.report()
	t.Logf("while flapping (%d flips): %d requests, statuses %v", flips.Load(), tr.total.Load(), codes)
	if codes[http.StatusOK] == 0 {
		t.Fatalf("no request succeeded while flapping: %v", codes)
	}
	if nbad > 0 {
		t.Fatalf("%d answers while flapping were not clean:\n%s", nbad, strings.Join(bad, "\n"))
	}

	// Flapping stops: a and b passing, c critical and down.
	down["c"].Store(true)
	setHealth(t, c, "c", api.HealthCritical)
	for _, id := range []string{"a", "b"} {
		setHealth(t, c, id, api.HealthPassing)
		down[id].Store(false)
	}
	stopped := time.Now()
	waitFor(t, "traffic to settle on a and b", 20*time.Second, func() bool {
		st := upstreamStatus(t, sc, "api")
		if len(st.Endpoints) != 2 {
			return false
		}
		got, fails := seen(hc, url, 20)
		return sameSet(got, "a", "b") && len(fails) == 0
	})
	now := time.Now()
	settledAt.Store(&now)
	t.Logf("settled on a and b %v after the flapping stopped", now.Sub(stopped).Round(time.Millisecond))
	after := tr.total.Load()
	waitFor(t, "traffic after settling", 20*time.Second, func() bool { return tr.total.Load() > after+300 })
	tr.halt()
	by, codes, nbad, bad := tr.report()
	t.Logf("in all: %d requests, by instance %v, statuses %v", tr.total.Load(), by, codes)
	if nbad > 0 {
		t.Fatalf("%d answers were not clean after settling:\n%s", nbad, strings.Join(bad, "\n"))
	}
	heapBack(t, baseHeap, "flapping")
}

// Consul goes away (its agent is killed: connections refused) and a config
// reload comes in meanwhile: the reload applies, its watch of api starting
// from the endpoints the one in force serves (see
// TestReloadAppliesWhileTheAgentIsDown), and the new config must keep
// routing to the last good endpoints, stale.
func TestReloadDuringConsulOutageKeepsEndpoints(t *testing.T) {
	agent := consultest.Start(t)
	c := agent.Client()
	startInstance(t, c, "api", "a")
	text := consulConfig(agent.HTTPAddr, `telemetry: { access_log: "off" }`)
	sc, url, hc := ferryOnA(t, text)

	killAgent(t, agent) // Consul is down
	old := sc.state.Load()
	waitFor(t, "the watch in force to serve its last endpoints, stale", 10*time.Second, func() bool {
		st := old.consul.Stats()
		return old.upstreams["api"].svc.Snapshot().Stale && len(st) == 1 && st[0].Errors >= 2
	})
	if got, fails := seen(hc, url, 5); got["a"] != 5 {
		t.Fatalf("stale snapshot not serving: %v %q", got, fails)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := sc.Reload(ctx, mustParse(t, text)); err != nil {
		t.Fatalf("reload with Consul unreachable: %v", err)
	}
	if sc.state.Load() == old {
		t.Fatal("the reload did not swap the new config in")
	}
	if snap := sc.state.Load().upstreams["api"].svc.Snapshot(); !snap.Ready || !snap.Stale || len(snap.Endpoints) != 1 {
		t.Fatalf("the new config's api: %+v; want the last endpoint, stale", *snap)
	}
	got, fails := seen(hc, url, 5)
	if got["a"] != 5 {
		t.Fatalf("after the reload the config lost its endpoints: answers %v, failures %q", got, fails)
	}
}

// A successful reload of an unchanged Consul-backed config must not make
// requests on the old generation fail while the new one resolves.
func TestReloadKeepsServingWhileResolving(t *testing.T) {
	agent := consultest.Start(t)
	c := agent.Client()
	startInstance(t, c, "api", "a")
	gate := startConsulGate(t, agent.HTTPAddr)
	text := consulConfig(gate.addr(), `telemetry: { access_log: "off" }`)
	sc, url, hc := ferryOnA(t, text)
	// Hold the new generation's first Consul answer back so the window
	// between carrying the upstream and the new generation's own first
	// answer (it serves the endpoints of the watch it replaces meanwhile)
	// is long enough to observe; Consul comes back within the reload
	// timeout.
	gate.shut()
	old := sc.state.Load()
	waitFor(t, "the watch in force to fail repeatedly", 10*time.Second, func() bool {
		st := old.consul.Stats()
		return old.upstreams["api"].svc.Snapshot().Stale && len(st) == 1 && st[0].Errors >= 3
	})
	done := make(chan error, 1)
	go func() { done <- sc.Reload(context.Background(), mustParse(t, text)) }()
	var fails []string
	deadline := time.Now().Add(time.Second) // a window of traffic, not a wait for an event
	for time.Now().Before(deadline) {
		_, f := seen(hc, url, 1)
		fails = append(fails, f...)
	}
	gate.reopen()
	if err := <-done; err != nil {
		t.Fatalf("reload: %v", err)
	}
	if len(fails) > 0 {
		t.Fatalf("%d requests failed on the config in force while a reload resolved; first: %q", len(fails), fails[0])
	}
}

// A reload that changes a Consul-backed service's settings (so its
// upstream is not carried over) must hand the new generation's balancer
// its endpoints before the new table takes requests.
func TestReloadSwapsInFedBalancers(t *testing.T) {
	agent := consultest.Start(t)
	c := agent.Client()
	startInstance(t, c, "api", "a")
	// Each config's connect timeout differs from the one before.
	text := func(connect int) string {
		return consulConfig(agent.HTTPAddr, fmt.Sprintf("telemetry: { access_log: \"off\" }\ndefaults: { timeouts: { connect: %ds } }\n", connect))
	}
	sc, _, _ := ferryOnA(t, text(1))
	for i := range 50 {
		if err := sc.Reload(context.Background(), mustParse(t, text(i+2))); err != nil {
			t.Fatal(err)
		}
		if n := len(sc.state.Load().upstreams["api"].res.Status()); n != 1 {
			t.Fatalf("reload %d: the table in force routes to an upstream with %d endpoints (snapshot has %d)", i, n, len(sc.state.Load().upstreams["api"].svc.Snapshot().Endpoints))
		}
	}
}

// ferryOnA starts ferry with the config text and waits until a request
// through it reaches the instance "a".
func ferryOnA(t *testing.T, text string) (*Sidecar, string, *http.Client) {
	sc := startFerry(t, text)
	url := "http://" + sc.Addr("outbound") + "/"
	hc := h1Client()
	waitFor(t, "traffic on a", 10*time.Second, func() bool {
		got, _ := seen(hc, url, 1)
		return got["a"] == 1
	})
	return sc, url, hc
}

// TestSnapshotAgeForgottenAfterReload: a service a reload removed
// is no longer routed to, so ferry_consul_snapshot_age_seconds must stop
// reporting it (else it grows forever and looks like a stale Consul).
func TestSnapshotAgeForgottenAfterReload(t *testing.T) {
	restore := consulMetricsInterval // after the test's ferry stopped (a cleanup registered before it)
	t.Cleanup(func() { consulMetricsInterval = restore })
	consulMetricsInterval = 20 * time.Millisecond
	agent := consultest.Start(t)
	c := agent.Client()
	startInstance(t, c, "api", "a")
	startInstance(t, c, "web", "w")
	sc, _ := consulFerry(t, agent, "")
	metrics := func() string { _, body := get(t, h1Client(), "http://"+sc.Addr("admin")+"/metrics", ""); return body }
	waitFor(t, "api's snapshot age in /metrics", 10*time.Second, func() bool {
		return strings.Contains(metrics(), `ferry_consul_snapshot_age_seconds{service="api"}`)
	})
	// The same config with web in place of api.
	cfg := mustParse(t, strings.ReplaceAll(consulConfig(agent.HTTPAddr, ""), "api", "web"))
	cfg.Telemetry.AccessLog = "off" // as startFerry has it
	if err := sc.Reload(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "web's snapshot age in /metrics", 10*time.Second, func() bool {
		return strings.Contains(metrics(), `ferry_consul_snapshot_age_seconds{service="web"}`)
	})
	// The reload returned after the old generation stopped reporting: the
	// removed service is gone from then on.
	for range 5 {
		if body := metrics(); strings.Contains(body, `ferry_consul_snapshot_age_seconds{service="api"}`) {
			t.Fatalf("service api was removed by the reload, yet its snapshot age is still reported (and grows):\n%s",
				grepLines(body, "ferry_consul_snapshot_age_seconds"))
		}
	}
}

// TestSnapshotAgeForgottenWhenServiceTurnsStatic: a reload that keeps a
// service but gives it static endpoints ends its Consul watch, so
// ferry_consul_snapshot_age_seconds must stop reporting it, as it never
// reports a service that is static from the start. It stayed, frozen at
// the old watch's last state: 0 for good, or, had the watch been failing,
// an age growing for good on a service that no longer uses Consul.
func TestSnapshotAgeForgottenWhenServiceTurnsStatic(t *testing.T) {
	restore := consulMetricsInterval // after the test's ferry stopped (a cleanup registered before it)
	t.Cleanup(func() { consulMetricsInterval = restore })
	consulMetricsInterval = 20 * time.Millisecond
	agent := consultest.Start(t)
	a := startInstance(t, agent.Client(), "api", "a")
	sc, _ := consulFerry(t, agent, "")
	metrics := func() string { _, body := get(t, h1Client(), "http://"+sc.Addr("admin")+"/metrics", ""); return body }
	const series = `ferry_consul_snapshot_age_seconds{service="api"}`
	waitFor(t, "api's snapshot age in /metrics", 10*time.Second, func() bool {
		return strings.Contains(metrics(), series)
	})
	// The same config with api's instance as its static endpoint.
	cfg := mustParse(t, strings.Replace(consulConfig(agent.HTTPAddr, ""), "api: {}", "api: { endpoints: ["+a.addr+"] }", 1))
	cfg.Telemetry.AccessLog = "off" // as startFerry has it
	if err := sc.Reload(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	if sc.state.Load().consul != nil {
		t.Fatal("the new config still watches Consul")
	}
	// The reload returned after the old generation stopped reporting.
	for range 5 {
		if body := metrics(); strings.Contains(body, series) {
			t.Fatalf("service api has static endpoints since the reload, yet its Consul snapshot age is still reported:\n%s",
				grepLines(body, "ferry_consul_snapshot_age_seconds"))
		}
	}
}

// ferry_consul_snapshot_age_seconds says what /upstreams says at the
// moment of the scrape: an age growing from the last answer once the
// watch fails, 0 once it is answered again. It was copied from the watch
// by a loop every 5s (consulMetricsInterval), so for up to 5s after the
// agent came back a scrape still showed the outage's age, growing, while
// /upstreams said current (and 0 for up to 5s after the watch began to
// fail). The loop runs once an hour here, so only the scrape can tell.
func TestSnapshotAgeMetricFollowsTheWatchAtEachScrape(t *testing.T) {
	restore := consulMetricsInterval // after the test's ferry stopped (a cleanup registered before it)
	t.Cleanup(func() { consulMetricsInterval = restore })
	consulMetricsInterval = time.Hour
	agent := consultest.Start(t)
	startInstance(t, agent.Client(), "api", "a")
	sc, _ := consulFerry(t, agent, "")
	waitFor(t, "api resolved", 10*time.Second, func() bool { return len(upstreamStatus(t, sc, "api").Endpoints) == 1 })
	const series = `ferry_consul_snapshot_age_seconds{service="api"}`

	agent.Stop()
	var failing UpstreamStatus
	waitFor(t, "/upstreams to show the snapshot ageing", 30*time.Second, func() bool {
		failing = upstreamStatus(t, sc, "api")
		return failing.Consul != nil && failing.Consul.Failing && failing.AgeSec > 0
	})
	got := scrape(t, sc, series)
	if age, err := strconv.ParseFloat(got, 64); err != nil || age < failing.AgeSec {
		t.Fatalf("with the watch failing, /upstreams gave an age of %.3fs, then a scrape %s %q (want at least that)", failing.AgeSec, series, got)
	}

	agent.Restart() // a -dev agent comes back empty
	startInstance(t, agent.Client(), "api", "b")
	waitFor(t, "/upstreams to show the watch current again", 30*time.Second, func() bool {
		st := upstreamStatus(t, sc, "api")
		return st.Consul != nil && !st.Consul.Failing && !st.Stale && st.AgeSec == 0
	})
	if got := scrape(t, sc, series); got != "0" {
		t.Fatalf("with the watch answered again, /upstreams gave an age of 0, then a scrape %s %q (want 0)", series, got)
	}
}

// The watch errors a generation saw since its last metrics report are
// counted when a reload retires it: they were lost (the report comes
// every few seconds; here, once an hour, so only the last one counts).
func TestWatchErrorsCountedWhenReloadRetiresTheWatch(t *testing.T) {
	restore := consulMetricsInterval // after the test's ferry stopped (a cleanup registered before it)
	t.Cleanup(func() { consulMetricsInterval = restore })
	consulMetricsInterval = time.Hour
	agent := consultest.Start(t)
	a := startInstance(t, agent.Client(), "api", "a")
	sc, _ := consulFerry(t, agent, "")
	waitFor(t, "api resolved", 10*time.Second, func() bool { return len(upstreamStatus(t, sc, "api").Endpoints) == 1 })
	agent.Stop()
	waitFor(t, "watch errors", 30*time.Second, func() bool {
		st := upstreamStatus(t, sc, "api")
		return st.Consul != nil && st.Consul.Errors > 0
	})
	cfg := mustParse(t, strings.Replace(consulConfig(agent.HTTPAddr, ""), "api: {}", "api: { endpoints: ["+a.addr+"] }", 1))
	cfg.Telemetry.AccessLog = "off" // as startFerry has it
	if err := sc.Reload(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	_, body := get(t, h1Client(), "http://"+sc.Addr("admin")+"/metrics", "")
	if !strings.Contains(body, `ferry_consul_watch_errors_total{service="api"}`) {
		t.Fatalf("the retired watch's errors are not counted:\n%s", grepLines(body, "ferry_consul"))
	}
}

// A changed config file whose Consul service cannot resolve because the
// agent is down is rejected; it is tried again, with backoff, while the
// file still holds it, and applies once the agent is back, without the file
// being touched again. It was not tried again until the file changed or a
// SIGHUP came: the pod kept the old config indefinitely.
func TestReloadRetriedAfterTransientRejection(t *testing.T) {
	restore := reloadResolveTimeout // after the test's ferry stopped (a cleanup registered before it)
	t.Cleanup(func() { reloadResolveTimeout = restore })
	reloadResolveTimeout = 500 * time.Millisecond
	agent := consultest.Start(t)
	a := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "a") }))
	initial := []byte(reloadConfig(a, ""))
	cfg := mustParse(t, string(initial))
	logs := new(syncbuf.Buffer)
	sc := startSidecar(t, cfg, Options{Log: slog.New(slog.NewTextHandler(logs, nil))})
	url := "http://" + sc.Addr("outbound") + "/"
	hc := h1Client()

	agent.Stop()
	path := filepath.Join(t.TempDir(), "ferry.yaml")
	os.WriteFile(path, initial, 0o600)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go sc.WatchConfigFile(ctx, path, 10*time.Millisecond, initial)
	os.WriteFile(path, []byte(consulConfig(agent.HTTPAddr, `telemetry: { access_log: "off" }`)), 0o600)
	waitFor(t, "the change rejected while Consul is down", 10*time.Second, func() bool {
		return strings.Contains(logs.String(), "services not resolved: api")
	})
	if got, fails := seen(hc, url, 3); got["a"] != 3 {
		t.Fatalf("config in force after the rejection: %v %q", got, fails)
	}

	agent.Restart()
	startInstance(t, agent.Client(), "api", "b")
	waitFor(t, "the rejected change applied once Consul is back", 30*time.Second, func() bool {
		got, _ := seen(hc, url, 1)
		return got["b"] == 1
	})
	// The new table serves before the reload's log line is written.
	waitFor(t, "the reload in the log", 10*time.Second, func() bool {
		return strings.Contains(logs.String(), "config reloaded")
	})
	if log := logs.String(); !strings.Contains(log, "retried in 1s") {
		t.Fatalf("the retry is not in the log:\n%s", log)
	}
}

// A reload while the agent is down applies at once when its Consul
// services are those the config in force already watches: the new
// generation starts from their endpoints, stale as they were. It was
// refused as 'services not resolved: api' after the resolve timeout, and
// tried again until the agent came back, so no change (a timeout, a
// route, a static service) could apply during an outage however long.
func TestReloadAppliesWhileTheAgentIsDown(t *testing.T) {
	restore := reloadResolveTimeout // after the test's ferry stopped (a cleanup registered before it)
	t.Cleanup(func() { reloadResolveTimeout = restore })
	reloadResolveTimeout = 2 * time.Second
	agent := consultest.Start(t)
	startInstance(t, agent.Client(), "api", "a")
	sc, url := consulFerry(t, agent, "")
	hc := h1Client()
	waitFor(t, "api resolved", 10*time.Second, func() bool { return len(upstreamStatus(t, sc, "api").Endpoints) == 1 })
	agent.Stop()
	waitFor(t, "/upstreams to say stale", 30*time.Second, func() bool { return upstreamStatus(t, sc, "api").Stale })
	before := upstreamStatus(t, sc, "api")

	cfg := mustParse(t, consulConfig(agent.HTTPAddr, "defaults: { timeouts: { connect: 3s } }\n"))
	cfg.Telemetry.AccessLog = "off" // as startFerry has it
	began := time.Now()
	if err := sc.Reload(context.Background(), cfg); err != nil {
		t.Fatalf("a reload with the agent down, after %v: %v", time.Since(began).Round(time.Millisecond), err)
	}
	if got := sc.state.Load().cfg.Defaults.Timeouts.Connect; got != 3*time.Second {
		t.Fatalf("connect timeout in force %v, want the reload's 3s", got)
	}
	st := upstreamStatus(t, sc, "api")
	if !st.Ready || !st.Stale || len(st.Endpoints) != 1 || !st.Updated.Equal(before.Updated) || st.Consul == nil || !st.Consul.LastContact.Equal(before.Consul.LastContact) {
		t.Fatalf("after the reload: %+v %+v; want api ready, stale, its endpoint and last contact as before (%+v)", st, st.Consul, before.Consul)
	}
	if got, fails := seen(hc, url, 5); got["a"] != 5 {
		t.Fatalf("after the reload: %v %q", got, fails)
	}
}

// Reloads in a row while the agent is down all apply at once: each new
// generation's watch of api starts from the endpoints the one in force
// serves, though that one only inherited them and never had an answer of
// its own. The second reload was refused as 'services not resolved: api'
// after the resolve timeout: the watch in force, started by the first,
// had nothing of its own to hand on. A reload that changes what api's
// watch asks Consul (its tags) still waits for an answer, and is refused.
func TestReloadsInARowApplyWhileTheAgentIsDown(t *testing.T) {
	restore := reloadResolveTimeout // after the test's ferry stopped (a cleanup registered before it)
	t.Cleanup(func() { reloadResolveTimeout = restore })
	reloadResolveTimeout = 2 * time.Second
	agent := consultest.Start(t)
	startInstance(t, agent.Client(), "api", "a", "v1")
	sc, url := consulFerry(t, agent, "")
	hc := h1Client()
	waitFor(t, "api resolved", 10*time.Second, func() bool { return len(upstreamStatus(t, sc, "api").Endpoints) == 1 })
	agent.Stop() // until the end: no watch the reloads start gets an answer
	waitFor(t, "/upstreams to say stale", 30*time.Second, func() bool { return upstreamStatus(t, sc, "api").Stale })
	before := upstreamStatus(t, sc, "api")

	for i, connect := range []time.Duration{3 * time.Second, 4 * time.Second, 5 * time.Second} {
		cfg := mustParse(t, consulConfig(agent.HTTPAddr, fmt.Sprintf("defaults: { timeouts: { connect: %s } }\n", connect)))
		cfg.Telemetry.AccessLog = "off" // as startFerry has it
		began := time.Now()
		if err := sc.Reload(context.Background(), cfg); err != nil {
			t.Fatalf("reload %d with the agent down, after %v: %v", i+1, time.Since(began).Round(time.Millisecond), err)
		}
		if got := sc.state.Load().cfg.Defaults.Timeouts.Connect; got != connect {
			t.Fatalf("reload %d: connect timeout in force %v, want %v", i+1, got, connect)
		}
		st := upstreamStatus(t, sc, "api")
		if !st.Ready || !st.Stale || len(st.Endpoints) != 1 || !st.Updated.Equal(before.Updated) || st.Consul == nil || !st.Consul.LastContact.Equal(before.Consul.LastContact) {
			t.Fatalf("after reload %d: %+v %+v; want api ready, stale, its endpoint and last contact as before (%+v)", i+1, st, st.Consul, before.Consul)
		}
		if got, fails := seen(hc, url, 3); got["a"] != 3 {
			t.Fatalf("after reload %d: %v %q", i+1, got, fails)
		}
	}

	// The instance has the tag, but the endpoints the watch in force
	// serves answer another query: the new watch does not take them.
	tagged := mustParse(t, strings.Replace(consulConfig(agent.HTTPAddr, ""), "api: {}", "api: { consul: { tags: [v1] } }", 1))
	tagged.Telemetry.AccessLog = "off"
	old := sc.state.Load()
	err := sc.Reload(context.Background(), tagged)
	if err == nil || !strings.Contains(err.Error(), "services not resolved: api") {
		t.Fatalf("a reload changing api's tags with the agent down: %v; want it refused, api not resolved", err)
	}
	if sc.state.Load() != old {
		t.Fatal("the refused reload swapped a generation in")
	}
	if got, fails := seen(hc, url, 3); got["a"] != 3 {
		t.Fatalf("after the refused reload: %v %q", got, fails)
	}
}
