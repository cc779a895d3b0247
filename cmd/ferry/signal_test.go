package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/internal/localnet"
	"github.com/ferrymesh/ferry/internal/localnet/localnettest"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// TestMain removes the binary ferryBin built.
func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// ferryBin builds the ferry binary once for the tests that run it as a
// process (signals, exit codes).
func ferryBin(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the ferry binary")
	}
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ferry-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "ferry")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// ferryProc is a running `ferry run` whose JSON log lines the test reads.
type ferryProc struct {
	t     *testing.T
	cmd   *exec.Cmd
	lines chan map[string]any // every log line, in order
	seen  []map[string]any    // the lines read so far
	addrs map[string]string   // listener name -> bound address
	done  chan struct{}       // closed when the process exited
	err   error               // Wait's result, once done is closed
}

// startFerryProc runs ferry with args and env added to the test's
// environment, and waits until every listener in listeners logged its
// address.
func startFerryProc(t *testing.T, args, env []string, listeners ...string) *ferryProc {
	t.Helper()
	return startFerryProcWith(t, nil, args, env, listeners...)
}

// startFerryProcWith is startFerryProc with the command given to prepare
// (when not nil) before it starts: to set its standard output, say.
func startFerryProcWith(t *testing.T, prepare func(*exec.Cmd), args, env []string, listeners ...string) *ferryProc {
	t.Helper()
	cmd := exec.Command(ferryBin(t), args...)
	cmd.Env = append(os.Environ(), env...)
	if prepare != nil {
		prepare(cmd)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &ferryProc{t: t, cmd: cmd, lines: make(chan map[string]any, 1024), addrs: map[string]string{}, done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				m = map[string]any{"msg": sc.Text()}
			}
			p.lines <- m
		}
		close(p.lines)
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			cmd.Process.Kill()
			<-p.done
		}
	})
	for _, name := range listeners {
		m := p.waitLog(10*time.Second, func(m map[string]any) bool { return m["msg"] == "listening" && m["listener"] == name })
		p.addrs[name] = m["addr"].(string)
	}
	return p
}

// waitLog returns the first log line (seen before or arriving within d)
// that match accepts, failing the test when there is none.
func (p *ferryProc) waitLog(d time.Duration, match func(map[string]any) bool) map[string]any {
	p.t.Helper()
	for _, m := range p.seen {
		if match(m) {
			return m
		}
	}
	deadline := time.After(d)
	for {
		select {
		case m, ok := <-p.lines:
			if !ok {
				<-p.done
				p.t.Fatalf("ferry exited (%v) without the log line expected; its log:\n%s", p.err, p.log())
			}
			p.seen = append(p.seen, m)
			if match(m) {
				return m
			}
		case <-deadline:
			p.t.Fatalf("no such log line within %s; ferry's log:\n%s", d, p.log())
		}
	}
}

func (p *ferryProc) log() string {
	var b strings.Builder
	for _, m := range p.seen {
		j, _ := json.Marshal(m)
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.String()
}

// exitCode waits up to d for ferry to exit and returns its exit code,
// failing the test when it does not exit or dies of a signal.
func (p *ferryProc) exitCode(d time.Duration) int {
	p.t.Helper()
	deadline := time.After(d)
	for {
		select {
		case m, ok := <-p.lines:
			if ok {
				p.seen = append(p.seen, m)
				continue
			}
			<-p.done
			var ee *exec.ExitError
			if errors.As(p.err, &ee) {
				if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
					p.t.Fatalf("ferry was killed by %v instead of exiting; its log:\n%s", ws.Signal(), p.log())
				}
				return ee.ExitCode()
			}
			if p.err != nil {
				p.t.Fatal(p.err)
			}
			return 0
		case <-deadline:
			p.t.Fatalf("ferry did not exit within %s; its log:\n%s", d, p.log())
		}
	}
}

func (p *ferryProc) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
}

func msgIs(s string) func(map[string]any) bool {
	return func(m map[string]any) bool { return m["msg"] == s }
}

