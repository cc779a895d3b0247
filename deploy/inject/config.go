package inject

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// The config file schema, as far as the injector writes it. These mirror
// the keys of ferry's config (package sidecar, which deploy does not
// import); the tests parse every generated config with sidecar.ParseConfig.
type fileConfig struct {
	Admin    listenConfig          `yaml:"admin"`
	Outbound *outboundConfig       `yaml:"outbound,omitempty"`
	Inbound  *inboundConfig        `yaml:"inbound,omitempty"`
	Services map[string]*svcConfig `yaml:"services,omitempty"`
	Shutdown shutdownConfig        `yaml:"shutdown"`
	Register *registerConfig       `yaml:"register,omitempty"`
}

type listenConfig struct {
	Listen string `yaml:"listen"`
}

type outboundConfig struct {
	Listen string        `yaml:"listen"`
	Routes []routeConfig `yaml:"routes"`
}

type routeConfig struct {
	Host       string `yaml:"host,omitempty"`
	PathPrefix string `yaml:"path_prefix,omitempty"`
	Service    string `yaml:"service"`
}

type inboundConfig struct {
	Listen   string `yaml:"listen"`
	App      string `yaml:"app"`
	Protocol string `yaml:"protocol"`
}

type svcConfig struct {
	Endpoints []string     `yaml:"endpoints,omitempty"`
	Consul    *consulWatch `yaml:"consul,omitempty"`
	Protocol  string       `yaml:"protocol,omitempty"`
}

type consulWatch struct {
	Service    string   `yaml:"service"`
	Tags       []string `yaml:"tags,omitempty"`
	Datacenter string   `yaml:"datacenter,omitempty"`
}

type shutdownConfig struct {
	Delay string `yaml:"delay"`
	Grace string `yaml:"grace"`
}

type registerConfig struct {
	Name    string            `yaml:"name"`
	Address string            `yaml:"address"`
	Port    int               `yaml:"port"`
	Tags    []string          `yaml:"tags,omitempty"`
	Meta    map[string]string `yaml:"meta"`
}

// escapeEnv protects a value from kubelet's $(VAR) expansion: the config
// travels in an environment variable, where "$$" stands for "$".
func escapeEnv(s string) string { return strings.ReplaceAll(s, "$", "$$") }

// configYAML renders the ferry config of a plan. The text references
// $(POD_IP), $(POD_NAME) and $(POD_NAMESPACE), which kubelet expands because
// the container defines those variables before FERRY_CONFIG; every value
// that comes from an annotation is escaped.
func (p *plan) configYAML() (string, error) {
	c := fileConfig{
		Admin: listenConfig{Listen: "0.0.0.0:" + strconv.Itoa(AdminPort)},
		Shutdown: shutdownConfig{
			Delay: formatDuration(p.shutdownDelay),
			Grace: formatDuration(p.shutdownGrace),
		},
	}
	if len(p.upstreams) > 0 {
		c.Outbound = &outboundConfig{Listen: "127.0.0.1:" + strconv.Itoa(OutboundPort)}
		c.Services = map[string]*svcConfig{}
		for _, u := range p.upstreams {
			c.Outbound.Routes = append(c.Outbound.Routes, routeConfig{
				Host: escapeEnv(u.Host), PathPrefix: escapeEnv(u.PathPrefix), Service: u.Service,
			})
			if _, done := c.Services[u.Service]; done {
				continue // the first entry of a service carries its options
			}
			s := &svcConfig{Protocol: u.Protocol}
			if len(u.Endpoints) > 0 {
				s.Endpoints = u.Endpoints
			} else {
				w := &consulWatch{Service: u.ConsulService, Tags: u.Tags, Datacenter: u.Datacenter}
				if w.Service == "" {
					w.Service = u.Service
				}
				s.Consul = w
			}
			c.Services[u.Service] = s
		}
	}
	if p.inboundPort > 0 {
		c.Inbound = &inboundConfig{
			Listen:   "0.0.0.0:" + strconv.Itoa(InboundPort),
			App:      p.inboundApp(),
			Protocol: p.inboundProtocol,
		}
	}
	if r := p.register; r != nil {
		meta := map[string]string{metaNamespace: "$(POD_NAMESPACE)", metaPod: "$(POD_NAME)"}
		for k, v := range r.meta {
			meta[k] = escapeEnv(v)
		}
		c.Register = &registerConfig{
			Name: r.name, Address: "$(POD_IP)", Port: InboundPort, Tags: r.tags, Meta: meta,
		}
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return "", fmt.Errorf("render ferry config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return "", fmt.Errorf("render ferry config: %w", err)
	}
	return b.String(), nil
}

// formatDuration writes a duration the way ferry's config reads it.
func formatDuration(d time.Duration) string { return d.String() }
