package discovery

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
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
