package sidecar

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync/atomic"
	"time"
)

// ReloadResolveTimeout bounds how long a reload waits for the new
// generation's Consul services to resolve before giving up and keeping the
// config in force.
const ReloadResolveTimeout = 10 * time.Second

// reloadResolveTimeout is ReloadResolveTimeout; a variable for tests.
var reloadResolveTimeout = ReloadResolveTimeout

// Reload applies a new config: routes, services, endpoints, timeouts and the
// request body limit. In-flight exchanges (downloads, streams, tunnels) keep
// running on the generation they started with. A service whose settings
// did not change keeps its connection pools and all its resilience state;
// one whose settings changed gets new breakers, but its in-flight count
// and retry budget carry on. A config that changes what only a restart
// can (listeners, server limits, registration) is rejected whole, and so
// is one whose Consul services do not resolve in time: the config in
// force stays.
func (s *Sidecar) Reload(ctx context.Context, cfg *Config) error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	s.life.Lock()
	stopping := s.stopping
	s.life.Unlock()
	if stopping {
		return errShutDown
	}
	old := s.state.Load()
	if errs := restartOnly(old.cfg, cfg); len(errs) > 0 {
		return errs
	}
	st, err := buildState(cfg, s.resolver, old, s.log, s.upstreamOptions())
	if err != nil {
		return err
	}
	carried := st.carryPools(old)
	wctx, cancel := context.WithTimeout(ctx, reloadResolveTimeout)
	defer cancel()
	if err := st.waitResolved(wctx); err != nil {
		st.closeExcept(carried)
		return fmt.Errorf("%w; keeping the config in force", err)
	}
	s.life.Lock()
	if s.stopping {
		// Shutdown began while this generation resolved: it closes the
		// generation in force, and this one must not outlive it.
		s.life.Unlock()
		st.closeExcept(carried)
		return errShutDown
	}
	// Every balancer gets the new generation's endpoints before its table
	// takes requests; a balancer shared with the generation in force
	// (carried) is fed by the new one from now on.
	for _, up := range st.all() {
		up.takeFeed()
	}
	st.succeed(old)
	st.run(s.tel.Metrics())
	s.state.Store(st)
	if s.outbound != nil {
		s.outbound.table.Store(st.outbound)
	}
	if s.inbound != nil {
		s.inbound.table.Store(st.inbound)
	}
	s.life.Unlock()
	old.closeExcept(carried)
	s.log.Info("config reloaded", "services", len(cfg.Services))
	return nil
}

// ReloadFile reads, validates and applies a config file (SIGHUP). Like a
// change the watcher sees, the file applies only once two reads of it,
// the settle interval apart, give the same bytes: one still being written
// is read again every settle interval until it does, for up to
// configSettleReads reads, and refused if it never does. The content
// counts as seen by WatchConfigFile, whether it applies or not; a content
// rejected for a transient reason is tried again (see tryFileLocked).
func (s *Sidecar) ReloadFile(ctx context.Context, path string) error {
	data, err := s.readSettled(ctx, path)
	if err != nil {
		if ctx.Err() != nil {
			// Its wait for the file to settle ended: no verdict on it.
			return fmt.Errorf("%w (%s was still being read)", ErrReloadAbandoned, path)
		}
		// Counted as rejected, the gauge at 0, until the file reads
		// again: as a content tried (tryFileLocked) or, by the watcher,
		// as fileTried (see WatchConfigFile).
		s.fileMu.Lock()
		s.readFailed = true
		s.readFails++
		s.tel.Metrics().ConfigReload(false)
		s.fileMu.Unlock()
		return err
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		err = fmt.Errorf("config %s:\n%w", path, err)
	}
	s.fileMu.Lock()
	defer s.fileMu.Unlock()
	return s.tryFileLocked(ctx, path, data, cfg, err)
}

