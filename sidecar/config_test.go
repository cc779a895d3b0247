package sidecar

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/internal/syncbuf"
	"github.com/ferrymesh/ferry/resilience"
)

const validConfig = `
admin:    { listen: 127.0.0.1:15000 }
outbound:
  listen: 127.0.0.1:15001
  routes:
    - { host: files, path_prefix: /, service: files }
inbound:  { listen: 0.0.0.0:15006, app: 127.0.0.1:8080 }
services:
  files: { endpoints: [127.0.0.1:9001, 127.0.0.1:9002] }
`

func TestParseConfigValid(t *testing.T) {
	cfg, err := ParseConfig([]byte(validConfig))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Services["files"].Endpoints; len(got) != 2 || got[1] != "127.0.0.1:9002" {
		t.Errorf("endpoints = %v", got)
	}
	if got := cfg.Services["files"].Timeouts; got != resilience.DefaultTimeouts() || got.Overall != 0 || got.BodyIdle != 5*time.Minute {
		t.Errorf("service timeouts = %+v, want the defaults", got)
	}
	if cfg.Limits.MaxHeaderBytes != DefaultMaxHeaderBytes || cfg.Shutdown.Grace != DefaultShutdownGrace {
		t.Errorf("limits/shutdown defaults = %+v %+v", cfg.Limits, cfg.Shutdown)
	}
	if cfg.Services["files"].Protocol != ProtocolAuto || cfg.Inbound.Protocol != ProtocolAuto {
		t.Errorf("protocol defaults not applied")
	}
}

