package resilience

import (
	"cmp"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Endpoint is one address of a service as the proxy hands it to Update.
type Endpoint struct {
	// Addr is host:port. It identifies the endpoint across updates.
	Addr string
	// Weight is the endpoint's relative share for the weighted and hash
	// balancers; 0 or less means 1.
	Weight int
}

// endpoint is the state kept for one address while it stays in the set.
type endpoint struct {
	addr string
	// inflight is shared with the endpoint of the same address that an
	// earlier Update removed while attempts still ran on it: their Done
	// lands there, and they still load this address.
	inflight *atomic.Int64
	requests atomic.Uint64
	failures atomic.Uint64
	breaker  *breaker // nil when the service has no breaker
	eject    ejectionState
}

// Upstream is the resilience state of one service: its endpoints with their
// breakers and ejection state, the balancer, the concurrency limit and the
// retry budget. All methods are safe for concurrent use; Pick and Done take
// no lock that Update holds.
type Upstream struct {
	name        string
	settings    Settings
	clock       Clock
	systemClock bool // clock is SystemClock (see PickAt)
	observer    Observer
	balancer    Balancer
	maxInFlight int64
	consec5xx   int32
	failStatus  statusSet
	budget      *Budget

	set atomic.Pointer[endpointSet]
	// inflight is shared with the Upstream this one replaced on a reload
	// (InheritInFlight): attempts still running there count here too.
	inflight *atomic.Int64
	rr       atomic.Uint64
	// retired is set once another Upstream is the service's (Retire):
	// breaker changes and ejections are no longer reported.
	retired atomic.Bool

	// mu serialises Update and ejection decisions (never held by Pick).
	mu sync.Mutex
	// gone holds the in-flight counters of removed endpoints with
	// attempts still in flight, by address (under mu).
	gone map[string]*atomic.Int64
}

// Option configures an Upstream.
type Option func(*Upstream)

// WithClock sets the clock for open periods, ejections and the retry
// budget. Default SystemClock.
func WithClock(c Clock) Option { return func(u *Upstream) { u.clock = c } }

// WithObserver sets who hears of breaker changes, ejections and retry
// decisions. Default NopObserver.
func WithObserver(o Observer) Option { return func(u *Upstream) { u.observer = o } }

// NewUpstream returns the resilience state for the service name, with no
// endpoints until Update. The settings are normalised and validated; the
// error wraps every FieldError.
func NewUpstream(name string, s Settings, opts ...Option) (*Upstream, error) {
	s.Normalize()
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("resilience settings of service %q: %w", name, err)
	}
	u := &Upstream{
		name:        name,
		settings:    s,
		clock:       SystemClock{},
		observer:    NopObserver{},
		balancer:    s.Balancer,
		maxInFlight: int64(s.MaxInFlight),
		failStatus:  newStatusSet(s.Breaker.FailureStatuses),
		inflight:    new(atomic.Int64),
	}
	if s.Outlier.Consecutive5xx > 0 {
		u.consec5xx = int32(min(s.Outlier.Consecutive5xx, 1<<30))
	}
	for _, o := range opts {
		o(u)
	}
	if u.clock == nil {
		u.clock = SystemClock{}
	}
	switch u.clock.(type) {
	case SystemClock, *SystemClock:
		u.systemClock = true
	}
	if u.observer == nil {
		u.observer = NopObserver{}
	}
	u.budget = NewBudget(s.Retry.Budget, u.clock)
	u.set.Store(newEndpointSet(nil, u.balancer))
	return u, nil
}

// Name is the service's name.
func (u *Upstream) Name() string { return u.name }

// Settings returns the normalised settings (treat its slices as read-only).
func (u *Upstream) Settings() Settings { return u.settings }

// Budget is the service's retry budget.
func (u *Upstream) Budget() *Budget { return u.budget }

// InFlight is the number of attempts picked and not yet Done.
func (u *Upstream) InFlight() int64 { return u.inflight.Load() }

