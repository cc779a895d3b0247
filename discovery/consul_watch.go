package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ferrymesh/ferry/internal/dialhost"
)

// minQueryInterval is the least time from the start of one query of a
// watch to the start of the next (Consul asks clients of blocking queries
// to rate-limit them).
const minQueryInterval = 100 * time.Millisecond

// indexResetHold is how long after Consul's index went backwards (its
// state was reset: a restored snapshot, servers that lost their data) an
// answer that would empty a service with endpoints is not believed: the
// last endpoints stay, marked stale. Consul's agents register their
// services again on their next anti-entropy sync, about a minute apart on
// small clusters; until then an empty answer says nothing about the
// service. A variable for tests.
var indexResetHold = 2 * time.Minute

// querySlack is how much longer than its wait (plus Consul's jitter of up
// to wait/16) a query may go unanswered before the agent counts as hung.
const querySlack = 5 * time.Second

// queryTimeout bounds one query of a watch whose blocking queries wait up
// to wait: an agent that takes a request and never answers (stopped,
// overloaded, a connection lost without a reset) fails the query like any
// outage, so the last endpoints are marked stale and the watch retries.
func queryTimeout(wait time.Duration) time.Duration { return wait + wait/16 + querySlack }

// healthQuery asks Consul for the passing instances of service. It is
// (*consulClient).healthService; tests substitute a
// scripted one.
type healthQuery func(ctx context.Context, service string, tags []string, q *consulQuery) ([]*consulServiceEntry, *consulQueryMeta, error)

// nextWaitIndex applies the blocking-query index rules to the index an
// answer carried (got) given the index the query waited on (prev). It
// returns the index to wait on next and whether the answer may hold news:
//
//   - got == prev (and not 0): the wait timed out; nothing changed.
//   - got < prev: the index went backwards (a new cluster, a snapshot
//     restore, an agent restarted in -dev mode): the wait resets as if prev
//     were 0, so the answer is taken as new and its index adopted.
//   - got == 0: never valid for a blocking query (waiting on 0 returns at
//     once, a busy loop), so the next wait uses 1.
func nextWaitIndex(prev, got uint64) (next uint64, fresh bool) {
	switch {
	case got == 0:
		return 1, true
	case got == prev:
		return prev, false
	default: // got > prev, or got < prev: reset and adopt
		return got, true
	}
}

// watch is the blocking-query loop of one watched service. Its fields after
// the first block are set once; the loop state is touched only by run's
// goroutine; stats are atomics read by Stats.
type watch struct {
	svc        *Service
	service    string // Consul's name for it
	tags       []string
	datacenter string

	query    healthQuery
	waitTime time.Duration
	maxStale time.Duration
	backoff  Backoff
	pace     time.Duration // the least time from one query's start to the next's
	sleep    func(context.Context, time.Duration) error
	now      func() time.Time
	scrub    func(string) string
	log      *slog.Logger
	// connsLost counts the connections the agent closed (see
	// consulClient.connsLost); nil: not watched.
	connsLost func() uint64

	// loop state
	index      uint64
	consistent bool // next query must be answered by the leader
	failures   int
	resetAt    time.Time // when Consul's index last went backwards; zero: not lately
	// seen is the highest index answered by each of Consul's query
	// backends (X-Consul-Query-Backend): blocking queries are served by
	// its streaming backend, others by the plain one, and the two may
	// give the same state indexes a few apart, so only indexes of one
	// backend are compared.
	seen map[string]uint64
	// lost is connsLost() when the last query was sent; afterLost: the
	// agent closed a connection since, and the query sent for it did not
	// block (see step).
	lost      uint64
	afterLost bool
	// plainAt is when a query that did not block (answered by Consul's
	// plain backend) was last answered; see step.
	plainAt   time.Time
	resetHold time.Duration // indexResetHold when the watch began
	// prior is the last snapshot of the watch this one replaces (see
	// ConsulOptions.Prior), until this one publishes: an empty answer in
	// a state reset's hold keeps its endpoints. priorFirst: the first
	// answer has not come yet; it is compared with every index prior saw.
	prior      *Snapshot
	priorFirst bool
	// leftOut is why each instance of the last answer that makes no
	// endpoint was left out, by instanceKey: a warning names each one
	// once, not on every answer that still lists it so.
	leftOut map[string]string

	// mem is what the loop learnt (what the watch inherited, before its
	// first answer), for a watch that replaces this one.
	mem   atomic.Pointer[watchMemory]
	stats watchStats
}