func TestParseConfigDefaultsListeners(t *testing.T) {
	cfg, err := ParseConfig([]byte("outbound: {}\ninbound: { app: 127.0.0.1:8080 }\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Admin.Listen != DefaultAdminListen || cfg.Outbound.Listen != DefaultOutboundListen || cfg.Inbound.Listen != DefaultInboundListen {
		t.Errorf("listen defaults = %q %q %q", cfg.Admin.Listen, cfg.Outbound.Listen, cfg.Inbound.Listen)
	}
}

// A service starts from defaults; its own keys override one by one, an
// explicit zero included.
func TestParseConfigServiceSettingsOverDefaults(t *testing.T) {
	cfg, err := ParseConfig([]byte(`
outbound: { routes: [ { service: a } ] }
defaults:
  timeouts: { connect: 2s, response_header: 9s }
  retry: { max_retries: 3 }
services:
  a: { endpoints: [127.0.0.1:1], timeouts: { connect: 250ms, overall: 1m }, balancer: round_robin }
  b: { endpoints: [127.0.0.1:2], retry: { max_retries: 0 } }
  c:
`))
	if err != nil {
		t.Fatal(err)
	}
	a, b, c := cfg.Services["a"], cfg.Services["b"], cfg.Services["c"]
	want := resilience.Timeouts{Connect: 250 * time.Millisecond, ResponseHeader: 9 * time.Second, BodyIdle: 5 * time.Minute, Overall: time.Minute, TunnelHalfClosed: 10 * time.Second}
	if a.Timeouts != want {
		t.Errorf("a timeouts = %+v, want %+v", a.Timeouts, want)
	}
	if a.Balancer != resilience.BalancerRoundRobin || a.Retry.MaxRetries != 3 {
		t.Errorf("a balancer %q retries %d", a.Balancer, a.Retry.MaxRetries)
	}
	if b.Retry.MaxRetries != 0 || b.Timeouts.Connect != 2*time.Second || b.Balancer != resilience.BalancerP2C {
		t.Errorf("b = %+v", b.Settings)
	}
	if !c.UsesConsul() || c.Retry.MaxRetries != 3 {
		t.Errorf("c (bare name) = %+v", c)
	}
}

// Every bad config names the key path of the problem.
func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, text, want string
	}{
		{"empty", "", "at least one of outbound or inbound"},
		{"unknown top key", "outbound: {}\nlisteners: {}\n", "listeners: unknown key"},
		{"unknown nested key", "outbound:\n  routes:\n    - { hots: files, service: files }\nservices: { files: { endpoints: [127.0.0.1:1] } }\n", "outbound.routes[0].hots: unknown key"},
		{"unknown service key", "outbound: {}\nservices: { files: { endpoint: [127.0.0.1:1] } }\n", "services.files.endpoint: unknown key"},
		{"bad endpoint", "outbound: {}\nservices: { files: { endpoints: [127.0.0.1:1, nohost] } }\n", "services.files.endpoints[1]: invalid address"},
		{"endpoint host not a name", "outbound: {}\nservices: { files: { endpoints: ['user@files:80'] } }\n", `services.files.endpoints[0]: invalid host in "user@files:80"`},
		{"endpoint host control character", "outbound: {}\nservices: { files: { endpoints: [\"fi\\x01les:80\"] } }\n", "services.files.endpoints[0]: invalid host"},
		{"app host not a name", "inbound: { app: 'app?x:80' }\n", "inbound.app: invalid host"},
		{"endpoint port 0", "outbound: {}\nservices: { files: { endpoints: ['127.0.0.1:0'] } }\n", "services.files.endpoints[0]: invalid port"},
		{"duplicate endpoint", "outbound: {}\nservices: { files: { endpoints: [127.0.0.1:1, 127.0.0.1:1] } }\n", "services.files.endpoints[1]: 127.0.0.1:1 repeats endpoints[0]"},
		// The same endpoint written two ways: one dial target, which two
		// entries would give two breakers and twice its share of requests.
		{"duplicate ipv6 endpoint", "outbound: {}\nservices: { files: { endpoints: ['[::1]:80', '[0:0::1]:80'] } }\n", "services.files.endpoints[1]: [0:0::1]:80 repeats endpoints[0] ([::1]:80)"},
		{"duplicate mapped endpoint", "outbound: {}\nservices: { files: { endpoints: ['127.0.0.1:80', '[::ffff:127.0.0.1]:80'] } }\n", "services.files.endpoints[1]: [::ffff:127.0.0.1]:80 repeats endpoints[0] (127.0.0.1:80)"},
		{"duplicate host name endpoint", "outbound: {}\nservices: { files: { endpoints: [localhost:80, LOCALHOST:80] } }\n", "services.files.endpoints[1]: LOCALHOST:80 repeats endpoints[0] (localhost:80)"},
		{"bad listen", "outbound: { listen: 'localhost' }\n", "outbound.listen: invalid address"},
		{"listen host name", "outbound: { listen: 'example.com:80' }\n", "outbound.listen: listen host"},
		{"route to undefined service", "outbound: { routes: [ { host: a, service: nope } ] }\n", `outbound.routes[0].service: service "nope" is not defined`},
		{"route without service", "outbound: { routes: [ { host: a } ] }\n", "outbound.routes[0].service: required"},
		{"path prefix", "outbound: { routes: [ { path_prefix: api, service: s } ] }\nservices: { s: { endpoints: [127.0.0.1:1] } }\n", "outbound.routes[0].path_prefix: must start with /"},
		{"unreachable route", "outbound: { routes: [ { service: s }, { host: a, service: s } ] }\nservices: { s: { endpoints: [127.0.0.1:1] } }\n", "outbound.routes[1]: can never match"},
		{"route under an earlier prefix", "outbound: { routes: [ { path_prefix: /api, service: s }, { path_prefix: /api/v2/, service: s } ] }\nservices: { s: { endpoints: [127.0.0.1:1] } }\n", "outbound.routes[1]: can never match: routes[0]"},
		{"host route under an earlier any-host route", "outbound: { routes: [ { path_prefix: /api, service: s }, { host: files, path_prefix: /api/x, service: s } ] }\nservices: { s: { endpoints: [127.0.0.1:1] } }\n", "outbound.routes[1]: can never match: routes[0]"},
		{"repeated route", "outbound: { routes: [ { host: a, service: s }, { host: A, service: s } ] }\nservices: { s: { endpoints: [127.0.0.1:1] } }\n", "outbound.routes[1]: repeats routes[0]"},
		{"duplicate listeners", "outbound: { listen: 127.0.0.1:15001 }\ninbound: { listen: 0.0.0.0:15001, app: 127.0.0.1:8080 }\n", "inbound.listen: 0.0.0.0:15001 is already used by outbound.listen"},
		{"admin clash", "admin: { listen: 127.0.0.1:15001 }\noutbound: { listen: 127.0.0.1:15001 }\n", "outbound.listen: 127.0.0.1:15001 is already used by admin.listen"},
		{"inbound without app", "inbound: { listen: 127.0.0.1:1 }\n", "inbound.app: required"},
		{"register address bracketed", "inbound: { listen: '[::1]:15006', app: '[::1]:8080' }\nregister: { name: web, address: '[fd00::5]' }\n", `register.address: "[fd00::5]" is not an IP address or host name`},
		{"register address with port", "inbound: { app: 127.0.0.1:8080 }\nregister: { name: web, address: '10.0.0.5:15006' }\n", `register.address: "10.0.0.5:15006"`},
		{"bad duration", "outbound: {}\ndefaults: { timeouts: { connect: soon } }\n", `defaults.timeouts.connect: invalid value "soon": want a duration`},
		{"negative duration", "outbound: {}\ndefaults: { timeouts: { body_idle: -1s } }\n", "defaults.timeouts.body_idle: must be >= 0"},
		{"service duration", "outbound: {}\nservices: { s: { endpoints: [127.0.0.1:1], timeouts: { per_try: -2s } } }\n", "services.s.timeouts.per_try: must be >= 0"},
		{"negative tunnel_half_closed", "outbound: {}\ndefaults: { timeouts: { tunnel_half_closed: -1s } }\n", "defaults.timeouts.tunnel_half_closed: must be >= 0"},
		{"service tunnel_half_closed", "outbound: {}\nservices: { s: { endpoints: [127.0.0.1:1], timeouts: { tunnel_half_closed: -5ms } } }\n", "services.s.timeouts.tunnel_half_closed: must be >= 0"},
		{"unknown service setting", "outbound: {}\nservices: { s: { endpoints: [127.0.0.1:1], breaker: { max_fails: 3 } } }\n", "services.s.breaker.max_fails: unknown key"},
		{"bad balancer", "outbound: {}\nservices: { s: { endpoints: [127.0.0.1:1], balancer: fastest } }\n", `services.s.balancer: unknown balancer "fastest"`},
		{"hash without header", "outbound: {}\nservices: { s: { endpoints: [127.0.0.1:1], balancer: hash } }\n", "services.s.hash_header: required"},
		{"consul and endpoints", "outbound: {}\nservices: { s: { endpoints: [127.0.0.1:1], consul: { tags: [a] } } }\n", "services.s.consul: a service has either endpoints"},
		{"bad int", "outbound: {}\nlimits: { max_request_body_bytes: lots }\n", `limits.max_request_body_bytes: invalid value "lots"`},
		{"negative max_connections", "outbound: {}\nlimits: { max_connections: -1 }\n", "limits.max_connections: must not be negative"},
		{"wrong shape", "outbound: { routes: { service: a } }\n", "outbound.routes: expected a list"},
		{"bad protocol", "outbound: {}\nservices: { s: { endpoints: [127.0.0.1:1], protocol: h3 } }\n", `services.s.protocol: unknown protocol "h3"`},
		{"duplicate key", "outbound: {}\noutbound: {}\n", "outbound: duplicate key"},
		{"two documents", "outbound: {}\n---\ninbound: {}\n", "single YAML document"},
		{"not yaml", "outbound: [\n", "did not find expected"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.text))
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q\ndoes not contain %q", err, tc.want)
			}
		})
	}
}

