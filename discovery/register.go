package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrymesh/ferry/internal/dialhost"
)

// Defaults of Registration.
const (
	// DefaultRegisterTTL is the TTL of ferry's readiness check; ferry
	// refreshes it every TTL/3.
	DefaultRegisterTTL = 10 * time.Second
	// DefaultDeregisterCriticalAfter removes a registration whose check has
	// been critical this long (ferry died without deregistering). Consul
	// reaps at most every 30s and never sooner than 1m.
	DefaultDeregisterCriticalAfter = time.Minute
	// MinDeregisterCriticalAfter is the shortest deregister_critical_service_after
	// Consul honours: its agent raises a shorter one to 1m (logging "check
	// has deregister interval below minimum"), so ferry refuses it rather
	// than let the config promise a removal Consul will not make.
	MinDeregisterCriticalAfter = time.Minute
)

// Registration is the `register:` section of ferry's config: the local
// service ferry sits beside, as Consul should list it.
type Registration struct {
	// Name is the Consul service name. Required.
	Name string `yaml:"name" json:"name"`
	// ID is the instance ID, unique on the agent. Empty:
	// <name>-<hostname>-<port>.
	ID string `yaml:"id,omitempty" json:"id,omitempty"`
	// Address other services dial: an IP address (IPv6 without brackets)
	// or a host name, no port. Empty: the agent's node address.
	Address string `yaml:"address,omitempty" json:"address,omitempty"`
	// Port is ferry's inbound port. Required, 1-65535.
	Port int `yaml:"port" json:"port"`
	// Tags and Meta are passed to Consul as they are.
	Tags []string          `yaml:"tags,omitempty" json:"tags,omitempty"`
	Meta map[string]string `yaml:"meta,omitempty" json:"meta,omitempty"`
	// TTL of the readiness check. Zero: DefaultRegisterTTL (10s). At least 1s.
	TTL time.Duration `yaml:"ttl,omitempty" json:"ttl,omitempty"`
	// DeregisterCriticalServiceAfter: zero means DefaultDeregisterCriticalAfter
	// (1m). At least MinDeregisterCriticalAfter (1m); Consul removes the
	// service up to 30s after it, when its reaper next runs.
	DeregisterCriticalServiceAfter time.Duration `yaml:"deregister_critical_service_after,omitempty" json:"deregister_critical_service_after,omitempty"`
}

// Validate reports the first bad field, naming its key (e.g.
// "register.port: 0 is not a port").
func (r Registration) Validate() error {
	if err := validateServiceName("register.name", r.Name); err != nil {
		return err
	}
	if r.ID != "" {
		if err := validateServiceName("register.id", r.ID); err != nil {
			return err
		}
	}
	if r.Address != "" && !dialhost.Valid(r.Address) {
		// Consul keeps any string, and every watcher (ferry's endpointsOf
		// among them) leaves such an instance out: nothing could dial it.
		return fmt.Errorf("register.address: %q is not an IP address or host name (no brackets, port or scheme: the port is register.port)", r.Address)
	}
	if r.Port < 1 || r.Port > 65535 {
		return fmt.Errorf("register.port: %d is not a port (1-65535)", r.Port)
	}
	for i, t := range r.Tags {
		if t == "" {
			return fmt.Errorf("register.tags[%d]: empty tag", i)
		}
	}
	if err := validateMeta(r.Meta); err != nil {
		return err
	}
	if r.TTL != 0 && r.TTL < time.Second {
		return fmt.Errorf("register.ttl: %s is below 1s", r.TTL)
	}
	if r.DeregisterCriticalServiceAfter < 0 {
		return fmt.Errorf("register.deregister_critical_service_after: %s must not be negative", r.DeregisterCriticalServiceAfter)
	}
	if r.DeregisterCriticalServiceAfter > 0 && r.DeregisterCriticalServiceAfter < MinDeregisterCriticalAfter {
		return fmt.Errorf("register.deregister_critical_service_after: %s is below Consul's minimum of 1m (Consul would deregister only after 1m, checking every 30s); write 1m or more", r.DeregisterCriticalServiceAfter)
	}
	return nil
}

