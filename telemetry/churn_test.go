package telemetry

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"go.opentelemetry.io/otel/trace"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// Consul endpoints come and go. A ferry_requests_total series of an
// endpoint that is no longer in force (KnownEndpoints) and whose count has
// not moved for endpointSeriesRetireAfter is forgotten at a scrape, so the
// series of endpoints long gone do not fill the family's cap
// (cardinalityLimit) and push the series of live endpoints into the
// overflow series; the series of endpoints in force, idle or not, keep
// their values, and one that left but still counts (a stream that started
// before it left) stays until it has been idle that long. They stayed
// for good: after 2000 endpoints had served, every new one's requests
// were counted under otel_metric_overflow="true".
func TestEndpointChurnDoesNotExhaustTheSeriesCap(t *testing.T) {
	tel, _, _ := recorded(t, Config{}, env{})
	m := tel.Metrics()
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	m.now = clock.now
	var mu sync.Mutex
	inForce := map[string]bool{}
	m.KnownEndpoints(func(yield func(service, endpoint string, state BreakerState) bool) {
		mu.Lock()
		defer mu.Unlock()
		for ep := range inForce {
			if !yield("svc", ep, "") {
				return
			}
		}
	})
	setInForce := func(eps ...string) {
		mu.Lock()
		defer mu.Unlock()
		clear(inForce)
		for _, ep := range eps {
			inForce[ep] = true
		}
	}
	request := func(endpoint string) {
		m.requestEnded(trace.SpanContext{}, "outbound", "svc", endpoint, Outcome{Status: 200}, time.Millisecond, time.Time{}, nil)
	}
	type seriesValues map[string]float64 // endpoint -> ferry_requests_total
	read := func() (seriesValues, bool) {
		t.Helper()
		body, ctype := scrape(t, tel.MetricsHandler(), "")
		samples, _ := promParse(t, []byte(body), ctype)
		got, overflow := seriesValues{}, false
		for _, s := range samples {
			if s.name != MetricRequests {
				continue
			}
			if s.labels.Get(overflowLabel) == "true" {
				overflow = true
				continue
			}
			got[s.labels.Get("endpoint")] = s.value
			if !labels.Equal(s.labels, labels.FromStrings(labels.MetricName, MetricRequests, "listener", "outbound",
				"service", "svc", "endpoint", s.labels.Get("endpoint"), "status_class", "2xx", "reason", "")) {
				t.Errorf("unexpected series %s", s.labels)
			}
		}
		return got, overflow
	}

	request("idle:80") // in force throughout, one request at the start
	const rounds, perRound = 250, 10
	for i := range rounds {
		eps := []string{"live:80", "idle:80"}
		for j := range perRound {
			ep := fmt.Sprintf("10.0.%d.%d:80", i, j)
			eps = append(eps, ep)
		}
		setInForce(eps...)
		for _, ep := range eps {
			if ep != "idle:80" {
				request(ep)
			}
		}
		if i < 30 {
			request("draining:80") // gone from discovery, its stream still ending
		}
		got, overflow := read()
		if overflow {
			t.Fatalf("round %d: requests counted in the overflow series; %d series", i, len(got))
		}
		if got["live:80"] != float64(i+1) || got["idle:80"] != 1 {
			t.Fatalf("round %d: live:80 = %v (want %d), idle:80 = %v (want 1)", i, got["live:80"], i+1, got["idle:80"])
		}
		for _, ep := range eps[2:] {
			if got[ep] != 1 {
				t.Fatalf("round %d: %s = %v, want 1", i, ep, got[ep])
			}
		}
		if i == 35 && got["draining:80"] != 30 {
			t.Errorf("round %d, 6 minutes after its last count: draining:80 = %v, want 30", i, got["draining:80"])
		}
		clock.advance(time.Minute)
	}
	got, _ := read()
	if _, ok := got["draining:80"]; ok {
		t.Errorf("draining:80, gone and idle for %d minutes, still shown", rounds-30)
	}
	if _, ok := got["10.0.0.0:80"]; ok {
		t.Errorf("10.0.0.0:80, gone for %d minutes, still shown", rounds)
	}
	if max := 2 + perRound*(int(endpointSeriesRetireAfter/time.Minute)+2); len(got) > max {
		t.Errorf("%d series of ferry_requests_total, want at most %d", len(got), max)
	}
}

