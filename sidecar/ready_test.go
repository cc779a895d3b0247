package sidecar

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

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