// watchMemory is what a watch hands the watch of the same service in the
// resolver that replaces its own (a reload): the highest index per query
// backend, when Consul's state was last reset, and its last snapshot.
type watchMemory struct {
	seen    map[string]uint64
	resetAt time.Time
	last    *Snapshot
	leftOut map[string]string // not changed once stored
	// lastContact and failing are the watch's stats of the same names
	// when it was read: the snapshot's age goes on from them.
	lastContact int64
	failing     bool
}

// inherit starts the loop from what the watch this one replaces learnt.
// It runs before the loop starts.
func (w *watch) inherit(m *watchMemory) {
	if m == nil {
		return
	}
	w.seen = maps.Clone(m.seen)
	w.resetAt = m.resetAt
	w.leftOut = m.leftOut
	if len(m.last.Endpoints) > 0 {
		w.prior = m.last
	}
	w.priorFirst = len(w.seen) > 0
	// The service serves what the replaced watch served until this one's
	// first answer: a reload while the agent is down or slow does not wait
	// for it (the sidecar swaps a generation in once its services are
	// ready), and the endpoints stay as they were, stale as they were.
	w.stats.lastContact.Store(m.lastContact)
	w.stats.failing.Store(m.failing)
	w.svc.Publish(m.last)
	// ...and hands it on in turn, with the indexes and reset it
	// inherited: a second reload before this watch's first answer
	// starts from the same endpoints, not from nothing.
	w.remember()
}

// remember publishes the loop's indexes and reset for a watch that
// replaces this one.
func (w *watch) remember() {
	w.mem.Store(&watchMemory{seen: maps.Clone(w.seen), resetAt: w.resetAt, leftOut: w.leftOut})
}

// handOn is what a watch that replaces this one starts from (see inherit):
// what the loop learnt, or what this watch inherited until its own first
// answer, with the snapshot it serves. Nil when it serves no endpoints
// yet: it neither had an answer nor inherited one.
func (w *watch) handOn() *watchMemory {
	m := w.mem.Load()
	if m == nil {
		return nil
	}
	last := w.svc.Snapshot()
	if !last.Ready {
		return nil
	}
	return &watchMemory{
		seen: m.seen, resetAt: m.resetAt, last: last, leftOut: m.leftOut,
		lastContact: w.stats.lastContact.Load(), failing: w.stats.failing.Load(),
	}
}

// watchStats are the per-service counters shown by admin and metrics.
type watchStats struct {
	queries      atomic.Uint64
	errors       atomic.Uint64
	staleRetries atomic.Uint64
	publishes    atomic.Uint64
	lastIndex    atomic.Uint64
	lastContact  atomic.Int64 // unix nanoseconds of the last answer
	lastError    atomic.Pointer[string]
	failing      atomic.Bool // the last query failed, and none answered since
}

// run queries until ctx ends. Every wait (the blocking query itself and the
// backoff between failures) ends with ctx.
func (w *watch) run(ctx context.Context) {
	for ctx.Err() == nil {
		start := w.now()
		if w.step(ctx) {
			if !w.consistent {
				// An answer dropped as too stale (the leader is asked
				// next) is no success: the backoff goes on growing
				// while only the leader's read fails.
				w.failures = 0
			}
			// Answers that come at once (a service that changes all the
			// time, a server that answers a wait without waiting) are
			// paced: no busy loop against Consul. A blocking query that
			// waited is followed at once; so is the one retry of a stale
			// answer with the leader.
			if d := w.pace - w.now().Sub(start); d > 0 && !w.consistent {
				if w.sleep(ctx, d) != nil {
					return
				}
			}
			continue
		}
		if ctx.Err() != nil {
			return
		}
		w.failures++
		if w.sleep(ctx, w.backoff(w.failures)) != nil {
			return
		}
	}
}

