package inject

import (
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/ferrymesh/ferry/discovery"
	"github.com/ferrymesh/ferry/internal/dialhost"
	"github.com/ferrymesh/ferry/internal/routematch"
)

// Upstream is one entry of AnnotationUpstreams: a route on ferry's outbound
// listener and the service it sends to.
type Upstream struct {
	// Service is ferry's name for the upstream service.
	Service string
	// Host and PathPrefix are the route's match; both empty match every
	// request.
	Host       string
	PathPrefix string
	// Endpoints are static host:port addresses. Empty: the service is
	// resolved through Consul.
	Endpoints []string
	// ConsulService, Tags and Datacenter select the Consul instances.
	// ConsulService defaults to Service.
	ConsulService string
	Tags          []string
	Datacenter    string
	// Protocol spoken to the service: auto (ferry's default), http1, h2c.
	Protocol string
}

// ParseUpstreams parses the value of AnnotationUpstreams.
//
// Entries are separated by ";" or newlines. Each entry is
//
//	SERVICE[=MATCH] [OPTION ...]
//
// where MATCH is HOST, /PATH, HOST/PATH or "*" (every request). Without
// MATCH the route matches the Host header SERVICE: the app calls
// http://SERVICE/... through the outbound listener. OPTIONs are key=value:
//
//	endpoints=HOST:PORT,...  static endpoints (no Consul)
//	consul=NAME              Consul service name (default SERVICE)
//	tags=T1,T2               only Consul instances with every tag
//	dc=NAME                  Consul datacenter
//	protocol=auto|http1|h2c  protocol spoken to the service
//
// A service may appear in several entries (one per route); options given
// twice must agree, and the first entry of a service carries the options of
// all its entries. Routes are matched in the order written.
func ParseUpstreams(s string) ([]Upstream, error) {
	var out []Upstream
	byService := map[string]int{} // service -> index in out of its first entry
	seen := map[routematch.Key]int{}
	var earlier []routematch.Key
	catchAll := -1
	entries := strings.FieldsFunc(s, func(r rune) bool { return r == ';' || r == '\n' })
	n := 0
	for _, raw := range entries {
		entry := strings.TrimSpace(raw)
		if entry == "" {
			continue
		}
		n++
		u, err := parseUpstream(entry)
		if err != nil {
			return nil, fmt.Errorf("entry %d %q: %w", n, entry, err)
		}
		k := routematch.NewKey(strings.ToLower(strings.TrimSuffix(u.Host, ".")), u.PathPrefix)
		if j, dup := seen[k]; dup {
			return nil, fmt.Errorf("entry %d %q: same match as entry %d; it could never be used", n, entry, j)
		}
		if catchAll >= 0 {
			return nil, fmt.Errorf("entry %d %q: entry %d already matches every request", n, entry, catchAll)
		}
		if j := routematch.Shadowed(earlier, k); j >= 0 {
			// ferry matches routes in order and refuses one it could
			// never reach.
			return nil, fmt.Errorf("entry %d %q: entry %d already matches every request it would; write the more specific entry first", n, entry, j+1)
		}
		earlier = append(earlier, k)
		seen[k] = n
		if k.Host == "" && k.Prefix == "" {
			catchAll = n
		}
		if i, ok := byService[u.Service]; ok {
			if err := mergeService(&out[i], u); err != nil {
				return nil, fmt.Errorf("entry %d %q: %w", n, entry, err)
			}
		} else {
			byService[u.Service] = len(out)
		}
		out = append(out, u)
	}
	return out, nil
}

var (
	serviceNameRE = lazyRegexp(`^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$`)
	hostRE        = lazyRegexp(`^[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?$`)
	pathRE        = lazyRegexp(`^/[A-Za-z0-9._~!$&'()*+,=:@%/-]*$`)
	tagRE         = lazyRegexp(`^[A-Za-z0-9._:=/+@-]+$`)
)