// withDefaults fills the zero fields.
func (r Registration) withDefaults() Registration {
	if r.ID == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "ferry"
		}
		r.ID = r.Name + "-" + host + "-" + strconv.Itoa(r.Port)
	}
	if r.TTL == 0 {
		r.TTL = DefaultRegisterTTL
	}
	if r.DeregisterCriticalServiceAfter == 0 {
		r.DeregisterCriticalServiceAfter = DefaultDeregisterCriticalAfter
	}
	r.Tags = slices.Clone(r.Tags)
	r.Meta = maps.Clone(r.Meta)
	return r
}

// failingReminder is how often a registration that keeps failing with
// the same error is logged again.
const failingReminder = 5 * time.Minute

// Registrar keeps the local service registered in the local Consul agent
// with a TTL check that mirrors a readiness function. Run keeps it up to
// date (and registers again if the agent forgot it, as after an agent
// restart); Deregister removes it for good.
type Registrar struct {
	agent   *consulClient
	reg     Registration
	checkID string
	ready   func() error
	log     *slog.Logger
	backoff Backoff
	scrub   func(string) string
	poke    chan struct{}
	// deregisterWaits, when set, is called by Deregister as it starts
	// waiting for the call to the agent in progress (a test seam).
	deregisterWaits func()
	// now and after are Run's clock: time.Now and time.After (a test
	// seam).
	now   func() time.Time
	after func(time.Duration) <-chan time.Time

	mu        sync.Mutex // guards the fields below
	done      bool       // Deregister was called
	cancelRun context.CancelFunc

	syncMu     sync.Mutex // one conversation with the agent at a time
	registered bool       // guarded by syncMu
	// unanswered: the last registration sent got no answer (timed out,
	// connection lost); the agent may still apply it. Guarded by syncMu.
	unanswered bool
	// regToken is the ACL token the registration in force went with.
	// Guarded by syncMu.
	regToken string

	registrations atomic.Uint64
	updates       atomic.Uint64
	errors        atomic.Uint64
	lastStatus    atomic.Pointer[string]
}

// NewRegistrar returns a registrar for reg on the resolver's agent. ready
// reports ferry's and the app's readiness: nil is passing, an error is
// critical with the error as the check's output. Nothing is sent until Run.
func (c *Consul) NewRegistrar(reg Registration, ready func() error) (*Registrar, error) {
	if err := reg.Validate(); err != nil {
		return nil, err
	}
	if ready == nil {
		return nil, fmt.Errorf("register: nil readiness function")
	}
	reg = reg.withDefaults()
	return &Registrar{
		agent:   c.client,
		reg:     reg,
		checkID: "ferry-ready:" + reg.ID,
		ready:   ready,
		log:     c.log,
		backoff: c.backoff,
		scrub:   c.client.token.scrub,
		poke:    make(chan struct{}, 1),
		now:     time.Now,
		after:   time.After,
	}, nil
}

// ID is the instance ID registered in Consul.
func (r *Registrar) ID() string { return r.reg.ID }

// CheckID is the ID of the TTL readiness check.
func (r *Registrar) CheckID() string { return r.checkID }

// Refresh asks Run to report readiness now rather than at the next tick,
// for example right after ferry marks itself not ready. It never blocks.
func (r *Registrar) Refresh() {
	select {
	case r.poke <- struct{}{}:
	default:
	}
}

// RecheckIfPassing refreshes the check at once (as Refresh) when it was
// last reported passing, and does nothing otherwise: for a sign that the
// check may be failing now (the app refused a connection), which may come
// with every request while it is down. The first sign gets the check
// critical without waiting for its next refresh (up to TTL/3 later), so
// Consul stops sending callers to an app that is gone; the signs that
// follow cost nothing, and the regular refreshes find the app back.
func (r *Registrar) RecheckIfPassing() {
	if s := r.lastStatus.Load(); s != nil && *s == consulPassing {
		r.Refresh()
	}
}