// WatchConfigFile reloads path whenever its content differs from the last
// content tried, by it or by ReloadFile (SIGHUP), starting from loaded (the
// bytes the config in force came from), checking every interval. A changed
// content is tried only once it has read the same twice, settle apart: a
// file rewritten in place is never applied half-written, and a change
// still being written is logged once and waited for, read every settle
// interval until it settles. A poll survives editors' rename-on-save and
// Kubernetes' ConfigMap symlink swaps alike; those replace the file whole
// and apply one settle interval after the poll that sees them. A bad new
// config is logged and the one in force kept; it is not tried again until
// the file changes, unless it was rejected for a transient reason. A file
// that cannot be read is logged, once until it reads again or fails
// differently. It returns when ctx ends.
func (s *Sidecar) WatchConfigFile(ctx context.Context, path string, interval time.Duration, loaded []byte) {
	s.fileMu.Lock()
	if s.fileTried == nil {
		s.fileTried, s.triedOK = loaded, true
	}
	s.fileMu.Unlock()
	var readErr string // the read error last logged; "" while the file reads
	var ch fileChange  // a changed content read, not yet settled
	for wait := interval; ; {
		if !s.waitFile(ctx, wait) {
			return
		}
		wait = interval
		// A SIGHUP whose read fails after this read began says more of
		// the file than this read does (see readFailed below).
		s.fileMu.Lock()
		fails := s.readFails
		// A try that comes after this read began (a SIGHUP's) may have
		// applied a newer content than the one read here.
		tries := s.retryGen
		s.fileMu.Unlock()
		cur, writing, err := readWriters(path)
		if h := testHookWatchRead.Load(); h != nil {
			(*h)(cur)
		}
		if err != nil {
			ch = fileChange{} // what reads next must settle on its own
			// Logged once per error, not once per poll.
			if msg := err.Error(); msg != readErr {
				readErr = msg
				s.log.Error("config file unreadable; keeping the config in force and watching it", "file", path, "error", msg)
			}
			continue
		}
		if readErr != "" {
			readErr = ""
			s.log.Info("config file readable again", "file", path)
		}
		s.fileMu.Lock()
		if bytes.Equal(cur, s.fileTried) {
			if s.readFailed && s.readFails == fails {
				// A SIGHUP that could not read the file set
				// ferry_config_last_reload_successful to 0; the file
				// reads again as the content last tried, so the gauge
				// says again what became of that content. Nothing is
				// tried, nor counted. (A read that began before the
				// SIGHUP's failed one is no "again": the next poll's is.)
				s.readFailed = false
				s.tel.Metrics().SetLastReloadSuccessful(s.triedOK)
			}
			s.fileMu.Unlock()
			ch.back(s.log, path)
			continue
		}
		if s.retryGen != tries {
			// The file was tried since this read began: what it read may
			// be older than the content in force. Read it again.
			s.fileMu.Unlock()
			ch = fileChange{}
			wait = s.settle
			continue
		}
		if !ch.settled(cur) || writing {
			s.fileMu.Unlock()
			ch.see(cur, writing, s.log, path, s.settle)
			wait = s.settle
			continue
		}
		ch.apply(s.log, path)
		cfg, err := ParseConfig(cur)
		err = s.tryFileLocked(ctx, path, cur, cfg, err)
		s.fileMu.Unlock()
		switch {
		case errors.Is(err, ErrReloadAbandoned):
			s.log.Info("config change not applied: ferry is stopping", "file", path, "reason", err.Error())
		case err != nil:
			s.log.Error("config change rejected; keeping the config in force", "file", path, "error", err.Error())
		}
	}
}

// testHookWatchRead, set by tests only, runs in WatchConfigFile after each
// read of the file, before the read is compared with the content tried.
var testHookWatchRead atomic.Pointer[func(cur []byte)]

// reloadRetryMin and reloadRetryMax bound the wait before a config file
// content rejected for a transient reason is tried again: 1s, doubling up
// to 30s. Variables for tests.
var reloadRetryMin, reloadRetryMax = time.Second, 30 * time.Second

// errUnresolved marks a reload rejected because its services did not
// resolve in time (Consul unreachable, say): the same config may apply
// later, so it is retried.
var errUnresolved = errors.New("services not resolved")

// ErrReloadAbandoned marks a reload of the config file that ferry's stop
// cut short (the context of ReloadFile or WatchConfigFile ended, or
// Shutdown began, while it waited for the file to settle or for its
// services to resolve). It is no verdict on the file: it is neither
// counted as a rejection nor tried again, and is logged as such.
var ErrReloadAbandoned = errors.New("reload abandoned: ferry is stopping")

// tryFileLocked applies data, the content of path (cfg parsed from it, or
// the error that refused it), and records it as the content last tried.
// s.fileMu is held, so the file's reloads (watcher, SIGHUP, retries) are
// tried one at a time, in order.
//
// A content rejected for a transient reason (its services did not
// resolve) is tried again, after 1s, doubling to 30s, for as long as the
// file holds it: the backoff starts over on a new content or once it
// applies, and a new content replaces the retry. An invalid config, or
// one that needs a restart, is not tried again until the file changes.
// The returned error says which.
func (s *Sidecar) tryFileLocked(ctx context.Context, path string, data []byte, cfg *Config, err error) error {
	if !bytes.Equal(data, s.fileTried) {
		s.retryDelay = 0
	}
	s.fileTried = data
	s.retryGen++ // a retry already planned is superseded by this try
	if err == nil {
		err = s.Reload(ctx, cfg)
	}
	if errors.Is(err, errShutDown) || errors.Is(err, errUnresolved) && ctx.Err() != nil {
		// Not a verdict on the file: ferry stopped before the reload
		// could apply (its wait for the services ended with ctx, not
		// with the resolve timeout).
		return fmt.Errorf("%w: %w", ErrReloadAbandoned, err)
	}
	s.tel.Metrics().ConfigReload(err == nil)
	s.triedOK, s.readFailed = err == nil, false
	if err == nil {
		s.retryDelay = 0
		return nil
	}
	if !errors.Is(err, errUnresolved) {
		s.retryDelay = 0
		return fmt.Errorf("%w; not tried again until the file changes", err)
	}
	s.retryDelay = min(max(2*s.retryDelay, reloadRetryMin), reloadRetryMax)
	gen, delay := s.retryGen, s.retryDelay
	go func() {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-s.bg.Done(): // shut down
		case <-t.C:
			s.retryFile(ctx, path, data, gen)
		}
	}()
	return fmt.Errorf("%w; retried in %s while the file holds this content", err, delay)
}

