package discovery

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestConsulConfigFromYAML(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, yaml string
		want       ConsulConfig
		err        string
	}{
		{name: "empty", yaml: "{}", want: ConsulConfig{}},
		{
			name: "all",
			yaml: "address: consul.local:8501\nscheme: https\ntoken: abc\ndatacenter: dc2\nnamespace: ns\npartition: p\nca_file: " + ca +
				"\ninsecure_skip_verify: true\nwait_time: 30s\nmax_stale: 2s\n",
			want: ConsulConfig{Address: "consul.local:8501", Scheme: "https", Token: "abc", Datacenter: "dc2", Namespace: "ns",
				Partition: "p", CAFile: ca, InsecureSkipVerify: true, WaitTime: 30 * time.Second, MaxStale: 2 * time.Second},
		},
		{name: "url address", yaml: "address: https://consul.local:8501", want: ConsulConfig{Address: "https://consul.local:8501"}},
		{name: "unix address", yaml: "address: unix:///run/consul.sock", want: ConsulConfig{Address: "unix:///run/consul.sock"}},
		{name: "bad address", yaml: "address: consul.local", err: "consul.address: "},
		{name: "bad address scheme", yaml: "address: ftp://x:1", err: "consul.address: "},
		// A port is written as everywhere else in the file: 1-65535, digits
		// only, no leading zero. One that no dial can use was accepted, and
		// every query then failed ("dial tcp: address 99999: invalid port").
		{name: "address port over 65535", yaml: "address: 127.0.0.1:99999", err: "consul.address: "},
		{name: "address port 0", yaml: "address: 127.0.0.1:0", err: "consul.address: "},
		{name: "address port empty", yaml: "address: '127.0.0.1:'", err: "consul.address: "},
		{name: "address port leading zero", yaml: "address: 127.0.0.1:08500", err: "consul.address: "},
		{name: "url address port over 65535", yaml: "address: https://consul.local:99999", err: "consul.address: "},
		{name: "url address port 0", yaml: "address: http://consul.local:0/prefix", err: "consul.address: "},
		{name: "url address port empty", yaml: "address: 'http://consul.local:'", err: "consul.address: "},
		{name: "url address without port", yaml: "address: https://consul.local", want: ConsulConfig{Address: "https://consul.local"}},
		{name: "IPv6 address", yaml: "address: '[::1]:8500'", want: ConsulConfig{Address: "[::1]:8500"}},
		{name: "bad scheme", yaml: "scheme: tcp", err: "consul.scheme: "},
		// Consul names a datacenter with lower-case letters, digits, - and
		// _ only (the 1.13.9 agent refuses -datacenter 'd c' at start, and
		// reads 'DC1' as dc1); a query naming any other answers 500 "No
		// path to datacenter", so every query failed while ferry ran.
		{name: "datacenter", yaml: "datacenter: dc_east-1", want: ConsulConfig{Datacenter: "dc_east-1"}},
		{name: "datacenter with space", yaml: "datacenter: 'd c'", err: "consul.datacenter: "},
		{name: "datacenter upper case", yaml: "datacenter: DC1", err: "consul.datacenter: "},
		{name: "datacenter with dot", yaml: "datacenter: dc.1", err: "consul.datacenter: "},
		{name: "datacenter with slash", yaml: "datacenter: dc/1", err: "consul.datacenter: "},
		{name: "datacenter not ascii", yaml: "datacenter: dé", err: "consul.datacenter: "},
		{name: "negative wait", yaml: "wait_time: -1s", err: "consul.wait_time: "},
		{name: "wait over limit", yaml: "wait_time: 11m", err: "consul.wait_time: "},
		{name: "wait under resolution", yaml: "wait_time: 10us", err: "consul.wait_time: "},
		{name: "negative max_stale", yaml: "max_stale: -1s", err: "consul.max_stale: "},
		{name: "token and token_file", yaml: "token: a\ntoken_file: " + ca, err: "consul.token_file: "},
		{name: "missing token file", yaml: "token_file: " + filepath.Join(dir, "nope"), err: "consul.token_file: "},
		{name: "missing ca", yaml: "ca_file: " + filepath.Join(dir, "nope"), err: "consul.ca_file: "},
		{name: "cert without key", yaml: "cert_file: " + ca, err: "consul.key_file: "},
		{name: "key without cert", yaml: "key_file: " + ca, err: "consul.cert_file: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got ConsulConfig
			if err := yaml.Unmarshal([]byte(tc.yaml), &got); err != nil {
				t.Fatalf("yaml: %v", err)
			}
			err := got.Validate()
			if tc.err != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tc.err) {
					t.Fatalf("Validate() = %v, want an error starting %q", err, tc.err)
				}
				if _, _, err2 := got.clientConfig(); err2 == nil {
					t.Fatal("clientConfig accepted an invalid config")
				}
				return
			}
			if err != nil {
				t.Fatalf("Validate() = %v", err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) || got.Token != tc.want.Token {
				t.Fatalf("got %v\nwant %v", got, tc.want)
			}
		})
	}
}

