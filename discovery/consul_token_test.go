package discovery

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/discovery/consultest"
	"github.com/hashicorp/consul/api"
)

// rotateTokenFile puts token in path as Vault agent and Kubernetes do: a
// new file renamed over the old one.
func rotateTokenFile(t *testing.T, path, token string) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// A token read from consul.token_file is rotated (Vault agent, a
// Kubernetes projected secret): the file gets a new token and the old one
// is revoked. Discovery and registration go on with the new token: the
// watch sees the next change fresh, and the registrar's check updates and
// deregistration are accepted. Then the other order: the token is revoked
// before the file is rewritten; everything fails with 403 until the file
// holds a good token again, and then works without a restart.
func TestConsulTokenFileRotated(t *testing.T) {
	agent := consultest.StartACL(t)
	cc := agent.Client()
	registerTTL(t, cc, "api", "api-1", 9001, api.HealthPassing)
	const rules = `service "api" { policy = "read" }
service "self" { policy = "write" }
node_prefix "" { policy = "read" }`
	token1, _ := agent.CreateToken(rules)
	path := filepath.Join(t.TempDir(), "consul-token")
	rotateTokenFile(t, path, token1)

	c := newTestConsul(t, agent, ConsulConfig{TokenFile: path, WaitTime: 500 * time.Millisecond})
	svc, _ := c.Service("api")
	waitSnapshot(t, svc, 10*time.Second, "one instance", hasAddrs("127.0.0.1:9001"))

	reg, notReady, runDone := runReadyRegistrar(t, c, Registration{Name: "self", ID: "self-1", Port: 7000, TTL: 30 * time.Second}, "")
	checkIs := func(what, status, output string) {
		t.Helper()
		waitUntil(t, 10*time.Second, what, func() bool {
			checks, err := cc.Agent().Checks()
			chk := checks[reg.CheckID()]
			return err == nil && chk != nil && chk.Status == status && strings.Contains(chk.Output, output)
		})
	}
	checkIs("registered and passing", api.HealthPassing, "ready")
	// notReadyAndCheck marks ferry not ready and waits for the agent to
	// show it: a check update went through with the file's token.
	notReadyAndCheck := func(what, msg string) {
		t.Helper()
		notReady.Store(&msg)
		reg.Refresh()
		checkIs(what, api.HealthCritical, msg)
	}

	// The file is rewritten, then the old token revoked.
	token2, _ := agent.CreateToken(rules)
	rotateTokenFile(t, path, token2)
	agent.RevokeToken(token1)
	registerTTL(t, cc, "api", "api-2", 9002, api.HealthPassing)
	s, _ := waitSnapshot(t, svc, 10*time.Second, "the new instance, fresh, after the token was rotated", func(s *Snapshot) bool {
		return !s.Stale && hasAddrs("127.0.0.1:9001", "127.0.0.1:9002")(s)
	})
	if s.Err != "" {
		t.Fatalf("after the rotation: %+v", s)
	}
	notReadyAndCheck("check update with the new token", "draining one")

	// The token is revoked first; the file gets the new one later.
	waitQueriesUnderWay(t, c, "api")
	agent.RevokeToken(token2)
	registerTTL(t, cc, "api", "api-3", 9003, api.HealthPassing)
	// It passes in about a second; 30s for a loaded machine.
	waitSnapshot(t, svc, 30*time.Second, "stale while the file's token is revoked", func(s *Snapshot) bool { return s.Stale })
	token3, _ := agent.CreateToken(rules)
	rotateTokenFile(t, path, token3)
	s, _ = waitSnapshot(t, svc, 10*time.Second, "fresh once the file holds a good token", func(s *Snapshot) bool {
		return !s.Stale && hasAddrs("127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003")(s)
	})
	if s.Err != "" {
		t.Fatalf("after the second rotation: %+v", s)
	}
	notReadyAndCheck("check update with the third token", "draining two")
	for _, st := range c.Stats() {
		if strings.Contains(st.LastError, token2) || strings.Contains(st.LastError, token1) {
			t.Fatalf("a token in the stats: %+v", st)
		}
	}

	if err := reg.Deregister(context.Background()); err != nil {
		t.Fatalf("Deregister with the rotated token: %v", err)
	}
	if err := <-runDone; err != nil {
		t.Fatalf("Run after Deregister returned %v", err)
	}
	if svcs, err := cc.Agent().Services(); err != nil || svcs["self-1"] != nil {
		t.Fatalf("still registered after Deregister: %v %v", svcs, err)
	}
}