// retryFile tries data, the content of path a reload rejected for a
// transient reason, again, unless another try came since (gen) or the
// file no longer holds it (its new content is tried as a change).
func (s *Sidecar) retryFile(ctx context.Context, path string, data []byte, gen uint64) {
	cur, cfg, err := readConfigFile(path)
	s.fileMu.Lock()
	defer s.fileMu.Unlock()
	if gen != s.retryGen || !bytes.Equal(cur, data) {
		return
	}
	switch err := s.tryFileLocked(ctx, path, data, cfg, err); {
	case errors.Is(err, ErrReloadAbandoned):
		s.log.Info("config change not applied: ferry is stopping", "file", path, "reason", err.Error())
		return
	case err != nil:
		s.log.Error("config change rejected again; keeping the config in force", "file", path, "error", err.Error())
		return
	}
	s.log.Info("config change applied on a retry", "file", path)
}

// restartOnly reports changes a running ferry cannot apply.
func restartOnly(old, cfg *Config) ConfigErrors {
	var errs ConfigErrors
	need := func(path string, a, b any) {
		if !reflect.DeepEqual(a, b) {
			errs = append(errs, &ConfigError{Path: path, Msg: fmt.Sprintf("changing it needs a restart (in force: %v, new: %v)", a, b)})
		}
	}
	need("admin.listen", old.Admin.Listen, cfg.Admin.Listen)
	listen := func(o *OutboundConfig) any {
		if o == nil {
			return "none"
		}
		return o.Listen
	}
	need("outbound.listen", listen(old.Outbound), listen(cfg.Outbound))
	inListen := func(i *InboundConfig) any {
		if i == nil {
			return "none"
		}
		return i.Listen
	}
	need("inbound.listen", inListen(old.Inbound), inListen(cfg.Inbound))
	need("limits.max_header_bytes", old.Limits.MaxHeaderBytes, cfg.Limits.MaxHeaderBytes)
	need("limits.read_header_timeout", old.Limits.ReadHeaderTimeout, cfg.Limits.ReadHeaderTimeout)
	need("limits.idle_timeout", old.Limits.IdleTimeout, cfg.Limits.IdleTimeout)
	need("limits.max_connections", old.Limits.MaxConnections, cfg.Limits.MaxConnections)
	if !reflect.DeepEqual(old.Telemetry, cfg.Telemetry) {
		errs = append(errs, &ConfigError{Path: "telemetry", Msg: "changing it needs a restart"})
	}
	if !reflect.DeepEqual(old.Register, cfg.Register) {
		errs = append(errs, &ConfigError{Path: "register", Msg: "changing it needs a restart"})
	}
	if old.Register != nil && !reflect.DeepEqual(old.Consul, cfg.Consul) {
		// The registration keeps the Consul client ferry started with.
		errs = append(errs, &ConfigError{Path: "consul", Msg: "changing it needs a restart while register is set (ferry's registration keeps the Consul settings it started with)"})
	}
	return errs
}

// succeed runs as st goes in force in place of old. The resilience state
// of a service st rebuilt (its settings changed) carries on from old's:
// the attempts still running there count in flight, the retry budget's
// window goes on (resilience.Upstream.Replace). The resilience state of
// old's services that st does not share is retired, so that the breakers
// the exchanges still running on old feed no longer show in the breaker
// metrics (whose ferry_breaker_state reads the breakers in force at each
// scrape anyway).
func (st *state) succeed(old *state) {
	pairs := map[*upstream]*upstream{}
	for name, prev := range old.upstreams {
		pairs[prev] = st.upstreams[name]
	}
	if old.app != nil {
		pairs[old.app] = st.app
	}
	for prev, up := range pairs {
		switch {
		case up == nil:
			prev.res.Retire() // the service was dropped
		case up.res != prev.res:
			up.res.Replace(prev.res)
		}
	}
}

// carryPools lets each upstream of st whose service kept its protocol and
// settings reuse the previous generation's connection pools and breaker,
// ejection, in-flight and retry budget state, and returns the set of
// upstreams whose pools are now shared. One whose settings changed starts
// with new breakers; it takes over the rest as it goes in force (succeed).
func (st *state) carryPools(old *state) map[*upstream]bool {
	carried := map[*upstream]bool{}
	pairs := map[*upstream]*upstream{}
	for name, up := range st.upstreams {
		if prev, ok := old.upstreams[name]; ok {
			pairs[up] = prev
		}
	}
	if st.app != nil && old.app != nil {
		pairs[st.app] = old.app
	}
	for up, prev := range pairs {
		if up.sameSettings(prev) {
			// The balancer keeps the endpoints in force (prev's feed)
			// until this generation is resolved and swapped in.
			up.h1, up.h2c, up.peer, up.res, up.feed, up.retired = prev.h1, prev.h2c, prev.peer, prev.res, prev.feed, prev.retired
			carried[up], carried[prev] = true, true
		}
	}
	return carried
}