// errACLFiltered is the failure of an answer whose instances the ACL token
// may not read, every one of them.
var errACLFiltered = errors.New("every instance was filtered out by ACLs: the token lacks service:read (or node:read) for it")

// step runs one query and publishes what it learnt. It returns false when
// the query failed and the loop should back off.
func (w *watch) step(ctx context.Context) bool {
	wait := w.waitTime
	if !w.resetAt.IsZero() {
		// A hold ends on time: no blocking query waits past it.
		if left := w.resetHold - w.now().Sub(w.resetAt); left > 0 {
			wait = min(wait, left)
		}
	}
	if w.connsLost != nil {
		if n := w.connsLost(); n != w.lost {
			// The agent closed a connection since the last query: it may
			// have restarted with its state reset, its index now lower
			// than the one the watch holds, and a query with that index
			// would wait out its whole wait. This one does not block;
			// its answer is compared with every index seen, as the
			// first after a failure is.
			w.lost = n
			if w.index != 0 {
				w.index = 0
				w.afterLost = true
			}
		}
	}
	q := &consulQuery{
		Datacenter: w.datacenter,
		WaitIndex:  w.index,
		WaitTime:   wait,
		AllowStale: !w.consistent,
	}
	w.stats.queries.Add(1)
	timeout := queryTimeout(wait)
	qctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	entries, meta, err := w.query(qctx, w.service, w.tags, q)
	if err != nil {
		if ctx.Err() != nil {
			return false
		}
		if qctx.Err() != nil {
			err = fmt.Errorf("no answer within %s: %w", timeout, err)
		}
		w.fail(err)
		return false
	}
	if meta == nil {
		w.fail(fmt.Errorf("answer without query metadata"))
		return false
	}
	w.consistent = false
	if q.AllowStale && meta.LastContact > w.maxStale {
		// The server that answered is too far behind its leader: ask the
		// leader once, then go back to stale reads.
		w.stats.staleRetries.Add(1)
		w.consistent = true
		return true
	}
	eps, out := readAnswer(entries)
	w.reportLeftOut(out)
	if len(eps) == 0 && meta.FilteredByACLs {
		// Every instance was left out because the token may not read it
		// (or its node): that says nothing about the service, and must
		// not empty its endpoints.
		w.fail(errACLFiltered)
		return false
	}
	now := w.now()
	next, fresh := nextWaitIndex(w.index, meta.LastIndex)
	w.index = next
	w.stats.lastIndex.Store(meta.LastIndex)
	if w.seen == nil {
		w.seen = map[string]uint64{}
	}
	if w.wentBack(meta) {
		// Consul's state was reset (an index never goes down otherwise);
		// a failure in between does not hide it. A hold in progress is
		// not extended.
		if w.resetAt.IsZero() || now.Sub(w.resetAt) >= w.resetHold {
			w.resetAt = now
		}
	}
	w.seen[meta.Backend] = meta.LastIndex
	w.priorFirst = false
	w.afterLost = false
	if q.WaitIndex == 0 {
		w.plainAt = now
	}
	w.remember()
	cur := w.svc.Snapshot()
	if q.WaitIndex != 0 && !fresh && now.Sub(w.plainAt) >= w.waitTime/2 {
		// A blocking query brought nothing new (its wait ran out), and
		// none that does not block was answered since the last wait: the
		// next one does not block. Blocking queries are answered by
		// Consul's streaming backend, which checks the token's rights
		// when it subscribes and then silently leaves out the changes the
		// token may no longer read: a token that lost the right to read
		// the service would see its old instances as current, however
		// they changed. The plain backend says so
		// (X-Consul-Results-Filtered-By-ACLs).
		w.index = 0
	}
	last := cur // the endpoints an empty answer would take away
	if !cur.Ready && w.prior != nil {
		// The watch this one replaces had endpoints: an empty first
		// answer in a reset's hold keeps them, as it would have.
		last = w.prior
	}
	if !fresh && !cur.Stale && cur.Ready {
		w.confirmed(now)
		return true // timeout: nothing new
	}
	if len(eps) == 0 && q.WaitIndex != 0 && len(cur.Endpoints) > 0 {
		// An answer that would empty the service is asked again, without
		// blocking, before it is believed. Consul serves blocking queries
		// from its streaming backend, whose answers leave out the
		// X-Consul-Results-Filtered-By-ACLs header: only a plain query
		// tells a service left with no instances from a token that may no
		// longer see them.
		w.index = 0
		return true
	}
	if len(eps) == 0 && len(last.Endpoints) > 0 && !w.resetAt.IsZero() {
		if now.Sub(w.resetAt) < w.resetHold {
			w.hold(last, now)
			return true
		}
		w.resetAt = time.Time{}
		w.remember()
	}
	w.confirmed(now)
	if cur.Ready && !cur.Stale && cur.Err == "" && slices.EqualFunc(cur.Endpoints, eps, endpointEqual) {
		return true // same endpoints: drop
	}
	updated := now
	if cur.Ready && slices.EqualFunc(cur.Endpoints, eps, endpointEqual) {
		updated = cur.Updated // only the staleness changed
	}
	if cur.Stale {
		w.log.Info("consul watch resumed", "service", w.svc.Name(), "index", meta.LastIndex)
	}
	w.publish(&Snapshot{
		Endpoints: eps,
		Ready:     true,
		Index:     meta.LastIndex,
		Updated:   updated,
		Checked:   now,
	})
	return true
}