// A second SIGTERM (or SIGINT) during the drain ends it at once: the
// exchanges still open are closed, ferry says so and exits 1. It was
// swallowed without a word and ferry kept waiting out the whole grace
// period, so an operator's second Ctrl-C did nothing.
func TestSecondSignalEndsTheDrain(t *testing.T) {
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	defer close(release)
	up := startOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
	}))
	cfg := oneUpstreamConfig(up, "shutdown: { grace: 2m }")
	for _, sig := range []os.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			p := startFerryProc(t, []string{"run", "--config-env", "FERRY_TEST_CFG"}, []string{"FERRY_TEST_CFG=" + cfg}, "outbound", "admin")
			errc := make(chan error, 1)
			go func() {
				res, err := http.Get("http://" + p.addrs["outbound"] + "/slow")
				if err == nil {
					io.Copy(io.Discard, res.Body)
					res.Body.Close()
				}
				errc <- err
			}()
			select {
			case <-entered:
			case <-time.After(10 * time.Second):
				t.Fatal("the request did not reach the upstream")
			}
			p.signal(sig)
			p.waitLog(10*time.Second, msgIs("draining"))
			p.signal(sig)
			if code := p.exitCode(20 * time.Second); code != exitFail {
				t.Fatalf("exit code %d after a second %v, want %d; log:\n%s", code, sig, exitFail, p.log())
			}
			p.waitLog(0, func(m map[string]any) bool {
				return m["level"] == "WARN" && strings.Contains(fmt.Sprint(m["msg"]), "second signal")
			})
			// What ended the drain is what ferry's last lines tell: not
			// its grace period, 2 minutes long.
			p.waitLog(0, func(m map[string]any) bool {
				return m["level"] == "WARN" && m["msg"] == "drain ended before its grace period was over; closed the exchanges still open"
			})
			p.waitLog(0, func(m map[string]any) bool {
				return m["msg"] == "ferry stopped" && m["error"] == "drain: ended before its grace period, with exchanges in flight"
			})
			<-errc
		})
	}
}

// A second SIGTERM during the drain with nothing in flight, only a
// caller's keep-alive connection idle between requests, ends it cleanly:
// ferry exits 0, as the README says ("0 when nothing was left to close").
// The idle connection was taken for an exchange cut: ferry warned that the
// grace ended with exchanges still open and exited 1.
func TestSecondSignalWithNothingInFlightExits0(t *testing.T) {
	up := startOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "up") }))
	cfg := oneUpstreamConfig(up, "shutdown: { delay: 2m, grace: 2m }")
	p := startFerryProc(t, []string{"run", "--config-env", "FERRY_TEST_CFG"}, []string{"FERRY_TEST_CFG=" + cfg}, "outbound", "admin")
	tr := &http.Transport{Proxy: nil}
	defer tr.CloseIdleConnections()
	res, err := (&http.Client{Transport: tr}).Get("http://" + p.addrs["outbound"] + "/")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close() // the connection stays open, idle, in tr's pool
	// Nothing in flight: ferry has ended the exchange, not only sent its
	// answer (a loaded machine can hold its end back a few milliseconds).
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, metrics := httpGet(t, "http://"+p.addrs["admin"]+"/metrics")
		if strings.Contains(metrics, `ferry_requests_in_flight{listener="outbound"} 0`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("an exchange still in flight 10s after its answer:\n%s", metrics)
		}
		time.Sleep(10 * time.Millisecond) // polling a condition, not synchronising
	}
	p.signal(syscall.SIGTERM)
	p.waitLog(10*time.Second, msgIs("draining"))
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(20 * time.Second); code != exitOK {
		t.Fatalf("exit code %d after a second SIGTERM with nothing in flight, want %d; log:\n%s", code, exitOK, p.log())
	}
	p.waitLog(0, msgIs("drained"))
}

