package discovery

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/discovery/consultest"
	"github.com/hashicorp/consul/api"
)

// BenchmarkConsulPropagation measures the time from a Consul change (from
// just before the agent register or deregister call) to the published
// snapshot that shows it. Each iteration is one change, alternating add and remove:
//
//	go test -run '^$' -bench ConsulPropagation -benchtime 20x ./discovery/
func BenchmarkConsulPropagation(b *testing.B) {
	b.ReportAllocs()
	agent := consultest.Start(b)
	cc := agent.Client()
	registerTTL(b, cc, "bench", "bench-base", 9000, api.HealthPassing)
	c, err := NewConsul(b.Context(), ConsulConfig{Address: agent.HTTPAddr}, ConsulOptions{Logger: testLogger()})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	svc, _ := c.Service("bench")
	waitSnapshot(b, svc, 5*time.Second, "base", hasAddrs("127.0.0.1:9000"))

	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		var want func(*Snapshot) bool
		changed := svc.Changed()
		start := time.Now()
		if i%2 == 0 {
			registerTTL(b, cc, "bench", "bench-x", 9001, api.HealthPassing)
			want = hasAddrs("127.0.0.1:9000", "127.0.0.1:9001")
		} else {
			if err := cc.Agent().ServiceDeregister("bench-x"); err != nil {
				b.Fatal(err)
			}
			want = hasAddrs("127.0.0.1:9000")
		}
		for !want(svc.Snapshot()) {
			select {
			case <-changed:
				changed = svc.Changed()
			case <-time.After(5 * time.Second):
				b.Fatalf("change %d not seen in 5s", i)
			}
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	med := lat[len(lat)/2]
	if len(lat)%2 == 0 {
		med = (lat[len(lat)/2-1] + lat[len(lat)/2]) / 2
	}
	b.ReportMetric(float64(med.Microseconds())/1000, "ms-median/change")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "ms-max/change")
	b.Logf("Consul change -> published snapshot over %d changes: median %s, min %s, max %s", len(lat), med, lat[0], lat[len(lat)-1])
}

// TestConsulSteadyStateRequestRate counts the queries one watched service
// sends while nothing changes. It takes a while, so it runs only when
// FERRY_CONSUL_FIGURES is set:
//
//	FERRY_CONSUL_FIGURES=1 go test -run SteadyState -v ./discovery/
//
// FERRY_CONSUL_FIGURES_WAIT (a duration, default 10s) is consul.wait_time;
// FERRY_CONSUL_FIGURES_WINDOW (default 60s) is how long to count.
func TestConsulSteadyStateRequestRate(t *testing.T) {
	if os.Getenv("FERRY_CONSUL_FIGURES") == "" {
		t.Skip("set FERRY_CONSUL_FIGURES=1 to measure the steady-state request rate")
	}
	wait := envDuration(t, "FERRY_CONSUL_FIGURES_WAIT", 10*time.Second)
	window := envDuration(t, "FERRY_CONSUL_FIGURES_WINDOW", time.Minute)
	agent := consultest.Start(t)
	registerTTL(t, agent.Client(), "steady", "steady-1", 9000, api.HealthPassing)
	c := newTestConsul(t, agent, ConsulConfig{WaitTime: wait})
	svc, _ := c.Service("steady")
	waitSnapshot(t, svc, 5*time.Second, "first answer", hasAddrs("127.0.0.1:9000"))

	before := c.Stats()[0]
	start := time.Now()
	timer := time.NewTimer(window)
	<-timer.C // the measurement window itself, not synchronisation
	after := c.Stats()[0]
	elapsed := time.Since(start)
	queries := after.Queries - before.Queries
	perMin := float64(queries) / elapsed.Minutes()
	// Consul adds up to wait/16 of jitter to each wait; one query may be in
	// flight at either end of the window.
	bound := 60/wait.Seconds() + 2*60/elapsed.Seconds()
	t.Logf("steady state: %d queries in %s with wait_time %s = %.2f requests/minute per watched service (no change: %d publishes, %d errors)",
		queries, elapsed.Round(time.Millisecond), wait, perMin, after.Publishes-before.Publishes, after.Errors-before.Errors)
	fmt.Printf("FIGURE steady_state_requests_per_minute wait_time=%s window=%s value=%.2f\n", wait, elapsed.Round(time.Second), perMin)
	if perMin > bound || queries == 0 {
		t.Fatalf("%.2f requests/minute, want at most %.2f and more than 0", perMin, bound)
	}
	if after.Publishes != before.Publishes {
		t.Fatalf("published %d snapshots with nothing changing", after.Publishes-before.Publishes)
	}
}

func envDuration(t *testing.T, key string, def time.Duration) time.Duration {
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		if n, err2 := strconv.Atoi(v); err2 == nil {
			return time.Duration(n) * time.Second
		}
		t.Fatalf("%s=%q: %v", key, v, err)
	}
	return d
}