// A null entry in a list (null, ~, or an empty "- ") is refused naming
// its index, never dropped or decoded as an empty value: routes: [null]
// used to load as a config without the route. Every list of the config.
func TestParseConfigNullListEntry(t *testing.T) {
	const svc = "services: { s: { endpoints: [127.0.0.1:1] } }\n"
	for _, tc := range []struct{ text, key string }{
		{"outbound: { routes: [null] }\n", "outbound.routes[0]"},
		{"outbound: { routes: [ { service: s }, ~ ] }\n" + svc, "outbound.routes[1]"},
		{"outbound:\n  routes:\n    - { service: s }\n    -\n" + svc, "outbound.routes[1]"},
		{"outbound: {}\nservices: { s: { endpoints: [null] } }\n", "services.s.endpoints[0]"},
		{"outbound: {}\nservices: { s: { endpoints: [127.0.0.1:1, ~] } }\n", "services.s.endpoints[1]"},
		{"outbound: {}\nservices: { s: { consul: { tags: [a, null] } } }\n", "services.s.consul.tags[1]"},
		{"outbound: {}\nservices: { s: { endpoints: [127.0.0.1:1], retry: { methods: [null] } } }\n", "services.s.retry.methods[0]"},
		{"outbound: {}\ndefaults: { retry: { on_statuses: [502, null] } }\n", "defaults.retry.on_statuses[1]"},
		{"outbound: {}\ndefaults: { breaker: { failure_statuses: [null] } }\n", "defaults.breaker.failure_statuses[0]"},
		{"outbound: {}\ntelemetry: { propagators: [tracecontext, null] }\n", "telemetry.propagators[1]"},
		{"inbound: { app: 127.0.0.1:8080 }\nregister: { name: web, tags: [null] }\n", "register.tags[0]"},
		{"outbound: { routes: [ &none null ] }\n", "outbound.routes[0]"},
	} {
		_, err := ParseConfig([]byte(tc.text))
		if err == nil || !strings.Contains(err.Error(), tc.key+": ") {
			t.Errorf("%q: error %v, want one naming %s", tc.text, err, tc.key)
		}
	}
}

func TestParseConfigReportsLine(t *testing.T) {
	_, err := ParseConfig([]byte("outbound: {}\n\nservices:\n  files:\n    endpionts: []\n"))
	if err == nil || !strings.Contains(err.Error(), "services.files.endpionts: unknown key") || !strings.Contains(err.Error(), "(line 5)") {
		t.Fatalf("error = %v", err)
	}
}

func TestRouteMatch(t *testing.T) {
	a, b, c := &upstream{name: "a"}, &upstream{name: "b"}, &upstream{name: "c"}
	table := &routeTable{routes: []route{
		{host: "files", prefix: "/api", up: a},
		{host: "files", up: b},
		{prefix: "/static", up: c},
	}}
	for _, tc := range []struct{ host, path, want string }{
		{"files", "/api", "a"},
		{"files:8080", "/api/x", "a"},
		{"FILES", "/api/", "a"},
		{"files.", "/api", "a"},
		{"files", "/apix", "b"},
		{"files", "/", "b"},
		{"other", "/static/x.css", "c"},
		{"other", "/staticx", ""},
		{"other", "/", ""},
		{"[::1]:80", "/static", "c"},
	} {
		got := ""
		if r := table.match(tc.host, tc.path); r != nil {
			got = r.up.name
		}
		if got != tc.want {
			t.Errorf("match(%q, %q) = %q, want %q", tc.host, tc.path, got, tc.want)
		}
	}
}

