package resilience

import (
	"math/rand/v2"
	"slices"
)

// Balancer names a load-balancing policy.
type Balancer string

const (
	// BalancerP2C: power of two choices — draw two available endpoints at
	// random, take the one with fewer requests in flight. The default.
	BalancerP2C Balancer = "p2c"
	// BalancerRoundRobin: available endpoints in turn.
	BalancerRoundRobin Balancer = "round_robin"
	// BalancerRandom: an available endpoint at random.
	BalancerRandom Balancer = "random"
	// BalancerWeighted: at random, in proportion to the endpoints' weights
	// (Consul's service weights).
	BalancerWeighted Balancer = "weighted"
	// BalancerHash: consistent hashing on a key (the hash_header's value),
	// so equal keys stick to one endpoint while it is available; weights
	// give endpoints proportional shares of the key space.
	BalancerHash Balancer = "hash"
)

// member is one endpoint in a set, with its weight in that set.
type member struct {
	ep     *endpoint
	weight int
}

// endpointSet is one immutable endpoint list with the lookup structures the
// balancer needs, swapped atomically by Update.
type endpointSet struct {
	members []member
	cumul   []int64 // running weight totals (weighted)
	ring    *hashRing
}

func newEndpointSet(members []member, b Balancer) *endpointSet {
	s := &endpointSet{members: members}
	switch b {
	case BalancerWeighted:
		s.cumul = make([]int64, len(members))
		var total int64
		for i, m := range members {
			total += int64(m.weight)
			s.cumul[i] = total
		}
	case BalancerHash:
		s.ring = newHashRing(members)
	}
	return s
}

// chooser is the per-attempt view a balancer picks through: which members
// may take the attempt. It lives on the caller's stack.
type chooser struct {
	u        *Upstream
	set      *endpointSet
	excluded []string
	now      lazyNow
}

func (c *chooser) ok(i int) bool {
	ep := c.set.members[i].ep
	if len(c.excluded) > 0 && slices.Contains(c.excluded, ep.addr) {
		return false
	}
	return !ep.eject.ejected(&c.now) && ep.breaker.ready(&c.now)
}

// scan returns the first available member at or after start (wrapping), or
// -1.
func (c *chooser) scan(start int) int {
	n := len(c.set.members)
	for k := 0; k < n; k++ {
		i := (start + k) % n
		if c.ok(i) {
			return i
		}
	}
	return -1
}

// choose returns the index of an available member, or -1.
func (c *chooser) choose(b Balancer, key string) int {
	n := len(c.set.members)
	switch b {
	case BalancerRoundRobin:
		return c.roundRobin()
	case BalancerRandom:
		if i := rand.IntN(n); c.ok(i) {
			return i
		}
		return c.anyOther(-1)
	case BalancerWeighted:
		return c.weighted()
	case BalancerHash:
		if key != "" {
			return c.hash(key)
		}
	}
	return c.p2c()
}

// anyOther returns an available member other than skip (-1 skips none),
// every one with the same chance, or -1 when there is none. Drawing an
// index and taking the first available member from there would give the
// member after a run of unavailable ones the whole run's share. A few
// draws first, then one pass over the members (reservoir sampling), in
// which each is judged once.
func (c *chooser) anyOther(skip int) int {
	n := len(c.set.members)
	if skip >= 0 {
		n-- // drawn among the others
	}
	for range min(n, 3) {
		i := rand.IntN(n)
		if skip >= 0 && i >= skip {
			i++
		}
		if c.ok(i) {
			return i
		}
	}
	chosen, seen := -1, 0
	for i := range c.set.members {
		if i == skip || !c.ok(i) {
			continue
		}
		seen++
		if rand.IntN(seen) == 0 {
			chosen = i
		}
	}
	return chosen
}

// roundRobin takes the members in turn, skipping unavailable ones: the
// turn then goes on after the member taken, so each available member
// gets the same share (not the skipped ones' too).
func (c *chooser) roundRobin() int {
	n := uint64(len(c.set.members))
	v := c.u.rr.Add(1)
	start := int(v % n)
	i := c.scan(start)
	if i > start {
		c.u.rr.CompareAndSwap(v, v+uint64(i-start))
	} else if i >= 0 && i < start {
		c.u.rr.CompareAndSwap(v, v+n-uint64(start-i))
	}
	return i
}

func (c *chooser) p2c() int {
	n := len(c.set.members)
	if n == 1 {
		return c.scan(0)
	}
	a := rand.IntN(n)
	b := rand.IntN(n - 1)
	if b >= a {
		b++
	}
	// Two available members drawn at random, whichever draw hit an
	// unavailable one: the less loaded of the two wins, a on a tie.
	switch okA, okB := c.ok(a), c.ok(b); {
	case okA && okB:
	case okA:
		b = c.anyOther(a)
	case okB:
		a, b = b, c.anyOther(b)
	default:
		if a = c.anyOther(-1); a < 0 {
			return -1
		}
		b = c.anyOther(a)
	}
	if b >= 0 && c.set.members[b].ep.inflight.Load() < c.set.members[a].ep.inflight.Load() {
		return b
	}
	return a
}

func (c *chooser) weighted() int {
	total := c.set.cumul[len(c.set.cumul)-1]
	for range 3 {
		r := rand.Int64N(total)
		i, _ := slices.BinarySearch(c.set.cumul, r+1)
		if c.ok(i) {
			return i
		}
	}
	// Every draw hit an unavailable member: draw among the available
	// ones, by weight (weighted reservoir sampling, in one pass).
	chosen, sum := -1, int64(0)
	for i, m := range c.set.members {
		if !c.ok(i) {
			continue
		}
		sum += int64(m.weight)
		if rand.Int64N(sum) < int64(m.weight) {
			chosen = i
		}
	}
	return chosen
}

func (c *chooser) hash(key string) int {
	pts := c.set.ring.points
	start := c.set.ring.first(hashString(key))
	// Walk clockwise to the first available endpoint's point. Points of
	// different endpoints interleave, so a bounded walk meets every nearby
	// endpoint; when most are unavailable, finish with a linear scan.
	walk := min(len(pts), 8*len(c.set.members))
	for k := 0; k < walk; k++ {
		if i := int(pts[(start+k)%len(pts)].member); c.ok(i) {
			return i
		}
	}
	return c.scan(int(pts[(start+walk)%len(pts)].member))
}
