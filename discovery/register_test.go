package discovery

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/discovery/consultest"
	"github.com/ferrymesh/ferry/internal/syncbuf"
	"github.com/hashicorp/consul/api"
)

// hangingAgent is a Consul agent HTTP API whose check updates a test can hang.
type hangingAgent struct {
	srv     *httptest.Server
	mu      sync.Mutex
	updates int
	regs    int
	deregs  int
	hangNth int           // the update number that hangs (0: none)
	hung    chan struct{} // closed when the hung update arrived
	release chan struct{} // closed at the end of the test
	changed chan struct{} // pinged on every request
}

func newHangingAgent(t *testing.T, hangNth int) *hangingAgent {
	a := &hangingAgent{hangNth: hangNth, hung: make(chan struct{}), release: make(chan struct{}), changed: make(chan struct{}, 100)}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			select {
			case a.changed <- struct{}{}:
			default:
			}
		}()
		a.mu.Lock()
		switch {
		case strings.HasPrefix(r.URL.Path, "/v1/agent/service/register"):
			a.regs++
		case strings.HasPrefix(r.URL.Path, "/v1/agent/service/deregister/"):
			a.deregs++
		case strings.HasPrefix(r.URL.Path, "/v1/agent/check/update/"):
			a.updates++
			if a.updates == a.hangNth {
				a.mu.Unlock()
				close(a.hung)
				// An agent that accepted the request and never answers
				// (stopped, overloaded, half-open connection).
				select {
				case <-a.release:
				case <-r.Context().Done():
				}
				return
			}
		}
		a.mu.Unlock()
	}))
	t.Cleanup(func() { close(a.release); a.srv.Close() })
	return a
}

func (a *hangingAgent) counts() (regs, updates, deregs int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.regs, a.updates, a.deregs
}