// A request whose tuple's handle was not cached any more (an earlier
// retirement reset the cache) looks its series up in the family; a scrape
// that retires that very series (its endpoint gone, idle for
// endpointSeriesRetireAfter) between the look-up and the caching must not
// leave the dropped series cached: every later request of the tuple would
// count into a series no scrape shows. Before, the endpoint, back in force
// and counting, stayed missing from ferry_requests_total for good.
func TestRetiredSeriesNotCachedByARacingRequest(t *testing.T) {
	tel, _, _ := recorded(t, Config{}, env{})
	m := tel.Metrics()
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	m.now = clock.now
	var mu sync.Mutex
	inForce := map[string]bool{}
	m.KnownEndpoints(func(yield func(service, endpoint string, state BreakerState) bool) {
		mu.Lock()
		defer mu.Unlock()
		for ep := range inForce {
			if !yield("svc", ep, "") {
				return
			}
		}
	})
	request := func(endpoint string) {
		m.requestEnded(trace.SpanContext{}, "outbound", "svc", endpoint, Outcome{Status: 200}, time.Millisecond, time.Time{}, nil)
	}
	read := func() map[string]float64 {
		t.Helper()
		body, ctype := scrape(t, tel.MetricsHandler(), "")
		samples, _ := promParse(t, []byte(body), ctype)
		got := map[string]float64{}
		for _, s := range samples {
			if s.name == MetricRequests {
				got[s.labels.Get("endpoint")] = s.value
			}
		}
		return got
	}

	request("other:80") // gone: followed from the first scrape
	read()
	clock.advance(5 * time.Minute)
	request("back:80") // gone too, followed from 5 minutes on
	read()
	clock.advance(6 * time.Minute)
	if got := read(); got["back:80"] != 1 || got["other:80"] != 0 {
		t.Fatalf("other:80 retired, back:80 kept: %v", got)
	}
	clock.advance(5 * time.Minute) // back:80 idle for 11 minutes now

	// back:80 is in force again; its next request looks its series up
	// while a scrape, before KnownEndpoints has it, retires that series.
	build := m.labels.requests.build
	raced := false
	m.labels.requests.build = func(k requestLabels) *series {
		s := build(k)
		if k.endpoint == "back:80" && !raced {
			raced = true
			read()
		}
		return s
	}
	request("back:80")
	if !raced {
		t.Fatal("the request did not look its series up")
	}
	mu.Lock()
	inForce["back:80"] = true
	mu.Unlock()
	for range 3 {
		request("back:80")
	}
	got := read()
	if v, ok := got["back:80"]; !ok || v < 3 {
		t.Errorf("back:80 after 3 more requests: %v (shown: %v), want at least 3", v, ok)
	}
}

// A connection's SeriesMemo counts exactly what the caches count: the
// same requests, one Metrics counting them through a memo and one
// without, scrape the same, also when a scrape has retired the series the
// memo remembers (an endpoint gone from discovery and idle past
// endpointSeriesRetireAfter) and the memo's next request has those same
// labels: a remembered handle of a dropped series would lose its count.
func TestSeriesMemoCountsWhatTheCachesCount(t *testing.T) {
	type run struct {
		tel   *Telemetry
		m     *Metrics
		clock *fakeClock
		memo  *SeriesMemo
	}
	inForce := map[string]bool{"a:80": true, "b:80": true}
	var mu sync.Mutex
	start := func(memo *SeriesMemo) run {
		tel, _, _ := recorded(t, Config{}, env{})
		m := tel.Metrics()
		clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
		m.now = clock.now
		m.KnownEndpoints(func(yield func(service, endpoint string, state BreakerState) bool) {
			mu.Lock()
			defer mu.Unlock()
			for ep := range inForce {
				if !yield("svc", ep, "") {
					return
				}
			}
		})
		return run{tel, m, clock, memo}
	}
	runs := []run{start(nil), start(&SeriesMemo{})}
	request := func(endpoint string, status int, in, out int64) {
		for _, r := range runs {
			r.m.requestEnded(trace.SpanContext{}, "outbound", "svc", endpoint, Outcome{Status: status, BytesIn: in, BytesOut: out}, time.Millisecond, time.Time{}, r.memo)
		}
	}
	scrapeAll := func(step string) {
		t.Helper()
		var bodies []string
		for _, r := range runs {
			body, ctype := scrape(t, r.tel.MetricsHandler(), "")
			samples, _ := promParse(t, []byte(body), ctype)
			var lines []string
			for _, s := range samples {
				switch s.name {
				case MetricRequests, MetricRequestDuration + "_count", MetricBodyBytes:
					lines = append(lines, fmt.Sprintf("%s %s %v", s.name, s.labels, s.value))
				}
			}
			slices.Sort(lines)
			bodies = append(bodies, strings.Join(lines, "\n"))
		}
		if bodies[0] != bodies[1] {
			t.Fatalf("%s: through a memo the metrics read\n%s\nwithout one\n%s", step, bodies[1], bodies[0])
		}
		if !strings.Contains(bodies[0], MetricRequests) {
			t.Fatalf("%s: no %s series scraped", step, MetricRequests)
		}
	}
	request("a:80", 200, 0, 10)
	request("a:80", 200, 0, 10)
	request("a:80", 503, 5, 0)
	request("b:80", 200, 0, 10)
	request("a:80", 200, 0, 10)
	scrapeAll("first requests")
	mu.Lock()
	delete(inForce, "a:80") // a:80 leaves discovery
	mu.Unlock()
	scrapeAll("a:80 gone") // its series idle from now
	for _, r := range runs {
		r.clock.advance(endpointSeriesRetireAfter + time.Minute)
	}
	scrapeAll("a:80 retired") // drops a:80's series, which the memo remembers
	if body, _ := scrape(t, runs[1].tel.MetricsHandler(), ""); strings.Contains(body, `endpoint="a:80"`) {
		t.Fatal("a:80's series was not retired: the test does not test the memo's handle of a dropped series")
	}
	mu.Lock()
	inForce["a:80"] = true // back, and the memo still remembers it
	mu.Unlock()
	request("a:80", 200, 0, 10)
	request("a:80", 200, 0, 10)
	scrapeAll("a:80 back")
}