// InheritInFlight makes u count, in its own and its endpoints' in-flight
// numbers, the attempts running on prev, the Upstream of the same service
// that u replaces (a reload that changed the service's settings builds a
// new one): max_in_flight and the least-loaded pick then see the
// exchanges still running on prev, and those prev admits until it is
// retired. Breaker and ejection state are not inherited. Call it before u
// takes any attempt. Replace does this and more.
func (u *Upstream) InheritInFlight(prev *Upstream) {
	if prev == nil || prev == u {
		return
	}
	prev.mu.Lock()
	counters := make(map[string]*atomic.Int64, len(prev.gone))
	for addr, n := range prev.gone {
		counters[addr] = n
	}
	for _, m := range prev.set.Load().members {
		counters[m.ep.addr] = m.ep.inflight
	}
	prev.mu.Unlock()

	u.mu.Lock()
	defer u.mu.Unlock()
	u.inflight = prev.inflight
	for _, m := range u.set.Load().members {
		if n := counters[m.ep.addr]; n != nil {
			m.ep.inflight = n
			delete(counters, m.ep.addr)
		}
	}
	// The others are taken up by the endpoints a later Update lists (see
	// newEndpoint), as the counters of removed endpoints are.
	if u.gone == nil {
		u.gone = map[string]*atomic.Int64{}
	}
	for addr, n := range counters {
		u.gone[addr] = n
	}
}

// Replace makes u carry on from prev, the Upstream of the same service
// that u replaces as the one in force (a reload that changed the
// service's settings builds a new one):
//
//   - u counts the attempts running on prev in flight (InheritInFlight);
//   - u takes over prev's retry budget, judged by u's budget settings
//     from now on: the requests and retries of the window so far still
//     count, so a reload during a retry storm hands out no new retries,
//     and the retries of exchanges still running on prev spend from the
//     same budget;
//   - prev is retired (Retire).
//
// Breaker and ejection state are not carried over: the settings that
// decide them changed. Call it once, as u goes in force, before u takes
// any attempt.
func (u *Upstream) Replace(prev *Upstream) {
	if prev == nil || prev == u {
		return
	}
	u.InheritInFlight(prev)
	prev.budget.adopt(u.settings.Retry.Budget)
	u.budget = prev.budget
	prev.Retire()
}

// Retire marks u as no longer the service's state: a reload rebuilt the
// service's Upstream (its settings changed) or dropped the service.
// Attempts still running on u finish as before, their outcomes feeding
// u's breakers and outlier detection, but the Observer hears of no more
// breaker change or ejection of u's: those no longer describe the
// service, whose Upstream in force (if any) reports its own. Retry
// decisions are still reported: they are about requests being served.
func (u *Upstream) Retire() { u.retired.Store(true) }

// Update replaces the endpoint set, typically when discovery publishes a new
// snapshot. Endpoints whose address persists keep their breaker, ejection
// and in-flight state; new ones start fresh; removed ones are forgotten
// (attempts still in flight on them finish normally, and count as in
// flight on that address if it is listed again meanwhile). Entries with
// an empty address or a duplicate address are ignored.
func (u *Upstream) Update(eps []Endpoint) {
	u.mu.Lock()
	defer u.mu.Unlock()
	old := u.set.Load()
	known := make(map[string]*endpoint, len(old.members))
	for _, m := range old.members {
		known[m.ep.addr] = m.ep
	}
	members := make([]member, 0, len(eps))
	seen := make(map[string]bool, len(eps))
	for _, e := range eps {
		if e.Addr == "" || seen[e.Addr] {
			continue
		}
		seen[e.Addr] = true
		ep := known[e.Addr]
		if ep == nil {
			ep = u.newEndpoint(e.Addr)
		}
		members = append(members, member{ep: ep, weight: max(e.Weight, 1)})
	}
	for addr, n := range u.gone {
		if n.Load() == 0 || seen[addr] {
			delete(u.gone, addr)
		}
	}
	for _, m := range old.members {
		if !seen[m.ep.addr] && m.ep.inflight.Load() > 0 {
			if u.gone == nil {
				u.gone = map[string]*atomic.Int64{}
			}
			u.gone[m.ep.addr] = m.ep.inflight
		}
	}
	scaleWeights(members)
	u.keepEjectionLimit(members)
	u.set.Store(newEndpointSet(members, u.balancer))
}

