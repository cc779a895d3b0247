package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRunBadConfigExits2NamingTheKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ferry.yaml")
	os.WriteFile(path, []byte("outbound:\n  routes: [ { host: a, service: nope } ]\n"), 0o600)
	var out, errb bytes.Buffer
	code := run([]string{"run", "--config", path}, &out, &errb)
	if code != exitConfig {
		t.Fatalf("exit %d, want %d", code, exitConfig)
	}
	if !strings.Contains(errb.String(), `outbound.routes[0].service: service "nope" is not defined`) {
		t.Fatalf("stderr %q", errb.String())
	}
}

func TestRunListenConflictFailsBeforeServing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ferry.yaml")
	os.WriteFile(path, []byte("admin: { listen: 127.0.0.1:15999 }\noutbound: { listen: '0.0.0.0:15999' }\n"), 0o600)
	var out, errb bytes.Buffer
	if code := run([]string{"run", "--config", path}, &out, &errb); code != exitConfig {
		t.Fatalf("exit %d, want 2; stderr %q", code, errb.String())
	}
	if !strings.Contains(errb.String(), "outbound.listen: 0.0.0.0:15999 is already used by admin.listen") {
		t.Fatalf("stderr %q", errb.String())
	}
}

func TestRunUsageErrors(t *testing.T) {
	for _, args := range [][]string{nil, {"bogus"}, {"run"}, {"run", "--config", "/nonexistent/ferry.yaml"}, {"run", "--config-env", "FERRY_TEST_UNSET_VAR"}, {"run", "--config", "a", "--config-env", "B"}, {"demo", "--size", "lots"}} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != exitConfig {
			t.Errorf("%v: exit %d, want 2 (stderr %q)", args, code, errb.String())
		}
		if errb.Len() == 0 {
			t.Errorf("%v: no message", args)
		}
	}
}

// The demo runs end to end: a real child ferry, a download with matching
// digest, figures printed.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the ferry binary")
	}
	bin := filepath.Join(t.TempDir(), "ferry")
	build := runCmd(t, "go", "build", "-o", bin, ".")
	if build != "" {
		t.Fatalf("build: %s", build)
	}
	out := runCmd(t, bin, "demo", "--size", "64MiB")
	for _, want := range []string{"via ferry", "direct", "matches at both ends (67108864 bytes)", "ferry peak memory (VmHWM)"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
}

func TestRunConfigFromEnvNamesTheKey(t *testing.T) {
	t.Setenv("FERRY_TEST_CONFIG", "outbound: { listen: nowhere }\n")
	var out, errb bytes.Buffer
	if code := run([]string{"run", "--config-env", "FERRY_TEST_CONFIG"}, &out, &errb); code != exitConfig {
		t.Fatalf("exit %d", code)
	}
	if !strings.Contains(errb.String(), "$FERRY_TEST_CONFIG") || !strings.Contains(errb.String(), "outbound.listen: invalid address") {
		t.Fatalf("stderr %q", errb.String())
	}
}

// --size with a huge value overflows int64 and is accepted as a negative
// (or wrapped) size.
func TestParseSizeOverflow(t *testing.T) {
	for _, s := range []string{"8589934592GiB", "9223372036854775807KiB", "9007199254740993MiB"} {
		n, err := parseSize(s)
		if err == nil {
			t.Errorf("parseSize(%q) = %d, nil; want an error (overflow)", s, n)
		}
	}
}

// A stray positional argument to `ferry run` is silently ignored (inject
// and webhook refuse theirs): `ferry run --config a.yaml b.yaml` runs a.yaml
// without a word about b.yaml.
func TestRunRejectsExtraArguments(t *testing.T) {
	for _, args := range [][]string{
		{"run", "--config", "/nonexistent/ferry.yaml", "other.yaml"},
		{"demo", "--size", "1KiB", "other.yaml"},
	} {
		var out, errb bytes.Buffer
		code := run(args, &out, &errb)
		if code != exitConfig || !strings.Contains(errb.String(), `unexpected argument "other.yaml"`) {
			t.Fatalf("%v: exit %d, stderr %q; want exit 2 naming the unexpected argument other.yaml", args, code, errb.String())
		}
	}
}

