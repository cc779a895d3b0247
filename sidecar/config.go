package sidecar

import (
	"net"
	"sort"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/ferrymesh/ferry/discovery"
	"github.com/ferrymesh/ferry/resilience"
	"github.com/ferrymesh/ferry/telemetry"
)

// Config is ferry's whole configuration file. Every field documents its
// default; Load fills defaults and validates before anything listens.
type Config struct {
	// Admin is the operator's listener: /ready, /live, /upstreams.
	Admin AdminConfig `yaml:"admin"`
	// Outbound is the listener the local application calls upstreams
	// through. Optional.
	Outbound *OutboundConfig `yaml:"outbound,omitempty"`
	// Inbound is the listener the mesh calls the local application through.
	// Optional.
	Inbound *InboundConfig `yaml:"inbound,omitempty"`
	// Services are the upstreams routes may name.
	Services map[string]*ServiceConfig `yaml:"services"`
	// Defaults are the resilience settings (balancer, breaker, outlier,
	// retry, timeouts, max_in_flight) every service starts from; a
	// service's own keys override them one by one. The local app behind
	// inbound uses them as they are.
	Defaults resilience.Settings `yaml:"defaults"`
	// Limits guard the listeners.
	Limits LimitsConfig `yaml:"limits"`
	// Shutdown controls the drain on SIGTERM.
	Shutdown ShutdownConfig `yaml:"shutdown"`
	// Consul overrides the standard CONSUL_* environment for services
	// resolved through Consul and for self-registration. Optional.
	Consul *discovery.ConsulConfig `yaml:"consul"`
	// Telemetry configures traces (OTLP), metrics and the access log,
	// over the standard OTEL_* environment.
	Telemetry telemetry.Config `yaml:"telemetry"`
	// Register registers the local service in Consul with a readiness
	// check that reflects ferry's and the app's readiness. Optional.
	Register *discovery.Registration `yaml:"register,omitempty"`
}

// AdminConfig configures the admin listener.
type AdminConfig struct {
	// Listen is host:port. Default 127.0.0.1:15000 (loopback only).
	Listen string `yaml:"listen"`
}

// OutboundConfig configures the listener the local application calls.
type OutboundConfig struct {
	// Listen is host:port. Default 127.0.0.1:15001.
	Listen string `yaml:"listen"`
	// Routes are matched in order; the first match wins. A route that an
	// earlier one matches every request of is refused (it could never
	// match): list the more specific first.
	Routes []RouteConfig `yaml:"routes"`
}

// RouteConfig sends matching requests to a service.
type RouteConfig struct {
	// Host matches the request's Host header, port ignored, case-insensitive.
	// Empty matches any host.
	Host string `yaml:"host"`
	// PathPrefix matches the start of the request path at a segment
	// boundary ("/api" matches "/api" and "/api/x", not "/apix"). Empty
	// matches any path.
	PathPrefix string `yaml:"path_prefix"`
	// Service names an entry of services. Required.
	Service string `yaml:"service"`
}

// InboundConfig configures the listener the mesh calls.
type InboundConfig struct {
	// Listen is host:port. Default 0.0.0.0:15006.
	Listen string `yaml:"listen"`
	// App is the local application's host:port. Required.
	App string `yaml:"app"`
	// Protocol spoken to the app: auto (default: the caller's), http1 or h2c.
	Protocol string `yaml:"protocol"`
}

// ServiceConfig is one upstream service.
type ServiceConfig struct {
	// Endpoints are static host:port addresses (static discovery, the
	// embedded default). An empty list answers 503. A service without an
	// endpoints key is resolved through Consul.
	Endpoints []string `yaml:"endpoints"`
	// Consul selects the Consul instances of a service without endpoints:
	// the Consul service name (default: this service's name), tags that
	// every instance must carry, and the datacenter.
	Consul *discovery.ConsulWatch `yaml:"consul"`
	// Protocol spoken to the endpoints: auto (default: HTTP/2 cleartext when
	// the caller spoke HTTP/2, else HTTP/1.1), http1 or h2c.
	Protocol string `yaml:"protocol"`
	// Settings are the service's resilience settings, keys at the
	// service's own level (balancer, hash_header, max_in_flight, breaker,
	// outlier, retry, timeouts), each defaulting to defaults.
	resilience.Settings `yaml:",inline"`
}

// LimitsConfig guards the listeners against oversized or slow input.
type LimitsConfig struct {
	// MaxRequestBodyBytes rejects larger request bodies with 413. Default 0
	// (unlimited: ferry streams, so size costs no memory).
	MaxRequestBodyBytes int64 `yaml:"max_request_body_bytes"`
	// MaxHeaderBytes rejects larger request headers with 431. Default 64 KiB.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// ReadHeaderTimeout bounds reading request headers (slowloris). Default 10s.
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	// IdleTimeout closes idle client keep-alive connections. Default 2m.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxConnections bounds the caller connections each proxy listener
	// (outbound, inbound) serves at once; at the bound it stops accepting
	// and new connections wait in the kernel's backlog until one closes.
	// Default 0 (unlimited).
	MaxConnections int `yaml:"max_connections"`
}