// maxWeight bounds a member's weight, so that the weighted balancer's
// running total of any realistic number of endpoints stays far inside
// int64.
const maxWeight = 1 << 32

// scaleWeights divides every weight by the same power of two when the
// largest is above maxWeight (keeping their proportions, each at least 1):
// Consul accepts weights up to the largest int.
func scaleWeights(members []member) {
	top := 0
	for _, m := range members {
		top = max(top, m.weight)
	}
	shift := 0
	for top>>shift > maxWeight {
		shift++
	}
	if shift == 0 {
		return
	}
	for i := range members {
		members[i].weight = max(members[i].weight>>shift, 1)
	}
}

// keepEjectionLimit returns to rotation the ejected members past
// max_ejection_percent of the new set, those whose ejection ends first
// going back first: ejection only checks the limit when it ejects, and a
// set that lost endpoints could otherwise be all (or mostly) ejected. When
// the rest of the new set is behind open breakers, one goes back anyway:
// the first whose breaker admits, when one does (one behind an open
// breaker would put nothing back in rotation).
func (u *Upstream) keepEjectionLimit(members []member) {
	now := u.clock.Now().UnixNano()
	var out []*endpoint
	in := 0 // in rotation: neither ejected nor behind a breaker that admits nothing
	for _, m := range members {
		switch {
		case m.ep.eject.until.Load() > now:
			out = append(out, m.ep)
		case m.ep.breaker.admitsAt(now):
			in++
		}
	}
	if len(out) == 0 {
		return
	}
	slices.SortFunc(out, func(a, b *endpoint) int { return cmp.Compare(a.eject.until.Load(), b.eject.until.Load()) })
	excess := max(len(out)-u.settings.Outlier.maxEjected(len(members)), 0)
	for _, ep := range out[:excess] {
		if ep.breaker.admitsAt(now) {
			in++
		}
		ep.eject.returnAt(now)
	}
	if in > 0 {
		return
	}
	// Never the last one in rotation: the first that can serve goes
	// back, or, when none can, the first (as the limit would return it).
	back := -1
	for i := excess; i < len(out); i++ {
		if out[i].breaker.admitsAt(now) {
			back = i
			break
		}
	}
	if back < 0 && excess == 0 {
		back = 0
	}
	if back >= 0 {
		out[back].eject.returnAt(now)
	}
}

func (u *Upstream) newEndpoint(addr string) *endpoint {
	ep := &endpoint{addr: addr, inflight: u.gone[addr]}
	if ep.inflight == nil {
		ep.inflight = new(atomic.Int64)
	}
	ep.breaker = newBreaker(u.name+"/"+addr, &u.settings.Breaker, u.clock, func(from, to BreakerState) bool {
		if u.retired.Load() {
			return false
		}
		u.observer.BreakerChanged(u.name, addr, from, to)
		return true
	})
	return ep
}

// Pick is one admitted attempt on one endpoint. Call Done (or Keep)
// exactly once when the attempt ends, whatever the outcome. The zero Pick
// is inert.
type Pick struct {
	u     *Upstream
	ep    *endpoint
	gen   uint64
	probe bool
}

// Addr is the endpoint's host:port.
func (p Pick) Addr() string {
	if p.ep == nil {
		return ""
	}
	return p.ep.addr
}

// Probe reports whether the attempt is a half-open breaker's probe.
func (p Pick) Probe() bool { return p.probe }

// Pick chooses an endpoint for one attempt and admits it through the
// endpoint's breaker. key is the hash key (the hash_header's value; ignored
// by other balancers; empty falls back to p2c). excluded lists the addresses
// this request already tried, so a retry goes elsewhere; an empty excluded
// marks a first attempt, which Pick counts in the retry budget.
//
// Errors: ErrNoEndpoints (none known), ErrOverloaded (max_in_flight
// reached), or an *UnavailableError matching ErrAllUnavailable. Pick never
// blocks and, on success, never allocates.
func (u *Upstream) Pick(key string, excluded []string) (Pick, error) {
	return u.pick(key, excluded, lazyNow{clock: u.clock})
}

