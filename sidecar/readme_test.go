package sidecar

import (
	"io"
	"net/http"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/discovery"
	"github.com/ferrymesh/ferry/discovery/consultest"
	"github.com/ferrymesh/ferry/internal/localnet/localnettest"
	"github.com/ferrymesh/ferry/telemetry"
)

// readmeConfig returns the configuration block the README shows.
func readmeConfig(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(b), "### Configuration\n\n```yaml\n")
	if !ok {
		t.Fatal("README has no configuration block")
	}
	text, _, _ := strings.Cut(after, "```")
	return text
}

// The configuration shown in the README is a valid config.
func TestReadmeConfigParses(t *testing.T) {
	cfg, err := ParseConfig([]byte(readmeConfig(t)))
	if err != nil {
		t.Fatalf("README config: %v", err)
	}
	if cfg.Services["api"] == nil || !cfg.Services["api"].UsesConsul() || cfg.Register == nil || cfg.Register.Name != "web" {
		t.Fatalf("README config decoded as %+v", cfg)
	}
}

// The README's configuration block writes ferry's defaults where it shows
// a default (listeners, resilience defaults, Consul, register, limits,
// shutdown): a changed default must change the README too.
func TestReadmeConfigShowsTheDefaults(t *testing.T) {
	doc, err := ParseConfig([]byte(readmeConfig(t)))
	if err != nil {
		t.Fatalf("README config: %v", err)
	}
	def, err := ParseConfig([]byte("outbound: {}\ninbound: {app: 127.0.0.1:8080}\nregister: {name: web}\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		key       string
		doc, want any
	}{
		{"admin.listen", doc.Admin.Listen, def.Admin.Listen},
		{"outbound.listen", doc.Outbound.Listen, def.Outbound.Listen},
		{"inbound.listen", doc.Inbound.Listen, def.Inbound.Listen},
		{"inbound.protocol", doc.Inbound.Protocol, def.Inbound.Protocol},
		{"defaults", doc.Defaults, def.Defaults},
		{"consul.address", doc.Consul.Address, "127.0.0.1:8500"},
		{"consul.wait_time", doc.Consul.WaitTime, discovery.DefaultConsulWaitTime},
		{"consul.max_stale", doc.Consul.MaxStale, discovery.DefaultConsulMaxStale},
		{"register.ttl", doc.Register.TTL, discovery.DefaultRegisterTTL},
		{"register.deregister_critical_service_after", doc.Register.DeregisterCriticalServiceAfter, discovery.DefaultDeregisterCriticalAfter},
		{"register.port", doc.Register.Port, def.Register.Port},
		{"telemetry.protocol", doc.Telemetry.Protocol, "grpc"},
		{"telemetry.sampler", doc.Telemetry.Sampler, telemetry.SamplerParentBasedAlwaysOn},
		{"telemetry.access_log", doc.Telemetry.AccessLog, "stderr"},
		{"limits", doc.Limits, def.Limits},
		{"shutdown", doc.Shutdown, def.Shutdown},
	} {
		if !reflect.DeepEqual(c.doc, c.want) {
			t.Errorf("README %s: %v, default %v", c.key, c.doc, c.want)
		}
	}
}

// The README's configuration runs: with a real Consul agent at its
// consul.address and its listeners on loopback ports of the system's
// choosing, and its OTLP collector a refusing loopback port (nothing else
// changed), ferry starts, answers /ready, and relays
// a request on the route to the README's Consul service to an instance
// registered under that service's name and tags.
func TestReadmeConfigRuns(t *testing.T) {
	agent := consultest.Start(t)
	text := readmeConfig(t)
	for _, s := range []struct{ old, new string }{
		{"listen: 127.0.0.1:15000", "listen: 127.0.0.1:0"}, // admin
		{"listen: 127.0.0.1:15001", "listen: 127.0.0.1:0"}, // outbound
		{"listen: 0.0.0.0:15006", "listen: 127.0.0.1:0"},   // inbound
		{"address: 127.0.0.1:8500", "address: " + agent.HTTPAddr},
		// No DNS lookup of the README's collector from a test: spans go
		// to a port that refuses them.
		{"endpoint: http://otel-collector:4317", "endpoint: http://" + localnettest.RefusedAddr(t)},
	} {
		if n := strings.Count(text, s.old); n != 1 {
			t.Fatalf("the README's configuration holds %q %d times, want once: update what this test substitutes\n%s", s.old, n, text)
		}
		text = strings.Replace(text, s.old, s.new, 1)
	}
	cfg, err := ParseConfig([]byte(text))
	if err != nil {
		t.Fatalf("README config with the test's addresses: %v", err)
	}
	var route *RouteConfig
	for i, rc := range cfg.Outbound.Routes {
		if cfg.Services[rc.Service].UsesConsul() {
			route = &cfg.Outbound.Routes[i]
			break
		}
	}
	if route == nil {
		t.Fatalf("no route of the README's configuration leads to a Consul service: %+v", cfg.Outbound.Routes)
	}
	watch := cfg.Services[route.Service].Consul
	if watch == nil || watch.Service == "" {
		t.Fatalf("service %s: want consul.service set, as the README shows it: %+v", route.Service, watch)
	}
	self, err := agent.Client().Agent().Self()
	if err != nil {
		t.Fatal(err)
	}
	if dc, _ := self["Config"]["Datacenter"].(string); watch.Datacenter != "" && watch.Datacenter != dc {
		t.Fatalf("service %s asks for datacenter %s; the test agent's is %q", route.Service, watch.Datacenter, dc)
	}
	inst := startInstance(t, agent.Client(), watch.Service, "readme-1", watch.Tags...)

	sc := startSidecar(t, cfg, Options{})
	admin := "http://" + sc.Addr("admin")
	waitFor(t, "/ready 200", 10*time.Second, func() bool {
		res, err := http.Get(admin + "/ready")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	})

	path := route.PathPrefix
	if path == "" {
		path = "/"
	}
	req, err := http.NewRequest("GET", "http://"+sc.Addr("outbound")+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if route.Host != "" {
		req.Host = route.Host
	}
	// /ready waited for Consul's first answer, but the instance's check
	// may pass after it: poll until the instance answers.
	var last string
	for deadline := time.Now().Add(10 * time.Second); ; {
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			last = err.Error()
		} else {
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusOK && string(b) == inst.id {
				return
			}
			last = res.Status + " " + strings.TrimSpace(string(b))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %s (Host %q) on the route to %s: %s, want 200 from %s", req.Method, req.URL, req.Host, route.Service, last, inst.id)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
