package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrymesh/ferry/discovery"
	"github.com/ferrymesh/ferry/internal/linewriter"
	"github.com/ferrymesh/ferry/internal/shutdownbounds"
	"github.com/ferrymesh/ferry/resilience"
	"github.com/ferrymesh/ferry/telemetry"
)

// Sidecar is one running ferry: the outbound and inbound proxies, the admin
// listener and the services they reach.
type Sidecar struct {
	log      *slog.Logger
	resolver discovery.Resolver // from Options; nil = built per generation
	observer resilience.Observer
	clock    resilience.Clock
	tel      *telemetry.Telemetry
	ownTel   bool // built by New, shut down by Shutdown
	state    atomic.Pointer[state]
	outbound *Proxy
	inbound  *Proxy
	tunnels  *tunnelSet
	reloadMu sync.Mutex // one reload at a time

	regConsul *discovery.Consul    // the client behind registrar; nil without register:
	registrar *discovery.Registrar // nil without register:
	bg        context.Context      // lives until shutdown ends: registration
	bgStop    context.CancelFunc
	drainReq  chan struct{} // POST /drain
	endDrain  chan struct{} // closed by EndDrain
	// endedEarly: EndDrain ended Run's drain before its grace period
	// was over (what shutdown's last words say ended it).
	endedEarly atomic.Bool

	fileMu     sync.Mutex
	fileTried  []byte        // the config file content last tried (WatchConfigFile, ReloadFile)
	triedOK    bool          // fileTried applied (or is the content ferry started with)
	readFailed bool          // a SIGHUP's read of the file failed since fileTried was tried
	readFails  uint64        // counts those failed reads (see WatchConfigFile)
	retryDelay time.Duration // the wait before fileTried, rejected for a transient reason, is tried again; 0: no retry
	retryGen   uint64        // counts the file's tries: a planned retry runs only if none came since
	settle     time.Duration // Options.ConfigSettle
	// fileWait, when set, replaces the timer between reads of the
	// config file (tests step it).
	fileWait func(ctx context.Context, d time.Duration) bool
	endOnce  sync.Once

	servers []*listener // outbound, inbound, then admin
	started atomic.Bool
	ready   atomic.Bool // listening and not draining
	// resolved is set once a generation in force had every service
	// resolved (Consul's first answer each); it stays set, since neither
	// a Consul outage nor a reload takes a snapshot back to unresolved.
	resolved atomic.Bool
	stop     sync.Once
	stopErr  error // Shutdown's result, for every call

	// life orders Start, a reload's swap and Shutdown: once stopping is
	// set, nothing starts serving and no generation is swapped in.
	life     sync.Mutex
	stopping bool
}

// errShutDown refuses a Start or a reload after Shutdown began.
var errShutDown = errors.New("ferry is shutting down")

type listener struct {
	name string
	srv  server
	ln   net.Listener
	done chan error
}

// server is what serves a listener: net/http's server (admin), or the
// HTTP/1.1 lane in front of one (outbound, inbound).
type server interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
	Close() error
}

// Options are the parts of a Sidecar that do not come from the config file.
type Options struct {
	// Log receives ferry's own logs. Nil discards them.
	Log *slog.Logger
	// Resolver finds service endpoints. Nil: static endpoints from the
	// config, Consul for services without them.
	Resolver discovery.Resolver
	// Clock drives breaker open periods, ejections and the retry budget.
	// Nil: the system clock. Tests move a resilience.ManualClock.
	Clock resilience.Clock
	// ConfigSettle is how far apart two reads of the config file must
	// give the same bytes before a change of it applies (WatchConfigFile,
	// ReloadFile): a file still being written is not applied. Zero:
	// DefaultConfigSettle (500ms).
	ConfigSettle time.Duration
	// Telemetry is used instead of one built from the config's telemetry
	// section (tests pass one with an in-memory span recorder). The
	// sidecar does not shut a given Telemetry down. One Telemetry serves
	// one sidecar: its breaker metrics report that sidecar's endpoints.
	Telemetry *telemetry.Telemetry
}