// Routes listed from the more specific to the less are all reachable and
// accepted; a prefix only matches whole segments ("/apix" is not under
// "/api").
func TestRouteOrderAccepted(t *testing.T) {
	_, err := ParseConfig([]byte(`
outbound:
  listen: 127.0.0.1:0
  routes:
    - { host: files, path_prefix: /api, service: s }
    - { path_prefix: /api/v2, service: s }
    - { path_prefix: /api, service: s }
    - { path_prefix: /apix, service: s }
    - { host: files, service: s }
    - { service: s }
services: { s: { endpoints: [127.0.0.1:1] } }
`))
	if err != nil {
		t.Fatal(err)
	}
}

// A fractional number for an integer key must be refused naming the key,
// not truncated: max_in_flight 0.5 silently became 0, which means
// "unlimited" (load shedding off).
func TestConfigFractionalIntegerRefused(t *testing.T) {
	for _, tc := range []struct{ text, key string }{
		{"outbound: {}\ndefaults: { max_in_flight: 0.5 }\n", "defaults.max_in_flight"},
		{"outbound: {}\nservices: { s: { endpoints: [127.0.0.1:1], max_in_flight: 1.5 } }\n", "services.s.max_in_flight"},
		{"outbound: {}\nlimits: { max_header_bytes: 0.9 }\n", "limits.max_header_bytes"},
	} {
		cfg, err := ParseConfig([]byte(tc.text))
		if err == nil {
			t.Errorf("%q accepted (defaults.max_in_flight=%d, services.s.max_in_flight=%d, limits.max_header_bytes=%d); want an error naming %s",
				tc.text, cfg.Defaults.MaxInFlight, svcMIF(cfg), cfg.Limits.MaxHeaderBytes, tc.key)
			continue
		}
		if !strings.Contains(err.Error(), tc.key+":") {
			t.Errorf("%q: error %q does not name %s", tc.text, err, tc.key)
		}
	}
}

func svcMIF(cfg *Config) int {
	if s := cfg.Services["s"]; s != nil {
		return s.MaxInFlight
	}
	return -1
}

// A NaN retry budget ratio passes validation (NaN < 0 and NaN > 1 are both
// false); the budget then never refuses a retry.
func TestConfigNaNRatioRefused(t *testing.T) {
	_, err := ParseConfig([]byte("outbound: {}\ndefaults: { retry: { budget: { ratio: .nan } } }\n"))
	if err == nil || !strings.Contains(err.Error(), "defaults.retry.budget.ratio:") {
		t.Fatalf("error = %v, want one naming defaults.retry.budget.ratio", err)
	}
}

// A mapping key that is not a scalar must be reported with its key path,
// not as a bare decoder message.
func TestConfigNonScalarKeyNamesPath(t *testing.T) {
	_, err := ParseConfig([]byte("outbound: {}\nservices:\n  ? [a, b]\n  : { endpoints: [127.0.0.1:1] }\n"))
	if err == nil {
		t.Fatal("accepted")
	}
	var ce ConfigErrors
	if e, ok := err.(ConfigErrors); ok {
		ce = e
	}
	if len(ce) == 0 || !strings.HasPrefix(ce[0].Path, "services") {
		t.Fatalf("error %q has no key path (want services...)", err)
	}
}

// The telemetry section is checked with the rest of the file: a bad value
// is refused by ParseConfig (so by a reload too, as invalid rather than as
// needing a restart) naming its full key path, telemetry.sampler and so on.
// It was only refused when the sidecar was built, as "telemetry: sampler:
// ...", with neither the file nor the key's full path.
func TestParseConfigValidatesTelemetry(t *testing.T) {
	const base = "outbound: {}\n"
	for _, tc := range []struct{ text, want string }{
		{"telemetry: { sampler: sometimes }\n", `telemetry.sampler: unknown "sometimes"`},
		{"telemetry: { sampler_arg: 5 }\n", "telemetry.sampler_arg: 5 is outside [0, 1]"},
		{"telemetry: { queue_size: -1 }\n", "telemetry.queue_size: -1 must be positive"},
		{"telemetry: { batch_size: -3 }\n", "telemetry.batch_size: -3 must be positive"},
		{"telemetry: { batch_timeout: -1s }\n", "telemetry.batch_timeout: -1s must be positive"},
		{"telemetry: { export_timeout: -1s }\n", "telemetry.export_timeout: -1s must be positive"},
		{"telemetry: { protocol: udp }\n", `telemetry.protocol: unknown "udp"`},
		{"telemetry: { traces_exporter: jaeger }\n", `telemetry.traces_exporter: unknown "jaeger"`},
		{"telemetry: { endpoint: 'collector:4317' }\n", "telemetry.endpoint: invalid URL"},
		{"telemetry: { propagators: [w3c] }\n", `telemetry.propagators: unknown "w3c"`},
		{"telemetry: { resource_attributes: { ' ': x } }\n", "telemetry.resource_attributes: empty key"},
	} {
		_, err := ParseConfig([]byte(base + tc.text))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one containing %q", tc.text, err, tc.want)
		}
	}
	// The environment is not the file's business: a bad OTEL_* variable is
	// reported when the sidecar is built, not by ParseConfig.
	t.Setenv("OTEL_TRACES_SAMPLER", "sometimes")
	if _, err := ParseConfig([]byte(base + "telemetry: { access_log: off }\n")); err != nil {
		t.Errorf("a bad OTEL_TRACES_SAMPLER failed ParseConfig: %v", err)
	}
}