// ShutdownConfig controls the drain.
type ShutdownConfig struct {
	// Grace is how long in-flight requests may run once the listeners
	// closed (after Delay) before their connections are closed. The drain
	// takes up to Delay + Grace from SIGTERM. Default 30s.
	Grace time.Duration `yaml:"grace"`
	// Delay keeps serving after SIGTERM, with /ready answering 503, so load
	// balancers and Consul stop sending before the listeners close.
	// Default 0.
	Delay time.Duration `yaml:"delay"`
}

// Defaults for fields left unset.
const (
	DefaultAdminListen       = "127.0.0.1:15000"
	DefaultOutboundListen    = "127.0.0.1:15001"
	DefaultInboundListen     = "0.0.0.0:15006"
	DefaultMaxHeaderBytes    = 64 << 10
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultIdleTimeout       = 2 * time.Minute
	DefaultShutdownGrace     = 30 * time.Second
)

// Protocols spoken to upstreams.
const (
	ProtocolAuto  = "auto"
	ProtocolHTTP1 = "http1"
	ProtocolH2C   = "h2c"
)

// setDefaults fills every unset field with its documented default.
func (c *Config) setDefaults() {
	if c.Admin.Listen == "" {
		c.Admin.Listen = DefaultAdminListen
	}
	if c.Outbound != nil && c.Outbound.Listen == "" {
		c.Outbound.Listen = DefaultOutboundListen
	}
	if c.Inbound != nil {
		if c.Inbound.Listen == "" {
			c.Inbound.Listen = DefaultInboundListen
		}
		if c.Inbound.Protocol == "" {
			c.Inbound.Protocol = ProtocolAuto
		}
	}
	for name, s := range c.Services {
		if s == nil {
			// "name:" alone: a Consul service of that name.
			s = &ServiceConfig{Settings: c.Defaults}
			c.Services[name] = s
		}
		if s.Protocol == "" {
			s.Protocol = ProtocolAuto
		}
	}
	if c.Limits.MaxHeaderBytes == 0 {
		c.Limits.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if c.Limits.ReadHeaderTimeout == 0 {
		c.Limits.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if c.Limits.IdleTimeout == 0 {
		c.Limits.IdleTimeout = DefaultIdleTimeout
	}
	if c.Shutdown.Grace == 0 {
		c.Shutdown.Grace = DefaultShutdownGrace
	}
	if r := c.Register; r != nil && r.Port == 0 && c.Inbound != nil {
		// Other services reach this one through ferry's inbound listener.
		if _, port, err := net.SplitHostPort(c.Inbound.Listen); err == nil {
			r.Port, _ = strconv.Atoi(port)
		}
	}
}

// MarshalYAML prints a service so that it loads back as the same service:
// a Consul service (no endpoints key) prints without endpoints, a static
// one with an empty list prints "endpoints: []".
func (s ServiceConfig) MarshalYAML() (any, error) {
	type plain ServiceConfig // without this method
	var n yaml.Node
	if err := n.Encode(plain(s)); err != nil {
		return nil, err
	}
	if s.Endpoints == nil && n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == "endpoints" {
				n.Content = append(n.Content[:i], n.Content[i+2:]...)
				break
			}
		}
	}
	return &n, nil
}

// UsesConsul reports whether a service is resolved through Consul: it has
// no endpoints key. One with an empty list is static, without endpoints.
func (s *ServiceConfig) UsesConsul() bool { return s.Endpoints == nil }

// needsConsul reports whether any part of the config talks to Consul:
// registration, or a service a route leads to that is resolved through it.
func (c *Config) needsConsul() bool {
	if c.Register != nil {
		return true
	}
	used := c.usedServices()
	for name, s := range c.Services {
		if s != nil && s.UsesConsul() && used[name] {
			return true
		}
	}
	return false
}

// UnusedServices lists, in name order, the services no outbound route
// leads to: ferry neither resolves nor watches them, and warns of each
// when it loads the config.
func (c *Config) UnusedServices() []string {
	used := c.usedServices()
	var out []string
	for name := range c.Services {
		if !used[name] {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// usedServices is the set of services an outbound route leads to. Nothing
// else names a service (inbound goes to its app, register names ferry's
// own service), so the others are never used: they are warned about and
// neither resolved nor watched.
func (c *Config) usedServices() map[string]bool {
	used := map[string]bool{}
	if c.Outbound != nil {
		for _, rc := range c.Outbound.Routes {
			used[rc.Service] = true
		}
	}
	return used
}
