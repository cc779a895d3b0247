package sidecar

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ferrymesh/ferry/discovery"
	"github.com/ferrymesh/ferry/resilience"
	"github.com/ferrymesh/ferry/telemetry"
)

// state is one generation of everything the config file decides about
// routing: services, their connection pools and resolvers, and the route
// tables. It is built whole, swapped in atomically (at start and on every
// reload) and retired once replaced; in-flight exchanges keep the
// generation they started with.
type state struct {
	cfg       *Config
	upstreams map[string]*upstream
	app       *upstream   // the local application, behind inbound; nil without inbound
	outbound  *routeTable // nil without outbound
	inbound   *routeTable // nil without inbound
	consul    *discovery.Consul
	ctx       context.Context    // ends when the generation is closed
	stop      context.CancelFunc // ends this generation's watches
	running   sync.WaitGroup     // the goroutines run started
}

// buildState makes a generation from cfg. With resolver nil, services with
// endpoints are static and the others resolve through a new Consul watcher
// that lives until the generation is closed, starting from what prev's
// (the generation in force, on a reload; nil at start) learnt. A service no route leads to
// is warned about and left out: it is not resolved, watched or waited for.
func buildState(cfg *Config, resolver discovery.Resolver, prev *state, log *slog.Logger, opts []resilience.Option) (*state, error) {
	ctx, stop := context.WithCancel(context.Background())
	st := &state{cfg: cfg, upstreams: map[string]*upstream{}, ctx: ctx, stop: stop}
	if resolver == nil {
		var prior *discovery.Consul
		if prev != nil {
			prior = prev.consul
		}
		static, consul, err := resolvers(ctx, cfg, log, prior)
		if err != nil {
			stop()
			return nil, err
		}
		st.consul = consul
		resolver = serviceResolver{static: static, consul: consul, cfg: cfg.Services}
	}
	names := make([]string, 0, len(cfg.Services))
	for name := range cfg.Services {
		names = append(names, name)
	}
	sort.Strings(names)
	used := cfg.usedServices()
	for _, name := range names {
		if !used[name] {
			warnUnused(log, name)
			continue
		}
		sc := cfg.Services[name]
		svc, err := resolver.Service(name)
		if err != nil {
			st.close()
			return nil, fmt.Errorf("services.%s: %w", name, err)
		}
		up, err := newUpstream(name, svc, sc.Protocol, "services."+name+".protocol", sc.Settings, opts)
		if err != nil {
			st.close()
			return nil, fmt.Errorf("services.%s: %w", name, err)
		}
		st.upstreams[name] = up
	}
	if cfg.Outbound != nil {
		st.outbound = &routeTable{maxBody: cfg.Limits.MaxRequestBodyBytes, maxHeader: cfg.Limits.MaxHeaderBytes}
		for i, rc := range cfg.Outbound.Routes {
			host := normalizeHost(rc.Host)
			ip, _ := netip.ParseAddr(host)
			st.outbound.routes = append(st.outbound.routes, route{
				host:   host,
				ip:     ip,
				prefix: strings.TrimSuffix(rc.PathPrefix, "/"),
				name:   fmt.Sprintf("routes[%d]", i),
				label:  routeLabel(rc),
				up:     st.upstreams[rc.Service],
			})
		}
	}
	if cfg.Inbound != nil {
		app := discovery.NewService("app", "static")
		now := time.Now()
		app.Publish(&discovery.Snapshot{Endpoints: []discovery.Endpoint{{Addr: appEndpoint(cfg.Inbound.App), Weight: 1}}, Ready: true, Updated: now, Checked: now})
		up, err := newUpstream("app", app, cfg.Inbound.Protocol, "inbound.protocol", cfg.Defaults, opts)
		if err != nil {
			st.close()
			return nil, fmt.Errorf("defaults: %w", err)
		}
		st.app = up
		st.inbound = &routeTable{maxBody: cfg.Limits.MaxRequestBodyBytes, maxHeader: cfg.Limits.MaxHeaderBytes, routes: []route{{name: "app", label: "app", up: st.app}}}
	}
	return st, nil
}

// consulMetricsInterval is how often the Consul watch errors are counted
// in metrics (a variable for tests).
var consulMetricsInterval = 5 * time.Second