// Asking a subcommand for help is no error: its usage goes to stdout and
// ferry exits 0, as `ferry help` does. A flag it does not know still exits
// 2 with the flag named on stderr.
func TestSubcommandHelp(t *testing.T) {
	for _, cmd := range []string{"run", "check", "demo", "inject", "webhook"} {
		for _, flag := range []string{"-h", "--help", "-help"} {
			var out, errb bytes.Buffer
			code := run([]string{cmd, flag}, &out, &errb)
			if code != exitOK || !strings.Contains(out.String(), "usage: ferry "+cmd) || errb.Len() != 0 {
				t.Errorf("ferry %s %s: exit %d, stdout %q, stderr %q; want exit 0 and the usage of ferry %s on stdout only", cmd, flag, code, out.String(), errb.String(), cmd)
			}
		}
		var out, errb bytes.Buffer
		code := run([]string{cmd, "--bogus"}, &out, &errb)
		if code != exitConfig || !strings.Contains(errb.String(), "flag provided but not defined: -bogus") || !strings.Contains(errb.String(), "usage: ferry "+cmd) || out.Len() != 0 {
			t.Errorf("ferry %s --bogus: exit %d, stdout %q, stderr %q; want exit 2 naming the flag, with the usage, on stderr", cmd, code, out.String(), errb.String())
		}
	}
}

// A bad telemetry key is a config error like any other: the file, then the
// key's full path, exit 2 before anything listens.
func TestRunBadTelemetryConfigNamesTheKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ferry.yaml")
	os.WriteFile(path, []byte("admin: { listen: 127.0.0.1:0 }\noutbound: { listen: 127.0.0.1:0 }\ntelemetry: { sampler: sometimes }\n"), 0o600)
	var out, errb bytes.Buffer
	if code := run([]string{"run", "--config", path}, &out, &errb); code != exitConfig {
		t.Fatalf("exit %d, want 2; stderr %q", code, errb.String())
	}
	if want := "config " + path + ":\ntelemetry.sampler: unknown \"sometimes\""; !strings.Contains(errb.String(), want) {
		t.Fatalf("stderr %q, want it to contain %q", errb.String(), want)
	}
}