// The token file is looked at again only once recheck has passed since the
// last look, then taken when it changed; a file that is empty or missing
// while it is being rewritten keeps the last token.
func TestConsulTokenFileRecheck(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	rotateTokenFile(t, path, "token-1")
	tok, err := newConsulTokenFile(path, "")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	tok.now = func() time.Time { return now }
	tok.checked = now
	if got := tok.get(); got != "token-1" {
		t.Fatalf("first token %q", got)
	}
	rotateTokenFile(t, path, "token-2")
	now = now.Add(tok.recheck - time.Millisecond)
	if got := tok.get(); got != "token-1" {
		t.Fatalf("before recheck passed: %q, want the file left alone", got)
	}
	now = now.Add(time.Millisecond)
	if got := tok.get(); got != "token-2" {
		t.Fatalf("after recheck: %q, want the rotated token", got)
	}
	for _, tc := range []struct {
		name  string
		write func()
	}{
		{"emptied in place", func() { os.WriteFile(path, nil, 0o600) }},
		{"removed", func() { os.Remove(path) }},
		{"blank", func() { os.WriteFile(path, []byte(" \n"), 0o600) }},
	} {
		tc.write()
		now = now.Add(tok.recheck)
		if got := tok.get(); got != "token-2" {
			t.Fatalf("file %s: token %q, want the last one kept", tc.name, got)
		}
	}
	os.WriteFile(path, []byte("token-3"), 0o600) // rewritten in place
	now = now.Add(tok.recheck)
	if got := tok.get(); got != "token-3" {
		t.Fatalf("rewritten in place: %q", got)
	}
	if got := tok.scrub("a token-1 b token-2 c token-3"); got != "a [redacted] b [redacted] c [redacted]" {
		t.Fatalf("scrub: %q", got)
	}
}

// tokenCheckingAgent answers 200 to requests carrying the token good holds,
// and 403 "ACL not found" to others, and records the tokens it saw.
func tokenCheckingAgent(t *testing.T, good *atomic.Pointer[string]) (addr string, seen func() []string) {
	var mu sync.Mutex
	var tokens []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := r.Header.Get("X-Consul-Token")
		mu.Lock()
		tokens = append(tokens, tok)
		mu.Unlock()
		if tok != *good.Load() {
			http.Error(w, "ACL not found", http.StatusForbidden)
			return
		}
		w.Header().Set("X-Consul-Index", "7")
		io.WriteString(w, "[]")
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(tokens)
	}
}

// A token Consul refuses (403) makes the client read its file again at
// once, before recheck has passed, and send the request once more with
// the new token; a file that still holds the refused token gives the 403,
// after one request, not a loop.
func TestConsulTokenFileReloadedOnForbidden(t *testing.T) {
	var good atomic.Pointer[string]
	g := "token-2"
	good.Store(&g)
	addr, seen := tokenCheckingAgent(t, &good)
	path := filepath.Join(t.TempDir(), "token")
	rotateTokenFile(t, path, "token-1")
	c := testConsulClient(t, ConsulConfig{Address: addr, TokenFile: path})
	c.token.recheck = time.Hour // only a refusal makes it look

	ctx := context.Background()
	_, _, err := c.healthService(ctx, "api", nil, nil)
	var se consulStatusError
	if !errors.As(err, &se) || se.Code != http.StatusForbidden {
		t.Fatalf("with a revoked token in the file: %v", err)
	}
	if got := seen(); !slices.Equal(got, []string{"token-1"}) {
		t.Fatalf("tokens sent %q, want one request", got)
	}
	rotateTokenFile(t, path, "token-2")
	if _, _, err := c.healthService(ctx, "api", nil, nil); err != nil {
		t.Fatalf("after the file was rotated: %v", err)
	}
	if tok, err := c.registerService(ctx, &consulRegistration{ID: "self-1", Name: "self"}); err != nil || tok != "token-2" {
		t.Fatalf("register after the file was rotated: token %q, %v; want token-2", tok, err)
	}
	if got := seen(); !slices.Equal(got, []string{"token-1", "token-1", "token-2", "token-2"}) {
		t.Fatalf("tokens sent %q", got)
	}

	// A file that cannot be read after a refusal is said in the error.
	g3 := "token-3"
	good.Store(&g3)
	os.Remove(path)
	err = c.deregisterService(ctx, "self-1")
	if !errors.As(err, &se) || se.Code != http.StatusForbidden || !strings.Contains(err.Error(), "reading consul token file") {
		t.Fatalf("refused, file gone: %v", err)
	}
	if strings.Contains(err.Error(), "token-2") {
		t.Fatalf("error carries the token: %v", err)
	}
}