// Bytes that are not UTF-8 are reported with their line and column; the
// message was yaml's own "invalid leading UTF-8 octet", which says neither.
func TestParseConfigNonUTF8NamesTheLine(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"outbound: {}\nservices:\n  files: { endpoints: [127.0.0.1:1] }\n  caf\xe9: { endpoints: [127.0.0.1:2] }\n", "line 4, column 6"},
		{"outbound: {}\n# r\xfcckblick\n", "line 2, column 4"},
	} {
		_, err := ParseConfig([]byte(tc.text))
		if err == nil || !strings.Contains(err.Error(), "not valid UTF-8") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one saying the text is not valid UTF-8 at %s", tc.text, err, tc.want)
		}
	}
}

// YAML merge keys (<<) work as YAML defines them: a service may take
// another's keys through an anchor and override some. They were refused as
// an unknown key "<<". A merged key is checked like any other.
func TestParseConfigMergeKeys(t *testing.T) {
	cfg, err := ParseConfig([]byte(`
outbound: { routes: [ { host: a, service: a }, { host: b, service: b }, { host: c, service: c } ] }
services:
  a: &common
    endpoints: [127.0.0.1:1]
    retry: { max_retries: 4 }
    balancer: round_robin
  b:
    <<: *common
    endpoints: [127.0.0.1:2]
  c:
    <<: [*common]
    protocol: http1
`))
	if err != nil {
		t.Fatal(err)
	}
	b, c := cfg.Services["b"], cfg.Services["c"]
	if b.Endpoints[0] != "127.0.0.1:2" || b.Retry.MaxRetries != 4 || b.Balancer != "round_robin" {
		t.Errorf("b = %+v, want a's settings with its own endpoints", b)
	}
	if c.Endpoints[0] != "127.0.0.1:1" || c.Retry.MaxRetries != 4 || c.Protocol != ProtocolHTTP1 {
		t.Errorf("c = %+v, want a's settings and protocol http1", c)
	}
	for _, tc := range []struct{ text, want string }{
		{"outbound: {}\nservices:\n  a: &x { endpoints: [127.0.0.1:1], retries: 3 }\n  b: { <<: *x }\n", "services.b.retries: unknown key"},
		{"outbound: {}\nservices:\n  a: { endpoints: [127.0.0.1:1], tags: &t [x] }\n  b: { <<: *t }\n", "services.b.<<: expected a mapping or a list of mappings to merge"},
	} {
		_, err := ParseConfig([]byte(tc.text))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one containing %q", tc.text, err, tc.want)
		}
	}
}

// Merges of merges (each level merging the one before ten times) are
// checked in time linear in the file, not 10^levels.
func TestParseConfigNestedMergesBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString("outbound: { routes: [ { service: s0 } ] }\nservices:\n  s0: &s0 { endpoints: [127.0.0.1:1] }\n")
	for i := 1; i <= 9; i++ {
		fmt.Fprintf(&b, "  s%d: &s%d { <<: [", i, i)
		for j := 0; j < 10; j++ {
			if j > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "*s%d", i-1)
		}
		b.WriteString("] }\n")
	}
	done := make(chan error, 1)
	go func() { _, err := ParseConfig([]byte(b.String())); done <- err }()
	select {
	case err := <-done:
		t.Logf("ParseConfig: %v", err) // accepted or refused, but at once
	case <-time.After(10 * time.Second):
		t.Fatal("ParseConfig did not return within 10s")
	}
}

// A document yaml refuses for expanding aliases too much (its guard
// against alias bombs) is refused naming the alias that expands the most,
// by key path and line, and saying why. yaml's own message, "document
// contains excessive aliasing", named neither a key nor a line.
func TestParseConfigAliasBombNamesTheAlias(t *testing.T) {
	var bomb strings.Builder
	bomb.WriteString("outbound: { routes: [ { service: s0 } ] }\nservices:\n  s0: &s0 { endpoints: [127.0.0.1:1] }\n")
	for i := 1; i <= 9; i++ { // s9 is on line 12
		fmt.Fprintf(&bomb, "  s%d: &s%d { <<: [%s] }\n", i, i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*s%d, ", i-1), 10), ", "))
	}
	_, err := ParseConfig([]byte(bomb.String()))
	if err == nil {
		t.Fatal("an alias bomb was accepted")
	}
	msg := err.Error()
	for _, want := range []string{"services.s9.<<[0]: alias *s8 (anchor at line 11) expands to ", "alias bomb", "excessive aliasing", "(line 12)"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q, want one containing %q", msg, want)
		}
	}
}

