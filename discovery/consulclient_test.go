package discovery

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// recorded is one request as an agent saw it.
type recorded struct {
	Method, Path string
	Query        map[string][]string
	Token, Auth  string
	Body         any
}

// recordingAgent answers like a Consul agent and records every request.
func recordingAgent(t *testing.T) (*httptest.Server, func() []recorded) {
	t.Helper()
	var mu sync.Mutex
	var got []recorded
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var body any
		if len(b) > 0 {
			if err := json.Unmarshal(b, &body); err != nil {
				t.Errorf("%s %s: body %q: %v", r.Method, r.URL.Path, b, err)
			}
		}
		mu.Lock()
		got = append(got, recorded{r.Method, r.URL.Path, r.URL.Query(), r.Header.Get("X-Consul-Token"), r.Header.Get("Authorization"), dropNulls(body)})
		mu.Unlock()
		switch {
		case strings.Contains(r.URL.Path, "/v1/health/service/"):
			w.Header().Set("X-Consul-Index", "42")
			w.Header().Set("X-Consul-LastContact", "1500")
			w.Header().Set("X-Consul-KnownLeader", "true")
			io.WriteString(w, `[{"Node":{"Node":"n1","Address":"10.0.0.1"},"Service":{"Address":"","Port":8080,"Tags":["v2"],"Weights":{"Passing":3,"Warning":1}}},
				{"Node":{"Node":"n2","Address":"10.0.0.2"},"Service":{"Address":"10.1.0.2","Port":8081,"Weights":{"Passing":1,"Warning":1}}}]`)
		case strings.Contains(r.URL.Path, "/deregister/gone"):
			http.Error(w, "Unknown service ID \"gone\"", http.StatusNotFound)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, func() []recorded {
		mu.Lock()
		defer mu.Unlock()
		out := got
		got = nil
		return out
	}
}

// dropNulls removes null members (the official client sends some unset
// fields as null, ferry leaves them out; Consul reads both the same).
func dropNulls(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			if e == nil {
				delete(t, k)
			} else {
				t[k] = dropNulls(e)
			}
		}
	case []any:
		for i, e := range t {
			t[i] = dropNulls(e)
		}
	}
	return v
}