func TestConsulConfigOverridesEnvironment(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("file-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CONSUL_HTTP_ADDR", "env-host:8500")
	t.Setenv("CONSUL_HTTP_TOKEN", "env-token")
	t.Setenv("CONSUL_NAMESPACE", "env-ns")

	// Nothing set in the file: the environment wins.
	cfg, env, err := ConsulConfig{}.clientConfig()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Address != "env-host:8500" || cfg.Token != "env-token" || cfg.Namespace != "env-ns" || cfg.WaitTime != DefaultConsulWaitTime {
		t.Fatalf("from env: %+v", cfg)
	}
	if tok, err := resolveConsulToken(cfg, env); err != nil || tok.get() != "env-token" {
		t.Fatalf("token = %v, %v", tok, err)
	}
	// The file overrides what it sets and keeps the rest.
	cfg, env, err = ConsulConfig{Address: "file-host:8500", TokenFile: tokenFile, Datacenter: "dc3", WaitTime: time.Minute * 2}.clientConfig()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Address != "file-host:8500" || cfg.Token != "" || cfg.TokenFile != tokenFile || cfg.Namespace != "env-ns" ||
		cfg.Datacenter != "dc3" || cfg.WaitTime != 2*time.Minute {
		t.Fatalf("overridden: %+v", cfg)
	}
	if got, err := resolveConsulToken(cfg, env); err != nil || got.get() != "file-token" {
		t.Fatalf("token from file = %v, %v", got, err)
	}
}

func TestConsulConfigNeverPrintsToken(t *testing.T) {
	const token = "s3cret-token-89ab"
	c := ConsulConfig{Address: "127.0.0.1:8500", Token: token, WaitTime: time.Minute}
	var logged strings.Builder
	slog.New(slog.NewTextHandler(&logged, nil)).Info("config", "consul", c)
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("config", "consul", c)
	js, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	ym, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	for name, out := range map[string]string{
		"String": c.String(), "%v": fmt.Sprintf("%v", c), "%+v": fmt.Sprintf("%+v", c), "%#v": fmt.Sprintf("%#v", c),
		"pointer %v": fmt.Sprintf("%v", &c), "slog": logged.String(), "json": string(js), "yaml": string(ym),
	} {
		if strings.Contains(out, token) {
			t.Errorf("%s prints the token: %s", name, out)
		}
		if !strings.Contains(out, redacted) {
			t.Errorf("%s does not show the token is set: %s", name, out)
		}
	}
	if !strings.Contains(string(js), `"address":"127.0.0.1:8500"`) || !strings.Contains(string(js), `"wait_time":"1m0s"`) || !strings.Contains(string(ym), "wait_time: 1m0s") {
		t.Fatalf("printed forms lost fields: %s / %s", js, ym)
	}
	if c.Token != token {
		t.Fatal("printing changed the config")
	}
}

func TestRegistrationValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		reg  Registration
		err  string
	}{
		{"ok", Registration{Name: "web", Port: 8080}, ""},
		{"no name", Registration{Port: 8080}, "register.name: "},
		{"bad id", Registration{Name: "web", ID: "a/b", Port: 8080}, "register.id: "},
		{"no port", Registration{Name: "web"}, "register.port: "},
		{"port too big", Registration{Name: "web", Port: 70000}, "register.port: "},
		{"empty tag", Registration{Name: "web", Port: 1, Tags: []string{"a", ""}}, "register.tags[1]: "},
		{"short ttl", Registration{Name: "web", Port: 1, TTL: time.Millisecond}, "register.ttl: "},
		{"negative deregister", Registration{Name: "web", Port: 1, DeregisterCriticalServiceAfter: -time.Second}, "register.deregister_critical_service_after: "},
		// Consul deregisters no sooner than 1m after the check turned
		// critical: the 1.13.9 agent logs 'check has deregister interval
		// below minimum: check=... minimum_interval=1m0s' and removed a
		// service registered with 5s 82-88 s after its check went
		// critical, as one with 1m (82 s).
		{"deregister below Consul's minimum", Registration{Name: "web", Port: 1, DeregisterCriticalServiceAfter: 30 * time.Second}, "register.deregister_critical_service_after: 30s is below Consul's minimum of 1m"},
		{"deregister just below Consul's minimum", Registration{Name: "web", Port: 1, DeregisterCriticalServiceAfter: time.Minute - time.Millisecond}, "register.deregister_critical_service_after: "},
		{"deregister at Consul's minimum", Registration{Name: "web", Port: 1, DeregisterCriticalServiceAfter: time.Minute}, ""},
		{"ipv6 address", Registration{Name: "web", Address: "fd00::1", Port: 1}, ""},
		{"host name address", Registration{Name: "web", Address: "web-1.node.consul", Port: 1}, ""},
		// Consul keeps any string; a watcher could dial none of these.
		{"bracketed ipv6 address", Registration{Name: "web", Address: "[fd00::1]", Port: 1}, "register.address: "},
		{"address with port", Registration{Name: "web", Address: "10.0.0.5:8080", Port: 1}, "register.address: "},
		{"address with scheme", Registration{Name: "web", Address: "http://10.0.0.5", Port: 1}, "register.address: "},
		{"address with space", Registration{Name: "web", Address: "10.0.0.5 ", Port: 1}, "register.address: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.reg.Validate()
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.err) {
				t.Fatalf("Validate() = %v, want prefix %q", err, tc.err)
			}
		})
	}
	r := Registration{Name: "web", Port: 8080}.withDefaults()
	if !strings.HasPrefix(r.ID, "web-") || !strings.HasSuffix(r.ID, "-8080") || r.TTL != DefaultRegisterTTL || r.DeregisterCriticalServiceAfter != DefaultDeregisterCriticalAfter {
		t.Fatalf("defaults %+v", r)
	}
}