// PickAt is Pick for a caller that read the wall clock (time.Now) a
// moment ago, as now, with nothing waited on since: on the system clock
// the pick takes now for its reading instead of reading the clock again.
// A clock of the caller's (WithClock) is read as Pick reads it, and so is
// the system clock when now is zero.
func (u *Upstream) PickAt(key string, excluded []string, now time.Time) (Pick, error) {
	l := lazyNow{clock: u.clock}
	if u.systemClock && !now.IsZero() {
		l.nanos, l.read = now.UnixNano(), true
	}
	return u.pick(key, excluded, l)
}

func (u *Upstream) pick(key string, excluded []string, now lazyNow) (Pick, error) {
	set := u.set.Load()
	if len(set.members) == 0 {
		return Pick{}, fmt.Errorf("%s: %w", u.name, ErrNoEndpoints)
	}
	if n := u.inflight.Add(1); u.maxInFlight > 0 && n > u.maxInFlight {
		u.inflight.Add(-1)
		return Pick{}, fmt.Errorf("%s: %w (max_in_flight %d)", u.name, ErrOverloaded, u.maxInFlight)
	}
	c := chooser{u: u, set: set, excluded: excluded, now: now}
	// A breaker may turn between the availability check and admission
	// (another goroutine took the last probe slot): choose again a few
	// times, then try every member in turn.
	for range 3 {
		i := c.choose(u.balancer, key)
		if i < 0 {
			break
		}
		if p, ok := u.admit(set.members[i].ep, len(excluded) == 0, &c.now); ok {
			return p, nil
		}
	}
	for i := range set.members {
		if c.ok(i) {
			if p, ok := u.admit(set.members[i].ep, len(excluded) == 0, &c.now); ok {
				return p, nil
			}
		}
	}
	u.inflight.Add(-1)
	return Pick{}, u.unavailable(set, excluded)
}

func (u *Upstream) admit(ep *endpoint, first bool, now *lazyNow) (Pick, bool) {
	gen, probe, ok := ep.breaker.admit(now)
	if !ok {
		return Pick{}, false
	}
	ep.inflight.Add(1)
	if first {
		u.budget.depositAt(now.get())
	}
	return Pick{u: u, ep: ep, gen: gen, probe: probe}, true
}

func (u *Upstream) unavailable(set *endpointSet, excluded []string) error {
	e := &UnavailableError{Service: u.name, Endpoints: len(set.members)}
	now := lazyNow{clock: u.clock}
	for _, m := range set.members {
		switch {
		case containsAddr(excluded, m.ep.addr):
			e.Tried++
		case m.ep.eject.ejected(&now):
			e.Ejected++
		case m.ep.breaker.current() == BreakerOpen && !m.ep.breaker.ready(&now):
			e.Open++
		default:
			e.Probing++
		}
	}
	return e
}

func containsAddr(list []string, addr string) bool {
	for _, a := range list {
		if a == addr {
			return true
		}
	}
	return false
}

// Done reports how the attempt ended: it releases the in-flight slots and
// feeds the endpoint's breaker and outlier detection. It returns what this
// outcome did to the endpoint: the breaker transition and the ejection it
// caused, as the Observer heard of them; the zero Effect when it changed
// nothing, which is the common case and costs no allocation. An outcome
// whose attempt another outcome overtook (the breaker moved since it was
// admitted, or the endpoint was already ejected) reports nothing.
func (p Pick) Done(o Outcome) Effect {
	if p.ep == nil {
		return Effect{}
	}
	p.release()
	return p.record(o)
}

// Keep reports how the attempt ended, as Done does, but keeps it counted
// in flight, in the service's max_in_flight and the endpoint's load,
// until the returned Slot is released: for an exchange that goes on past
// the answer that judges its attempt, a tunnel once the upstream switched
// protocols, which loads the endpoint like a request until it closes. The
// Effect is the outcome's, as Done returns it.
func (p Pick) Keep(o Outcome) (*Slot, Effect) {
	if p.ep == nil {
		return &Slot{}, Effect{}
	}
	e := p.record(o)
	return &Slot{pick: p}, e
}