// wentBack reports whether the index of an answer shows that Consul's
// state was reset: it is lower than the last index the same query backend
// gave, or, for the first answer after a failure or after the agent closed
// a connection, lower than the last index any backend gave.
//
// Only indexes of one backend are compared otherwise: for a service with
// no instance, the plain backend answers with the catalog's latest index
// while the streaming backend's stays at the last change to the service,
// so an emptying answer re-asked on the plain backend and the blocking
// queries that follow it on the streaming one differ, in either order,
// with no reset. The first answer after a failure does not block, so it
// comes from the plain backend, whose last index may be much older than
// the streaming backend's (the watch's first answer, say): compared only
// with its own, a reset that brought the index between the two went
// unseen and the empty answer emptied the service. That answer is
// compared with the highest index seen instead; the plain backend's index
// for a state is never below the streaming backend's for the same state,
// so this does not take a working Consul for a reset one (a stale read
// from a follower lagging behind the server that fed the streaming
// backend can, as it can between two plain answers: its only effect is
// that an empty answer in the next indexResetHold is not believed).
func (w *watch) wentBack(meta *consulQueryMeta) bool {
	if meta.LastIndex < w.seen[meta.Backend] {
		return true
	}
	if w.failures == 0 && !w.priorFirst && !w.afterLost {
		return false
	}
	for _, index := range w.seen {
		if meta.LastIndex < index {
			return true
		}
	}
	return false
}

// confirmed records an answer the watch takes: the snapshot is current. An
// answer asked again or held back (see hold) confirms nothing, so the
// snapshot's age goes on from the last one taken.
func (w *watch) confirmed(now time.Time) {
	w.stats.lastContact.Store(now.UnixNano())
	w.stats.failing.Store(false)
}

