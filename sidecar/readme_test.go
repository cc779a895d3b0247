package sidecar

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/ferrymesh/ferry/discovery"
	"github.com/ferrymesh/ferry/telemetry"
)

// The configuration shown in the README is a valid config.
func TestReadmeConfigParses(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(b), "### Configuration\n\n```yaml\n")
	if !ok {
		t.Fatal("README has no configuration block")
	}
	text, _, _ := strings.Cut(after, "```")
	cfg, err := ParseConfig([]byte(text))
	if err != nil {
		t.Fatalf("README config: %v", err)
	}
	if cfg.Services["api"] == nil || !cfg.Services["api"].usesConsul() || cfg.Register == nil || cfg.Register.Name != "web" {
		t.Fatalf("README config decoded as %+v", cfg)
	}
}

// The README's configuration block writes ferry's defaults where it shows
// a default (listeners, resilience defaults, Consul, register, limits,
// shutdown): a changed default must change the README too.
func TestReadmeConfigShowsTheDefaults(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, _ := strings.Cut(string(b), "### Configuration\n\n```yaml\n")
	text, _, _ := strings.Cut(after, "```")
	doc, err := ParseConfig([]byte(text))
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