// Run registers the service and refreshes its check every TTL/3, counted
// from the start of the last refresh (or on Refresh), until ctx ends or
// Deregister is called. When the agent does not know the check any more it
// registers the service again. Failures are retried with backoff, no later
// than the next refresh is due; Run returns ctx.Err(), or nil after
// Deregister.
//
// The end of ctx cuts a call to the agent short; Deregister does not: it
// lets the call be answered first (see Deregister).
func (r *Registrar) Run(ctx context.Context) error {
	calls := ctx
	r.mu.Lock()
	if r.done {
		r.mu.Unlock()
		return nil
	}
	if r.cancelRun != nil {
		r.mu.Unlock()
		return fmt.Errorf("register %q: Run already running", r.reg.ID)
	}
	ctx, cancel := context.WithCancel(ctx)
	r.cancelRun = cancel
	r.mu.Unlock()
	defer func() {
		cancel()
		r.mu.Lock()
		r.cancelRun = nil
		r.mu.Unlock()
	}()

	interval := r.reg.TTL / 3
	failures := 0
	// A failing episode is logged when it starts, when its error changes
	// and every failingReminder while it lasts, and its end once: not at
	// every retry (a token without service:write fails every few
	// seconds, each time alike).
	var warned string
	var warnedAt time.Time
	for {
		// The next refresh is due interval after this one starts, not
		// after it ends: a call that takes long (up to callTimeout, as
		// long as the interval) would otherwise push the next one as
		// much later, and the agent could see two updates (the first at
		// the start of a slow call, the next at the end of the following
		// one) a whole TTL apart. Due this way, they are at most
		// interval plus one call, two thirds of the TTL, apart. A call
		// that took the whole interval is followed by the next at once.
		start := r.now()
		err := r.sync(ctx, calls)
		wait := max(interval-r.now().Sub(start), 0)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			failures++
			// Never later than the refresh due: once the agent is back
			// (restarted, no longer overloaded), the check must be
			// registered or refreshed again before its TTL runs out, not
			// a whole backoff later. A healthy registrar already sends as
			// much.
			wait = min(r.backoff(failures), wait)
			if msg := err.Error(); msg != warned || r.now().Sub(warnedAt) >= failingReminder {
				r.log.Warn("consul registration failing", "id", r.reg.ID, "err", msg, "attempts", failures)
				warned, warnedAt = msg, r.now()
			}
		} else {
			if failures > 0 {
				r.log.Info("consul registration recovered", "id", r.reg.ID, "failed_attempts", failures)
			}
			failures, warned = 0, ""
		}
		select {
		case <-ctx.Done():
		case <-r.after(wait):
		case <-r.poke:
		}
		if ctx.Err() != nil {
			break
		}
	}
	r.mu.Lock()
	done := r.done
	r.mu.Unlock()
	if done {
		return nil
	}
	return ctx.Err()
}