// A CONSUL_* variable that makes the client impossible to build is named
// in the error, as a consul: key is: the errors were the official client's
// own ("Unknown protocol scheme: ftp", "Error loading CA File: ..."), which
// say neither the variable nor whether the value came from the file. A
// CONSUL_HTTP_ADDR no request URL can be made of ("::::") was accepted,
// and every query then failed.
func TestConsulClientErrorsNameTheVariable(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	for _, tc := range []struct {
		name string
		env  map[string]string
		cfg  ConsulConfig
		want string // "" for no error
	}{
		{"address scheme", map[string]string{"CONSUL_HTTP_ADDR": "ftp://consul:8500"}, ConsulConfig{}, "CONSUL_HTTP_ADDR: Unknown protocol scheme: ftp"},
		{"address no URL", map[string]string{"CONSUL_HTTP_ADDR": "::::"}, ConsulConfig{}, `CONSUL_HTTP_ADDR: "::::" is no address`},
		{"address port over 65535", map[string]string{"CONSUL_HTTP_ADDR": "127.0.0.1:99999"}, ConsulConfig{}, `CONSUL_HTTP_ADDR: "127.0.0.1:99999" is no address`},
		{"URL address port 0", map[string]string{"CONSUL_HTTP_ADDR": "https://127.0.0.1:0"}, ConsulConfig{}, `CONSUL_HTTP_ADDR: "https://127.0.0.1:0" is no address`},
		{"address in the file wins", map[string]string{"CONSUL_HTTP_ADDR": "ftp://consul:8500"}, ConsulConfig{Address: "127.0.0.1:8500"}, ""},
		{"CA file missing", map[string]string{"CONSUL_CACERT": missing}, ConsulConfig{}, "CONSUL_CACERT: Error loading CA File"},
		{"CA file not PEM", map[string]string{"CONSUL_CACERT": junk}, ConsulConfig{}, "CONSUL_CACERT: Error loading CA File: Couldn't parse PEM"},
		{"CA file not PEM in the file", nil, ConsulConfig{CAFile: junk}, "consul.ca_file: Error loading CA File: Couldn't parse PEM"},
		{"CA path", map[string]string{"CONSUL_CAPATH": missing}, ConsulConfig{}, "CONSUL_CAPATH: "},
		{"certificate without key", map[string]string{"CONSUL_CLIENT_CERT": junk}, ConsulConfig{}, "CONSUL_CLIENT_CERT: both client cert and client key must be provided (CONSUL_CLIENT_KEY is not set)"},
		{"key without certificate", map[string]string{"CONSUL_CLIENT_KEY": junk}, ConsulConfig{}, "CONSUL_CLIENT_KEY: both client cert and client key must be provided (CONSUL_CLIENT_CERT is not set)"},
		{"certificate not PEM", map[string]string{"CONSUL_CLIENT_CERT": junk, "CONSUL_CLIENT_KEY": junk}, ConsulConfig{}, "CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY: "},
		{"certificate not PEM in the file", nil, ConsulConfig{CertFile: junk, KeyFile: junk}, "consul.cert_file, consul.key_file: "},
		{"server name", map[string]string{"CONSUL_TLS_SERVER_NAME": "a:b:c"}, ConsulConfig{}, "CONSUL_TLS_SERVER_NAME: "},
		{"token file", map[string]string{"CONSUL_HTTP_TOKEN_FILE": missing}, ConsulConfig{}, "CONSUL_HTTP_TOKEN_FILE: Error loading token file"},
		{"valid", map[string]string{"CONSUL_HTTP_ADDR": "https://consul.example:8501/prefix", "CONSUL_TLS_SERVER_NAME": "consul.example:8501"}, ConsulConfig{}, ""},
		{"unix socket", map[string]string{"CONSUL_HTTP_ADDR": "unix:///run/consul.sock"}, ConsulConfig{}, ""},
		{"IPv6", map[string]string{"CONSUL_HTTP_ADDR": "[::1]:8500"}, ConsulConfig{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			err := CheckConsul(tc.cfg)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("error %v, want none", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// A watch is refused a datacenter Consul cannot have, as the config file
// is, rather than failing each of its queries with "No path to datacenter".
func TestConsulWatchRefusesBadDatacenter(t *testing.T) {
	c, err := NewConsul(context.Background(), ConsulConfig{Address: "127.0.0.1:1"}, ConsulOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Watch("api", ConsulWatch{Datacenter: "d c"})
	if err == nil || !strings.Contains(err.Error(), `service "api": datacenter: "d c" is not a Consul datacenter name`) {
		t.Fatalf("Watch with datacenter 'd c': %v", err)
	}
	if _, err := c.Watch("api", ConsulWatch{Datacenter: "dc-2"}); err != nil {
		t.Fatal(err)
	}
}