// An invalid service name is named quoted in its path: an empty one was
// reported under "services." and one with a space under "services.my api".
func TestParseConfigInvalidServiceNamePath(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"outbound: {}\nservices:\n  '': { endpoints: [127.0.0.1:1] }\n", `services[""]: invalid service name ""`},
		{"outbound: {}\nservices:\n  'my api': { endpoints: [127.0.0.1:1] }\n", `services["my api"]: invalid service name "my api"`},
	} {
		_, err := ParseConfig([]byte(tc.text))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one containing %q", tc.text, err, tc.want)
		}
	}
}

// A section key written with no value (YAML null: "outbound:", "~",
// "null") is the section with every default, as "outbound: {}" is, the
// way a bare "name:" under services is a service with every default. It
// was refused as "at least one of outbound or inbound is required" though
// the key was there.
func TestParseConfigNullSectionIsEmpty(t *testing.T) {
	for _, text := range []string{"outbound:\n", "outbound: ~\n", "outbound: null\n", "outbound: {}\n", "outbound:\ninbound: { app: 127.0.0.1:8080 }\n"} {
		cfg, err := ParseConfig([]byte(text))
		if err != nil {
			t.Errorf("%q: %v", text, err)
			continue
		}
		if cfg.Outbound == nil || cfg.Outbound.Listen != DefaultOutboundListen || len(cfg.Outbound.Routes) != 0 {
			t.Errorf("%q: outbound = %+v, want the defaults", text, cfg.Outbound)
		}
	}
	cfg, err := ParseConfig([]byte("outbound: {}\ninbound:\n"))
	if err == nil {
		t.Fatalf("inbound with no app accepted: %+v", cfg.Inbound)
	}
	if !strings.Contains(err.Error(), "inbound.app: required") || strings.Contains(err.Error(), "at least one of") {
		t.Errorf("error %q, want the one of inbound: {} (inbound.app: required)", err)
	}
	if _, err := ParseConfig([]byte("inbound: ~\n")); err == nil || !strings.Contains(err.Error(), "inbound.app: required") {
		t.Errorf("inbound: ~ alone: error %v, want inbound.app: required", err)
	}
}

// Listener addresses clash by what they listen on, not by their text:
// localhost is loopback, IP addresses compare parsed, and a port is
// digits only, 1..65535 (0 for a listener), with no sign and no leading
// zero (net.Listen reads "+15001" and "015001" as 15001). Each of these
// passed validation and failed at listen time, or was read as another
// port than it seemed.
func TestParseConfigListenerClashNormalised(t *testing.T) {
	const app = "127.0.0.1:8080"
	for _, tc := range []struct{ text, want string }{
		{"admin: { listen: 'localhost:15001' }\noutbound: { listen: '127.0.0.1:15001' }\n", "outbound.listen: 127.0.0.1:15001 is already used by admin.listen (localhost:15001)"},
		// Host names are case-insensitive, and the resolver reads LOCALHOST as localhost.
		{"admin: { listen: 'LOCALHOST:15001' }\noutbound: { listen: '127.0.0.1:15001' }\n", "outbound.listen: 127.0.0.1:15001 is already used by admin.listen (LOCALHOST:15001)"},
		{"outbound: { listen: '127.0.0.1:15006' }\ninbound: { listen: 'localhost:15006', app: " + app + " }\n", "inbound.listen: localhost:15006 is already used by outbound.listen (127.0.0.1:15006)"},
		{"outbound: { listen: '[::1]:15001' }\ninbound: { listen: 'localhost:15001', app: " + app + " }\n", "inbound.listen: localhost:15001 is already used by outbound.listen"},
		{"outbound: { listen: '[0:0::1]:15001' }\ninbound: { listen: '[::1]:15001', app: " + app + " }\n", "inbound.listen: [::1]:15001 is already used by outbound.listen"},
		{"outbound: { listen: '[::ffff:127.0.0.1]:15001' }\ninbound: { listen: '127.0.0.1:15001', app: " + app + " }\n", "inbound.listen: 127.0.0.1:15001 is already used by outbound.listen"},
		{"outbound: { listen: '[0:0::0]:15001' }\ninbound: { listen: '127.0.0.9:15001', app: " + app + " }\n", "inbound.listen: 127.0.0.9:15001 is already used by outbound.listen"},
		{"outbound: { listen: '127.0.0.1:015001' }\n", `outbound.listen: invalid port "015001" in "127.0.0.1:015001": leading zero`},
		{"outbound: { listen: '127.0.0.1:+15001' }\n", `outbound.listen: invalid port "+15001" in "127.0.0.1:+15001"`},
		{"outbound: { listen: '127.0.0.1:-1' }\n", `outbound.listen: invalid port "-1"`},
		{"outbound: { listen: '127.0.0.1:65536' }\n", `outbound.listen: invalid port "65536"`},
		{"outbound: { listen: '127.0.0.1:http' }\n", `outbound.listen: invalid port "http"`},
		{"outbound: {}\nservices: { s: { endpoints: ['127.0.0.1:+80'] } }\n", `services.s.endpoints[0]: invalid port "+80"`},
		{"outbound: {}\nservices: { s: { endpoints: ['127.0.0.1:080'] } }\n", `services.s.endpoints[0]: invalid port "080"`},
	} {
		_, err := ParseConfig([]byte(tc.text))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one containing %q", tc.text, err, tc.want)
		}
	}
	// Distinct addresses on one port do not clash; port 0 never does.
	for _, text := range []string{
		"admin: { listen: 'localhost:15001' }\noutbound: { listen: '127.0.0.2:15001' }\n",
		"outbound: { listen: '127.0.0.1:15001' }\ninbound: { listen: '10.0.0.1:15001', app: " + app + " }\n",
		"admin: { listen: 'localhost:0' }\noutbound: { listen: '127.0.0.1:0' }\ninbound: { listen: ':0', app: " + app + " }\n",
	} {
		if _, err := ParseConfig([]byte(text)); err != nil {
			t.Errorf("%q: %v", text, err)
		}
	}
}