func hangingAgentConsul(t *testing.T, a *hangingAgent) *Consul {
	t.Helper()
	c, err := NewConsul(context.Background(), ConsulConfig{Address: strings.TrimPrefix(a.srv.URL, "http://")}, ConsulOptions{
		Logger: testLogger(), Backoff: JitterBackoff(50*time.Millisecond, 300*time.Millisecond),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// One check update that the agent never answers must not stop the
// registrar from refreshing the TTL check: with a 1s TTL, refreshes are
// due every ~333ms; after the hung one, more must follow well within a
// few TTLs, or the check goes critical and stays so.
func TestHungCheckUpdateDoesNotStopRefreshes(t *testing.T) {
	a, _ := runPastHungUpdate(t)
	deadline := time.NewTimer(5 * time.Second) // 5 TTLs
	defer deadline.Stop()
	for {
		if _, updates, _ := a.counts(); updates >= 4 {
			return
		}
		select {
		case <-a.changed:
		case <-deadline.C:
			regs, updates, _ := a.counts()
			t.Fatalf("TTL is 1s, yet 5s after a check update hung the registrar has sent no further update (registrations %d, updates %d): the check has expired", regs, updates)
		}
	}
}

// A check update the agent never answers is an error like any other: the
// registrar's error count shows it, as it shows a refused one.
func TestHungCheckUpdateCountsAnError(t *testing.T) {
	a, reg := runPastHungUpdate(t)
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	for {
		if _, updates, _ := a.counts(); updates >= 3 {
			break
		}
		select {
		case <-a.changed:
		case <-deadline.C:
			t.Fatal("no check update after the hung one")
		}
	}
	if st := reg.Stats(); st.Errors != 1 || st.Registrations != 1 {
		t.Fatalf("after one check update timed out: %+v; want errors 1, registrations 1", st)
	}
}

// runPastHungUpdate runs a registrar with a 1s TTL against an agent that
// never answers the check update after the registration's, until the
// test ends, and returns once that update hung.
func runPastHungUpdate(t *testing.T) (*hangingAgent, *Registrar) {
	t.Helper()
	a := newHangingAgent(t, 2) // the update after the first (registration's) hangs
	c := hangingAgentConsul(t, a)
	reg, err := c.NewRegistrar(Registration{Name: "self", ID: "self-1", Port: 7000, TTL: time.Second}, func() error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- reg.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-runDone })
	<-a.hung
	return a, reg
}

// register.meta follows the rules Consul's agent applies to service meta
// (64 pairs at most; keys of letters, digits, '-' and '_', at most 128
// long, not starting "consul-"; values at most 512 long): what the agent
// would refuse at every registration attempt is refused when the config
// loads, naming the key. Each case is also registered with a real agent,
// which must agree.
func TestRegistrationMetaFollowsConsulRules(t *testing.T) {
	many := map[string]string{}
	for i := range 65 {
		many[fmt.Sprintf("k%d", i)] = "v"
	}
	most := maps.Clone(many)
	delete(most, "k64")
	for _, tc := range []struct {
		name string
		meta map[string]string
		err  string // "" = accepted
	}{
		{"at the limits", map[string]string{strings.Repeat("k", 128): strings.Repeat("v", 512), "team_a-1": ""}, ""},
		{"64 pairs", most, ""},
		{"65 pairs", many, "register.meta: 65 pairs"},
		{"key with a dot", map[string]string{"app.version": "1"}, `register.meta["app.version"]: `},
		{"key with a space", map[string]string{"a b": "1"}, `register.meta["a b"]: `},
		{"key too long", map[string]string{strings.Repeat("k", 129): "1"}, "register.meta." + strings.Repeat("k", 129) + ": "},
		{"reserved prefix", map[string]string{"consul-version": "1"}, "register.meta.consul-version: "},
		{"value too long", map[string]string{"k": strings.Repeat("v", 513)}, "register.meta.k: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Registration{Name: "web", Port: 8080, Meta: tc.meta}.Validate()
			if tc.err == "" && err != nil {
				t.Fatalf("Validate() = %v, want nil", err)
			}
			if tc.err != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.err)) {
				t.Fatalf("Validate() = %v, want an error starting %q", err, tc.err)
			}
		})
	}
	// The agent's own verdict on the same metas.
	agent := consultest.Start(t)
	client, err := api.NewClient(&api.Config{Address: agent.HTTPAddr})
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range []map[string]string{
		{strings.Repeat("k", 128): strings.Repeat("v", 512), "team_a-1": ""}, most,
		many, {"app.version": "1"}, {"a b": "1"}, {strings.Repeat("k", 129): "1"}, {"consul-version": "1"}, {"k": strings.Repeat("v", 513)},
	} {
		err := client.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: fmt.Sprintf("web-%d", i), Name: "web", Port: 8080, Meta: m})
		ours := Registration{Name: "web", Port: 8080, Meta: m}.Validate()
		if (err == nil) != (ours == nil) {
			t.Errorf("meta case %d: the agent says %v, ferry says %v", i, err, ours)
		}
	}
}

// refusingProxy forwards every request to a real agent, except the first
// check update once refuse is set, which it answers 500 itself (as an
// agent that failed to persist the check's state does), clearing refuse.
func refusingProxy(t *testing.T, agentAddr string, refuse *atomic.Bool) string {
	t.Helper()
	target, err := url.Parse("http://" + agentAddr)
	if err != nil {
		t.Fatal(err)
	}
	fwd := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v1/agent/check/update/") && refuse.CompareAndSwap(true, false) {
			http.Error(w, "failed persisting state for check", http.StatusInternalServerError)
			return
		}
		fwd.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// The check says why ferry is not ready from its registration on, and a
