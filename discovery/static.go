package discovery

import (
	"fmt"
	"net"
	"sort"
	"time"
)

// Static is a Resolver over a fixed set of services, the endpoints written in
// the config file. It is ferry's embedded default: no Consul needed.
type Static struct {
	services map[string]*Service
}

// NewStatic builds a static resolver. Each address must be host:port.
func NewStatic(endpoints map[string][]Endpoint) (*Static, error) {
	now := time.Now()
	st := &Static{services: make(map[string]*Service, len(endpoints))}
	names := make([]string, 0, len(endpoints))
	for name := range endpoints {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		eps := append([]Endpoint(nil), endpoints[name]...)
		for i, ep := range eps {
			if _, _, err := net.SplitHostPort(ep.Addr); err != nil {
				return nil, fmt.Errorf("service %q endpoint %d: %w", name, i, err)
			}
			if eps[i].Weight <= 0 {
				eps[i].Weight = 1
			}
		}
		svc := NewService(name, "static")
		svc.Publish(&Snapshot{Endpoints: eps, Ready: true, Updated: now, Checked: now})
		st.services[name] = svc
	}
	return st, nil
}

// Service implements Resolver.
func (s *Static) Service(name string) (*Service, error) {
	svc, ok := s.services[name]
	if !ok {
		return nil, fmt.Errorf("service %q: not defined", name)
	}
	return svc, nil
}

var _ Resolver = (*Static)(nil)