// fail records a failed query. A ready service keeps its endpoints, marked
// stale; a service that never had an answer stays not ready, with the reason.
// The next query after a failure does not block, so the first answer after
// Consul comes back clears Stale at once.
func (w *watch) fail(err error) {
	msg := w.scrub(fmt.Sprintf("consul watch %q: %v", w.service, err))
	w.stats.errors.Add(1)
	w.stats.lastError.Store(&msg)
	w.stats.failing.Store(true)
	w.index = 0
	w.consistent = false
	cur := w.svc.Snapshot()
	if cur.Err == msg && (cur.Stale || !cur.Ready) {
		return // same trouble as last time; nothing new for readers
	}
	next := &Snapshot{Err: msg}
	if cur.Ready {
		next = &Snapshot{
			Endpoints: cur.Endpoints,
			Ready:     true,
			Stale:     true,
			Index:     cur.Index,
			Updated:   cur.Updated,
			Checked:   cur.Checked,
			Err:       msg,
		}
		if !cur.Stale {
			w.log.Warn("consul watch failing, serving last endpoints", "service", w.svc.Name(), "err", msg)
		}
	} else if cur.Err == "" {
		w.log.Warn("consul watch failing before first answer", "service", w.svc.Name(), "err", msg)
	}
	w.publish(next)
}

// hold keeps the endpoints of cur, marked stale, in place of an empty
// answer that came right after Consul's state was reset (see
// indexResetHold). The watch goes on waiting on the new index, so the
// first instance that registers again ends the hold.
func (w *watch) hold(cur *Snapshot, now time.Time) {
	w.stats.failing.Store(true) // the answer was not taken: the snapshot ages
	msg := fmt.Sprintf("consul watch %q: Consul's index went backwards (its state was reset) and it lists no instance yet; keeping the last endpoints for up to %s after the reset while instances register again", w.service, w.resetHold)
	if cur == w.svc.Snapshot() && cur.Stale && cur.Err == msg {
		return
	}
	w.log.Warn("consul state reset, keeping last endpoints", "service", w.svc.Name(), "hold", w.resetHold.String())
	w.publish(&Snapshot{
		Endpoints: cur.Endpoints,
		Ready:     true,
		Stale:     true,
		Index:     cur.Index,
		Updated:   cur.Updated,
		Checked:   now,
		Err:       msg,
	})
}

func (w *watch) publish(s *Snapshot) {
	if s.Ready {
		w.prior = nil
	}
	w.stats.publishes.Add(1)
	w.svc.Publish(s)
}

// maxLeftOutWarnings bounds the instances one answer names in warnings of
// their own (see reportLeftOut); the rest go into one summary line.
const maxLeftOutWarnings = 10

// reportLeftOut warns of each instance left out of an answer's endpoints
// (see readAnswer) that the last answer did not leave out for the same
// reason: a blocking query answers again on every change to the service,
// and each answer listing the same instance the same way would repeat the
// warning. An instance that leaves the answer and comes back, or whose
// reason changes, is named again. One answer names at most
// maxLeftOutWarnings instances; a registration script gone wrong can list
// thousands, which one summary line counts (by reason, with one instance
// of each) instead of flooding the log.
func (w *watch) reportLeftOut(out []leftOut) {
	if len(out) == 0 && len(w.leftOut) == 0 {
		return
	}
	next := make(map[string]string, len(out))
	named := 0
	var more map[string]int       // reason -> instances not named
	var example map[string]string // reason -> one of them
	for _, o := range out {
		k := o.key()
		if why, ok := next[k]; ok && why == o.reason {
			continue // listed twice in one answer
		}
		next[k] = o.reason
		if w.leftOut[k] == o.reason {
			continue
		}
		if named == maxLeftOutWarnings {
			if more == nil {
				more, example = map[string]int{}, map[string]string{}
			}
			if more[o.reason] == 0 {
				example[o.reason] = o.id + "@" + o.node
			}
			more[o.reason]++
			continue
		}
		named++
		w.log.Warn("consul instance left out of the endpoints: no dial to it could succeed",
			w.leftOutAttrs("instance", o.id, "node", o.node, "reason", o.reason)...)
	}
	if more != nil {
		total := 0
		reasons := make([]string, 0, len(more))
		for why, n := range more {
			total += n
			reasons = append(reasons, fmt.Sprintf("%d: %s (e.g. %s)", n, why, example[why]))
		}
		slices.Sort(reasons)
		w.log.Warn("more consul instances left out of the endpoints than are named one by one: no dial to them could succeed",
			w.leftOutAttrs("not_named", total, "reasons", strings.Join(reasons, "; "))...)
	}
	w.leftOut = next
}

