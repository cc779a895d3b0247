// Package consultest runs a real Consul agent (`consul agent -dev`) for
// tests of any ferry package. It is not a mock: tests talk to Consul's own
// HTTP API on loopback ports the test chose.
//
// The binary is found through env FERRY_CONSUL_BIN, else <repo>/bin/consul,
// else by running scripts/tool.sh consul (which builds it once per machine).
// When none works the test is skipped, or fails when env CI is set.
package consultest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/ferrymesh/ferry/internal/tooltest"

	"github.com/ferrymesh/ferry/internal/localnet"
	"github.com/ferrymesh/ferry/internal/syncbuf"
)

// Agent is one running (or stopped) `consul agent -dev`.
type Agent struct {
	t    testing.TB
	bin  string
	dir  string
	args []string

	// HTTPAddr is the agent's HTTP API, 127.0.0.1:port.
	HTTPAddr string
	// Ports the agent listens on.
	HTTPPort, GRPCPort, SerfLANPort, SerfWANPort, ServerPort int
	// ManagementToken is the ACL management token of an agent started by
	// StartACL; "" when ACLs are off.
	ManagementToken string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	log  *syncbuf.Buffer
	runs int
}

// startTimeout bounds how long an agent may take to elect itself leader.
const startTimeout = 60 * time.Second

// Binary returns the path of the consul binary, or skips the test (fails it
// when CI is set) if there is none.
func Binary(t testing.TB) string {
	t.Helper()
	return tooltest.Binary(t, "consul")
}

// Start runs `consul agent -dev` on free loopback ports (DNS off) and waits
// until it has a leader and its own node is in the catalog. The agent is
// stopped by t.Cleanup.
func Start(t testing.TB) *Agent {
	t.Helper()
	return start(t, "")
}

// StartACL is Start with ACLs enabled and denying by default: a request
// without a token sees nothing. Client carries ManagementToken; ferry under
// test gets a token of its own (see CreateToken).
func StartACL(t testing.TB) *Agent {
	t.Helper()
	return start(t, "3c1d5f1e-6a0b-4c52-9d1e-0f6f2b7a9c41")
}

func start(t testing.TB, token string) *Agent {
	t.Helper()
	bin := Binary(t)
	a := &Agent{t: t, bin: bin, dir: t.TempDir(), log: &syncbuf.Buffer{}, ManagementToken: token}
	t.Cleanup(a.Stop)
	// Free ports are picked by binding and releasing them: another
	// process (a parallel test package) can take one before the agent
	// binds it. Such a start fails at once; pick new ports and try again.
	for attempt := 1; ; attempt++ {
		ports, err := localnet.FreePorts(5)
		if err != nil {
			t.Fatalf("consultest: %v", err)
		}
		a.setPorts(ports)
		err = a.start()
		if err == nil {
			break
		}
		if attempt == 5 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("consultest: %v", err)
		}
	}
	return a
}

// setPorts sets the agent's ports and the command line that uses them.
func (a *Agent) setPorts(ports []int) {
	a.HTTPPort, a.GRPCPort, a.SerfLANPort, a.SerfWANPort, a.ServerPort = ports[0], ports[1], ports[2], ports[3], ports[4]
	a.HTTPAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(a.HTTPPort))
	a.args = []string{
		"agent", "-dev",
		"-node", "ferry-test",
		"-bind", "127.0.0.1",
		"-client", "127.0.0.1",
		"-http-port", strconv.Itoa(a.HTTPPort),
		"-grpc-port", strconv.Itoa(a.GRPCPort),
		"-serf-lan-port", strconv.Itoa(a.SerfLANPort),
		"-serf-wan-port", strconv.Itoa(a.SerfWANPort),
		"-server-port", strconv.Itoa(a.ServerPort),
		"-dns-port", "-1",
		"-log-level", "info", // waitReady reads that it serves HTTP
		"-disable-host-node-id",
	}
	if a.ManagementToken != "" {
		a.args = append(a.args, "-hcl", `acl { enabled = true
default_policy = "deny"
enable_token_persistence = false
tokens { initial_management = "`+a.ManagementToken+`" } }`)
	}
}

