package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrymesh/ferry/discovery"
)

// Sidecar is one running ferry: the outbound and inbound proxies, the admin
// listener and the services they reach.
type Sidecar struct {
	cfg       *Config
	log       *slog.Logger
	resolver  discovery.Resolver
	upstreams map[string]*upstream
	app       *upstream // the local application, behind inbound
	outbound  *Proxy
	inbound   *Proxy
	tunnels   *tunnelSet

	consul    *discovery.Consul    // nil without Consul
	registrar *discovery.Registrar // nil without register:
	bg        context.Context      // lives until shutdown ends: watches, registration
	bgStop    context.CancelFunc

	servers []*listener // outbound, inbound, then admin
	started atomic.Bool
	ready   atomic.Bool
	stop    sync.Once
}

type listener struct {
	name string
	srv  *http.Server
	ln   net.Listener
	done chan error
}

// Options are the parts of a Sidecar that do not come from the config file.
type Options struct {
	// Log receives ferry's own logs. Nil discards them.
	Log *slog.Logger
	// Resolver finds service endpoints. Nil builds the static resolver from
	// the config's services.
	Resolver discovery.Resolver
}

// New builds a sidecar from a loaded config. Nothing listens until Start.
func New(cfg *Config, opts Options) (*Sidecar, error) {
	lg := opts.Log
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	s := &Sidecar{cfg: cfg, log: lg, resolver: opts.Resolver, upstreams: map[string]*upstream{}, tunnels: newTunnelSet()}
	s.bg, s.bgStop = context.WithCancel(context.Background())
	if s.resolver == nil {
		static, consul, err := s.resolvers(s.bg)
		if err != nil {
			s.bgStop()
			return nil, err
		}
		s.consul = consul
		s.resolver = serviceResolver{static: static, consul: consul, cfg: cfg.Services}
	}
	if cfg.Register != nil {
		if s.consul == nil {
			s.bgStop()
			return nil, errors.New("register: needs a Consul resolver")
		}
		reg, err := s.consul.NewRegistrar(*cfg.Register, s.readiness)
		if err != nil {
			s.bgStop()
			return nil, fmt.Errorf("register: %w", err)
		}
		s.registrar = reg
	}
	names := make([]string, 0, len(cfg.Services))
	for name := range cfg.Services {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		sc := cfg.Services[name]
		svc, err := s.resolver.Service(name)
		if err != nil {
			s.bgStop()
			return nil, fmt.Errorf("services.%s: %w", name, err)
		}
		s.upstreams[name] = newUpstream(name, svc, sc.Protocol, cfg.timeoutsFor(sc))
	}
	if cfg.Outbound != nil {
		table := &routeTable{}
		for i, rc := range cfg.Outbound.Routes {
			table.routes = append(table.routes, route{
				host:   normalizeHost(rc.Host),
				prefix: strings.TrimSuffix(rc.PathPrefix, "/"),
				name:   fmt.Sprintf("routes[%d]", i),
				up:     s.upstreams[rc.Service],
			})
		}
		s.outbound = newProxy("outbound", table, cfg.Limits.MaxRequestBodyBytes, lg, s.tunnels)
	}
	if cfg.Inbound != nil {
		app := discovery.NewService("app", "static")
		now := time.Now()
		app.Publish(&discovery.Snapshot{Endpoints: []discovery.Endpoint{{Addr: cfg.Inbound.App, Weight: 1}}, Ready: true, Updated: now, Checked: now})
		s.app = newUpstream("app", app, cfg.Inbound.Protocol, cfg.Timeouts)
		s.inbound = newProxy("inbound", &routeTable{routes: []route{{name: "app", up: s.app}}}, cfg.Limits.MaxRequestBodyBytes, lg, s.tunnels)
	}
	return s, nil
}

// Start binds every listener, or none: a listener that cannot bind closes the
// ones already bound and returns the error. Then it serves in the
// background and reports ready.
func (s *Sidecar) Start() error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("sidecar already started")
	}
	type spec struct {
		name, addr string
		h          http.Handler
	}
	var specs []spec
	if s.outbound != nil {
		specs = append(specs, spec{"outbound", s.cfg.Outbound.Listen, s.outbound})
	}
	if s.inbound != nil {
		specs = append(specs, spec{"inbound", s.cfg.Inbound.Listen, s.inbound})
	}
	specs = append(specs, spec{"admin", s.cfg.Admin.Listen, s.adminHandler()})
	for _, sp := range specs {
		ln, err := net.Listen("tcp", sp.addr)
		if err != nil {
			for _, l := range s.servers {
				l.ln.Close()
			}
			s.servers = nil
			return fmt.Errorf("%s.listen: %w", sp.name, err)
		}
		s.servers = append(s.servers, &listener{name: sp.name, srv: s.newServer(sp.name, sp.h), ln: ln, done: make(chan error, 1)})
	}
	for _, l := range s.servers {
		go func(l *listener) { l.done <- l.srv.Serve(l.ln) }(l)
		s.log.Info("listening", "listener", l.name, "addr", l.ln.Addr().String())
	}
	s.ready.Store(true)
	if s.registrar != nil {
		go s.registrar.Run(s.bg)
		s.registrar.Refresh()
	}
	return nil
}

