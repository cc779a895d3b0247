package discovery

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/discovery/consultest"
	"github.com/hashicorp/consul/api"
)

// holdingProxy stands between ferry and a real agent. It holds the first
// request whose path starts with hold until released, then hands it to the
// agent whether or not ferry still waits for the answer: an agent takes a
// request whose bytes arrived even if the caller hung up. Everything else
// goes through at once.
type holdingProxy struct {
	srv     *httptest.Server
	held    chan struct{} // closed when the held registration arrived
	release chan struct{} // closed to hand it to the agent
	landed  chan struct{} // closed once the agent answered it
	// heldAnswer is the agent's answer to the held request (status and
	// body); set before landed is closed.
	heldAnswer string
	deregSent  chan struct{} // closed when a deregistration was answered by the agent
	once       sync.Once
	dereg      sync.Once
}

func newHoldingProxy(t *testing.T, agentAddr, hold string) *holdingProxy {
	p := &holdingProxy{held: make(chan struct{}), release: make(chan struct{}), landed: make(chan struct{}), deregSent: make(chan struct{})}
	client := &http.Client{Transport: &http.Transport{}}
	forward := func(r *http.Request, body []byte) (*http.Response, error) {
		out, err := http.NewRequestWithContext(context.Background(), r.Method, "http://"+agentAddr+r.URL.RequestURI(), bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		out.Header = r.Header.Clone()
		return client.Do(out)
	}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		first := false
		if strings.HasPrefix(r.URL.Path, hold) {
			p.once.Do(func() { first = true })
		}
		if first {
			close(p.held)
			<-p.release
			defer close(p.landed)
		}
		resp, err := forward(r, body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		if first {
			b, _ := io.ReadAll(resp.Body)
			p.heldAnswer = fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(b))
			resp.Body = io.NopCloser(bytes.NewReader(b))
		}
		if strings.HasPrefix(r.URL.Path, "/v1/agent/service/deregister/") {
			io.Copy(io.Discard, resp.Body)
			p.dereg.Do(func() { close(p.deregSent) })
		}
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}))
	t.Cleanup(func() {
		select {
		case <-p.release:
		default:
			close(p.release)
		}
		p.srv.Close()
		client.CloseIdleConnections()
	})
	return p
}

// Deregister while a registration is on its way to the agent (ferry shut
// down as it registers, or retries registering): the registration must not
// land after the deregistration, or ferry stays listed in Consul after it
// exited, until its TTL check fails and Consul reaps it. The proxy holds
// the registration and hands it to the agent only once a deregistration
// went through (the worst order a registration cut short can take) or
// once Deregister says it waits for the call in progress; either way,
// once Deregister returned and the registration was answered, the agent
// lists no ferry.
func TestDeregisterDuringRegistrationLeavesNothing(t *testing.T) {
	agent := consultest.Start(t)
	p := newHoldingProxy(t, agent.HTTPAddr, "/v1/agent/service/register")
	c, err := NewConsul(context.Background(), ConsulConfig{Address: strings.TrimPrefix(p.srv.URL, "http://")}, ConsulOptions{
		Logger: testLogger(), Backoff: JitterBackoff(50*time.Millisecond, 300*time.Millisecond),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	reg, err := c.NewRegistrar(Registration{Name: "self", ID: "self-1", Port: 7000, TTL: 30 * time.Second}, func() error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	waiting := make(chan struct{})
	reg.deregisterWaits = func() { close(waiting) }
	go func() {
		select {
		case <-p.deregSent:
		case <-waiting:
		}
		close(p.release)
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runDone := make(chan error, 1)
	go func() { runDone <- reg.Run(ctx) }()
	<-p.held

	if err := reg.Deregister(context.Background()); err != nil {
		t.Fatalf("Deregister: %v", err)
	}
	if err := <-runDone; err != nil {
		t.Fatalf("Run after Deregister: %v", err)
	}
	select {
	case <-p.landed:
	case <-time.After(10 * time.Second):
		t.Fatal("the held registration never reached the agent")
	}
	svcs, err := agent.Client().Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	if svcs["self-1"] != nil {
		t.Fatalf("after Deregister returned, the agent lists ferry: the registration landed after the deregistration")
	}
}

// The agent forgets ferry between the registration and its first check
// update (an operator deregistered it through the agent's API just as it
// registered): the agent answers the update with a 500 ("CheckID ... does
// not have associated TTL": the deregistration stopped the check's TTL
// timer with the service), register fails, and the registrar registers
// again after its backoff, not a refresh interval (minutes here) later.
// The registration that never completed is not counted: the one that
// comes after the deregistration is the registrar's first, and every
// update after it is taken. (A test that deregistered ferry as soon as the
// catalog listed it passing, and then waited for a second registration,
// waited in vain so under load: the catalog had it passing before the
// first update was answered.)
func TestRegistrarRegistersAgainWhenForgottenBeforeItsFirstUpdate(t *testing.T) {
	agent := consultest.Start(t)
	cc := agent.Client()
	p := newHoldingProxy(t, agent.HTTPAddr, "/v1/agent/check/update/")
	c, err := NewConsul(context.Background(), ConsulConfig{Address: strings.TrimPrefix(p.srv.URL, "http://")}, ConsulOptions{
		Logger: testLogger(), Backoff: JitterBackoff(50*time.Millisecond, 300*time.Millisecond),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	reg := runRegistrar(t, c, Registration{Name: "self", ID: "self-1", Port: 7000, TTL: 10 * time.Minute})

	select {
	case <-p.held:
	case <-time.After(10 * time.Second):
		t.Fatal("no check update after the registration")
	}
	waitUntil(t, 10*time.Second, "passing in the catalog while the first update is held", func() bool {
		return catalogCheck(t, cc, "self", reg.CheckID()) == api.HealthPassing
	})
	if st := reg.Stats(); st.Registrations != 0 {
		t.Fatalf("registration counted before its first update was answered: %+v", st)
	}
	if err := cc.Agent().ServiceDeregister("self-1"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "gone from the agent and the catalog", func() bool {
		checks, err := cc.Agent().Checks()
		return err == nil && checks[reg.CheckID()] == nil && catalogCheck(t, cc, "self", reg.CheckID()) == ""
	})
	close(p.release)
	select {
	case <-p.landed:
	case <-time.After(10 * time.Second):
		t.Fatal("the held update never reached the agent")
	}
	if !strings.HasPrefix(p.heldAnswer, "404 ") || !strings.Contains(p.heldAnswer, "Unknown check ID") {
		t.Fatalf("the agent answered the update of a deregistered check %q", p.heldAnswer)
	}

	// No Refresh: the next refresh is due only in 200s.
	waitUntil(t, 10*time.Second, "registered again and passing in the catalog", func() bool {
		return reg.Stats().Registrations == 1 && catalogCheck(t, cc, "self", reg.CheckID()) == api.HealthPassing
	})
	reg.Refresh()
	waitUntil(t, 10*time.Second, "the next update taken", func() bool { return reg.Stats().Updates >= 1 })
	if st := reg.Stats(); st.Registrations != 1 || st.Errors != 1 {
		t.Fatalf("registrar %+v, want 1 registration (the one after the deregistration) and 1 error (the refused first update)", st)
	}
}
