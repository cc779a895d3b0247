package resilience

import (
	"slices"
	"strconv"
)

// hashRing is a consistent-hash ring over an endpoint set. Each endpoint
// owns points derived from its address alone, so adding or removing one
// endpoint moves only the keys that land on its points; every other key
// keeps its endpoint. Endpoints own points in proportion to their weight.
// That holds exactly while the weights together stay within the ring's
// cap (maxRingPoints/pointsPerWeight = 1024 units: 1024 endpoints of
// Consul's default weight 1). Past it each endpoint's count of points is
// its share of the cap, so a change in the total weight also adds or drops
// points at the end of every endpoint's list (a prefix of its points stays
// theirs): about as many keys again as the changed endpoint's share move
// between the others (4.7% of keys, removing one of 20 endpoints of
// weight 100).
type hashRing struct {
	points []ringPoint // sorted by hash
}

type ringPoint struct {
	hash   uint64
	member int32 // index into endpointSet.members
}

const (
	pointsPerWeight = 64
	maxRingPoints   = 64 << 10
)

func newHashRing(members []member) *hashRing {
	var total float64 // float: Consul weights may sum past int64
	for _, m := range members {
		total += float64(m.weight)
	}
	// Past the cap every endpoint gets its share of maxRingPoints, at
	// least one point: one point per unit of weight would let a Consul
	// weight of a billion allocate a billion points.
	per := float64(pointsPerWeight)
	if total*per > maxRingPoints {
		per = maxRingPoints / total
	}
	r := &hashRing{points: make([]ringPoint, 0, int(min(total*per, maxRingPoints))+len(members))}
	buf := make([]byte, 0, 64)
	for i, m := range members {
		n := max(int64(float64(m.weight)*per), 1)
		for j := int64(0); j < n; j++ {
			buf = append(buf[:0], m.ep.addr...)
			buf = append(buf, '#')
			buf = strconv.AppendInt(buf, j, 10)
			r.points = append(r.points, ringPoint{hash: hashBytes(buf), member: int32(i)})
		}
	}
	slices.SortFunc(r.points, func(a, b ringPoint) int {
		switch {
		case a.hash < b.hash:
			return -1
		case a.hash > b.hash:
			return 1
		}
		return int(a.member - b.member)
	})
	return r
}

// first returns the position of the first point at or after h (wrapping).
func (r *hashRing) first(h uint64) int {
	i, _ := slices.BinarySearchFunc(r.points, h, func(p ringPoint, h uint64) int {
		switch {
		case p.hash < h:
			return -1
		case p.hash > h:
			return 1
		}
		return 0
	})
	if i == len(r.points) {
		i = 0
	}
	return i
}

// FNV-1a, then a splitmix64 finalizer so that similar keys spread out.
func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return mix64(h)
}

func hashBytes(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return mix64(h)
}

func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