// A flag given twice is refused, naming it, rather than the last one
// silently winning (ferry run --config a.yaml --config b.yaml ran b.yaml).
// inject's -f is meant to repeat and still does.
func TestFlagGivenTwiceRefused(t *testing.T) {
	// The flags are checked before the config is read: a missing file
	// keeps ferry from starting should they not be.
	const good = "/nonexistent/ferry.yaml"
	for _, tc := range []struct {
		args []string
		flag string
	}{
		{[]string{"run", "--config", good, "--config", "/nonexistent/other.yaml"}, "-config"},
		{[]string{"run", "--config=" + good, "--log-level", "debug", "--log-level=error"}, "-log-level"},
		{[]string{"run", "--config", good, "--config-poll", "1s", "--config-poll", "5s"}, "-config-poll"},
		{[]string{"run", "--config", good, "--config-settle", "1s", "--config-settle", "2s"}, "-config-settle"},
		{[]string{"demo", "--size", "1KiB", "--size", "lots"}, "-size"},
		{[]string{"inject", "--no-native-sidecar", "--no-native-sidecar=false"}, "-no-native-sidecar"},
		{[]string{"webhook", "--listen", ":1", "--listen", ":2", "--tls-cert", "c", "--tls-key", "k"}, "-listen"},
	} {
		var out, errb bytes.Buffer
		code := run(tc.args, &out, &errb)
		if code != exitConfig || !strings.Contains(errb.String(), tc.flag) || !strings.Contains(errb.String(), "given more than once") {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 saying %s was given more than once", tc.args, code, errb.String(), tc.flag)
		}
	}
	dir := t.TempDir()
	for _, n := range []string{"a.yaml", "b.yaml"} {
		os.WriteFile(filepath.Join(dir, n), []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: { name: "+strings.TrimSuffix(n, ".yaml")+" }\n"), 0o600)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"inject", "-f", filepath.Join(dir, "a.yaml"), "-f", filepath.Join(dir, "b.yaml")}, &out, &errb); code != exitOK || !strings.Contains(out.String(), "name: a") || !strings.Contains(out.String(), "name: b") {
		t.Errorf("inject -f a -f b: exit %d, stdout %q, stderr %q; want both files", code, out.String(), errb.String())
	}
}

// A negative --config-poll is refused; it used to mean the same as 0
// (watching off) without a word.
func TestRunNegativeConfigPollRefused(t *testing.T) {
	var out, errb bytes.Buffer
	code := run([]string{"run", "--config", "/nonexistent/ferry.yaml", "--config-poll", "-1s"}, &out, &errb)
	if code != exitConfig || !strings.Contains(errb.String(), "--config-poll: must not be negative") {
		t.Fatalf("exit %d, stderr %q; want exit 2 saying --config-poll must not be negative", code, errb.String())
	}
}

// A --config-poll above 0 but below 100ms is refused: "1ns" or "1us"
// (a typo for 1s) re-read the file continuously, a busy loop. 0 still
// turns polling off, and 100ms is accepted (it reaches the config
// check, which here fails on the missing file).
func TestRunConfigPollMinimum(t *testing.T) {
	for _, poll := range []string{"1ns", "1us", "99ms"} {
		var out, errb bytes.Buffer
		code := run([]string{"run", "--config", "/nonexistent/ferry.yaml", "--config-poll", poll}, &out, &errb)
		d, _ := time.ParseDuration(poll)
		if code != exitConfig || !strings.Contains(errb.String(), "--config-poll: "+d.String()+" is below the minimum of 100ms") {
			t.Errorf("--config-poll %s: exit %d, stderr %q; want exit 2 saying it is below the minimum of 100ms", poll, code, errb.String())
		}
	}
	for _, poll := range []string{"0", "100ms", "2s"} {
		var out, errb bytes.Buffer
		code := run([]string{"run", "--config", "/nonexistent/ferry.yaml", "--config-poll", poll}, &out, &errb)
		if code != exitConfig || strings.Contains(errb.String(), "config-poll") || !strings.Contains(errb.String(), "/nonexistent/ferry.yaml") {
			t.Errorf("--config-poll %s: exit %d, stderr %q; want it accepted and the missing file reported", poll, code, errb.String())
		}
	}
}

// --config-settle below 10ms is refused: 0 would apply a config file read
// while it is being written. 10ms and more are accepted (the config check
// that follows fails on the missing file).
func TestRunConfigSettleMinimum(t *testing.T) {
	for _, settle := range []string{"0", "-1s", "1ms"} {
		var out, errb bytes.Buffer
		code := run([]string{"run", "--config", "/nonexistent/ferry.yaml", "--config-settle", settle}, &out, &errb)
		if code != exitConfig || !strings.Contains(errb.String(), "--config-settle: ") || !strings.Contains(errb.String(), "below the minimum of 10ms") {
			t.Errorf("--config-settle %s: exit %d, stderr %q; want exit 2 saying it is below the minimum of 10ms", settle, code, errb.String())
		}
	}
	for _, settle := range []string{"10ms", "500ms", "5s"} {
		var out, errb bytes.Buffer
		code := run([]string{"run", "--config", "/nonexistent/ferry.yaml", "--config-settle", settle}, &out, &errb)
		if code != exitConfig || strings.Contains(errb.String(), "config-settle") || !strings.Contains(errb.String(), "/nonexistent/ferry.yaml") {
			t.Errorf("--config-settle %s: exit %d, stderr %q; want it accepted and the missing file reported", settle, code, errb.String())
		}
	}
}

// A --size ferry demo cannot read is quoted as given, with what it takes:
// '1.5GB' was reported as 'invalid size "1.5G"', its unit cut off, and
// '1GB' as 'invalid size "1G"', as if G were the trouble.
func TestDemoSizeErrorQuotesTheFlag(t *testing.T) {
	for _, s := range []string{"1GB", "1.5GB", "-5MiB", "abc", "1 TiB"} {
		var out, errb bytes.Buffer
		code := run([]string{"demo", "--size", s}, &out, &errb)
		want := fmt.Sprintf("ferry demo: --size: invalid size %q (want a number of bytes, or one with KiB, MiB or GiB)", s)
		if code != exitConfig || !strings.Contains(errb.String(), want) {
			t.Errorf("--size %q: exit %d, stderr %q; want exit %d and %q", s, code, errb.String(), exitConfig, want)
		}
	}
}

// A --log-level ferry cannot read is refused naming the flag and the
// levels it takes (it said "slog: level string ...: unknown name"), and
// ferry version refuses an argument, as every other command does (it
// printed the version and exited 0).
func TestLogLevelAndVersionArgumentsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ferry.yaml")
	os.WriteFile(path, []byte("admin: { listen: 127.0.0.1:0 }\noutbound: { listen: 127.0.0.1:0 }\n"), 0o600)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "--config", path, "--log-level", "loud"}, `ferry run: --log-level "loud": want debug, info, warn or error`},
		{[]string{"webhook", "--log-level", "loud", "--tls-cert", "c", "--tls-key", "k"}, `ferry webhook: --log-level "loud": want debug, info, warn or error`},
		{[]string{"version", "extra"}, `ferry version: unexpected argument "extra"`},
		{[]string{"version", "--bogus"}, `ferry version: unexpected argument "--bogus"`},
	} {
		var out, errb bytes.Buffer
		code := run(tc.args, &out, &errb)
		if code != exitConfig || !strings.Contains(errb.String(), tc.want) || out.Len() != 0 {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 and %q", tc.args, code, out.String(), errb.String(), tc.want)
		}
	}
	for _, level := range []string{"debug", "INFO", "warn", "error"} {
		var out, errb bytes.Buffer
		if code := run([]string{"run", "--config", "/nonexistent/ferry.yaml", "--log-level", level}, &out, &errb); strings.Contains(errb.String(), "--log-level") {
			t.Errorf("--log-level %s refused (exit %d): %q", level, code, errb.String())
		}
	}
}
