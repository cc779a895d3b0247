package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/internal/syncbuf"
)

// stdLogLine is a line in the standard log package's format (a date, a
// time, then the text), which a dependency's slog.Warn during package
// initialisation wrote to stderr.
var stdLogLine = regexp.MustCompile(`^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d `)

// An OTEL_* limit variable with a bad value made a dependency log, while
// its package was initialised, a plain-text line before ferry's own
// output ('2026/12/01 04:21:48 WARN invalid limit environment variable
// error=... key=OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT value=x'): ferry run's
// JSON log started with a line no log shipper could parse, on every
// start, tracing on or off. It now comes as ferry's own lines do, still
// naming the variable.
func TestDependencyInitLogInFerrysFormat(t *testing.T) {
	bin := ferryBin(t)
	const config = "admin: { listen: 127.0.0.1:0 }\noutbound: { listen: 127.0.0.1:0, routes: [ { service: s } ] }\nservices: { s: { endpoints: [127.0.0.1:9] } }\n"
	env := append(os.Environ(), "FERRY_TEST_CONFIG="+config, "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT=x")
	const variable = "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT"

	t.Run("run, tracing off", func(t *testing.T) {
		cmd := exec.Command(bin, "run", "--config-env", "FERRY_TEST_CONFIG")
		cmd.Env = env
		out := new(syncbuf.Buffer)
		cmd.Stderr = out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Process.Kill()
		deadline := time.Now().Add(15 * time.Second)
		for !strings.Contains(out.String(), `"listener":"outbound"`) {
			if time.Now().After(deadline) {
				t.Fatalf("ferry did not start listening:\n%s", out.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("ferry run: %v\n%s", err, out.String())
		}
		named := false
		for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatalf("a log line that is not JSON: %q\nstderr:\n%s", line, out.String())
			}
			named = named || strings.Contains(line, variable)
		}
		if !named {
			t.Fatalf("no log line names %s:\n%s", variable, out.String())
		}
	})

	t.Run("run, tracing on", func(t *testing.T) {
		cmd := exec.Command(bin, "run", "--config-env", "FERRY_TEST_CONFIG")
		cmd.Env = append(env, "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:1")
		var out bytes.Buffer
		cmd.Stderr = &out
		err := cmd.Run()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != exitConfig {
			t.Fatalf("ferry run: %v, want exit %d\n%s", err, exitConfig, out.String())
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		last := lines[len(lines)-1]
		if !strings.HasPrefix(last, "ferry: ") || !strings.Contains(last, variable) {
			t.Fatalf("last line %q, want ferry's error naming %s", last, variable)
		}
		for _, line := range lines[:len(lines)-1] {
			if json.Unmarshal([]byte(line), new(map[string]any)) != nil {
				t.Fatalf("a log line before the error that is not JSON: %q\nstderr:\n%s", line, out.String())
			}
		}
	})

	t.Run("check", func(t *testing.T) {
		cmd := exec.Command(bin, "check", "--config-env", "FERRY_TEST_CONFIG")
		cmd.Env = append(env, "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:1")
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != exitConfig || !strings.Contains(string(out), variable) {
			t.Fatalf("ferry check: %v, want exit %d naming %s\n%s", err, exitConfig, variable, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if stdLogLine.MatchString(line) {
				t.Fatalf("a line in the log package's format: %q\noutput:\n%s", line, out)
			}
		}
	})
}