// Values the proxy could never use are refused naming their key: a
// hash_header that is not a header field name (no request carries it, so
// every request hashed alike), an empty Consul tag (refused only once the
// watch started), a path_prefix with a space, "?" or "#" (a request path
// never has them, so the route never matched) or without a leading "/".
func TestParseConfigRefusesUnusableValues(t *testing.T) {
	const svc = "services: { s: { endpoints: [127.0.0.1:1] } }\n"
	route := func(prefix string) string {
		return "outbound: { routes: [ { path_prefix: '" + prefix + "', service: s } ] }\n" + svc
	}
	for _, tc := range []struct{ text, want string }{
		{"outbound: {}\nservices: { s: { endpoints: [127.0.0.1:1], balancer: hash, hash_header: 'X User' } }\n", `services.s.hash_header: "X User" is not a valid header field name`},
		{"outbound: {}\nservices: { s: { endpoints: [127.0.0.1:1], balancer: hash, hash_header: 'x-user:' } }\n", `services.s.hash_header: "x-user:" is not a valid header field name`},
		{"outbound: {}\ndefaults: { balancer: hash, hash_header: 'é' }\n", `defaults.hash_header: "é" is not a valid header field name`},
		{"outbound: {}\nservices: { s: { consul: { tags: [v2, ''] } } }\n", "services.s.consul.tags[1]: empty tag"},
		{"outbound: {}\nservices: { s: { consul: { tags: ['  '] } } }\n", "services.s.consul.tags[0]: empty tag"},
		{route("/api v2"), `outbound.routes[0].path_prefix: must not contain " "`},
		{route("/api?x=1"), `outbound.routes[0].path_prefix: must not contain "?"`},
		{route("/api#top"), `outbound.routes[0].path_prefix: must not contain "#"`},
		{route("/api\t"), `outbound.routes[0].path_prefix: must not contain "\t"`},
		{route("api"), `outbound.routes[0].path_prefix: must start with /`},
		{route("?x"), `outbound.routes[0].path_prefix: must start with /`},
	} {
		_, err := ParseConfig([]byte(tc.text))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one containing %q", tc.text, err, tc.want)
		}
	}
	cfg, err := ParseConfig([]byte("outbound: { routes: [ { path_prefix: /a-b_c.d~e/%20/x, service: s } ] }\nservices: { s: { endpoints: [127.0.0.1:1], balancer: hash, hash_header: x-user-id } }\n"))
	if err != nil {
		t.Fatal(err)
	}
	if h := cfg.Services["s"].HashHeader; h != "X-User-Id" {
		t.Errorf("hash_header = %q, want X-User-Id", h)
	}
}

// A duration too large for a time.Duration (about 292 years) is reported
// as too large, with its key path; it was reported as "want a duration
// such as "5s"", though it is one. Text that is no duration still gets
// that message.
func TestParseConfigDurationTooLarge(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"outbound: {}\ndefaults: { timeouts: { connect: 9999999999h } }\n", `defaults.timeouts.connect: invalid value "9999999999h": too large`},
		{"outbound: {}\nlimits: { idle_timeout: 2562048h }\n", `limits.idle_timeout: invalid value "2562048h": too large`},
		{"outbound: {}\nshutdown: { grace: 99999999999999999999ns }\n", `shutdown.grace: invalid value "99999999999999999999ns": too large`},
		{"outbound: {}\nservices: { s: { endpoints: [127.0.0.1:1], timeouts: { overall: -9999999999h } } }\n", `services.s.timeouts.overall: invalid value "-9999999999h": too large`},
		{"outbound: {}\nshutdown: { delay: 2562047h47m16.854775808s }\n", `shutdown.delay: invalid value "2562047h47m16.854775808s": too large`},
		{"outbound: {}\nshutdown: { delay: 5 seconds }\n", `shutdown.delay: invalid value "5 seconds": want a duration such as "5s"`},
		{"outbound: {}\nshutdown: { delay: 99999999999x }\n", `shutdown.delay: invalid value "99999999999x": want a duration such as "5s"`},
	} {
		_, err := ParseConfig([]byte(tc.text))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one containing %q", tc.text, err, tc.want)
		}
	}
	if _, err := ParseConfig([]byte("outbound: {}\nshutdown: { delay: 2562047h47m16.854775807s }\n")); err != nil {
		t.Errorf("the largest duration: %v", err)
	}
}

