package sidecar

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/ferrymesh/ferry/discovery"
)

// resolvers builds where each used service's endpoints come from: the
// static resolver for services with endpoints, Consul for the others.
// consul is nil when nothing in the config talks to Consul.
//
// prior is the Consul resolver of the generation in force (a reload), or
// nil: a watch it has of the same service starts from what it learnt (see
// discovery.ConsulOptions.Prior).
func resolvers(ctx context.Context, cfg *Config, log *slog.Logger, prior *discovery.Consul) (static *discovery.Static, consul *discovery.Consul, err error) {
	eps := map[string][]discovery.Endpoint{}
	watch := map[string]discovery.ConsulWatch{}
	used := cfg.usedServices()
	for name, sc := range cfg.Services {
		if !used[name] {
			continue
		}
		if sc.UsesConsul() {
			w := discovery.ConsulWatch{}
			if sc.Consul != nil {
				w = *sc.Consul
			}
			watch[name] = w
			continue
		}
		list := make([]discovery.Endpoint, 0, len(sc.Endpoints))
		for _, addr := range sc.Endpoints {
			list = append(list, discovery.Endpoint{Addr: strings.TrimSpace(addr), Weight: 1})
		}
		eps[name] = list
	}
	if static, err = discovery.NewStatic(eps); err != nil {
		return nil, nil, err
	}
	if !cfg.needsConsul() {
		return static, nil, nil
	}
	var cc discovery.ConsulConfig
	if cfg.Consul != nil {
		cc = *cfg.Consul
	}
	consul, err = discovery.NewConsul(ctx, cc, discovery.ConsulOptions{Logger: log, Watch: watch, Prior: prior})
	if err != nil {
		return nil, nil, fmt.Errorf("consul: %w", err)
	}
	return static, consul, nil
}

// serviceResolver answers from the static resolver or Consul, per service.
type serviceResolver struct {
	static *discovery.Static
	consul *discovery.Consul
	cfg    map[string]*ServiceConfig
}

func (r serviceResolver) Service(name string) (*discovery.Service, error) {
	sc, ok := r.cfg[name]
	if !ok {
		return nil, fmt.Errorf("service %q: not defined", name)
	}
	if sc.UsesConsul() {
		return r.consul.Service(name)
	}
	return r.static.Service(name)
}

var _ discovery.Resolver = serviceResolver{}