// oneUpstreamConfig is a config whose outbound listener routes every
// request to the endpoint up, listeners on free ports, no access log, with
// extra appended.
func oneUpstreamConfig(up, extra string) string {
	return fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound:
  listen: 127.0.0.1:0
  routes: [ { service: svc } ]
services:
  svc: { endpoints: [%s] }
telemetry: { access_log: "off" }
%s
`, up, extra)
}

// startOrigin serves h on a free loopback port until the test ends.
func startOrigin(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// SIGHUP asks for a reload. With the config in an environment variable (how
// the injector runs ferry) there is nothing to re-read: ferry says so and
// keeps serving. It had no SIGHUP handler then, so Go's default action
// killed it on the spot, without a drain.
func TestSIGHUPWithConfigEnvKeepsServing(t *testing.T) {
	cfg := "admin: { listen: 127.0.0.1:0 }\ninbound: { listen: 127.0.0.1:0, app: 127.0.0.1:1 }\ntelemetry: { access_log: \"off\" }\n"
	p := startFerryProc(t, []string{"run", "--config-env", "FERRY_TEST_CFG"}, []string{"FERRY_TEST_CFG=" + cfg}, "admin")
	p.signal(syscall.SIGHUP)
	p.waitLog(10*time.Second, func(m map[string]any) bool {
		// Routine for logrotate, so not a warning.
		return strings.Contains(fmt.Sprint(m["msg"]), "SIGHUP") && m["level"] == "INFO"
	})
	res, err := http.Get("http://" + p.addrs["admin"] + "/ready")
	if err != nil {
		t.Fatalf("after SIGHUP: %v; log:\n%s", err, p.log())
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("/ready after SIGHUP: %d", res.StatusCode)
	}
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(20 * time.Second); code != exitOK {
		t.Fatalf("exit code %d after SIGTERM, want 0; log:\n%s", code, p.log())
	}
}

// A stderr nobody drains (a stalled log driver) never blocks requests:
// here every request fails upstream and logs a warning, far more than the
// pipe holds, and every one is answered; ferry still exits on SIGTERM.
func TestStuckStderrDoesNotBlockRequests(t *testing.T) {
	bin := ferryBin(t)
	// The dead endpoint's port is held first, so neither port picked for
	// ferry to listen on can be it.
	dead := localnettest.RefusedAddr(t)
	ports, err := localnet.FreePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	admin, outbound := fmt.Sprintf("127.0.0.1:%d", ports[0]), fmt.Sprintf("127.0.0.1:%d", ports[1])
	cfg := fmt.Sprintf(`admin: { listen: %s }
outbound: { listen: %s, routes: [ { service: svc } ] }
services: { svc: { endpoints: [%s], retry: { max_retries: 0 }, breaker: { consecutive_failures: 1000000 }, outlier: { consecutive_5xx: 0 } } }
telemetry: { access_log: "off" }
`, admin, outbound, dead)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close() // open, never read
	cmd := exec.Command(bin, "run", "--config-env", "FERRY_TEST_CFG")
	cmd.Env = append(os.Environ(), "FERRY_TEST_CFG="+cfg)
	cmd.Stderr = w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()
	client := &http.Client{Timeout: 10 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := client.Get("http://" + admin + "/ready")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("ferry not ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond) // a polling pace
	}
	for i := range 2000 { // well over 64 KiB of warnings
		res, err := client.Get("http://" + outbound + "/")
		if err != nil {
			t.Fatalf("request %d: %v (blocked on a stderr nobody reads?)", i, err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusBadGateway {
			t.Fatalf("request %d: %d, want 502", i, res.StatusCode)
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		exited <- nil // for the deferred wait
	case <-time.After(20 * time.Second):
		t.Fatal("ferry did not exit on SIGTERM with its stderr stuck")
	}
}

// A SIGHUP reload still waiting for its Consul services (the agent
// unreachable) when SIGTERM comes is cut short by the drain: ferry logs
// that the change was not applied because it is stopping, not that it was
// rejected. It logged 'reload on SIGHUP rejected; keeping the config in
// force' with 'services not resolved: api; ...; not tried again until the
// file changes', a rejection an operator reading the log after an
// incident would look into for nothing.
func TestSIGHUPReloadCutByTheDrainIsNoRejection(t *testing.T) {
	up := startOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "up") }))
	path := filepath.Join(t.TempDir(), "ferry.yaml")
	// The delay keeps ferry running after the reload's end, so its line
	// is written before ferry exits whichever order they come in.
	if err := os.WriteFile(path, []byte(oneUpstreamConfig(up, "shutdown: { delay: 1s }")), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startFerryProc(t, []string{"run", "--config", path, "--config-poll", "0", "--config-settle", "10ms"}, nil, "outbound", "admin")
	changed := fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound:
  listen: 127.0.0.1:0
  routes: [ { service: api } ]
services:
  api: {}
consul: { address: %s }
telemetry: { access_log: "off" }
shutdown: { delay: 1s }
`, localnettest.RefusedAddr(t))
	if err := os.WriteFile(path, []byte(changed), 0o600); err != nil {
		t.Fatal(err)
	}
	p.signal(syscall.SIGHUP)
	// The reload's generation watches api: the reload waits for it (up
	// to 10s) once this is logged.
	p.waitLog(10*time.Second, msgIs("consul watch failing before first answer"))
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(20 * time.Second); code != exitOK {
		t.Fatalf("exit code %d after SIGTERM, want %d; log:\n%s", code, exitOK, p.log())
	}
	for _, m := range p.seen {
		if strings.Contains(fmt.Sprint(m["msg"]), "rejected") {
			t.Fatalf("the reload the drain cut was logged as a rejection: %v; log:\n%s", m, p.log())
		}
	}
	p.waitLog(0, func(m map[string]any) bool {
		return m["level"] == "INFO" && m["msg"] == "reload on SIGHUP not applied: ferry is stopping"
	})
}

