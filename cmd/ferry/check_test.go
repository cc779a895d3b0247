package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// ferry check loads a config as ferry run does and serves nothing: a
// valid one exits 0 with a summary on stdout; a bad key, a bad telemetry
// environment or a missing file exits 2 naming it, as ferry run would.
func TestCheck(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string { return writeIn(t, dir, name, text) }
	good := write("good.yaml", `
outbound:
  listen: 127.0.0.1:15001
  routes:
    - { host: files, service: files }
    - { path_prefix: /api, service: api }
inbound: { listen: 0.0.0.0:15006, app: 127.0.0.1:8080 }
services:
  files: { endpoints: [10.0.0.1:80] }
  api: { consul: { service: api } }
`)
	bad := write("bad.yaml", "outbound:\n  routes: [ { host: a, service: nope } ]\n")
	// endpoints: [] is a static service with no endpoint (it answers 503),
	// not a Consul one.
	emptyStatic := write("empty.yaml", "outbound: { routes: [ { host: a, service: a }, { service: api } ] }\nservices: { a: { endpoints: [] }, api: }\n")
	unused := write("unused.yaml", "outbound: { routes: [ { service: s } ] }\nservices: { s: { endpoints: [10.0.0.1:80] }, typo: { endpoints: [10.0.0.2:80] } }\n")
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		code    int
		out, er string
	}{
		{"valid file", []string{"--config", good}, nil, exitOK,
			"config " + good + " is valid: 2 outbound routes, 2 services (1 from Consul), inbound to 127.0.0.1:8080", ""},
		{"valid from the environment", []string{"--config-env", "FERRY_CHECK_CONFIG"}, map[string]string{"FERRY_CHECK_CONFIG": "outbound: {}\n"}, exitOK,
			"config from $FERRY_CHECK_CONFIG is valid: 0 outbound routes, 0 services (0 from Consul)", ""},
		{"a static service without endpoints", []string{"--config", emptyStatic}, nil, exitOK,
			"config " + emptyStatic + " is valid: 2 outbound routes, 2 services (1 from Consul)", ""},
		// ferry run warns of a service no route leads to each time it
		// loads the config (a leftover, or a route's typo): so does check.
		{"a service no route leads to", []string{"--config", unused}, nil, exitOK,
			"config " + unused + " is valid: 1 outbound routes, 2 services (0 from Consul)\nwarning: services.typo: a service no route leads to: it is not resolved or watched\n", ""},
		{"bad key", []string{"--config", bad}, nil, exitConfig,
			"", "config " + bad + ":\noutbound.routes[0].service: service \"nope\" is not defined"},
		{"bad telemetry environment", []string{"--config", good}, map[string]string{"OTEL_TRACES_SAMPLER": "sometimes"}, exitConfig,
			"", "config " + good + ":\ntelemetry: OTEL_TRACES_SAMPLER: unknown \"sometimes\""},
		{"missing file", []string{"--config", filepath.Join(dir, "none.yaml")}, nil, exitConfig, "", "none.yaml"},
		{"no config", nil, nil, exitConfig, "", "ferry check: give exactly one of --config FILE or --config-env NAME"},
		{"extra argument", []string{"--config", good, "x"}, nil, exitConfig, "", `ferry check: unexpected argument "x"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var out, errb bytes.Buffer
			code := run(append([]string{"check"}, tc.args...), &out, &errb)
			if code != tc.code || !strings.Contains(out.String(), tc.out) || !strings.Contains(errb.String(), tc.er) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit %d, stdout with %q, stderr with %q", code, out.String(), errb.String(), tc.code, tc.out, tc.er)
			}
			if tc.code == exitOK && errb.Len() != 0 || tc.code != exitOK && out.Len() != 0 {
				t.Fatalf("stdout %q, stderr %q: a result goes to one of them", out.String(), errb.String())
			}
		})
	}
}

// ferry check refuses what the CONSUL_* environment makes ferry run refuse,
// with the same error, when anything in the config talks to Consul (a
// routed Consul service, or registration): it passed such a config, which
// ferry run then refused at start. A config that talks to no Consul does
// not look at that environment.
func TestCheckConsulEnvironmentAsRunDoes(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string { return writeIn(t, dir, name, text) }
	watched := write("watched.yaml", "admin: { listen: 127.0.0.1:0 }\noutbound: { listen: 127.0.0.1:0, routes: [ { service: api } ] }\nservices: { api: }\ntelemetry: { access_log: 'off' }\n")
	registered := write("registered.yaml", "admin: { listen: 127.0.0.1:0 }\ninbound: { listen: 127.0.0.1:0, app: 127.0.0.1:8080 }\nregister: { name: web, port: 15006 }\ntelemetry: { access_log: 'off' }\n")
	static := write("static.yaml", "outbound: { routes: [ { service: files } ] }\nservices: { files: { endpoints: [127.0.0.1:1] } }\n")
	for _, tc := range []struct{ name, key, value, want string }{
		{"address scheme", "CONSUL_HTTP_ADDR", "ftp://consul:8500", "ftp"},
		{"CA file", "CONSUL_CACERT", filepath.Join(dir, "none.pem"), "none.pem"},
		{"certificate without key", "CONSUL_CLIENT_CERT", watched, "client key"},
		{"token file", "CONSUL_HTTP_TOKEN_FILE", filepath.Join(dir, "none.token"), "none.token"},
		{"ssl not a boolean", "CONSUL_HTTP_SSL", "yes", `CONSUL_HTTP_SSL: "yes" is not a boolean`},
		{"ssl verify not a boolean", "CONSUL_HTTP_SSL_VERIFY", "no", `CONSUL_HTTP_SSL_VERIFY: "no" is not a boolean`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(tc.key, tc.value)
			for _, path := range []string{watched, registered} {
				var out, errb bytes.Buffer
				if code := run([]string{"run", "--config", path}, &out, &errb); code != exitConfig {
					t.Fatalf("ferry run --config %s: exit %d, want %d (stderr %q)", filepath.Base(path), code, exitConfig, errb.String())
				}
				runErr := strings.TrimSpace(errb.String()[strings.LastIndex(errb.String(), "ferry: "):])
				if !strings.Contains(runErr, tc.want) {
					t.Fatalf("ferry run --config %s: error %q, want one naming %q", filepath.Base(path), runErr, tc.want)
				}
				out.Reset()
				errb.Reset()
				code := run([]string{"check", "--config", path}, &out, &errb)
				if code != exitConfig || !strings.Contains(errb.String(), strings.TrimPrefix(runErr, "ferry: ")) {
					t.Fatalf("ferry check --config %s: exit %d, stdout %q, stderr %q; want exit %d with ferry run's error %q", filepath.Base(path), code, out.String(), errb.String(), exitConfig, runErr)
				}
			}
			var out, errb bytes.Buffer
			if code := run([]string{"check", "--config", static}, &out, &errb); code != exitOK {
				t.Fatalf("a config without Consul: exit %d, stderr %q", code, errb.String())
			}
		})
	}
}

// writeIn writes text to the file name in dir and returns its path.
func writeIn(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// ferry check tells whether ferry run could open telemetry.access_log, and
// leaves the file system as it was: it created the access log's file (an
// empty one, at the path the config names, which may be a production
// host's /var/log) as ferry run does when it starts.
func TestCheckAccessLogCreatesNothing(t *testing.T) {
	dir := t.TempDir()
	config := func(name, logPath string) string {
		return writeIn(t, dir, name, "outbound: { routes: [ { service: s } ] }\nservices: { s: { endpoints: [10.0.0.1:80] } }\ntelemetry: { access_log: '"+logPath+"' }\n")
	}
	existing := filepath.Join(dir, "existing.log")
	if err := os.WriteFile(existing, []byte("a line\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path string
		code       int
		er         string
	}{
		{"a new file in a directory that exists", filepath.Join(dir, "new.log"), exitOK, ""},
		{"a file that exists", existing, exitOK, ""},
		{"a directory that does not exist", filepath.Join(dir, "nodir", "a.log"), exitConfig, "telemetry.access_log: open " + filepath.Join(dir, "nodir", "a.log") + ": no such file or directory"},
		{"a directory", dir, exitConfig, "telemetry.access_log: open " + dir + ": is a directory"},
		{"under a file", filepath.Join(existing, "a.log"), exitConfig, "telemetry.access_log: open " + filepath.Join(existing, "a.log") + ": not a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config(strings.ReplaceAll(tc.name, " ", "_")+".yaml", tc.path)
			var out, errb bytes.Buffer
			code := run([]string{"check", "--config", cfg}, &out, &errb)
			if code != tc.code || !strings.Contains(errb.String(), tc.er) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit %d, stderr with %q", code, out.String(), errb.String(), tc.code, tc.er)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "new.log")); !os.IsNotExist(err) {
		t.Errorf("ferry check created the access log %s (stat: %v)", filepath.Join(dir, "new.log"), err)
	}
	if b, err := os.ReadFile(existing); err != nil || string(b) != "a line\n" {
		t.Errorf("the existing access log holds %q (%v) after ferry check, want it untouched", b, err)
	}
}