// newTelemetry builds cfg's telemetry with the OTEL_* environment. A
// key's own error names it ("telemetry.sampler: ..."); one from the
// environment names its variable, under telemetry.
func newTelemetry(cfg *Config, lg *slog.Logger, opts ...telemetry.Option) (*telemetry.Telemetry, error) {
	tel, err := telemetry.New(context.Background(), cfg.Telemetry, append(opts, telemetry.WithLog(lg))...)
	if err != nil {
		var errs ConfigErrors
		addErr(&errs, err)
		if !strings.HasPrefix(errs[0].Path, "telemetry.") {
			errs = ConfigErrors{{Path: "telemetry", Msg: err.Error()}}
		}
		return nil, errs
	}
	return tel, nil
}

// CheckTelemetry reports the error New would return for cfg's telemetry
// settings with the OTEL_* environment, building and shutting down the
// telemetry without exporting anything, and without creating the access
// log's file (it checks that one could be).
func CheckTelemetry(cfg *Config) error {
	tel, err := newTelemetry(cfg, slog.New(slog.DiscardHandler), telemetry.WithAccessLogWriter(io.Discard))
	if err != nil {
		return err
	}
	switch path := cfg.Telemetry.AccessLog; path {
	case "", "off", "stdout", "stderr":
	default:
		if err := linewriter.CheckOpen(path); err != nil {
			_ = tel.Shutdown(context.Background())
			return ConfigErrors{{Path: "telemetry.access_log", Msg: err.Error()}}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = tel.Shutdown(ctx) // nothing was exported
	return nil
}

// CheckConsul reports the error New would return for cfg's Consul client,
// its consul section laid over the CONSUL_* environment, when anything in
// cfg talks to Consul: it builds the client without contacting Consul.
func CheckConsul(cfg *Config) error {
	if !cfg.needsConsul() {
		return nil
	}
	var cc discovery.ConsulConfig
	if cfg.Consul != nil {
		cc = *cfg.Consul
	}
	if err := discovery.CheckConsul(cc); err != nil {
		return fmt.Errorf("consul: %w", err) // as resolvers says it
	}
	return nil
}

// New builds a sidecar from a loaded config. Nothing listens until Start.
func New(cfg *Config, opts Options) (*Sidecar, error) {
	lg := opts.Log
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	s := &Sidecar{log: lg, resolver: opts.Resolver, tunnels: newTunnelSet(), drainReq: make(chan struct{}, 1), endDrain: make(chan struct{})}
	s.tel, s.ownTel = opts.Telemetry, false
	if s.tel == nil {
		tel, err := newTelemetry(cfg, lg)
		if err != nil {
			return nil, err
		}
		s.tel, s.ownTel = tel, true
	}
	s.observer = observer{m: s.tel.Metrics(), log: lg}
	s.clock = opts.Clock
	s.settle = opts.ConfigSettle
	if s.settle <= 0 {
		s.settle = DefaultConfigSettle
	}
	if s.clock == nil {
		s.clock = resilience.SystemClock{}
	}
	st, err := buildState(cfg, s.resolver, nil, lg, s.upstreamOptions())
	if err != nil {
		s.closeTelemetry()
		return nil, err
	}
	st.run(s.tel.Metrics())
	s.state.Store(st)
	s.tel.Metrics().KnownEndpoints(s.endpoints)
	s.tel.Metrics().KnownSnapshots(s.consulSnapshots)
	s.bg, s.bgStop = context.WithCancel(context.Background())
	if cfg.Register != nil {
		var cc discovery.ConsulConfig
		if cfg.Consul != nil {
			cc = *cfg.Consul
		}
		if s.regConsul, err = discovery.NewConsul(s.bg, cc, discovery.ConsulOptions{Logger: lg}); err != nil {
			st.close()
			s.bgStop()
			return nil, fmt.Errorf("register: %w", err)
		}
		if s.registrar, err = s.regConsul.NewRegistrar(*cfg.Register, s.readiness); err != nil {
			st.close()
			s.regConsul.Close()
			s.bgStop()
			return nil, fmt.Errorf("register: %w", err)
		}
	}
	if st.outbound != nil {
		s.outbound = newProxy("outbound", st.outbound, lg, s.tunnels, s.tel)
	}
	if st.inbound != nil {
		s.inbound = newProxy("inbound", st.inbound, lg, s.tunnels, s.tel)
		if s.registrar != nil {
			// The app refusing a connection turns the registration's
			// check critical at once, not at its next refresh: an app
			// that stops first (a native sidecar outlives it) gets no
			// more callers from Consul meanwhile.
			s.inbound.connectFailed = s.registrar.RecheckIfPassing
		}
	}
	return s, nil
}

// upstreamOptions are the resilience options of every upstream.
func (s *Sidecar) upstreamOptions() []resilience.Option {
	return []resilience.Option{resilience.WithObserver(s.observer), resilience.WithClock(s.clock)}
}

// config is the configuration in force.
func (s *Sidecar) config() *Config { return s.state.Load().cfg }

// Start binds every listener, or none: a listener that cannot bind closes the
// ones already bound and returns the error. Then it serves in the
// background and reports ready.
func (s *Sidecar) Start() error {
	s.life.Lock()
	defer s.life.Unlock()
	if s.stopping {
		return errShutDown
	}
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("sidecar already started")
	}
	type spec struct {
		name, addr string
		h          http.Handler
	}
	cfg := s.config()
	var specs []spec
	if s.outbound != nil {
		specs = append(specs, spec{"outbound", cfg.Outbound.Listen, s.outbound})
	}
	if s.inbound != nil {
		specs = append(specs, spec{"inbound", cfg.Inbound.Listen, s.inbound})
	}
	specs = append(specs, spec{"admin", cfg.Admin.Listen, s.adminHandler()})
	for _, sp := range specs {
		ln, err := net.Listen("tcp", sp.addr)
		if err != nil {
			for _, l := range s.servers {
				l.ln.Close()
			}
			s.servers = nil
			return fmt.Errorf("%s.listen: %w", sp.name, err)
		}
		var srv server = s.newServer(sp.name, sp.h)
		if sp.name != "admin" {
			fast := newLane(sp.name, sp.h, srv.(*http.Server), s.log)
			fast.tel = s.tel
			fast.limit(cfg.Limits.MaxConnections)
			srv = fast
		}
		s.servers = append(s.servers, &listener{name: sp.name, srv: srv, ln: ln, done: make(chan error, 1)})
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
	if s.notReady() != "" {
		go s.awaitResolved()
	}
	return nil
}

// notReady says why ferry is not ready, or "" when it is: listening, not
// draining, and every service a route leads to resolved once.
func (s *Sidecar) notReady() string {
	if !s.ready.Load() {
		if s.started.Load() {
			return "draining"
		}
		return "starting"
	}
	if s.resolved.Load() {
		return ""
	}
	if pending := s.state.Load().pending(); len(pending) > 0 {
		return "waiting for Consul's first answer for " + strings.Join(pending, "; ")
	}
	s.resolved.Store(true)
	return ""
}

// awaitResolved waits until the generation in force has every service
// resolved, then logs that ferry is ready and has its Consul
// registration's check say so at once. It returns early when ferry shuts
// down.
func (s *Sidecar) awaitResolved() {
	wait := s.config().Consul.ReadyWaitOrDefault()
	s.log.Info("not ready until Consul's first answer for every routed service", "waiting_for", strings.Join(s.state.Load().pending(), "; "), "at_most", wait.String())
	// Past consul.ready_wait ferry reports ready with what it has: the
	// services still unanswered get 503 until their answer comes.
	giveUp := time.AfterFunc(wait, func() {
		pending := s.state.Load().pending()
		if len(pending) == 0 || !s.resolved.CompareAndSwap(false, true) {
			return
		}
		s.log.Warn("ready without Consul's first answer for every routed service (consul.ready_wait); their requests get 503 until it comes", "waiting_for", strings.Join(pending, "; "), "waited", wait.String())
		if s.registrar != nil {
			s.registrar.Refresh()
		}
	})
	defer giveUp.Stop()
	for {
		st := s.state.Load()
		// A reload may retire st before it resolves: wait on the one
		// that replaced it then.
		ctx, cancel := context.WithCancel(s.bg)
		stop := context.AfterFunc(st.ctx, cancel)
		err := st.waitResolved(ctx)
		stop()
		cancel()
		if err == nil {
			if s.resolved.CompareAndSwap(false, true) {
				if s.ready.Load() {
					s.log.Info("ready: every routed service resolved")
				}
				if s.registrar != nil {
					s.registrar.Refresh()
				}
			} else {
				s.log.Info("every routed service resolved")
			}
			return
		}
		if s.state.Load() == st {
			return // closed with no successor, or shut down: nothing to report
		}
	}
}

// readiness is the registration check: ferry serving and not draining, its
// upstreams resolved, and the local application accepting connections.
func (s *Sidecar) readiness() error {
	if why := s.notReady(); why != "" {
		return errors.New("ferry: " + why)
	}
	if in := s.config().Inbound; in != nil {
		c, err := net.DialTimeout("tcp", in.App, time.Second)
		if err != nil {
			return fmt.Errorf("app %s is not accepting connections: %v", in.App, err)
		}
		c.Close()
	}
	return nil
}

func (s *Sidecar) newServer(name string, h http.Handler) *http.Server {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	lim := s.config().Limits
	srv := &http.Server{
		Handler:           h,
		Protocols:         p,
		ReadHeaderTimeout: lim.ReadHeaderTimeout,
		IdleTimeout:       lim.IdleTimeout,
		MaxHeaderBytes:    lim.MaxHeaderBytes,
		HTTP2:             h2Windows(true),
		ErrorLog:          log.New(slogWriter{s.log, name}, "", 0),
	}
	if name == "admin" {
		// Every admin answer is written whole in one go (none streams):
		// a client that stops reading one would otherwise hold its
		// handler's goroutine, and what it holds, until shutdown.
		srv.WriteTimeout = adminWriteTimeout
		srv.HTTP2.WriteByteTimeout = adminWriteTimeout
	}
	return srv
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

// Ready reports whether every listener is up, the sidecar is not draining,
// and every service a route leads to had its first answer from Consul
// (static services have theirs from the start). Once they did, a Consul
// outage does not make ferry unready: the last endpoints keep serving.
func (s *Sidecar) Ready() bool { return s.notReady() == "" }

// Run starts the sidecar, serves until ctx ends, then drains: it keeps
// serving for shutdown.delay, then lets in-flight exchanges finish for up
// to shutdown.grace. A Start that fails releases what New built (Consul
// watches, the registration's client, telemetry) before Run returns its
// error: nothing is left running. A ctx that ended before Run began
// starts nothing: Run releases what New built and returns nil.
func (s *Sidecar) Run(ctx context.Context) error {
	if ctx.Err() != nil {
		s.log.Info("stop requested before ferry started serving; not starting")
		return s.Shutdown(context.Background())
	}
	if err := s.Start(); err != nil {
		s.Shutdown(context.Background()) // nothing served: releases only
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
	case <-s.drainReq:
		s.log.Info("drain requested through the admin listener")
	case runErr = <-errc:
	}
	// The grace starts once the delay (and deregistration, within it) is
	// over: Shutdown's context bounds the whole drain.
	sd := s.config().Shutdown
	// Both may be as long as a duration goes: their sum saturates rather
	// than overflow into a timeout already past, which would cut every
	// exchange in flight at once.
	bound := time.Duration(math.MaxInt64)
	if sd.Grace <= bound-sd.Delay {
		bound = sd.Delay + sd.Grace
	}
	grace, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	go func() {
		select {
		case <-s.endDrain:
			s.endedEarly.Store(grace.Err() == nil)
			cancel()
		case <-grace.Done():
		}
	}()
	if err := s.Shutdown(grace); err != nil && runErr == nil {
		runErr = err
	}
	return runErr
}

// EndDrain ends Run's drain now, as if its grace period were over: the
// exchanges still in flight are closed (a second SIGTERM). Before the
// drain began, it makes the drain, when it comes, end at once.
func (s *Sidecar) EndDrain() { s.endOnce.Do(func() { close(s.endDrain) }) }

// Shutdown drains: it reports not ready, stops accepting, lets in-flight
// exchanges finish until ctx ends, then closes whatever is left (including
// upgraded tunnels). The admin listener stops last. A sidecar that never
// served (Start not called, or failed) has nothing to drain or deregister:
// Shutdown releases what New built (Consul watches, telemetry) and
// returns nil. Either way the sidecar cannot start afterwards.
func (s *Sidecar) Shutdown(ctx context.Context) error {
	s.stop.Do(func() { s.stopErr = s.shutdown(ctx) })
	return s.stopErr
}

func (s *Sidecar) shutdown(ctx context.Context) error {
	defer s.bgStop()
	s.life.Lock()
	s.stopping = true
	servers := s.servers
	s.life.Unlock()
	s.ready.Store(false)
	if len(servers) == 0 {
		// Start binds every listener or none, and registers only after:
		// nothing listens and nothing was registered.
		s.release()
		return nil
	}
	cfg := s.config()
	s.log.Info("draining", "grace", cfg.Shutdown.Grace.String())
	if s.registrar != nil {
		// Not ready first, then out of Consul, then drain: callers stop
		// finding this instance before its listeners close.
		// A drain ended at once (a second signal, a ctx already over)
		// still deregisters: it is bounded on its own (the refresh in
		// progress, then the deregistration, each a third of the TTL at
		// most, 10s), and skipping it leaves the instance listed,
		// passing, until its TTL runs out.
		s.registrar.Refresh()
		if err := s.registrar.Deregister(context.WithoutCancel(ctx)); err != nil {
			s.log.Warn("consul deregistration failed", "error", err.Error())
		} else {
			s.log.Info("deregistered from consul", "id", s.registrar.ID())
		}
	}
	if d := cfg.Shutdown.Delay; d > 0 {
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
	var cutAt atomic.Int64 // monoNow() when the first forced close began
	var tunnelsCut atomic.Int64
	var endedAt atomic.Int64 // monoNow() when ctx ended: the grace over
	defer context.AfterFunc(ctx, func() { endedAt.CompareAndSwap(0, monoNow()) })()
	for _, l := range servers {
		if l.name == "admin" {
			admin = l
			continue
		}
		wg.Add(1)
		go func(l *listener) {
			defer wg.Done()
			if err := l.srv.Shutdown(ctx); err != nil {
				forced.Add(1)
				cutAt.CompareAndSwap(0, monoNow())
				// The grace period is over for tunnels too: cut with
				// the exchanges, they share the report wait that Close
				// may spend.
				tunnelsCut.Add(int64(s.tunnels.closeAll()))
				l.srv.Close() // lets the exchanges it cuts answer: within the report wait
			}
			// Serve may not have begun (a Shutdown right after Start):
			// the port must not stay open for it.
			l.ln.Close()
		}(l)
	}
	wg.Wait()
	// Tunnels are invisible to Shutdown: wait for them to end on their own
	// until the grace period does.
	s.tunnels.waitEmpty(ctx)
	n := int(tunnelsCut.Load()) + s.tunnels.closeAll()
	if admin != nil {
		admin.srv.Close()
		admin.ln.Close()
	}
	s.closeDiscovery()
	if forced.Load() > 0 || n > 0 {
		// The exchanges just cut are still unwinding: their spans and
		// access log lines must be out before ferry's telemetry closes.
		start := cutAt.Load()
		if start == 0 {
			start = monoNow() // only tunnels were cut
		}
		s.awaitReported(time.Duration(monoAdd(start, shutdownbounds.ReportWait) - monoNow()))
	}
	// Exchanges on taken-over connections whose answers went out whole
	// were not cut (closeAll left them): they are still ending, and their
	// reports must be out before telemetry closes, within the same wait.
	start := cutAt.Load()
	if start == 0 {
		start = endedAt.Load()
	}
	if start == 0 {
		start = monoNow()
	}
	s.tunnels.awaitEnding(monoAdd(start, shutdownbounds.ReportWait))
	s.closeTelemetry()
	if forced.Load() > 0 || n > 0 {
		if s.endedEarly.Load() {
			s.log.Warn("drain ended before its grace period was over; closed the exchanges still open", "tunnels", n)
			return fmt.Errorf("drain: ended before its grace period, with exchanges in flight")
		}
		s.log.Warn("drain grace ended with exchanges still open; closed them", "tunnels", n)
		return fmt.Errorf("drain: grace period ended with exchanges in flight")
	}
	s.log.Info("drained")
	return nil
}

// release stops what New started: the generation in force (its Consul
// watches and connection pools), the registration's Consul client, and
// telemetry, flushed.
func (s *Sidecar) release() {
	s.closeDiscovery()
	s.closeTelemetry()
}

// closeDiscovery closes the generation in force and the registration's
// Consul client.
func (s *Sidecar) closeDiscovery() {
	s.state.Load().close()
	if s.regConsul != nil {
		s.regConsul.Close()
	}
}

// awaitReported waits, at most d, until no exchange is in flight as
// telemetry counts them: each one's span ended and access log line
// written.
func (s *Sidecar) awaitReported(d time.Duration) {
	end := time.Now().Add(d)
	for s.tel.Metrics().InFlight() > 0 && time.Now().Before(end) {
		time.Sleep(5 * time.Millisecond)
	}
}

// closeTelemetry flushes the spans still queued, within
// shutdownbounds.TelemetryFlush.
func (s *Sidecar) closeTelemetry() {
	if !s.ownTel {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), shutdownbounds.TelemetryFlush)
	defer cancel()
	if err := s.tel.Shutdown(ctx); err != nil {
		s.log.Warn("telemetry shutdown", "error", err.Error())
	}
}

// ReopenAccessLog has the access log file, when the access log is one,
// opened again now if logrotate moved it (ferry also notices within about
// a second on its own). cmd/ferry calls it on SIGHUP. It never waits.
func (s *Sidecar) ReopenAccessLog() { s.tel.ReopenAccessLog() }

// allUpstreams lists the upstreams of the generation in force.
func (s *Sidecar) allUpstreams() []*upstream { return s.state.Load().all() }

// endpoints yields every endpoint the balancers of the generation in force
// hold, with its service and its breaker's state: what metrics report on.
func (s *Sidecar) endpoints(yield func(service, addr string, state telemetry.BreakerState) bool) {
	for _, up := range s.allUpstreams() {
		for _, ep := range up.res.Status() {
			var state telemetry.BreakerState
			if ep.Breaker != resilience.BreakerDisabled {
				state = breakerLabel(ep.Breaker)
			}
			if !yield(up.name, ep.Addr, state) {
				return
			}
		}
	}
}

// consulSnapshots yields, for ferry_consul_snapshot_age_seconds, each
// service of the config in force whose Consul watch has answered, with
// when Consul last confirmed its endpoints (zero while current), as
// /upstreams reads them.
func (s *Sidecar) consulSnapshots(yield func(service string, confirmed time.Time) bool) {
	gen := s.state.Load()
	if gen == nil || gen.consul == nil {
		return
	}
	for _, st := range gen.consul.Stats() {
		if st.LastContact.IsZero() {
			continue // no answer yet: nothing has aged
		}
		var confirmed time.Time
		if st.Failing {
			confirmed = st.LastContact
		}
		if !yield(st.Name, confirmed) {
			return
		}
	}
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
