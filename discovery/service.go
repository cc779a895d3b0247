package discovery

import (
	"sync/atomic"
	"time"
)

// Endpoint is one address that serves a service.
type Endpoint struct {
	// Addr is host:port, always an IP or resolvable host name, never a
	// Consul node name.
	Addr string
	// Weight is the relative share of traffic this endpoint should take.
	// Zero means the default weight 1.
	Weight int
	// Tags are the instance's tags as reported by the source (nil for static).
	Tags []string
}

// Snapshot is one immutable view of a service's endpoints. A Snapshot is
// never modified after it is published; readers may keep it as long as they
// like.
type Snapshot struct {
	// Endpoints are the healthy endpoints, in a stable order.
	Endpoints []Endpoint
	// Ready is false until the source has produced its first answer; a
	// service that is not ready answers 503 "not yet resolved".
	Ready bool
	// Stale is true when the source could not refresh the endpoints
	// (for example Consul is unreachable) and this is the last good view.
	Stale bool
	// Index is the source's version of this view (the Consul index); 0 for
	// static services.
	Index uint64
	// Updated is when the endpoint set last changed.
	Updated time.Time
	// Checked is when the source last confirmed this view (equal to Updated
	// for static services).
	Checked time.Time
	// Err is the last error the source saw, if Stale.
	Err string
}

// Service is the live view of one named service. Its snapshot is replaced
// atomically by the source that owns it; Snapshot never blocks and never
// returns nil.
type Service struct {
	name    string
	source  string
	snap    atomic.Pointer[Snapshot]
	changed atomic.Pointer[chan struct{}]
}

// NewService returns a service with an empty, not-ready snapshot. source
// names where its endpoints come from ("static", "consul").
func NewService(name, source string) *Service {
	s := &Service{name: name, source: source}
	s.snap.Store(&Snapshot{})
	ch := make(chan struct{})
	s.changed.Store(&ch)
	return s
}

// Name is the service's name as written in the config.
func (s *Service) Name() string { return s.name }

// Source names where the endpoints come from ("static", "consul").
func (s *Service) Source() string { return s.source }

// Snapshot returns the current view. It is safe on the hot path: one atomic
// load, no allocation, never nil.
func (s *Service) Snapshot() *Snapshot { return s.snap.Load() }

// Changed returns a channel that is closed the next time the snapshot is
// replaced.
func (s *Service) Changed() <-chan struct{} { return *s.changed.Load() }

// Publish replaces the snapshot and wakes everyone waiting on Changed. Only
// the source that owns the service calls it.
func (s *Service) Publish(snap *Snapshot) {
	s.snap.Store(snap)
	next := make(chan struct{})
	old := s.changed.Swap(&next)
	close(*old)
}

// Resolver hands out live services by name.
type Resolver interface {
	// Service returns the live view of name. It does not block waiting for
	// the first answer: a service whose source has not answered yet has a
	// not-ready snapshot.
	Service(name string) (*Service, error)
}
