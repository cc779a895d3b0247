package sidecar

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/discovery"
	"github.com/ferrymesh/ferry/discovery/consultest"
)

// /ready holds off until every service a route leads to had Consul's first
// answer: a pod reported ready (kubelet's startup probe lets the app start,
// a rollout moves on) while its upstreams are still unresolved hands the
// app 503 "endpoints not resolved yet". Once resolved, a Consul outage does
// not take readiness back: the last endpoints keep serving.
func TestReadyWaitsForFirstConsulAnswer(t *testing.T) {
	agent := consultest.Start(t)
	inst := startInstance(t, agent.Client(), "api", "a")
	agent.Pause() // takes ferry's query, answers nothing yet
	resumed := false
	defer func() {
		if !resumed {
			agent.Resume()
		}
	}()
	sc := startFerry(t, strings.Replace(consulConfig(agent.HTTPAddr, ""), "consul: {", "consul: { wait_time: 1s,", 1))
	ready := "http://" + sc.Addr("admin") + "/ready"

	res, body := get(t, h1Client(), ready, "")
	code := res.StatusCode
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "api") {
		t.Fatalf("/ready before Consul's first answer: %d %q, want 503 naming service api", code, body)
	}
	if sc.Ready() {
		t.Fatal("Ready() true before Consul's first answer")
	}

	agent.Resume()
	resumed = true
	waitFor(t, "/ready 200 after Consul answered", 10*time.Second, func() bool {
		res, _ := get(t, h1Client(), ready, "")
		return res.StatusCode == http.StatusOK
	})
	if got, fails := seen(h1Client(), "http://"+sc.Addr("outbound")+"/", 1); got[inst.id] != 1 {
		t.Fatalf("right after /ready went 200: %v %v, want the instance to answer", got, fails)
	}

	// An outage once resolved: stale endpoints, still ready.
	agent.Stop()
	waitFor(t, "api marked stale", 15*time.Second, func() bool {
		_, body := get(t, h1Client(), "http://"+sc.Addr("admin")+"/upstreams", "")
		var ups []struct{ Stale bool }
		return json.Unmarshal([]byte(body), &ups) == nil && len(ups) == 1 && ups[0].Stale
	})
	if res, body := get(t, h1Client(), ready, ""); res.StatusCode != http.StatusOK {
		t.Fatalf("/ready during a Consul outage with stale endpoints: %d %q, want 200", res.StatusCode, body)
	}
}

// ferry's own Consul registration follows the same readiness: its check is
// critical, saying which upstream is waited for, until that upstream
// resolves, and turns passing then without waiting for the check's next
// refresh (a third of a 1-minute TTL here).
func TestRegistrationWaitsForFirstResolution(t *testing.T) {
	agent := consultest.Start(t)
	svc := discovery.NewService("api", "test")
	cfg := mustParse(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: api } ] }
services: { api: {} }
consul: { address: %s }
register: { name: web, id: web-1, port: 18080, ttl: 1m }
telemetry: { access_log: "off" }
`, agent.HTTPAddr))
	sc := startSidecar(t, cfg, Options{Resolver: oneService{svc}})
	check := func() (status, output string) {
		checks, err := agent.Client().Agent().Checks()
		if err != nil {
			return "", err.Error() // polled again
		}
		for _, c := range checks {
			if c.ServiceID == "web-1" {
				return c.Status, c.Output
			}
		}
		return "", ""
	}
	waitFor(t, "web-1 registered, its check critical naming api", 10*time.Second, func() bool {
		status, output := check()
		if status == "passing" {
			t.Fatalf("web-1's check passing with api unresolved: %q", output)
		}
		return status == "critical" && strings.Contains(output, "waiting for Consul's first answer for api")
	})
	now := time.Now()
	svc.Publish(&discovery.Snapshot{Endpoints: []discovery.Endpoint{{Addr: "127.0.0.1:9", Weight: 1}}, Ready: true, Updated: now, Checked: now})
	waitFor(t, "web-1's check to pass once api resolved", 5*time.Second, func() bool { s, _ := check(); return s == "passing" })
	if !sc.Ready() {
		t.Fatal("registration passing while Ready() is false")
	}
}

// consul.ready_wait bounds the wait for Consul's first answer: an agent
// that never answers at start-up must not keep the pod unready (and its
// application unstarted) for good. Past the wait ferry reports ready, its
// registration's check passes, and the unanswered service gets 503 naming
// it; within the wait it stays unready.
func TestReadyWaitBounded(t *testing.T) {
	agent := consultest.Start(t)
	start := func(wait string) (*Sidecar, *discovery.Service) {
		svc := discovery.NewService("api", "test") // never answered
		cfg := mustParse(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: api } ] }
services: { api: {} }
consul: { address: %s, ready_wait: %s }
telemetry: { access_log: "off" }
`, agent.HTTPAddr, wait))
		return startSidecar(t, cfg, Options{Resolver: oneService{svc}}), svc
	}

	long, _ := start("1h")
	if res, body := get(t, h1Client(), "http://"+long.Addr("admin")+"/ready", ""); res.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/ready within consul.ready_wait, api unanswered: %d %q, want 503", res.StatusCode, body)
	}

	short, svc := start("1ms")
	ready := "http://" + short.Addr("admin") + "/ready"
	waitFor(t, "/ready 200 past consul.ready_wait", 10*time.Second, func() bool {
		res, _ := get(t, h1Client(), ready, "")
		return res.StatusCode == http.StatusOK
	})
	res, body := get(t, h1Client(), "http://"+short.Addr("outbound")+"/", "")
	if res.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "not resolved yet") {
		t.Fatalf("request to the unanswered service: %d %q, want 503 not resolved yet", res.StatusCode, body)
	}
	// Its answer arriving later is taken as usual; ferry stays ready.
	now := time.Now()
	svc.Publish(&discovery.Snapshot{Endpoints: []discovery.Endpoint{{Addr: "127.0.0.1:9", Weight: 1}}, Ready: true, Updated: now, Checked: now})
	waitFor(t, "api's endpoint in /upstreams", 5*time.Second, func() bool {
		_, body := get(t, h1Client(), "http://"+short.Addr("admin")+"/upstreams", "")
		return strings.Contains(body, "127.0.0.1:9")
	})
	if !short.Ready() {
		t.Fatal("not ready after the late answer")
	}
}

func TestConsulReadyWaitNegativeRefused(t *testing.T) {
	err := discovery.ConsulConfig{ReadyWait: -time.Second}.Validate()
	if err == nil || !strings.Contains(err.Error(), "consul.ready_wait") {
		t.Fatalf("Validate() = %v, want an error naming consul.ready_wait", err)
	}
}