// run starts the background work of a generation until it is closed: each
// upstream follows its service's endpoints, and Consul watch errors feed
// the metrics.
func (st *state) run(m *telemetry.Metrics) {
	for _, up := range st.all() {
		st.running.Go(func() { up.follow(st.ctx) })
	}
	every := consulMetricsInterval // read here, by the caller (tests set it)
	st.running.Go(func() { st.reportConsul(st.ctx, m, every) })
}

// routeLabel is how a route shows in spans, metrics and logs: its host
// (or "*") and path prefix, e.g. "files", "files/api", "*/static". Routes
// come from the config, so the names are few.
func routeLabel(rc RouteConfig) string {
	host := normalizeHost(rc.Host)
	if host == "" {
		host = "*"
	}
	return host + strings.TrimSuffix(rc.PathPrefix, "/")
}

// testHookResolveChecked, set by tests only, runs in waitResolved after a
// service's readiness was read.
var testHookResolveChecked func()

// waitResolved waits until every Consul-backed service has its first
// snapshot, so swapping this generation in never turns a served service
// into "not resolved yet".
func (st *state) waitResolved(ctx context.Context) error {
	for {
		var pending []string
		var waits []<-chan struct{}
		for name, up := range st.upstreams {
			// The channel before the snapshot: a publish between the two
			// then closes the channel held, where the other order would
			// wait on the next one and miss it.
			changed := up.svc.Changed()
			ready := up.svc.Snapshot().Ready
			if testHookResolveChecked != nil {
				testHookResolveChecked()
			}
			if !ready {
				pending = append(pending, name)
				waits = append(waits, changed)
			}
		}
		if len(pending) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			// Each with its resolver's reason, so the line that rejects a
			// reload says why as well as which (the names alone should
			// every one have resolved since the check above).
			why := st.pending()
			if len(why) == 0 {
				sort.Strings(pending)
				why = pending
			}
			return fmt.Errorf("%w: %s", errUnresolved, strings.Join(why, "; "))
		case <-waits[0]:
		}
	}
}

// pending lists the services of st not resolved yet, each with the
// reason its resolver gives, in name order.
func (st *state) pending() []string {
	var out []string
	for name, up := range st.upstreams {
		snap := up.svc.Snapshot()
		if snap.Ready {
			continue
		}
		if snap.Err != "" {
			name += " (" + snap.Err + ")"
		}
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// UnusedServiceWarning is what ferry says of a service no outbound route
// leads to (see Config.UnusedServices).
const UnusedServiceWarning = "a service no route leads to: it is not resolved or watched"

// warnUnused logs a service no outbound route leads to: it is neither
// resolved nor watched, and usually a typo in a route or a leftover.
func warnUnused(log *slog.Logger, name string) {
	if log != nil {
		log.Warn(UnusedServiceWarning, "key", "services."+name)
	}
}

// all lists the services' upstreams and the local app's.
func (st *state) all() []*upstream {
	ups := make([]*upstream, 0, len(st.upstreams)+1)
	for _, up := range st.upstreams {
		ups = append(ups, up)
	}
	if st.app != nil {
		ups = append(ups, st.app)
	}
	return ups
}

// close retires a generation: its watches stop and idle pooled connections
// close. Exchanges still running on it finish undisturbed.
func (st *state) close() { st.closeExcept(nil) }

// closeExcept is close, sparing the connection pools another generation
// carried over.
func (st *state) closeExcept(carried map[*upstream]bool) {
	st.stop()
	st.running.Wait() // none of them touches the balancers or metrics after

	for _, up := range st.all() {
		if !carried[up] {
			up.close()
		}
	}
	if st.consul != nil {
		st.consul.Close()
	}
}

// appEndpoint is inbound.app as the app's endpoint address, in the form
// every other endpoint has: "[10.1.2.3]:8080", which an injected config
// holds once kubelet filled $(POD_IP) in with an IPv4 address (the
// brackets keep an IPv6 one apart from its port), is "10.1.2.3:8080" in
// logs, metrics and spans.
func appEndpoint(app string) string {
	host, port, err := net.SplitHostPort(app)
	if err != nil {
		return app // refused at load
	}
	return net.JoinHostPort(host, port)
}