// TestConsulClientSendsWhatTheOfficialClientSends runs ferry's four calls
// through ferry's client and through github.com/hashicorp/consul/api,
// under several environments and configs, and compares what the agent
// receives (method, path, query, token, basic auth, body) and what each
// client makes of the answers.
func TestConsulClientSendsWhatTheOfficialClientSends(t *testing.T) {
	dir := t.TempDir()
	envTokenFile := filepath.Join(dir, "env-token")
	cfgTokenFile := filepath.Join(dir, "cfg-token")
	emptyTokenFile := filepath.Join(dir, "empty-token")
	for f, s := range map[string]string{envTokenFile: "from-env-file\n", cfgTokenFile: " from-cfg-file ", emptyTokenFile: "\n"} {
		if err := os.WriteFile(f, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	srv, requests := recordingAgent(t)
	addr := strings.TrimPrefix(srv.URL, "http://")
	for _, tc := range []struct {
		name string
		env  map[string]string
		cfg  ConsulConfig
	}{
		{"plain", nil, ConsulConfig{Address: addr}},
		{"env address and token", map[string]string{envConsulAddr: addr, envConsulToken: "env-tok"}, ConsulConfig{}},
		{"address with scheme and prefix", nil, ConsulConfig{Address: srv.URL + "/consul"}},
		{"env token file wins over env token", map[string]string{envConsulAddr: addr, envConsulToken: "env-tok", envConsulTokenFile: envTokenFile}, ConsulConfig{}},
		{"empty env token file keeps env token", map[string]string{envConsulAddr: addr, envConsulToken: "env-tok", envConsulTokenFile: emptyTokenFile}, ConsulConfig{}},
		{"config token over env token file", map[string]string{envConsulTokenFile: envTokenFile}, ConsulConfig{Address: addr, Token: "cfg-tok"}},
		{"config token equal to env token", map[string]string{envConsulToken: "same", envConsulTokenFile: envTokenFile}, ConsulConfig{Address: addr, Token: "same"}},
		{"config token file", map[string]string{envConsulToken: "env-tok", envConsulTokenFile: envTokenFile}, ConsulConfig{Address: addr, TokenFile: cfgTokenFile}},
		{"basic auth, namespace, partition, datacenter", map[string]string{envConsulAuth: "user:pa:ss", envConsulNamespace: "ns1", envConsulPartition: "p1"},
			ConsulConfig{Address: addr, Datacenter: "dc9", WaitTime: 1500 * time.Microsecond}},
		{"basic auth without password", map[string]string{envConsulAuth: "user"}, ConsulConfig{Address: addr, Namespace: "ns2", Partition: "p2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			setConsulEnv(t, tc.env)
			ctx := context.Background()
			q := &consulQuery{Datacenter: "dc2", WaitIndex: 7, WaitTime: 90 * time.Second, AllowStale: true}
			reg := &consulRegistration{ID: "web-1", Name: "web", Tags: []string{"a"}, Port: 15006, Address: "10.0.0.5", Meta: map[string]string{"k": "v"},
				Check: &consulCheck{CheckID: "ferry-ready:web-1", Name: "ferry readiness", TTL: "10s", Status: consulCritical, Notes: "starting", DeregisterCriticalServiceAfter: "1m0s"}}

			ours := testConsulClient(t, tc.cfg)
			entries, meta, err := ours.healthService(ctx, "web", []string{"v2", "blue"}, q)
			if err != nil {
				t.Fatal(err)
			}
			_, regErr := ours.registerService(ctx, reg)
			errs := []error{
				regErr,
				ours.updateTTL(ctx, "ferry-ready:web-1", "ready", consulPassing),
				ours.deregisterService(ctx, "web-1"),
				ours.deregisterService(ctx, "gone"),
			}
			oursReqs := requests()

			acfg := officialConfig(t, tc.cfg)
			theirs, err := api.NewClient(acfg)
			if err != nil {
				t.Fatal(err)
			}
			defer acfg.Transport.CloseIdleConnections()
			aq := &api.QueryOptions{Datacenter: q.Datacenter, WaitIndex: q.WaitIndex, WaitTime: q.WaitTime, AllowStale: q.AllowStale}
			aentries, ameta, err := theirs.Health().ServiceMultipleTags("web", []string{"v2", "blue"}, true, aq.WithContext(ctx))
			if err != nil {
				t.Fatal(err)
			}
			var areg api.AgentServiceRegistration
			raw, _ := json.Marshal(reg)
			if err := json.Unmarshal(raw, &areg); err != nil {
				t.Fatal(err)
			}
			ag := theirs.Agent()
			aerrs := []error{
				ag.ServiceRegisterOpts(&areg, api.ServiceRegisterOpts{ReplaceExistingChecks: true}.WithContext(ctx)),
				ag.UpdateTTLOpts("ferry-ready:web-1", "ready", api.HealthPassing, (&api.QueryOptions{}).WithContext(ctx)),
				ag.ServiceDeregisterOpts("web-1", (&api.QueryOptions{}).WithContext(ctx)),
				ag.ServiceDeregisterOpts("gone", (&api.QueryOptions{}).WithContext(ctx)),
			}
			theirReqs := requests()

			if !reflect.DeepEqual(oursReqs, theirReqs) {
				t.Errorf("requests differ:\nferry    %+v\nofficial %+v", oursReqs, theirReqs)
			}
			var aasOurs []*consulServiceEntry
			raw, _ = json.Marshal(aentries)
			if err := json.Unmarshal(raw, &aasOurs); err != nil {
				t.Fatal(err)
			}
			if got, want := endpointsOf(entries), endpointsOf(aasOurs); !reflect.DeepEqual(got, want) || len(got) != 2 {
				t.Errorf("endpoints %v, official client's %v", got, want)
			}
			if meta.LastIndex != ameta.LastIndex || meta.LastContact != ameta.LastContact || meta.KnownLeader != ameta.KnownLeader {
				t.Errorf("meta %+v, official %+v", meta, ameta)
			}
			for i := range errs {
				if (errs[i] == nil) != (aerrs[i] == nil) || (errs[i] != nil && errs[i].Error() != aerrs[i].Error()) {
					t.Errorf("call %d: error %v, official %v", i, errs[i], aerrs[i])
				}
			}
			var se consulStatusError
			if !asStatus(errs[3], &se) || se.Code != http.StatusNotFound {
				t.Errorf("deregistering an unknown service: %v", errs[3])
			}
		})
	}
}

func asStatus(err error, se *consulStatusError) bool {
	s, ok := err.(consulStatusError)
	if ok {
		*se = s
	}
	return ok
}

// officialConfig is api.DefaultConfig() with c laid over it, as ferry
// built it for the official client.
func officialConfig(t *testing.T, c ConsulConfig) *api.Config {
	t.Helper()
	cfg := api.DefaultConfig()
	if c.Address != "" {
		cfg.Address = c.Address
	}
	if c.Token != "" {
		cfg.Token, cfg.TokenFile = c.Token, ""
	}
	if c.TokenFile != "" {
		cfg.TokenFile, cfg.Token = c.TokenFile, ""
	}
	if c.Datacenter != "" {
		cfg.Datacenter = c.Datacenter
	}
	if c.Namespace != "" {
		cfg.Namespace = c.Namespace
	}
	if c.Partition != "" {
		cfg.Partition = c.Partition
	}
	cfg.WaitTime = c.waitTime()
	return cfg
}

// TestConsulEnvConfigReadsTheStandardEnvironment compares consulEnvConfig
// with api.DefaultConfig over every variable.
func TestConsulEnvConfigReadsTheStandardEnvironment(t *testing.T) {
	for _, env := range []map[string]string{
		{},
		{envConsulAddr: "https://c:8501", envConsulToken: "t", envConsulTokenFile: "/f", envConsulAuth: "u:p", envConsulSSL: "true",
			envConsulTLSServerName: "consul.local:8501", envConsulCAFile: "/ca", envConsulCAPath: "/cas", envConsulClientCert: "/c", envConsulClientKey: "/k",
			envConsulSSLVerify: "false", envConsulNamespace: "n", envConsulPartition: "p"},
		{envConsulAuth: "only-user"},
		{envConsulSSL: "0", envConsulSSLVerify: "1"},
		{envConsulSSL: "T", envConsulSSLVerify: "FALSE"},
	} {
		setConsulEnv(t, env)
		got, err := consulEnvConfig()
		if err != nil {
			t.Fatalf("env %v: %v", env, err)
		}
		want := api.DefaultConfig()
		want.Transport.CloseIdleConnections()
		var auth [3]any
		if want.HttpAuth != nil {
			auth = [3]any{true, want.HttpAuth.Username, want.HttpAuth.Password}
		} else {
			auth = [3]any{false, "", ""}
		}
		gotFields := []any{got.Address, got.Scheme, got.Token, got.TokenFile, got.Namespace, got.Partition,
			got.TLS.ServerName, got.TLS.CAFile, got.TLS.CAPath, got.TLS.CertFile, got.TLS.KeyFile, got.TLS.InsecureSkipVerify, [3]any{got.AuthSet, got.AuthUser, got.AuthPass}}
		wantFields := []any{want.Address, want.Scheme, want.Token, want.TokenFile, want.Namespace, want.Partition,
			want.TLSConfig.Address, want.TLSConfig.CAFile, want.TLSConfig.CAPath, want.TLSConfig.CertFile, want.TLSConfig.KeyFile, want.TLSConfig.InsecureSkipVerify, auth}
		if !reflect.DeepEqual(gotFields, wantFields) {
			t.Errorf("env %v:\n got %v\nwant %v", env, gotFields, wantFields)
		}
	}
}

// A boolean CONSUL_* variable that strconv.ParseBool does not read
// (CONSUL_HTTP_SSL=yes) is refused naming the variable and the values it
// takes. The official client logs it and reads false: plain http to an
// agent that wants https, or verification on when it was meant off, with
// nothing in ferry's own log to say why.
func TestConsulEnvConfigRefusesANonBoolean(t *testing.T) {
	for _, tc := range []struct{ key, value string }{
		{envConsulSSL, "yes"},
		{envConsulSSL, "on"},
		{envConsulSSL, " true"},
		{envConsulSSLVerify, "yes"},
		{envConsulSSLVerify, "nope"},
	} {
		t.Run(tc.key+"="+tc.value, func(t *testing.T) {
			setConsulEnv(t, map[string]string{tc.key: tc.value})
			_, _, err := ConsulConfig{}.clientConfig()
			want := fmt.Sprintf("%s: %q is not a boolean (want one of 1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False)", tc.key, tc.value)
			if err == nil || err.Error() != want {
				t.Fatalf("err %v, want %q", err, want)
			}
			if err := CheckConsul(ConsulConfig{}); err == nil || err.Error() != want {
				t.Fatalf("CheckConsul: err %v, want %q", err, want)
			}
		})
	}
}

// TestConsulClientTLS: an https agent is verified against CONSUL_CACERT /
// ca_file, or every PEM under CONSUL_CAPATH, or not at all with
// insecure_skip_verify; CONSUL_TLS_SERVER_NAME names the certificate's host.
func TestConsulClientTLS(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Consul-Index", "3")
		io.WriteString(w, "[]")
	}))
	defer srv.Close()
	dir := t.TempDir()
	caDir := filepath.Join(dir, "cas")
	if err := os.MkdirAll(caDir, 0o755); err != nil {
		t.Fatal(err)
	}
	pemBytes := pemCert(srv.Certificate().Raw)
	caFile := filepath.Join(dir, "ca.pem")
	for _, f := range []string{caFile, filepath.Join(caDir, "a.pem")} {
		if err := os.WriteFile(f, pemBytes, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		cfg  ConsulConfig
		fail string
	}{
		{"ca file", nil, ConsulConfig{Address: srv.URL, CAFile: caFile}, ""},
		{"ca path", map[string]string{envConsulCAPath: caDir}, ConsulConfig{Address: srv.URL}, ""},
		{"ssl env and host:port", map[string]string{envConsulSSL: "true", envConsulCAFile: caFile}, ConsulConfig{Address: strings.TrimPrefix(srv.URL, "https://")}, ""},
		{"insecure", nil, ConsulConfig{Address: srv.URL, InsecureSkipVerify: true}, ""},
		{"server name", map[string]string{envConsulTLSServerName: "consul.invalid:8501"}, ConsulConfig{Address: srv.URL, CAFile: caFile}, "consul.invalid"},
		{"system roots", nil, ConsulConfig{Address: srv.URL}, "certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			setConsulEnv(t, tc.env)
			c := testConsulClient(t, tc.cfg)
			_, meta, err := c.healthService(context.Background(), "web", nil, &consulQuery{})
			if tc.fail == "" {
				if err != nil || meta.LastIndex != 3 {
					t.Fatalf("%v %+v", err, meta)
				}
			} else if err == nil || !strings.Contains(err.Error(), tc.fail) {
				t.Fatalf("err %v, want one mentioning %q", err, tc.fail)
			}
		})
	}
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// setConsulEnv sets the standard Consul variables to env for the test:
// those env does not name are unset.
func setConsulEnv(t *testing.T, env map[string]string) {
	t.Helper()
	for _, k := range []string{envConsulAddr, envConsulToken, envConsulTokenFile, envConsulAuth, envConsulSSL, envConsulTLSServerName,
		envConsulCAFile, envConsulCAPath, envConsulClientCert, envConsulClientKey, envConsulSSLVerify, envConsulNamespace, envConsulPartition} {
		t.Setenv(k, env[k]) // restored after the test
		if env[k] == "" {
			os.Unsetenv(k)
		}
	}
}

// testConsulClient builds ferry's client for c over the environment.
func testConsulClient(t *testing.T, c ConsulConfig) *consulClient {
	t.Helper()
	cfg, env, err := c.clientConfig()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := newConsulClient(cfg, env)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.transport.CloseIdleConnections)
	return cl
}