// The agent syncs a service and its check to the catalog, and removes them
// from it, with the token the service was registered with, not with the
// token of later requests. After the token file is rotated and the old
// token revoked, the agent takes ferry's check updates (and its
// deregistration) with the new token, but the catalog, what every other
// ferry reads, would keep ferry listed and passing: draining, and even
// after it deregistered. The registrar registers again with the new token,
// at its next refresh and, if the token changed since, when it
// deregisters.
func TestRegistrarTokenRotationReachesTheCatalog(t *testing.T) {
	agent := consultest.StartACL(t)
	cc := agent.Client()
	const rules = `service "self" { policy = "write" }
node_prefix "" { policy = "read" }`
	token1, _ := agent.CreateToken(rules)
	path := filepath.Join(t.TempDir(), "consul-token")
	rotateTokenFile(t, path, token1)
	c := newTestConsul(t, agent, ConsulConfig{TokenFile: path})
	c.client.token.recheck = 0 // every request looks at the file: no waiting for the next look
	// A TTL of 10m: no refresh comes by itself during the test (one every
	// 200s); each one comes from Refresh, or is Deregister's.
	reg, notReady, runDone := runReadyRegistrar(t, c, Registration{Name: "self", ID: "self-1", Port: 7000, TTL: 10 * time.Minute}, "")
	// catalog is the check's status as the catalog has it ("" when the
	// catalog does not list ferry).
	catalog := func() string {
		checks, _, err := cc.Health().Checks("self", nil)
		if err != nil {
			t.Fatalf("catalog: %v", err)
		}
		for _, chk := range checks {
			if chk.CheckID == reg.CheckID() {
				return chk.Status
			}
		}
		return ""
	}
	waitUntil(t, 10*time.Second, "passing in the catalog", func() bool { return catalog() == api.HealthPassing })

	token2, _ := agent.CreateToken(rules)
	rotateTokenFile(t, path, token2)
	agent.RevokeToken(token1)
	msg := "draining"
	notReady.Store(&msg)
	reg.Refresh()
	waitUntil(t, 10*time.Second, "critical in the catalog after the token was rotated", func() bool { return catalog() == api.HealthCritical })

	// Rotated again, and Deregister comes before any refresh.
	rotateThenDeregister(t, agent, cc, path, rules, token2, reg, runDone)
}

// catalogCheck is the status of checkID of service as the catalog has it
// ("" when the catalog does not list it).
func catalogCheck(t *testing.T, cc *api.Client, service, checkID string) string {
	t.Helper()
	checks, _, err := cc.Health().Checks(service, nil)
	if err != nil {
		t.Fatalf("catalog: %v", err)
	}
	for _, chk := range checks {
		if chk.CheckID == checkID {
			return chk.Status
		}
	}
	return ""
}

// The token file is rotated and the old token revoked just before ferry
// deregisters (a shutdown): less than a second after the registrar's last
// look at the file, which it looks at no more than once a second (here:
// not again for an hour). Deregister reads the file afresh: the agent
// gets the new token by a registration first, and removes ferry from the
// catalog with it. It went with the old token, the agent took the
// deregistration on the 403's retry, and the catalog, which the agent
// updates with the registration's (revoked) token, kept ferry listed.
func TestRegistrarDeregisterReadsTheTokenFileAfresh(t *testing.T) {
	f := fileTokenRegistrar(t)
	rotateThenDeregister(t, f.agent, f.cc, f.path, f.rules, f.token1, f.reg, f.runDone)
}