func parseUpstream(entry string) (Upstream, error) {
	fields := strings.Fields(entry)
	var u Upstream
	svc, match, hasMatch := strings.Cut(fields[0], "=")
	if !serviceNameRE().MatchString(svc) {
		return u, fmt.Errorf("invalid service name %q: letters, digits, '.', '_' and '-'", svc)
	}
	u.Service = svc
	switch {
	case !hasMatch:
		if !routematch.ValidHost(svc) {
			return u, fmt.Errorf("service name %q cannot be the route's host (a DNS label is at most 63 characters, a name 253); give a match: %s=HOST", svc, svc)
		}
		u.Host = svc
	case match == "*":
	case match == "":
		return u, fmt.Errorf("empty match after %q: want HOST, /PATH, HOST/PATH or *", svc+"=")
	default:
		host, path := match, ""
		if i := strings.IndexByte(match, '/'); i >= 0 {
			host, path = match[:i], match[i:]
		}
		if host != "" && !hostRE().MatchString(host) {
			return u, fmt.Errorf("invalid host %q in match %q: want a bare host name (no port, no scheme)", host, match)
		}
		if host != "" && !routematch.ValidHost(host) {
			return u, fmt.Errorf("invalid host %q in match %q: a DNS label is at most 63 characters, a name 253", host, match)
		}
		if path != "" && !pathRE().MatchString(path) {
			return u, fmt.Errorf("invalid path prefix %q in match %q", path, match)
		}
		u.Host, u.PathPrefix = host, path
	}
	given := map[string]bool{}
	for _, f := range fields[1:] {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return u, fmt.Errorf("option %q: want key=value", f)
		}
		if given[k] {
			return u, fmt.Errorf("option %s given twice", k)
		}
		given[k] = true
		if v == "" {
			return u, fmt.Errorf("option %s: empty value", k)
		}
		switch k {
		case "endpoints":
			for _, ep := range strings.Split(v, ",") {
				if err := checkEndpoint(ep); err != nil {
					return u, fmt.Errorf("option endpoints: %w", err)
				}
				if slices.ContainsFunc(u.Endpoints, func(e string) bool { return dialhost.Key(e) == dialhost.Key(ep) }) {
					return u, fmt.Errorf("option endpoints: %s is listed twice", ep)
				}
				u.Endpoints = append(u.Endpoints, ep)
			}
		case "consul":
			if !serviceNameRE().MatchString(v) {
				return u, fmt.Errorf("option consul: invalid Consul service name %q", v)
			}
			u.ConsulService = v
		case "tags":
			for _, t := range strings.Split(v, ",") {
				if !tagRE().MatchString(t) {
					return u, fmt.Errorf("option tags: invalid tag %q", t)
				}
				u.Tags = append(u.Tags, t)
			}
		case "dc":
			if err := discovery.CheckDatacenter(v); err != nil {
				return u, fmt.Errorf("option dc: %w", err)
			}
			u.Datacenter = v
		case "protocol":
			if err := checkProtocol(v); err != nil {
				return u, fmt.Errorf("option protocol: %w", err)
			}
			u.Protocol = v
		default:
			return u, fmt.Errorf("unknown option %q (known: endpoints, consul, tags, dc, protocol)", k)
		}
	}
	if len(u.Endpoints) > 0 && (u.ConsulService != "" || len(u.Tags) > 0 || u.Datacenter != "") {
		return u, fmt.Errorf("a service has either static endpoints or Consul options (consul, tags, dc), not both")
	}
	return u, nil
}

// mergeService folds the service options of a later entry into the first
// entry of the same service.
func mergeService(first *Upstream, u Upstream) error {
	type opt struct {
		name       string
		dst        any
		have, next string
	}
	for _, o := range []opt{
		{"endpoints", &first.Endpoints, strings.Join(first.Endpoints, ","), strings.Join(u.Endpoints, ",")},
		{"consul", &first.ConsulService, first.ConsulService, u.ConsulService},
		{"tags", &first.Tags, strings.Join(first.Tags, ","), strings.Join(u.Tags, ",")},
		{"dc", &first.Datacenter, first.Datacenter, u.Datacenter},
		{"protocol", &first.Protocol, first.Protocol, u.Protocol},
	} {
		if o.next == "" || o.next == o.have {
			continue
		}
		if o.have != "" {
			return fmt.Errorf("service %s: option %s=%s disagrees with %s given before", u.Service, o.name, o.next, o.have)
		}
		switch dst := o.dst.(type) {
		case *[]string:
			*dst = strings.Split(o.next, ",")
		case *string:
			*dst = o.next
		}
	}
	if len(first.Endpoints) > 0 && (first.ConsulService != "" || len(first.Tags) > 0 || first.Datacenter != "") {
		return fmt.Errorf("service %s: either static endpoints or Consul options (consul, tags, dc), not both", u.Service)
	}
	return nil
}

// checkEndpoint accepts what ferry accepts as an endpoint (its config
// check, mirrored here): host:port with a port of plain digits, 1-65535,
// no sign or leading zero, and a host that is an IP address or a name of
// letters, digits, '-', '_' and '.'. Anything else ferry refuses at load,
// and an injected ferry would exit at every start.
func checkEndpoint(ep string) error {
	host, port, err := net.SplitHostPort(ep)
	if err != nil {
		return fmt.Errorf("invalid address %q: want host:port", ep)
	}
	if !dialhost.Valid(host) {
		return fmt.Errorf("invalid host in %q: want an IP address or a host name of letters, digits, '-', '_' and '.'", ep)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 || strings.TrimLeft(port, "0123456789") != "" || port[0] == '0' {
		return fmt.Errorf("invalid port in %q: want 1-65535, plain digits without a leading zero", ep)
	}
	return nil
}

func checkProtocol(p string) error {
	switch p {
	case "auto", "http1", "h2c":
		return nil
	}
	return fmt.Errorf("unknown protocol %q (want auto, http1 or h2c)", p)
}

// lazyRegexp compiles expr on first use. The patterns serve `ferry inject`
// and `ferry webhook` only; compiled at package init they cost every
// process, `ferry run` included, about 150 KB of heap.
func lazyRegexp(expr string) func() *regexp.Regexp {
	return sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(expr) })
}