// sync reports readiness to the agent, registering first when needed. ctx
// is Run's, which Deregister ends: no call starts after it ended. A call
// in progress is bound to calls (Run's own context) and its timeout only,
// so that Deregister, which waits for it, knows whether a registration
// landed before it deregisters.
func (r *Registrar) sync(ctx, calls context.Context) error {
	r.syncMu.Lock()
	defer r.syncMu.Unlock()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	status, output := r.readiness()
	r.lastStatus.Store(&status)
	callCtx, cancel := context.WithTimeout(calls, r.callTimeout())
	defer cancel()
	if r.registered && r.tokenChanged() {
		r.log.Info("consul token changed since the registration, registering again with the new one", "id", r.reg.ID)
		r.registered = false
	}
	if r.registered {
		err := r.agent.updateTTL(callCtx, r.checkID, output, status)
		if err == nil {
			r.updates.Add(1)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.errors.Add(1)
		if callCtx.Err() != nil {
			// The agent did not answer in time: an error like any
			// other, but registering again now would only time out too.
			return fmt.Errorf("update check %q: no answer within %s", r.checkID, r.callTimeout())
		}
		// The agent may have forgotten us (restart, -dev agent, manual
		// deregistration): registering again is idempotent.
		r.log.Info("consul check update failed, registering again", "id", r.reg.ID, "err", r.scrub(err.Error()))
		r.registered = false
	}
	if ctx.Err() != nil {
		return ctx.Err() // Deregister came during the update: no registering again
	}
	if err := r.register(callCtx, status, output); err != nil {
		r.errors.Add(1)
		return err
	}
	r.registered = true
	r.registrations.Add(1)
	// Once per registration that takes (the first, and each after the
	// agent forgot ferry or the token changed), not per refresh.
	// An address left out is the agent's.
	addr := r.reg.Address
	if addr == "" {
		addr = "the agent's"
	}
	r.log.Info("registered with consul", "id", r.reg.ID, "service", r.reg.Name, "address", addr, "port", r.reg.Port,
		"check", r.checkID, "ttl", r.reg.TTL.String())
	return nil
}

// neverSent reports whether err is a failure to connect to the agent (a
// refused connection, an unreachable host, a name that does not resolve):
// the request never left, so the agent cannot apply it later.
func neverSent(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

func (r *Registrar) register(ctx context.Context, status, output string) error {
	// The agent keeps the registration's token and syncs the service to
	// the catalog with it: it must be the file's current one, not one a
	// rotation since the last look (at most a second ago) replaced.
	r.agent.token.readNow()
	token, err := r.agent.registerService(ctx, r.registration(status, output))
	var se consulStatusError
	r.unanswered = err != nil && !errors.As(err, &se) && !neverSent(err)
	if err != nil {
		return fmt.Errorf("register %q: %s", r.reg.ID, r.scrub(err.Error()))
	}
	r.regToken = token
	// A registration carries no check output, and the agent keeps the
	// status and output of a check it already has when the service is
	// registered again (a new token, an update refused for another reason
	// than a forgotten check): the first update sets both, passing or not.
	if err := r.agent.updateTTL(ctx, r.checkID, output, status); err != nil {
		return fmt.Errorf("register %q: first check update: %s", r.reg.ID, r.scrub(err.Error()))
	}
	return nil
}

// registration is what register sends: the service and its TTL check in
// status.
func (r *Registrar) registration(status, output string) *consulRegistration {
	return &consulRegistration{
		ID:      r.reg.ID,
		Name:    r.reg.Name,
		Address: r.reg.Address,
		Port:    r.reg.Port,
		Tags:    r.reg.Tags,
		Meta:    r.reg.Meta,
		Check: &consulCheck{
			CheckID:                        r.checkID,
			Name:                           "ferry readiness",
			TTL:                            r.reg.TTL.String(),
			Status:                         status,
			Notes:                          output,
			DeregisterCriticalServiceAfter: r.reg.DeregisterCriticalServiceAfter.String(),
		},
	}
}

// tokenChanged reports whether the token requests go with now (a token
// file rotated) is not the one the registration went with. The agent syncs
// the service and its check to the catalog, and removes them from it, with
// the token of the registration: once that token is revoked, check updates
// the agent accepts with the new token never reach the catalog, nor does a
// deregistration, and ferry stays listed as it was. Registering again
// hands the agent the new token. syncMu is held.
func (r *Registrar) tokenChanged() bool {
	return r.agent.token.get() != r.regToken
}

// callTimeout bounds each call to the agent. An agent that takes a request
// and never answers must not hold the refreshes up past the TTL, nor a
// shutdown's drain: each call gets a third of the TTL at most.
func (r *Registrar) callTimeout() time.Duration {
	return min(max(r.reg.TTL/3, 200*time.Millisecond), 10*time.Second)
}

// readiness calls the readiness function, turning a panic into a critical
// status rather than a crash.
func (r *Registrar) readiness() (status, output string) {
	defer func() {
		if p := recover(); p != nil {
			status, output = consulCritical, fmt.Sprintf("readiness check panicked: %v", p)
		}
	}()
	if err := r.ready(); err != nil {
		return consulCritical, "not ready: " + err.Error()
	}
	return consulPassing, "ready"
}

// Deregister stops Run and removes the service (and its check) from the
// agent; Run will not register it again. Call it on SIGTERM after marking
// ferry not ready and before draining. A service the agent does not know is
// not an error.
//
// A call to the agent that Run has in progress (a registration, a check
// update) is waited for, not cut short: a registration cut short by the
// caller can still be applied by the agent after the deregistration,
// leaving ferry listed after it exited. Waited for, it is answered (and
// applied) before the deregistration is sent. Each call gets callTimeout
// (a third of the TTL, at most 10s), so a hung agent holds Deregister two
// call timeouts at most, never the whole drain. A registration the agent
// left unanswered within its timeout may still be applied later; its check
// then goes critical after the TTL and Consul removes it after
// deregister_critical_service_after, and Deregister logs it.
//
// When the ACL token changed (token file rotated) since the registration,
// the token file read afresh as Deregister starts, the service is
// registered again with the token in force, critical,
// before it is deregistered: the agent removes it from the catalog with the
// token it was registered with, which may be revoked by then. Both calls
// share one call timeout.
func (r *Registrar) Deregister(ctx context.Context) error {
	r.mu.Lock()
	r.done = true
	if r.cancelRun != nil {
		r.cancelRun()
	}
	r.mu.Unlock()
	if r.deregisterWaits != nil {
		r.deregisterWaits()
	}
	r.syncMu.Lock()
	defer r.syncMu.Unlock()
	if r.unanswered {
		r.log.Warn("consul registration sent before deregistering got no answer; the agent may still apply it, then its TTL check expires",
			"id", r.reg.ID, "ttl", r.reg.TTL.String(), "deregister_critical_service_after", r.reg.DeregisterCriticalServiceAfter.String())
	}
	ctx, cancel := context.WithTimeout(ctx, r.callTimeout())
	defer cancel()
	// The file is read afresh: a token rotated (and the old one revoked)
	// since the last look, less than a second before a shutdown, would
	// otherwise be missed, and the catalog keep ferry listed.
	r.agent.token.readNow()
	if r.registered && r.tokenChanged() {
		// The agent would remove the service from the catalog with the
		// token it was registered with, which may be revoked by now: it
		// gets the token in force first, within the same call timeout.
		if _, err := r.agent.registerService(ctx, r.registration(consulCritical, "deregistering")); err != nil {
			r.log.Warn("consul token changed since the registration, and registering again with the new one before deregistering failed; the catalog may keep the service",
				"id", r.reg.ID, "err", r.scrub(err.Error()))
		}
	}
	r.registered = false
	err := r.agent.deregisterService(ctx, r.reg.ID)
	var se consulStatusError
	if errors.As(err, &se) && se.Code == http.StatusNotFound {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("deregister %q: %s", r.reg.ID, r.scrub(err.Error()))
	}
	return nil
}

// RegistrarStats are the registrar's counters for admin and metrics.
type RegistrarStats struct {
	ID            string `json:"id"`
	Registrations uint64 `json:"registrations"`
	Updates       uint64 `json:"updates"`
	Errors        uint64 `json:"errors"`
	// Status is the check status last sent: "passing" or "critical".
	Status string `json:"status,omitempty"`
}

// Stats returns the registrar's counters.
func (r *Registrar) Stats() RegistrarStats {
	st := RegistrarStats{
		ID:            r.reg.ID,
		Registrations: r.registrations.Load(),
		Updates:       r.updates.Load(),
		Errors:        r.errors.Load(),
	}
	if s := r.lastStatus.Load(); s != nil {
		st.Status = *s
	}
	return st
}

// Consul's limits on a service's meta, as its agent checks them at every
// registration (agent/structs): a registration that breaks one would be
// refused again and again, so the config is refused instead, naming the
// key.
const (
	metaMaxPairs     = 64
	metaKeyMaxLen    = 128
	metaValueMaxLen  = 512
	metaReservedPfx  = "consul-"
	metaKeyCharsDesc = "letters, digits, '-' and '_'"
)

func validateMeta(meta map[string]string) error {
	k, err := CheckMeta(meta)
	switch {
	case err == nil:
		return nil
	case k == "":
		return fmt.Errorf("register.meta: %w", err)
	case !metaKeyChars(k):
		return fmt.Errorf("register.meta[%q]: %w", k, err)
	}
	return fmt.Errorf("register.meta.%s: %w", k, err)
}

// CheckMeta reports the first way (keys in order) meta breaks Consul's
// limits on a service's meta, and the key it concerns ("" for the whole).
func CheckMeta(meta map[string]string) (key string, err error) {
	if len(meta) > metaMaxPairs {
		return "", fmt.Errorf("%d pairs, Consul allows at most %d", len(meta), metaMaxPairs)
	}
	for _, k := range slices.Sorted(maps.Keys(meta)) {
		switch v := meta[k]; {
		case k == "":
			return "", errors.New("empty key")
		case !metaKeyChars(k):
			return k, fmt.Errorf("Consul allows only %s in a meta key", metaKeyCharsDesc)
		case len(k) > metaKeyMaxLen:
			return k, fmt.Errorf("the key is %d characters long, Consul allows at most %d", len(k), metaKeyMaxLen)
		case strings.HasPrefix(k, metaReservedPfx):
			return k, fmt.Errorf("Consul keeps keys starting %q for itself", metaReservedPfx)
		case len(v) > metaValueMaxLen:
			return k, fmt.Errorf("the value is %d characters long, Consul allows at most %d", len(v), metaValueMaxLen)
		}
	}
	return "", nil
}

func metaKeyChars(k string) bool {
	for i := 0; i < len(k); i++ {
		if c := k[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