// registration sent again over a check the agent still has (a check
// update refused for another reason than a forgotten check) makes the
// check follow readiness: the agent keeps the status and output of a
// check it has when the service is registered again, and a registration
// carries no output, so neither may wait for the next refresh (a third of
// the TTL later).
func TestRegistrationSetsCheckStatusAndOutput(t *testing.T) {
	agent := consultest.Start(t)
	var refuse atomic.Bool
	c, err := NewConsul(context.Background(), ConsulConfig{Address: refusingProxy(t, agent.HTTPAddr, &refuse)}, ConsulOptions{
		Logger: testLogger(), Backoff: JitterBackoff(50*time.Millisecond, 300*time.Millisecond),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	// A TTL of 10m: refreshes every 200s, none during the test but those
	// Refresh asks for.
	reg, notReady, _ := runReadyRegistrar(t, c, Registration{Name: "self", ID: "self-1", Port: 7000, TTL: 10 * time.Minute}, "starting")
	cc := agent.Client()
	check := func() *api.AgentCheck {
		checks, err := cc.Agent().Checks()
		if err != nil {
			t.Fatal(err)
		}
		return checks[reg.CheckID()]
	}
	registrations := func(n uint64) func() bool {
		return func() bool { return reg.Stats().Registrations == n }
	}

	waitUntil(t, 10*time.Second, "registered", registrations(1))
	if chk := check(); chk == nil || chk.Status != api.HealthCritical || chk.Output != "not ready: starting" {
		t.Fatalf("registered while not ready: check %+v, want critical with output %q", chk, "not ready: starting")
	}
	notReady.Store(nil)
	reg.Refresh()
	waitUntil(t, 10*time.Second, "passing", func() bool {
		chk := check()
		return chk != nil && chk.Status == api.HealthPassing
	})

	refuse.Store(true)
	draining := "draining"
	notReady.Store(&draining)
	reg.Refresh() // the update is refused: the registrar registers again
	waitUntil(t, 10*time.Second, "registered again", registrations(2))
	if chk := check(); chk == nil || chk.Status != api.HealthCritical || chk.Output != "not ready: draining" {
		t.Fatalf("registered again while not ready: check %+v, want critical with output %q", chk, "not ready: draining")
	}
}

// An agent that was away long enough for the registrar's backoff to grow
// past the refresh interval (restarted, overloaded) gets ferry registered
// again, with its check, within a refresh of coming back, not a backoff
// later: the backoff here is a minute, the TTL 1s.
func TestRegistrarRetriesNoLessOftenThanItRefreshes(t *testing.T) {
	agent := consultest.Start(t)
	c, err := NewConsul(context.Background(), ConsulConfig{Address: agent.HTTPAddr}, ConsulOptions{
		Logger: testLogger(), Backoff: func(int) time.Duration { return time.Minute },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	reg := runRegistrar(t, c, Registration{Name: "self", ID: "self-1", Port: 7000, Tags: []string{"v1"}, TTL: time.Second})
	waitUntil(t, 10*time.Second, "registered", func() bool { return reg.Stats().Registrations == 1 })

	agent.Stop()
	// The check update and the registration that follows it failed: the
	// registrar waits its backoff.
	waitUntil(t, 10*time.Second, "failing while the agent is away", func() bool { return reg.Stats().Errors >= 2 })
	agent.Restart() // a -dev agent: ferry's registration is gone
	cc := agent.Client()
	waitUntil(t, 10*time.Second, "registered again, passing, once the agent is back", func() bool {
		entries, _, err := cc.Health().Service("self", "v1", true, nil)
		return err == nil && len(entries) == 1 && entries[0].Service.ID == "self-1"
	})
}

// The registrar's refreshes are due every TTL/3 from the start of the
// last one, not TTL/3 after it ended: under load, a call that took long
// (up to its timeout, a third of the TTL) pushed the next one later by as
// much, and an agent that took an update at the start of one slow call
// and the next at the end of the following one saw them up to a TTL
// apart, long enough for the check to go critical in between. A call
// that took the whole interval or longer is followed by the next at once;
// a failed one waits its backoff, but no later than the next refresh is
// due. The clock is the test's: each request to the agent takes callTime
// on it.
func TestRegistrarRefreshesCountFromTheCallsStart(t *testing.T) {
	var (
		mu       sync.Mutex
		now      = time.Unix(1_000_000, 0)
		callTime atomic.Int64
		failing  atomic.Bool
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		now = now.Add(time.Duration(callTime.Load()))
		mu.Unlock()
		if failing.Load() {
			http.Error(w, "overloaded", http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(srv.Close)
	c, err := NewConsul(context.Background(), ConsulConfig{Address: strings.TrimPrefix(srv.URL, "http://")}, ConsulOptions{
		Logger: testLogger(), Backoff: func(int) time.Duration { return 5 * time.Second },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	reg, err := c.NewRegistrar(Registration{Name: "self", ID: "self-1", Port: 7000, TTL: 3 * time.Second}, func() error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	reg.now = func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
	// The first step's call time, before Run makes its first requests
	// (next sets it only once Run is running).
	callTime.Store(int64(100 * time.Millisecond))
	waits, fire := steppedRun(t, reg)

	// next lets the registrar's wait end, after the agent's next requests
	// take d each, and returns the wait that follows.
	next := func(d time.Duration, first bool) time.Duration {
		t.Helper()
		callTime.Store(int64(d))
		if !first {
			select {
			case fire <- time.Time{}:
			case <-time.After(10 * time.Second):
				t.Fatal("the registrar is not waiting")
			}
		}
		select {
		case w := <-waits:
			return w
		case <-time.After(10 * time.Second):
			t.Fatal("no wait after the refresh")
		}
		return 0
	}
	// Each case: what the agent's requests take, the wait that follows.
	for i, step := range []struct {
		call, want time.Duration
		fail       bool
		what       string
	}{
		{100 * time.Millisecond, 800 * time.Millisecond, false, "registration and first update, 200ms"},
		{100 * time.Millisecond, 900 * time.Millisecond, false, "an update of 100ms"},
		{400 * time.Millisecond, 600 * time.Millisecond, false, "an update of 400ms"},
		{time.Second, 0, false, "an update of the whole interval"},
		{1500 * time.Millisecond, 0, false, "an update of more than the interval"},
		{300 * time.Millisecond, 400 * time.Millisecond, true, "a failed update and registration, 600ms, backoff 5s"},
		{2 * time.Second, 0, true, "a failed update and registration, 4s, backoff 5s"},
		{100 * time.Millisecond, 800 * time.Millisecond, false, "registration and first update again, 200ms"},
	} {
		failing.Store(step.fail)
		if got := next(step.call, i == 0); got != step.want {
			t.Fatalf("after %s: the next refresh in %s, want %s (interval 1s)", step.what, got, step.want)
		}
	}
}

// An operator deregisters ferry through the agent's API: the next refresh
// (no Refresh here), due a third of the TTL after the last, finds the
// check gone (the agent refuses its update) and registers again at once;
// ferry is listed passing again within that interval, its updates taken.
func TestRegistrarRegistersAgainAfterAnOperatorsDeregistration(t *testing.T) {
	agent := consultest.Start(t)
	cc := agent.Client()
	c := newTestConsul(t, agent, ConsulConfig{})
	reg := runRegistrar(t, c, Registration{Name: "self", ID: "self-1", Port: 7000, TTL: 3 * time.Second})
	waitUntil(t, 10*time.Second, "registered and passing in the catalog", func() bool {
		return reg.Stats().Registrations == 1 && catalogCheck(t, cc, "self", reg.CheckID()) == api.HealthPassing
	})

	if err := cc.Agent().ServiceDeregister("self-1"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "registered again and passing in the catalog", func() bool {
		return reg.Stats().Registrations >= 2 && catalogCheck(t, cc, "self", reg.CheckID()) == api.HealthPassing
	})
	updates := reg.Stats().Updates
	waitUntil(t, 10*time.Second, "the next update taken", func() bool { return reg.Stats().Updates > updates })
	if st := reg.Stats(); st.Errors == 0 {
		t.Fatalf("registrar %+v: registered again without an update refused", st)
	}
}

// A registration that keeps failing is logged once per episode, not at
// every retry: when it starts failing, when its error changes and every
// failingReminder while it goes on; its recovery is logged once. (A token
// without service:write logged a warning every few seconds, each alike.)
// The agent is the test's: it answers as mode says; the clock is the
// test's too.
func TestRegistrarLogsAFailingEpisodeOnce(t *testing.T) {
	var mode atomic.Value
	mode.Store("ok")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch mode.Load().(string) {
		case "403":
			http.Error(w, "Permission denied: token lacks service:write", http.StatusForbidden)
		case "503":
			http.Error(w, "overloaded", http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(srv.Close)
	var logged syncbuf.Buffer
	log := slog.New(slog.NewJSONHandler(&logged, nil))
	c, err := NewConsul(context.Background(), ConsulConfig{Address: strings.TrimPrefix(srv.URL, "http://")}, ConsulOptions{
		Logger: log, Backoff: func(int) time.Duration { return time.Second },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	reg, err := c.NewRegistrar(Registration{Name: "self", ID: "self-1", Port: 7000, TTL: 3 * time.Second}, func() error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	var clockMu sync.Mutex
	now := time.Unix(1_000_000, 0)
	reg.now = func() time.Time {
		clockMu.Lock()
		defer clockMu.Unlock()
		return now
	}
	waits, fire := steppedRun(t, reg)
	// step lets the registrar make its next refresh with the agent in m,
	// after the clock moved by d, and waits until it is done with it.
	waited := func() {
		t.Helper()
		select {
		case <-waits:
		case <-time.After(10 * time.Second):
			t.Fatal("the registrar is not waiting")
		}
	}
	step := func(m string, d time.Duration) {
		t.Helper()
		mode.Store(m)
		clockMu.Lock()
		now = now.Add(d)
		clockMu.Unlock()
		select {
		case fire <- time.Time{}:
		case <-time.After(10 * time.Second):
			t.Fatal("the registrar is not waiting")
		}
		waited()
	}
	type line struct {
		Msg      string
		Err      string
		Attempts int
		Failed   int `json:"failed_attempts"`
	}
	lines := func() (out []line) {
		for _, l := range strings.Split(strings.TrimSpace(logged.String()), "\n") {
			var v line
			if json.Unmarshal([]byte(l), &v) == nil && strings.HasPrefix(v.Msg, "consul registration") {
				out = append(out, v)
			}
		}
		return out
	}
	expect := func(what string, want ...string) {
		t.Helper()
		var got []string
		for _, l := range lines() {
			got = append(got, l.Msg)
		}
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Fatalf("%s: logged %q, want %q", what, got, want)
		}
	}
	waited() // registered
	expect("registered")
	for range 5 {
		step("403", time.Second)
	}
	expect("five failures alike", "consul registration failing")
	step("503", time.Second)
	expect("the error changed", "consul registration failing", "consul registration failing")
	step("503", time.Second)
	step("503", failingReminder)
	expect("still failing after the reminder's interval", "consul registration failing", "consul registration failing", "consul registration failing")
	step("ok", time.Second)
	expect("recovered", "consul registration failing", "consul registration failing", "consul registration failing", "consul registration recovered")
	if l := lines()[3]; l.Failed != 8 {
		t.Errorf("recovered after %d failed attempts, want 8", l.Failed)
	}
	step("403", time.Second)
	expect("a new episode", "consul registration failing", "consul registration failing", "consul registration failing", "consul registration recovered", "consul registration failing")
	if l := lines()[4]; l.Attempts != 1 || !strings.Contains(l.Err, "403") {
		t.Errorf("the new episode's warning: attempts %d, err %q; want 1 and the 403", l.Attempts, l.Err)
	}
}

// RecheckIfPassing asks for a refresh only while the check was last
// reported passing: the sign it reacts to (the app refusing a connection)
// comes with every request while the app is down, and must not become an
// agent call per request once the check is critical.
func TestRecheckIfPassingOnlyWhilePassing(t *testing.T) {
	c, err := NewConsul(context.Background(), ConsulConfig{Address: "127.0.0.1:1"}, ConsulOptions{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	reg, err := c.NewRegistrar(Registration{Name: "self", ID: "self-1", Port: 7000, TTL: 3 * time.Second}, func() error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		last string // "" before any report
		poke bool
	}{{"", false}, {consulCritical, false}, {consulPassing, true}} {
		if tc.last != "" {
			s := tc.last
			reg.lastStatus.Store(&s)
		}
		for range 100 {
			reg.RecheckIfPassing()
		}
		if got := len(reg.poke) == 1; got != tc.poke {
			t.Fatalf("last reported %q: a refresh asked for %v, want %v", tc.last, got, tc.poke)
		}
		select {
		case <-reg.poke:
		default:
		}
	}
}

// steppedRun runs reg until the test ends, with the test's waits: each
// wait Run asks for goes to waits, and ends when the test sends on fire.
func steppedRun(t *testing.T, reg *Registrar) (waits <-chan time.Duration, fire chan<- time.Time) {
	w := make(chan time.Duration, 100)
	f := make(chan time.Time)
	reg.after = func(d time.Duration) <-chan time.Time {
		w <- d
		return f
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- reg.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-runDone
	})
	return w, f
}

// Each registration that takes is logged once, with what the catalog now
// lists (the first at start, and one after the agent forgot ferry); the
// refreshes of the check between them are not. ferry logged failures,
// recoveries and its deregistration, but nothing when it registered: an
// operator reading a healthy ferry's log could not tell it was in the
// catalog, nor under which ID and check.
func TestRegistrarLogsEachRegistrationOnce(t *testing.T) {
	agent := consultest.Start(t)
	cc := agent.Client()
	var logged syncbuf.Buffer
	log := slog.New(slog.NewJSONHandler(&logged, nil))
	c, err := NewConsul(context.Background(), ConsulConfig{Address: agent.HTTPAddr}, ConsulOptions{
		Logger: log, Backoff: JitterBackoff(50*time.Millisecond, 300*time.Millisecond),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	reg := runRegistrar(t, c, Registration{Name: "self", ID: "self-1", Address: "127.0.0.1", Port: 7000, TTL: 3 * time.Second})
	type line struct {
		Msg, ID, Service, Address, Check, TTL string
		Port                                  int
	}
	registered := func() (out []line) {
		for _, l := range strings.Split(strings.TrimSpace(logged.String()), "\n") {
			var v line
			if json.Unmarshal([]byte(l), &v) == nil && v.Msg == "registered with consul" {
				out = append(out, v)
			}
		}
		return out
	}
	waitUntil(t, 10*time.Second, "registered, then two refreshes of its check", func() bool {
		st := reg.Stats()
		return st.Registrations == 1 && st.Updates >= 2
	})
	got := registered()
	want := line{Msg: "registered with consul", ID: "self-1", Service: "self", Address: "127.0.0.1", Port: 7000, Check: reg.CheckID(), TTL: "3s"}
	if len(got) != 1 || got[0] != want {
		t.Fatalf("after one registration and its refreshes, logged %+v, want once %+v", got, want)
	}
	if err := cc.Agent().ServiceDeregister("self-1"); err != nil {
		t.Fatal(err)
	}
	// The line follows the registration's count: wait for the line.
	waitUntil(t, 10*time.Second, "registered again, and logged", func() bool { return len(registered()) >= 2 })
	if got := registered(); len(got) != 2 || got[1] != want {
		t.Fatalf("after the agent forgot ferry and it registered again, logged %+v, want %+v twice", got, want)
	}
}