// Stop stops the agent (SIGTERM, then SIGKILL after 10s; on Windows, which
// has no SIGTERM, it is killed at once) and waits for it to exit. It is a
// no-op on a stopped agent.
func (a *Agent) Stop() {
	a.mu.Lock()
	cmd, done := a.cmd, a.done
	a.cmd = nil
	a.mu.Unlock()
	if cmd == nil {
		return
	}
	terminate(cmd.Process)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// Restart stops the agent and starts it again on the same ports. A -dev
// agent keeps nothing: every registration is gone and the Raft index starts
// over, lower than before.
func (a *Agent) Restart() {
	a.t.Helper()
	a.Stop()
	// The agent's ports were just released; on a loaded machine one can
	// still be held for a moment (a socket closing), which makes the new
	// agent exit at start-up. Try again for a while before giving up.
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := a.start()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("consultest: restart: %v", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// Pause stops the agent's process (SIGSTOP) without closing anything: its
// ports still accept connections and requests already sent wait, unanswered,
// as with an agent that hangs. Resume continues it; Stop resumes it first.
// Windows has no SIGSTOP: there, the test is skipped, saying so.
//
// Pause returns once the agent is stopped, not merely signalled: kill(2)
// returns as soon as SIGSTOP is queued, and the agent's threads stop as the
// kernel next schedules each of them. On a loaded 2-core machine that took
// up to 30 ms, in which the agent still answered requests: a test that
// started ferry right after Pause saw its first query answered.
func (a *Agent) Pause() {
	a.t.Helper()
	pid, exited := a.signal(sigStop)
	a.awaitStopped(pid, exited)
}

// Resume continues an agent Pause stopped (SIGCONT).
func (a *Agent) Resume() {
	a.t.Helper()
	a.signal(sigCont)
}

// signal sends sig to the agent and returns its process ID and a channel
// closed when it exits.
func (a *Agent) signal(sig syscall.Signal) (pid int, exited <-chan struct{}) {
	a.t.Helper()
	if err := canSignal(sig); err != nil {
		a.t.Skipf("consultest: %v", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd == nil {
		a.t.Fatalf("consultest: %v: agent not running", sig)
	}
	if err := a.cmd.Process.Signal(sig); err != nil {
		a.t.Fatalf("consultest: %v: %v", sig, err)
	}
	return a.cmd.Process.Pid, a.done
}

// stopTimeout bounds how long Pause waits for the agent's threads to stop.
const stopTimeout = 10 * time.Second

// awaitStopped polls until process pid, just sent SIGSTOP, is stopped.
func (a *Agent) awaitStopped(pid int, exited <-chan struct{}) {
	a.t.Helper()
	deadline := time.Now().Add(stopTimeout)
	for {
		select {
		case <-exited:
			a.t.Fatalf("consultest: pause: the agent exited\nagent output:\n%s", a.log.String())
		default:
		}
		stopped, err := isStopped(pid)
		if err != nil {
			a.t.Fatalf("consultest: pause: %v\nagent output:\n%s", err, a.log.String())
		}
		if stopped {
			return
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("consultest: pause: agent (pid %d) not stopped %v after SIGSTOP", pid, stopTimeout)
		}
		time.Sleep(time.Millisecond)
	}
}

// Running reports whether the agent process is up.
func (a *Agent) Running() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cmd != nil
}

// Log returns what the agent wrote to stdout and stderr so far.
func (a *Agent) Log() string { return a.log.String() }

func (a *Agent) start() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd != nil {
		return errors.New("agent already running")
	}
	a.runs++
	cmd := exec.Command(a.bin, a.args...)
	cmd.Dir = a.dir
	cmd.Stdout = a.log
	cmd.Stderr = a.log
	cmd.Env = append(os.Environ(), "CONSUL_HTTP_ADDR=", "CONSUL_HTTP_TOKEN=")
	fmt.Fprintf(a.log, "--- run %d: %s %s\n", a.runs, a.bin, strings.Join(a.args, " "))
	from := len(a.log.String()) // this run's output starts here
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", a.bin, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	a.cmd, a.done = cmd, done
	runLog := func() string { return a.log.String()[from:] }
	if err := waitReady(a.HTTPAddr, a.ManagementToken, done, runLog); err != nil {
		_ = cmd.Process.Kill()
		<-done
		a.cmd = nil
		return fmt.Errorf("%w\nagent output:\n%s", err, a.log.String())
	}
	return nil
}

// waitReady polls until the agent has a leader and its node is registered.
// It polls only once the agent's log says it serves HTTP on addr (it logs
// that after binding): until then the port may be another process's, which
// took it between the pick and the agent's bind (the agent then exits), and
// whose server must not get the polls.
func waitReady(addr, token string, exited <-chan struct{}, log func() string) error {
	serving := "Starting server: address=" + addr + " network=tcp protocol=http"
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	defer client.CloseIdleConnections()
	var last string
	for {
		select {
		case <-exited:
			return fmt.Errorf("consul agent on %s exited during start-up (last: %s)", addr, last)
		case <-ctx.Done():
			return fmt.Errorf("consul agent on %s not ready after %s (last: %s)", addr, startTimeout, last)
		case <-time.After(50 * time.Millisecond):
		}
		if !strings.Contains(log(), serving) {
			last = "not serving HTTP yet"
			continue
		}
		leader, err := get(ctx, client, "http://"+addr+"/v1/status/leader", token)
		if err != nil {
			last = err.Error()
			continue
		}
		if leader == `""` || leader == "" {
			last = "no leader yet"
			continue
		}
		nodes, err := get(ctx, client, "http://"+addr+"/v1/catalog/nodes", token)
		if err != nil {
			last = err.Error()
			continue
		}
		if !strings.Contains(nodes, `"ferry-test"`) {
			last = "node not in catalog yet"
			continue
		}
		return nil
	}
}

func get(ctx context.Context, c *http.Client, url, token string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	if token != "" {
		req.Header.Set("X-Consul-Token", token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(b.String()))
	}
	return strings.TrimSpace(b.String()), nil
}

// Client returns a Consul API client for the agent, with none of the
// CONSUL_* environment; its token is ManagementToken ("" without ACLs).
func (a *Agent) Client() *api.Client {
	a.t.Helper()
	cfg := &api.Config{Address: a.HTTPAddr, Scheme: "http", Token: a.ManagementToken, Transport: cleanTransport()}
	c, err := api.NewClient(cfg)
	if err != nil {
		a.t.Fatalf("consultest: client: %v", err)
	}
	a.t.Cleanup(cfg.Transport.CloseIdleConnections)
	return c
}

func cleanTransport() *http.Transport {
	return &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 4, IdleConnTimeout: 30 * time.Second}
}

// CreateToken creates an ACL token with a policy of the given rules (HCL)
// on an agent started by StartACL and returns the token's secret and the
// policy's ID (to change the rules with SetRules).
func (a *Agent) CreateToken(rules string) (secret, policyID string) {
	a.t.Helper()
	acl := a.Client().ACL()
	p, _, err := acl.PolicyCreate(&api.ACLPolicy{Name: fmt.Sprintf("ferry-test-%d", time.Now().UnixNano()), Rules: rules}, nil)
	if err != nil {
		a.t.Fatalf("consultest: create policy: %v", err)
	}
	tok, _, err := acl.TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{ID: p.ID}}}, nil)
	if err != nil {
		a.t.Fatalf("consultest: create token: %v", err)
	}
	return tok.SecretID, p.ID
}

// SetRules replaces the rules of a policy CreateToken made.
func (a *Agent) SetRules(policyID, rules string) {
	a.t.Helper()
	acl := a.Client().ACL()
	p, _, err := acl.PolicyRead(policyID, nil)
	if err != nil {
		a.t.Fatalf("consultest: read policy: %v", err)
	}
	p.Rules = rules
	if _, _, err := acl.PolicyUpdate(p, nil); err != nil {
		a.t.Fatalf("consultest: update policy: %v", err)
	}
}

// RevokeToken deletes an ACL token by its secret (as CreateToken returns
// it): every request that carries it is refused from then on with 403 "ACL
// not found".
func (a *Agent) RevokeToken(secret string) {
	a.t.Helper()
	acl := a.Client().ACL()
	self, _, err := acl.TokenReadSelf(&api.QueryOptions{Token: secret})
	if err != nil {
		a.t.Fatalf("consultest: read token: %v", err)
	}
	if _, err := acl.TokenDelete(self.AccessorID, nil); err != nil {
		a.t.Fatalf("consultest: delete token: %v", err)
	}
}