// The agent forgot ferry (an operator deregistered it, a restarted -dev
// agent) and the token file was rotated since the registrar's last look:
// the registrar registers again with the file's current token, read
// afresh, not the old one, which may be revoked next. With the old one,
// the agent synced the registration, and then every check update, to the
// catalog with the revoked token: here ferry turned critical on the agent
// and stayed passing in the catalog.
func TestRegistrarRegistersAgainWithTheTokenFileAfresh(t *testing.T) {
	f := fileTokenRegistrar(t)
	agent, cc, path, rules, token1, reg, notReady := f.agent, f.cc, f.path, f.rules, f.token1, f.reg, f.notReady

	// The registrar is made to register again, as when the agent forgot
	// ferry (a restart, an operator's deregistration; the registrar's own
	// tests cover it finding that out). A deregistration through the
	// agent's API made that happen too, but the catalog lists ferry
	// passing before the registrar's first check update is answered:
	// under load the deregistration came in between, the update was
	// refused, and the registration after it was the registrar's first
	// (TestRegistrarRegistersAgainWhenForgottenBeforeItsFirstUpdate), so
	// a wait for a second one timed out.
	reg.syncMu.Lock()
	reg.registered = false
	reg.syncMu.Unlock()
	token2, _ := agent.CreateToken(rules)
	rotateTokenFile(t, path, token2)
	// Poked on every poll: the registrar refreshes on its own only every
	// TTL/3 (minutes here), and what is tested is the token the
	// registration again carries, not how soon it comes.
	deadline := time.Now().Add(20 * time.Second)
	for {
		reg.Refresh()
		if reg.Stats().Registrations >= 2 && catalogCheck(t, cc, "self", reg.CheckID()) == api.HealthPassing {
			break
		}
		if time.Now().After(deadline) {
			checks, err := cc.Agent().Checks()
			t.Fatalf("registered again and passing in the catalog: not within 20s (registrar %+v; catalog check %q; agent's checks %v, %v)",
				reg.Stats(), catalogCheck(t, cc, "self", reg.CheckID()), checks, err)
		}
		time.Sleep(50 * time.Millisecond) // polling a condition, not synchronising
	}

	agent.RevokeToken(token1)
	msg := "draining"
	notReady.Store(&msg)
	reg.Refresh()
	waitUntil(t, 10*time.Second, "critical in the catalog", func() bool {
		return catalogCheck(t, cc, "self", reg.CheckID()) == api.HealthCritical
	})
}

// tokenFileRegistrar is a registrar of service "self" on an ACL agent,
// with its token in a file it looks at again only after an hour, passing
// in the catalog.
type tokenFileRegistrar struct {
	agent    *consultest.Agent
	cc       *api.Client
	rules    string
	path     string // the token file
	token1   string // the token in it
	reg      *Registrar
	notReady *atomic.Pointer[string]
	runDone  <-chan error
}

func fileTokenRegistrar(t *testing.T) tokenFileRegistrar {
	t.Helper()
	f := tokenFileRegistrar{agent: consultest.StartACL(t)}
	f.cc = f.agent.Client()
	f.rules = `service "self" { policy = "write" }
node_prefix "" { policy = "read" }`
	f.token1, _ = f.agent.CreateToken(f.rules)
	f.path = filepath.Join(t.TempDir(), "consul-token")
	rotateTokenFile(t, f.path, f.token1)
	c := newTestConsul(t, f.agent, ConsulConfig{TokenFile: f.path})
	c.client.token.recheck = time.Hour // the last look was too recent to look again
	f.reg, f.notReady, f.runDone = runReadyRegistrar(t, c, Registration{Name: "self", ID: "self-1", Port: 7000, TTL: 10 * time.Minute}, "")
	waitUntil(t, 10*time.Second, "passing in the catalog", func() bool {
		return catalogCheck(t, f.cc, "self", f.reg.CheckID()) == api.HealthPassing
	})
	return f
}

// rotateThenDeregister writes a new token to the file, revokes old and
// deregisters at once: ferry must then leave the catalog.
func rotateThenDeregister(t *testing.T, agent *consultest.Agent, cc *api.Client, path, rules, old string, reg *Registrar, runDone <-chan error) {
	t.Helper()
	token, _ := agent.CreateToken(rules)
	rotateTokenFile(t, path, token)
	agent.RevokeToken(old)
	if err := reg.Deregister(context.Background()); err != nil {
		t.Fatalf("Deregister: %v", err)
	}
	if err := <-runDone; err != nil {
		t.Fatalf("Run after Deregister returned %v", err)
	}
	waitUntil(t, 10*time.Second, "out of the catalog after Deregister", func() bool {
		svcs, _, err := cc.Catalog().Service("self", "", nil)
		return err == nil && len(svcs) == 0
	})
}
