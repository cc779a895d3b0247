// Package jaegertest runs a real Jaeger v2 (all-in-one, in-memory storage)
// for tests: OTLP gRPC and HTTP receivers and the query HTTP API on free
// loopback ports, stopped by t.Cleanup. Tests export spans to it and read
// them back through /api/traces.
//
// The binary is found as for every ferry test tool: $FERRY_JAEGER_BIN, else
// <repo root>/bin/jaeger, else built by `scripts/tool.sh jaeger`. When it
// cannot be had the test is skipped, or fails when $CI is set.
package jaegertest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/ferrymesh/ferry/internal/localnet"
)

// Jaeger is a running Jaeger v2 process.
type Jaeger struct {
	// OTLPGRPC is the OTLP/gRPC receiver's host:port.
	OTLPGRPC string
	// OTLPHTTP is the OTLP/HTTP receiver's host:port (POST /v1/traces).
	OTLPHTTP string
	// QueryURL is the base URL of the query HTTP API (and UI).
	QueryURL string

	cmd    *exec.Cmd
	done   chan struct{}
	log    string
	client *http.Client
}

// startTimeout bounds how long Start waits for Jaeger to be ready.
const startTimeout = 90 * time.Second

var configTemplate = template.Must(template.New("jaeger").Parse(`
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: info
    traces:
      level: none
extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 10000
  jaeger_query:
    enable_tracing: false
    storage:
      traces: memstore
    http:
      endpoint: {{.QueryHTTP}}
    grpc:
      endpoint: {{.QueryGRPC}}
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: {{.OTLPGRPC}}
      http:
        endpoint: {{.OTLPHTTP}}
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`))

// Start runs Jaeger and waits until its receivers and query API answer.
// It is stopped (and waited for) by t.Cleanup.
func Start(t testing.TB) *Jaeger {
	t.Helper()
	bin := Binary(t)
	var lastErr error
	// Free ports are picked by binding :0 and closing; another process may
	// grab one in between, so try a few times.
	for range 3 {
		j, err := start(t, bin)
		if err == nil {
			return j
		}
		lastErr = err
	}
	t.Fatalf("jaegertest: %v", lastErr)
	return nil
}

func start(t testing.TB, bin string) (*Jaeger, error) {
	ports, err := localnet.FreePorts(4)
	if err != nil {
		return nil, err
	}
	hp := func(i int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[i])) }
	addrs := struct{ OTLPGRPC, OTLPHTTP, QueryHTTP, QueryGRPC string }{hp(0), hp(1), hp(2), hp(3)}
	dir := t.TempDir()
	var cfg bytes.Buffer
	if err := configTemplate.Execute(&cfg, addrs); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfgPath := filepath.Join(dir, "jaeger.yaml")
	if err := os.WriteFile(cfgPath, cfg.Bytes(), 0o644); err != nil {
		return nil, fmt.Errorf("write config: %w", err)
	}
	logPath := filepath.Join(dir, "jaeger.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("log file: %w", err)
	}
	defer logFile.Close() // the child holds its own descriptor

	cmd := exec.Command(bin, "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	j := &Jaeger{
		OTLPGRPC: addrs.OTLPGRPC,
		OTLPHTTP: addrs.OTLPHTTP,
		QueryURL: "http://" + addrs.QueryHTTP,
		cmd:      cmd,
		done:     make(chan struct{}),
		log:      logPath,
		client:   &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second},
	}
	go func() {
		_ = cmd.Wait()
		close(j.done)
	}()
	began := time.Now()
	if err := j.waitReady(); err != nil {
		j.stop()
		return nil, fmt.Errorf("%w\n--- jaeger log ---\n%s", err, j.Log())
	}
	t.Logf("jaegertest: Jaeger ready in %v: OTLP grpc %s, http %s, query %s",
		time.Since(began).Round(time.Millisecond), j.OTLPGRPC, j.OTLPHTTP, j.QueryURL)
	t.Cleanup(func() {
		stopping := time.Now()
		j.stop()
		t.Logf("jaegertest: Jaeger stopped in %v", time.Since(stopping).Round(time.Millisecond))
		if t.Failed() {
			t.Logf("--- jaeger log ---\n%s", j.Log())
		}
	})
	return j, nil
}

func (j *Jaeger) waitReady() error {
	deadline := time.Now().Add(startTimeout)
	client := &http.Client{Timeout: 2 * time.Second}
	defer client.CloseIdleConnections()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-j.done:
			return fmt.Errorf("jaeger exited during startup: %v", j.cmd.ProcessState)
		case <-tick.C:
		}
		// Polled only once Jaeger says every component started (its
		// listeners bound): until then a port may be another process's,
		// which took it between the pick and Jaeger's bind (Jaeger then
		// exits), and whose server must not get the polls.
		if strings.Contains(j.Log(), "Everything is ready") && ready(client, j) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("jaeger not ready after %v", startTimeout)
		}
	}
}

func ready(client *http.Client, j *Jaeger) bool {
	for _, addr := range []string{j.OTLPGRPC, j.OTLPHTTP} {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		c.Close()
	}
	resp, err := client.Get(j.QueryURL + "/api/services")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// stop terminates Jaeger gracefully, then forcefully, and waits for it.
func (j *Jaeger) stop() {
	j.client.CloseIdleConnections()
	select {
	case <-j.done:
		return
	default:
	}
	_ = j.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-j.done:
	case <-time.After(15 * time.Second):
		_ = j.cmd.Process.Kill()
		<-j.done
	}
}

// Log returns what Jaeger wrote so far.
func (j *Jaeger) Log() string {
	b, err := os.ReadFile(j.log)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(b)
}

// Traces returns the traces Jaeger holds for service (at most 100).
func (j *Jaeger) Traces(ctx context.Context, service string) ([]Trace, error) {
	u := j.QueryURL + "/api/traces?limit=100&lookback=1h&service=" + url.QueryEscape(service)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := j.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("query %s: %w", u, err)
	}
	defer resp.Body.Close()
	var body struct {
		Data   []Trace `json:"data"`
		Errors []struct {
			Msg string `json:"msg"`
		} `json:"errors"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("query %s: decode: %w", u, err)
	}
	if resp.StatusCode == http.StatusNotFound {
		return nil, nil // service not seen yet
	}
	if resp.StatusCode != http.StatusOK {
		msgs := make([]string, 0, len(body.Errors))
		for _, e := range body.Errors {
			msgs = append(msgs, e.Msg)
		}
		return nil, fmt.Errorf("query %s: status %d: %s", u, resp.StatusCode, strings.Join(msgs, "; "))
	}
	return body.Data, nil
}

// WaitTraces polls Traces for service until done accepts the result or
// timeout passes; it fails the test on timeout.
func (j *Jaeger) WaitTraces(t testing.TB, service string, timeout time.Duration, done func([]Trace) bool) []Trace {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var (
		last    []Trace
		lastErr error
	)
	for {
		traces, err := j.Traces(ctx, service)
		if err == nil {
			last = traces
			if done(traces) {
				return traces
			}
		} else if !errors.Is(err, context.DeadlineExceeded) {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			t.Fatalf("jaegertest: traces of %q not as expected after %v (last error %v); last result: %+v", service, timeout, lastErr, last)
			return nil
		case <-tick.C:
		}
	}
}