// A config given as a pipe (`--config <(...)`, a FIFO) is read once, at
// start: ferry neither watches it nor re-reads it on SIGHUP, and says so.
// The watcher read the pipe again, found it empty (its writer long gone)
// and logged 'config change rejected; ...: empty config (0 bytes)' a poll
// after start, and a SIGHUP did the same: ferry_config_last_reload_successful
// went to 0 and a rejected reload was counted, with nothing wrong. (On a
// FIFO no one writes to again, the read waited for a writer forever, and
// the SIGHUP handler with it.)
func TestConfigFromAPipeIsReadOnce(t *testing.T) {
	up := startOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "up") }))
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(w, oneUpstreamConfig(up, "")); err != nil {
		t.Fatal(err)
	}
	w.Close()
	// What bash's <(...) hands a command: a pipe on a descriptor, named
	// /dev/fd/N; here descriptor 3.
	p := startFerryProcWith(t, func(cmd *exec.Cmd) { cmd.ExtraFiles = []*os.File{r} },
		[]string{"run", "--config", "/dev/fd/3", "--config-poll", "100ms", "--config-settle", "10ms"}, nil, "outbound", "admin")
	r.Close()
	p.signal(syscall.SIGHUP)
	p.waitLog(10*time.Second, func(m map[string]any) bool {
		return strings.Contains(fmt.Sprint(m["msg"]), "SIGHUP")
	})
	if _, metrics := httpGet(t, "http://"+p.addrs["admin"]+"/metrics"); !strings.Contains(metrics, "\nferry_config_last_reload_successful 1\n") || strings.Contains(metrics, `result="rejected"`) {
		t.Errorf("a config read from a pipe counts as reloaded and rejected:\n%s", grepLines(metrics, "ferry_config_"))
	}
	if code, body := httpGet(t, "http://"+p.addrs["outbound"]+"/"); code != http.StatusOK || body != "up" {
		t.Errorf("through ferry: %d %q", code, body)
	}
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(20 * time.Second); code != exitOK {
		t.Fatalf("exit code %d after SIGTERM, want 0; log:\n%s", code, p.log())
	}
	for _, m := range p.seen {
		if strings.Contains(fmt.Sprint(m["msg"]), "rejected") {
			t.Errorf("a config read from a pipe was re-read and rejected: %v; log:\n%s", m, p.log())
		}
	}
	// ferry says at start that it will not read the pipe again.
	p.waitLog(0, func(m map[string]any) bool {
		return m["level"] == "INFO" && strings.Contains(fmt.Sprint(m["msg"]), "read once")
	})
}

// grepLines keeps the lines of text that contain sub.
func grepLines(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