// readiness is the registration check: ferry serving and not draining, and
// the local application accepting connections.
func (s *Sidecar) readiness() error {
	if !s.Ready() {
		return errors.New("ferry is not ready (starting or draining)")
	}
	if s.cfg.Inbound != nil {
		c, err := net.DialTimeout("tcp", s.cfg.Inbound.App, time.Second)
		if err != nil {
			return fmt.Errorf("app %s is not accepting connections: %v", s.cfg.Inbound.App, err)
		}
		c.Close()
	}
	return nil
}

func (s *Sidecar) newServer(name string, h http.Handler) *http.Server {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	lim := s.cfg.Limits
	return &http.Server{
		Handler:           h,
		Protocols:         p,
		ReadHeaderTimeout: lim.ReadHeaderTimeout,
		IdleTimeout:       lim.IdleTimeout,
		MaxHeaderBytes:    lim.MaxHeaderBytes,
		ErrorLog:          log.New(slogWriter{s.log, name}, "", 0),
	}
}

// Addr returns the bound address of a listener ("outbound", "inbound",
// "admin"), or "" when it does not exist or has not started.
func (s *Sidecar) Addr(name string) string {
	for _, l := range s.servers {
		if l.name == name {
			return l.ln.Addr().String()
		}
	}
	return ""
}

// Ready reports whether every listener is up and the sidecar is not draining.
func (s *Sidecar) Ready() bool { return s.ready.Load() }

// Run starts the sidecar, serves until ctx ends, then drains within the
// configured grace period.
func (s *Sidecar) Run(ctx context.Context) error {
	if err := s.Start(); err != nil {
		return err
	}
	errc := make(chan error, len(s.servers))
	for _, l := range s.servers {
		go func(l *listener) {
			err := <-l.done
			l.done <- err
			if !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("%s listener: %w", l.name, err)
			}
		}(l)
	}
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	grace, cancel := context.WithTimeout(context.Background(), s.cfg.Shutdown.Grace)
	defer cancel()
	if err := s.Shutdown(grace); err != nil && runErr == nil {
		runErr = err
	}
	return runErr
}

// Shutdown drains: it reports not ready, stops accepting, lets in-flight
// exchanges finish until ctx ends, then closes whatever is left (including
// upgraded tunnels). The admin listener stops last.
func (s *Sidecar) Shutdown(ctx context.Context) error {
	var err error
	s.stop.Do(func() { err = s.shutdown(ctx) })
	return err
}

func (s *Sidecar) shutdown(ctx context.Context) error {
	defer s.bgStop()
	s.ready.Store(false)
	s.log.Info("draining", "grace", s.cfg.Shutdown.Grace.String())
	if s.registrar != nil {
		// Not ready first, then out of Consul, then drain: callers stop
		// finding this instance before its listeners close.
		s.registrar.Refresh()
		if err := s.registrar.Deregister(ctx); err != nil {
			s.log.Warn("consul deregistration failed", "error", err.Error())
		} else {
			s.log.Info("deregistered from consul", "id", s.registrar.ID())
		}
	}
	if d := s.cfg.Shutdown.Delay; d > 0 {
		// Keep serving while callers notice /ready went 503.
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	var wg sync.WaitGroup
	var admin *listener
	var forced atomic.Int32
	for _, l := range s.servers {
		if l.name == "admin" {
			admin = l
			continue
		}
		wg.Add(1)
		go func(l *listener) {
			defer wg.Done()
			if err := l.srv.Shutdown(ctx); err != nil {
				forced.Add(1)
				l.srv.Close()
			}
		}(l)
	}
	wg.Wait()
	// Tunnels are invisible to Shutdown: wait for them to end on their own
	// until the grace period does.
	s.tunnels.waitEmpty(ctx)
	n := s.tunnels.closeAll()
	if admin != nil {
		admin.srv.Close()
	}
	for _, up := range s.allUpstreams() {
		up.close()
	}
	if s.consul != nil {
		s.consul.Close()
	}
	if forced.Load() > 0 || n > 0 {
		s.log.Warn("drain grace ended with exchanges still open; closed them", "tunnels", n)
		return fmt.Errorf("drain: grace period ended with exchanges in flight")
	}
	s.log.Info("drained")
	return nil
}

// allUpstreams lists the services' upstreams and the local app's.
func (s *Sidecar) allUpstreams() []*upstream {
	ups := make([]*upstream, 0, len(s.upstreams)+1)
	for _, up := range s.upstreams {
		ups = append(ups, up)
	}
	if s.app != nil {
		ups = append(ups, s.app)
	}
	return ups
}

// slogWriter sends net/http's server log lines (TLS errors, panics) to slog.
type slogWriter struct {
	log  *slog.Logger
	name string
}

func (w slogWriter) Write(p []byte) (int, error) {
	w.log.Warn(strings.TrimSpace(string(p)), "listener", w.name)
	return len(p), nil
}
