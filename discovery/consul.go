package discovery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// ErrClosed is returned by a Consul resolver after Close.
var ErrClosed = errors.New("consul resolver closed")

// ConsulOptions are the knobs of a Consul resolver that are not part of the
// config file. The zero value is ready to use.
type ConsulOptions struct {
	// Logger receives watch transitions (failing, resumed) and registrar
	// events. Nil: slog.Default(). The token never reaches it.
	Logger *slog.Logger
	// Backoff paces retries after a failed query. Nil:
	// JitterBackoff(DefaultBackoffBase, DefaultBackoffMax).
	Backoff Backoff
	// Watch lists services to start watching at once, by the name ferry
	// uses for them. Others start on their first Service call.
	Watch map[string]ConsulWatch
	// Prior is the resolver this one replaces (a config reload), or nil.
	// Each watch of Watch that Prior has too, with the same filters and on
	// the same agent, datacenter, namespace and partition, starts with what
	// Prior's learnt: its last endpoints, the indexes Consul gave and a
	// state reset in progress (or, for a watch of Prior that has had no
	// answer yet, what it inherited in turn from the resolver before).
	// The watch serves Prior's last snapshot (stale or not, with its last
	// contact) until its own first answer, so its service is ready at
	// once, whether or not the agent answers, however many reloads come
	// before it does.
	// A first answer that is empty because Consul's state was reset is
	// then held as Prior's was, instead of emptying the service. Prior is
	// only read during NewConsul.
	Prior *Consul
}

// ConsulWatch says which Consul instances make up a service.
type ConsulWatch struct {
	// Service is the name registered in Consul. Empty: the name ferry uses.
	Service string `yaml:"service,omitempty" json:"service,omitempty"`
	// Tags keeps only instances that carry every one of these tags.
	Tags []string `yaml:"tags,omitempty" json:"tags,omitempty"`
	// Datacenter to query. Empty: consul.datacenter, else the agent's.
	Datacenter string `yaml:"datacenter,omitempty" json:"datacenter,omitempty"`
}

func (w ConsulWatch) equal(o ConsulWatch) bool {
	return w.Service == o.Service && w.Datacenter == o.Datacenter && slices.Equal(w.Tags, o.Tags)
}

// Consul is a Resolver backed by Consul's health endpoint: one blocking-query
// loop per watched service, each publishing immutable snapshots of the
// passing instances. When Consul cannot be reached the last good snapshot
// keeps serving, marked Stale; before the first answer a service is not
// Ready and its snapshot's Err says why.
type Consul struct {
	cfg     ConsulConfig
	client  *consulClient
	log     *slog.Logger
	backoff Backoff

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	watches map[string]*consulWatch
	prior   *Consul // ConsulOptions.Prior while NewConsul runs, when on the same cluster
}

type consulWatch struct {
	spec ConsulWatch
	w    *watch
}

// NewConsul builds a Consul resolver from the standard environment with cfg
// laid over it. It does not contact Consul: services are not ready until
// their first answer. Its loops stop when ctx ends or on Close.
func NewConsul(ctx context.Context, cfg ConsulConfig, opts ConsulOptions) (*Consul, error) {
	client, err := cfg.client()
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	backoff := opts.Backoff
	if backoff == nil {
		backoff = JitterBackoff(DefaultBackoffBase, DefaultBackoffMax)
	}
	cctx, cancel := context.WithCancel(ctx)
	c := &Consul{
		cfg:     cfg,
		client:  client,
		log:     log,
		backoff: backoff,
		ctx:     cctx,
		cancel:  cancel,
		watches: make(map[string]*consulWatch),
	}
	if p := opts.Prior; p != nil && p != c && p.client.sameCluster(client) {
		c.prior = p
	}
	names := make([]string, 0, len(opts.Watch))
	for name := range opts.Watch {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if _, err := c.Watch(name, opts.Watch[name]); err != nil {
			c.Close()
			return nil, err
		}
	}
	c.mu.Lock()
	c.prior = nil
	c.mu.Unlock()
	return c, nil
}

// Service implements Resolver. A service not watched yet starts a watch of
// the Consul service of the same name, no tag filter, the configured
// datacenter.
func (c *Consul) Service(name string) (*Service, error) {
	return c.watch(name, ConsulWatch{}, true)
}

// Watch starts watching a service under name with the given filters and
// returns its live view. Watching a name again with the same filters returns
// the same service; with other filters it is an error.
func (c *Consul) Watch(name string, spec ConsulWatch) (*Service, error) {
	return c.watch(name, spec, false)
}

// watch starts or finds the watch of name. any accepts an existing watch
// whatever its filters (Service's lazy lookup).
func (c *Consul) watch(name string, spec ConsulWatch, any bool) (*Service, error) {
	if err := validateServiceName("name", name); err != nil {
		return nil, err
	}
	if spec.Service != "" {
		if err := validateServiceName("service", spec.Service); err != nil {
			return nil, fmt.Errorf("service %q: %w", name, err)
		}
	}
	for i, t := range spec.Tags {
		if t == "" {
			return nil, fmt.Errorf("service %q: tags[%d]: empty tag", name, i)
		}
	}
	if spec.Datacenter != "" {
		if err := CheckDatacenter(spec.Datacenter); err != nil {
			return nil, fmt.Errorf("service %q: datacenter: %w", name, err)
		}
	}
	spec.Tags = slices.Clone(spec.Tags)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if cw, ok := c.watches[name]; ok {
		if !any && !cw.spec.equal(spec) {
			return nil, fmt.Errorf("service %q: already watched with other filters", name)
		}
		return cw.w.svc, nil
	}
	consulName := spec.Service
	if consulName == "" {
		consulName = name
	}
	w := &watch{
		svc:        NewService(name, "consul"),
		service:    consulName,
		tags:       spec.Tags,
		datacenter: spec.Datacenter,
		query:      c.client.healthService,
		waitTime:   c.cfg.waitTime(),
		maxStale:   c.cfg.maxStale(),
		backoff:    c.backoff,
		pace:       minQueryInterval,
		resetHold:  indexResetHold,
		sleep:      sleepCtx,
		now:        time.Now,
		scrub:      c.client.token.scrub,
		connsLost:  c.client.connsLost,
		log:        c.log,
	}
	if c.prior != nil {
		w.inherit(c.prior.memory(name, spec))
	}
	c.watches[name] = &consulWatch{spec: spec, w: w}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		w.run(c.ctx)
	}()
	return w.svc, nil
}

