package sidecar

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/ferrymesh/ferry/discovery"
	"github.com/ferrymesh/ferry/internal/dialhost"
	"github.com/ferrymesh/ferry/internal/routematch"
	"github.com/ferrymesh/ferry/resilience"
)

// validate checks a defaulted config and returns every problem, each naming
// its key path.
func (c *Config) validate() ConfigErrors {
	var errs ConfigErrors
	add := func(path, format string, args ...any) {
		errs = append(errs, &ConfigError{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	if c.Outbound == nil && c.Inbound == nil {
		add("", "at least one of outbound or inbound is required")
	}

	type listener struct{ path, addr string }
	listeners := []listener{{"admin.listen", c.Admin.Listen}}
	if c.Outbound != nil {
		listeners = append(listeners, listener{"outbound.listen", c.Outbound.Listen})
	}
	if c.Inbound != nil {
		listeners = append(listeners, listener{"inbound.listen", c.Inbound.Listen})
	}
	for i, l := range listeners {
		if err := checkHostPort(l.addr, true); err != nil {
			add(l.path, "%v", err)
			continue
		}
		for _, prev := range listeners[:i] {
			if listenersOverlap(prev.addr, l.addr) {
				add(l.path, "%s is already used by %s (%s)", l.addr, prev.path, prev.addr)
			}
		}
	}

	names := make([]string, 0, len(c.Services))
	for name := range c.Services {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		s := c.Services[name]
		p := "services." + name
		if strings.TrimSpace(name) == "" || strings.ContainsAny(name, " \t/") {
			p = fmt.Sprintf("services[%q]", name) // "services." alone names nothing
			add(p, "invalid service name %q", name)
		}
		if s.Consul != nil && !s.UsesConsul() {
			add(p+".consul", "a service has either endpoints (static) or consul, not both")
		}
		if s.UsesConsul() {
			// The name the watch asks Consul for, checked here as the
			// watch would check it when built.
			if s.Consul != nil && s.Consul.Service != "" {
				if err := discovery.CheckServiceName(s.Consul.Service); err != nil {
					add(p+".consul.service", "%v", err)
				}
			} else if err := discovery.CheckServiceName(name); err != nil && !strings.HasPrefix(p, "services[") {
				add(p, "%v (the Consul service name without consul.service)", err)
			}
		}
		if s.Consul != nil {
			for i, tag := range s.Consul.Tags {
				if strings.TrimSpace(tag) == "" {
					add(fmt.Sprintf("%s.consul.tags[%d]", p, i), "empty tag %q: give a tag or remove the entry", tag)
				}
			}
			if dc := s.Consul.Datacenter; dc != "" {
				if err := discovery.CheckDatacenter(dc); err != nil {
					add(p+".consul.datacenter", "%v", err)
				}
			}
		}
		seen := map[string]int{}
		for i, ep := range s.Endpoints {
			ep := strings.TrimSpace(ep)
			if err := checkHostPort(ep, false); err != nil {
				add(fmt.Sprintf("%s.endpoints[%d]", p, i), "%v", err)
				continue
			}
			k := dialhost.Key(ep)
			if j, dup := seen[k]; dup {
				add(fmt.Sprintf("%s.endpoints[%d]", p, i), "%s repeats endpoints[%d] (%s)", ep, j, strings.TrimSpace(s.Endpoints[j]))
				continue
			}
			seen[k] = i
		}
		checkProtocol(p+".protocol", s.Protocol, add)
		s.Settings.Normalize()
		addFieldErrors(&errs, p+".", s.Settings.Validate())
	}
	c.Defaults.Normalize()
	addFieldErrors(&errs, "defaults.", c.Defaults.Validate())

	if c.Outbound != nil {
		seen := map[routematch.Key]int{}
		var earlier []routematch.Key
		catchAll := -1
		for i, r := range c.Outbound.Routes {
			p := fmt.Sprintf("outbound.routes[%d]", i)
			if r.Service == "" {
				add(p+".service", "required")
			} else if _, ok := c.Services[r.Service]; !ok {
				add(p+".service", "service %q is not defined under services", r.Service)
			}
			if r.PathPrefix != "" && !strings.HasPrefix(r.PathPrefix, "/") {
				add(p+".path_prefix", "must start with /, got %q", r.PathPrefix)
			} else if i := strings.IndexFunc(r.PathPrefix, notInPath); i >= 0 {
				// A request path never holds these: the route could never match.
				bad, _ := utf8.DecodeRuneInString(r.PathPrefix[i:])
				add(p+".path_prefix", "must not contain %q (a path prefix is the path alone: no spaces, query or fragment), got %q", string(bad), r.PathPrefix)
			}
			if r.Host != "" && !routematch.ValidHost(r.Host) {
				add(p+".host", "must be a host name or an IP address (no scheme, port or path), got %q", r.Host)
			}
			k := routematch.NewKey(normalizeHost(r.Host), r.PathPrefix)
			if j, dup := seen[k]; dup {
				add(p, "repeats routes[%d] (same host and path_prefix); it can never match", j)
			} else if catchAll >= 0 {
				add(p, "can never match: routes[%d] matches every request first", catchAll)
			} else if j := routematch.Shadowed(earlier, k); j >= 0 {
				// Routes match in order: one that an earlier route matches
				// every request of is never reached.
				add(p, "can never match: routes[%d] (host %q, path_prefix %q) matches all it would, first; list the more specific route first", j, c.Outbound.Routes[j].Host, c.Outbound.Routes[j].PathPrefix)
			}
			earlier = append(earlier, k)
			seen[k] = i
			if k.Host == "" && k.Prefix == "" && catchAll < 0 {
				catchAll = i
			}
		}
	}
	if c.Inbound != nil {
		if c.Inbound.App == "" {
			add("inbound.app", "required: the local application's host:port")
		} else if err := checkHostPort(c.Inbound.App, false); err != nil {
			add("inbound.app", "%v", err)
		}
		checkProtocol("inbound.protocol", c.Inbound.Protocol, add)
	}

	if c.Consul != nil {
		if err := c.Consul.Validate(); err != nil {
			addErr(&errs, err)
		}
	}
	if c.Register != nil {
		if err := c.Register.Validate(); err != nil {
			addErr(&errs, err)
		}
	}
	if err := c.Telemetry.Validate(); err != nil {
		addErr(&errs, err)
	}

	if c.Limits.MaxRequestBodyBytes < 0 {
		add("limits.max_request_body_bytes", "must not be negative")
	}
	if c.Limits.MaxHeaderBytes < 0 {
		add("limits.max_header_bytes", "must not be negative")
	}
	if c.Limits.MaxConnections < 0 {
		add("limits.max_connections", "must not be negative (0: unlimited)")
	}
	for path, d := range map[string]time.Duration{
		"limits.read_header_timeout": c.Limits.ReadHeaderTimeout,
		"limits.idle_timeout":        c.Limits.IdleTimeout,
		"shutdown.grace":             c.Shutdown.Grace,
		"shutdown.delay":             c.Shutdown.Delay,
	} {
		if d < 0 {
			add(path, "must not be negative")
		}
	}
	sort.SliceStable(errs, func(i, j int) bool { return errs[i].Path < errs[j].Path })
	return errs
}

func checkProtocol(path, p string, add func(string, string, ...any)) {
	switch p {
	case ProtocolAuto, ProtocolHTTP1, ProtocolH2C:
	default:
		add(path, "unknown protocol %q (want auto, http1 or h2c)", p)
	}
}

// notInPath reports a character a request path never holds: "?" and "#"
// end it, and white space and control characters are not sent unencoded.
func notInPath(r rune) bool {
	return r == '?' || r == '#' || unicode.IsSpace(r) || unicode.IsControl(r)
}

// checkHostPort validates host:port. Listeners may use port 0 (any free
// port) and an empty host (all interfaces); endpoints may not.
func checkHostPort(addr string, listener bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("invalid address %q: want host:port", addr)
	}
	if _, err := parsePort(port, listener); err != nil {
		return fmt.Errorf("invalid port %q in %q: %v", port, addr, err)
	}
	if host == "" {
		if listener {
			return nil
		}
		return fmt.Errorf("missing host in %q", addr)
	}
	if listener {
		if _, err := netip.ParseAddr(host); err != nil && !strings.EqualFold(host, "localhost") {
			return fmt.Errorf("listen host in %q must be an IP address or localhost", addr)
		}
	} else if !dialhost.Valid(host) {
		return fmt.Errorf("invalid host in %q: want an IP address or a host name of letters, digits, '-', '_' and '.'", addr)
	}
	return nil
}

// parsePort reads a port written as plain decimal digits: no sign, no
// leading zero (net.Listen and net.Dial read "+80" and "080" as 80, so
// such a port would be another text for the same port), 1..65535, and 0
// too for a listener (any free port).
func parsePort(s string, listener bool) (int, error) {
	if s == "" {
		return 0, errors.New("missing port")
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return 0, errors.New("want a number 1-65535, digits only")
		}
	}
	if len(s) > 1 && s[0] == '0' {
		return 0, fmt.Errorf("leading zero; write %s", strings.TrimLeft(s, "0"))
	}
	n, err := strconv.Atoi(s)
	if err != nil || n > 65535 {
		return 0, errors.New("out of range 1-65535")
	}
	if n == 0 && !listener {
		return 0, errors.New("port 0 cannot be dialled; want 1-65535")
	}
	return n, nil
}

// listenersOverlap reports whether two listen addresses (valid for
// checkHostPort) would collide: the same port, and the same address or
// either one every address. Addresses compare parsed ("::1" is
// "0:0::1", "::ffff:127.0.0.1" is "127.0.0.1"), and localhost is the
// loopback addresses it names, 127.0.0.1 and ::1, without a lookup.
func listenersOverlap(a, b string) bool {
	ha, pa, _ := net.SplitHostPort(a)
	hb, pb, _ := net.SplitHostPort(b)
	na, _ := parsePort(pa, true)
	nb, _ := parsePort(pb, true)
	if na != nb || na == 0 {
		return false
	}
	addrs := func(h string) (all bool, list []netip.Addr) {
		if h == "" {
			return true, nil
		}
		if strings.EqualFold(h, "localhost") {
			return false, []netip.Addr{netip.AddrFrom4([4]byte{127, 0, 0, 1}), netip.IPv6Loopback()}
		}
		ip, err := netip.ParseAddr(h)
		if err != nil {
			return false, nil
		}
		if ip.IsUnspecified() {
			return true, nil
		}
		return false, []netip.Addr{ip.Unmap()}
	}
	allA, la := addrs(ha)
	allB, lb := addrs(hb)
	if allA || allB {
		return true
	}
	for _, x := range la {
		for _, y := range lb {
			if x == y {
				return true
			}
		}
	}
	return false
}

// addErr records an error whose text starts with its key path
// ("consul.wait_time: ...") as a ConfigError.
func addErr(errs *ConfigErrors, err error) {
	path, msg, ok := strings.Cut(err.Error(), ": ")
	if !ok || strings.ContainsAny(path, " ") {
		path, msg = "", err.Error()
	}
	*errs = append(*errs, &ConfigError{Path: path, Msg: msg})
}

// addFieldErrors records resilience's per-key errors under prefix.
func addFieldErrors(errs *ConfigErrors, prefix string, err error) {
	if err == nil {
		return
	}
	list := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	}
	for _, e := range list {
		var fe *resilience.FieldError
		if errors.As(e, &fe) {
			*errs = append(*errs, &ConfigError{Path: prefix + fe.Key, Msg: fe.Problem})
		} else {
			*errs = append(*errs, &ConfigError{Path: strings.TrimSuffix(prefix, "."), Msg: e.Error()})
		}
	}
}