// leftOutAttrs is attrs after the service's name (and its Consul name
// when that differs) for a left-out warning.
func (w *watch) leftOutAttrs(attrs ...any) []any {
	all := append([]any{"service", w.svc.Name()}, attrs...)
	if w.service != w.svc.Name() {
		all = append(all, "consul_service", w.service)
	}
	return all
}

// leftOut is an instance of a Consul answer that makes no endpoint.
type leftOut struct {
	id, node string // the instance's service ID and its node's name
	reason   string
}

func (o leftOut) key() string { return o.node + "\x00" + o.id }

// endpointsOf is the endpoints of readAnswer.
func endpointsOf(entries []*consulServiceEntry) []Endpoint {
	eps, _ := readAnswer(entries)
	return eps
}

// readAnswer turns Consul's answer into endpoints sorted by address, and
// the instances it left out. The address is the service's own, else its
// node's; never the node's name. An instance without a dialable address
// (Consul takes any string: see internal/dialhost) or a port 1-65535
// (Consul takes any integer) is left out: no dial to it could succeed. An
// address is written as Go dials it (dialhost.Key: "0:0::1" is "::1",
// "APP.internal" is "app.internal"), and instances at one address are one
// endpoint, with the first one's weight and tags: Consul keeps addresses
// as they were registered. An entry without a service (Consul sends none)
// names no instance and is skipped.
func readAnswer(entries []*consulServiceEntry) ([]Endpoint, []leftOut) {
	eps := make([]Endpoint, 0, len(entries))
	var out []leftOut
	for _, e := range entries {
		if e == nil || e.Service == nil {
			continue
		}
		host, whose := e.Service.Address, "the instance's own"
		if host == "" && e.Node != nil {
			host, whose = e.Node.Address, "its node's"
		}
		if why := undialable(host, whose, e.Service.Port); why != "" {
			o := leftOut{id: e.Service.ID, reason: why}
			if e.Node != nil {
				o.node = e.Node.Node
			}
			out = append(out, o)
			continue
		}
		weight := e.Service.Weights.Passing
		if weight <= 0 {
			weight = 1
		}
		var tags []string
		if len(e.Service.Tags) > 0 {
			tags = slices.Clone(e.Service.Tags)
		}
		eps = append(eps, Endpoint{
			Addr:   dialhost.Key(net.JoinHostPort(host, strconv.Itoa(e.Service.Port))),
			Weight: weight,
			Tags:   tags,
		})
	}
	slices.SortStableFunc(eps, func(a, b Endpoint) int { return strings.Compare(a.Addr, b.Addr) })
	return slices.CompactFunc(eps, func(a, b Endpoint) bool { return a.Addr == b.Addr }), out
}

// undialable says why an instance at host (whose address it is) and port
// makes no endpoint, or "" when it makes one.
func undialable(host, whose string, port int) string {
	var why []string
	switch {
	case host == "":
		why = append(why, "no address: neither the instance nor its node has one")
	case !dialhost.Valid(host):
		why = append(why, fmt.Sprintf("address %q (%s) cannot be dialled", host, whose))
	}
	if port <= 0 || port > 65535 {
		why = append(why, fmt.Sprintf("port %d is outside 1-65535", port))
	}
	return strings.Join(why, "; ")
}

func endpointEqual(a, b Endpoint) bool {
	return a.Addr == b.Addr && a.Weight == b.Weight && slices.Equal(a.Tags, b.Tags)
}