// memory returns what the watch of name learnt or inherited (see
// watch.handOn), when it watches with spec's filters; nil otherwise.
func (c *Consul) memory(name string, spec ConsulWatch) *watchMemory {
	c.mu.Lock()
	defer c.mu.Unlock()
	cw, ok := c.watches[name]
	if !ok || !cw.spec.equal(spec) {
		return nil
	}
	return cw.w.handOn()
}

func validateServiceName(key, name string) error {
	if err := CheckServiceName(name); err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	return nil
}

// CheckServiceName reports why name cannot be a Consul service name (one
// Watch takes, or a registration's), or nil.
func CheckServiceName(name string) error {
	if name == "" {
		return errors.New("empty service name")
	}
	if strings.ContainsAny(name, "/?#% ") {
		return fmt.Errorf("%q has a character Consul service names cannot hold", name)
	}
	return nil
}

// CheckDatacenter reports why name cannot be a Consul datacenter, or nil.
// Consul names a datacenter with lower-case ASCII letters, digits, - and _
// (its agent refuses any other -datacenter, and reads one in upper case as
// lower case); a query naming another answers "No path to datacenter", so
// a service watched in it would never resolve.
func CheckDatacenter(name string) error {
	if name == "" {
		return errors.New("empty datacenter name")
	}
	for _, r := range name {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' && r != '_' {
			if lower := strings.ToLower(name); lower != name && CheckDatacenter(lower) == nil {
				return fmt.Errorf("%q is not a Consul datacenter name: Consul names datacenters in lower case (%s)", name, lower)
			}
			return fmt.Errorf("%q is not a Consul datacenter name (lower-case letters, digits, - and _ only)", name)
		}
	}
	return nil
}

// ConsulServiceStats are the counters of one watched service, for admin and
// metrics.
type ConsulServiceStats struct {
	// Name is the name ferry uses; Service is Consul's.
	Name    string `json:"name"`
	Service string `json:"service"`
	// Queries counts requests sent to Consul, Errors the failed ones.
	Queries uint64 `json:"queries"`
	Errors  uint64 `json:"errors"`
	// StaleRetries counts answers dropped for being older than max_stale.
	StaleRetries uint64 `json:"stale_retries"`
	// Publishes counts snapshots published (changes and stale transitions).
	Publishes uint64 `json:"publishes"`
	// LastIndex is the Consul index of the last answer.
	LastIndex uint64 `json:"last_index"`
	// LastContact is when Consul last answered with endpoints the watch
	// took (an answer held back after a state reset is not counted); zero
	// if never.
	LastContact time.Time `json:"last_contact"`
	// LastError is the last failure, token removed; empty if none.
	LastError string `json:"last_error,omitempty"`
	// Failing: the last query failed and none was answered since. While
	// not failing, the watch's blocking query waits on Consul, which ends
	// it at once on a change: the snapshot is current.
	Failing bool `json:"failing"`
}

// Stats returns the counters of every watched service, sorted by name.
func (c *Consul) Stats() []ConsulServiceStats {
	c.mu.Lock()
	out := make([]ConsulServiceStats, 0, len(c.watches))
	for name, cw := range c.watches {
		s := &cw.w.stats
		st := ConsulServiceStats{
			Name:         name,
			Service:      cw.w.service,
			Queries:      s.queries.Load(),
			Errors:       s.errors.Load(),
			StaleRetries: s.staleRetries.Load(),
			Publishes:    s.publishes.Load(),
			LastIndex:    s.lastIndex.Load(),
			Failing:      s.failing.Load(),
		}
		if ns := s.lastContact.Load(); ns != 0 {
			st.LastContact = time.Unix(0, ns)
		}
		if e := s.lastError.Load(); e != nil {
			st.LastError = *e
		}
		out = append(out, st)
	}
	c.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Close stops every watch and waits for their goroutines. Snapshots already
// handed out stay readable. Close is idempotent.
func (c *Consul) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
	c.client.transport.CloseIdleConnections()
	return nil
}

// CheckConsul reports the error NewConsul would return for cfg laid over
// the standard environment, building the client (its TLS settings, its
// token) without contacting Consul or starting anything.
func CheckConsul(cfg ConsulConfig) error {
	client, err := cfg.client()
	if err != nil {
		return err
	}
	client.transport.CloseIdleConnections()
	return nil
}

// client builds the client to the agent for c laid over the standard
// environment.
func (c ConsulConfig) client() (*consulClient, error) {
	clientCfg, env, err := c.clientConfig()
	if err != nil {
		return nil, err
	}
	client, err := newConsulClient(clientCfg, env)
	if err != nil {
		return nil, fmt.Errorf("consul client: %s", scrubToken(err.Error(), clientCfg.Token))
	}
	return client, nil
}

// scrubToken removes token from s.
func scrubToken(s, token string) string {
	if token == "" {
		return s
	}
	return strings.ReplaceAll(s, token, redacted)
}

var (
	_ Resolver  = (*Consul)(nil)
	_ io.Closer = (*Consul)(nil)
)