// Slot is an attempt's place in its service's and endpoint's in-flight
// counts, kept past its outcome (Pick.Keep).
type Slot struct {
	pick     Pick
	released atomic.Bool
}

// Release gives the slot back. Only the first call counts, so every way
// out of a tunnel may call it.
func (s *Slot) Release() {
	if s.pick.ep != nil && s.released.CompareAndSwap(false, true) {
		s.pick.release()
	}
}

// release gives back the attempt's in-flight slots.
func (p Pick) release() {
	p.ep.inflight.Add(-1)
	p.u.inflight.Add(-1)
}

// record feeds the attempt's outcome to the endpoint's breaker and
// outlier detection, and returns what it changed.
func (p Pick) record(o Outcome) Effect {
	ep, u := p.ep, p.u
	v := u.verdict(o)
	ep.requests.Add(1)
	if v == verdictFailure {
		ep.failures.Add(1)
	}
	e := ep.breaker.record(p.gen, p.probe, v)
	if ep.eject.observe(o, u.consec5xx) {
		e.Ejected = u.eject(ep)
	}
	return e
}

func (u *Upstream) verdict(o Outcome) verdict {
	switch o.Result {
	case Canceled:
		return verdictIgnored
	case Responded:
		if u.failStatus.has(o.Status) {
			return verdictFailure
		}
		return verdictSuccess
	default:
		return verdictFailure
	}
}

// eject takes ep out of rotation unless that would exceed
// max_ejection_percent or leave the service with no endpoint in rotation
// (an endpoint whose breaker admits nothing is not in rotation either: one
// open, or half-open with every probe out). It returns the ejection's
// length when it ejected ep and the Observer heard of it, else 0.
func (u *Upstream) eject(ep *endpoint) time.Duration {
	u.mu.Lock()
	defer u.mu.Unlock()
	set := u.set.Load()
	now := u.clock.Now().UnixNano()
	present, ejected, others := false, 0, 0
	for _, m := range set.members {
		switch {
		case m.ep == ep:
			present = true
		case m.ep.eject.until.Load() > now:
		case !m.ep.breaker.admitsAt(now):
		default:
			others++ // in rotation
		}
		if m.ep.eject.until.Load() > now {
			ejected++
		}
	}
	if !present || ep.eject.until.Load() > now {
		return 0 // removed meanwhile, or already out
	}
	if ejected+1 > u.settings.Outlier.maxEjected(len(set.members)) || others == 0 {
		return 0
	}
	d := ep.eject.nextEjection(&u.settings.Outlier, now)
	if u.retired.Load() {
		return 0 // no longer the service's: not reported
	}
	u.observer.Ejected(u.name, ep.addr, d, ep.eject.ejections)
	return d
}

// RefundRetry gives the retry budget back a retry Retry allowed that did
// not happen, with the token Retry returned (see Budget.Refund).
func (u *Upstream) RefundRetry(t RetryToken) { u.budget.Refund(t) }

// Retry decides whether the request may be retried after an attempt that
// ended with o (see RetryPolicy.Decide for the arguments), spends the retry
// budget when it may, and reports the decision to the Observer. On
// RetryAllowed it returns the jittered backoff to wait before picking again
// (with the tried addresses excluded) and the token of the budget's
// withdrawal, for RefundRetry should the retry not happen.
func (u *Upstream) Retry(attempt int, method string, bodyBytesSent int64, hasBody bool, o Outcome) (time.Duration, RetryToken, RetryDecision) {
	p := &u.settings.Retry
	d := p.Decide(attempt, method, bodyBytesSent, hasBody, o)
	var tok RetryToken
	if d == RetryAllowed {
		var ok bool
		if tok, ok = u.budget.TryWithdraw(); !ok {
			d = RetryBudgetExhausted
		}
	}
	if d == RetryNotNeeded {
		return 0, tok, d
	}
	u.observer.RetryDecided(u.name, attempt, d)
	if d != RetryAllowed {
		return 0, tok, d
	}
	return p.Backoff(attempt), tok, d
}