// register: with no value is the section with its defaults, as outbound:
// and inbound: are, and so is refused for its missing name as register: {}
// is. It silently left registration off.
func TestParseConfigNullRegister(t *testing.T) {
	for _, v := range []string{"", " ~", " null"} {
		_, err := ParseConfig([]byte("inbound: { listen: 127.0.0.1:0, app: 127.0.0.1:8080 }\nregister:" + v + "\n"))
		if err == nil || !strings.Contains(err.Error(), "register.name") {
			t.Errorf("register:%s error %v, want the one register: {} gives (register.name)", v, err)
		}
	}
}

// A service no route leads to is never used: usually a typo in a route or
// a leftover. ferry says so when it loads the config, naming the key (and
// leaves it unresolved, TestUnusedServiceNotResolved).
func TestUnusedServiceIsLogged(t *testing.T) {
	logs := new(syncbuf.Buffer)
	startSidecar(t, mustParse(t, `
outbound: { listen: 127.0.0.1:0, routes: [ { service: used } ] }
services:
  used: { endpoints: [127.0.0.1:1] }
  leftover: { endpoints: [127.0.0.1:2] }
telemetry: { access_log: "off" }
`), Options{Log: slog.New(slog.NewTextHandler(logs, nil))})
	out := logs.String()
	if !strings.Contains(out, "services.leftover") || !strings.Contains(out, "no route") {
		t.Fatalf("no warning naming services.leftover as used by no route:\n%s", out)
	}
	if strings.Contains(out, "services.used") {
		t.Fatalf("a used service was reported:\n%s", out)
	}
}

// The Consul service name a service without endpoints is watched by (its
// consul.service, else its own name) is checked with the file, naming its
// key: one Consul cannot hold ("/", "?", "#", "%" or a space) passed
// ParseConfig and ferry check and was refused only when ferry run built
// the watch, as `consul: service "s": service: "a/b" ...` without the
// key's path. A service with endpoints may be named anything valid.
func TestParseConfigConsulServiceName(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"outbound: { routes: [ { service: s } ] }\nservices: { s: { consul: { service: 'a/b' } } }\n", `services.s.consul.service: "a/b" has a character Consul service names cannot hold`},
		{"outbound: {}\nservices: { s: { consul: { service: 'a b', tags: [v1] } } }\n", `services.s.consul.service: "a b" has a character`},
		{"outbound: { routes: [ { service: 'a%b' } ] }\nservices: { 'a%b': }\n", `services.a%b: "a%b" has a character Consul service names cannot hold`},
		{"outbound: {}\nservices: { 'a?b': { consul: { datacenter: dc1 } } }\n", `services.a?b: "a?b" has a character`},
	} {
		_, err := ParseConfig([]byte(tc.text))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one containing %q", tc.text, err, tc.want)
		}
	}
	for _, text := range []string{
		"outbound: { routes: [ { service: 'a%b' } ] }\nservices: { 'a%b': { consul: { service: ab } } }\n",
		"outbound: { routes: [ { service: 'a%b' } ] }\nservices: { 'a%b': { endpoints: [127.0.0.1:1] } }\n",
	} {
		if _, err := ParseConfig([]byte(text)); err != nil {
			t.Errorf("%q: %v", text, err)
		}
	}
}

// A datacenter Consul cannot have (it names them with lower-case letters,
// digits, - and _) is refused naming its key, in the consul section and
// in a service's: it was accepted, and every query for the service then
// failed with Consul's "No path to datacenter".
func TestParseConfigConsulDatacenter(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"outbound: {}\nconsul: { datacenter: 'd c' }\n", `consul.datacenter: "d c" is not a Consul datacenter name`},
		{"outbound: {}\nconsul: { datacenter: DC1 }\n", `consul.datacenter: "DC1" is not a Consul datacenter name`},
		{"outbound: {}\nservices: { s: { consul: { datacenter: 'd c' } } }\n", `services.s.consul.datacenter: "d c" is not a Consul datacenter name`},
		{"outbound: {}\nservices: { s: { consul: { datacenter: dc1.east } } }\n", `services.s.consul.datacenter: "dc1.east" is not a Consul datacenter name`},
	} {
		_, err := ParseConfig([]byte(tc.text))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one containing %q", tc.text, err, tc.want)
		}
	}
	if _, err := ParseConfig([]byte("outbound: {}\nconsul: { datacenter: dc_1 }\nservices: { s: { consul: { datacenter: east-2 } } }\n")); err != nil {
		t.Error(err)
	}
}
