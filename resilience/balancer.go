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
		return c.scan(int(c.u.rr.Add(1) % uint64(n)))
	case BalancerRandom:
		return c.scan(rand.IntN(n))
	case BalancerWeighted:
		return c.weighted()
	case BalancerHash:
		if key != "" {
			return c.hash(key)
		}
	}
	return c.p2c()
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
	okA, okB := c.ok(a), c.ok(b)
	switch {
	case okA && okB:
		if c.set.members[b].ep.inflight.Load() < c.set.members[a].ep.inflight.Load() {
			return b
		}
		return a
	case !okA && !okB:
		// Both draws unavailable: compare the next two available members
		// after a random start instead of drawing blindly again.
		a = c.scan(rand.IntN(n))
		if a < 0 {
			return -1
		}
		b = c.scan(a + 1)
		if b != a && c.set.members[b].ep.inflight.Load() < c.set.members[a].ep.inflight.Load() {
			return b
		}
		return a
	case okA:
		return a
	default:
		return b
	}
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
	return c.scan(rand.IntN(len(c.set.members)))
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
