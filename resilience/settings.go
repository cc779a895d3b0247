package resilience

import (
	"errors"
	"fmt"
	"net/textproto"
	"slices"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Settings configure the resilience of one upstream service. Start from
// DefaultSettings and decode the service's YAML over it: keys left out keep
// their defaults, keys given (including explicit zeros) win. Then call
// Normalize and Validate (NewUpstream does both).
//
// The YAML keys are the snake_case names in the tags; Validate's errors name
// them relative to the service, e.g. "breaker.failure_ratio: ...".
type Settings struct {
	// Balancer chooses among available endpoints: "p2c" (power of two
	// choices on least in-flight; the default, alias "least_request"),
	// "round_robin", "random", "weighted" (Consul weights) or "hash"
	// (consistent hashing on HashHeader).
	Balancer Balancer `yaml:"balancer"`
	// HashHeader names the request header whose value is the hash key when
	// Balancer is "hash" (required then, rejected otherwise). A request
	// without the header is balanced with p2c. Default "".
	HashHeader string `yaml:"hash_header"`
	// MaxInFlight caps concurrent requests to the service; beyond it Pick
	// fails with ErrOverloaded at once (load shedding, no queue). A tunnel
	// (an upgraded connection, e.g. a WebSocket) counts as a request until
	// it closes (Pick.Keep). Default 1024; 0 means unlimited.
	MaxInFlight int `yaml:"max_in_flight"`
	// Breaker configures the per-endpoint circuit breakers.
	Breaker BreakerSettings `yaml:"breaker"`
	// Outlier configures outlier ejection.
	Outlier OutlierSettings `yaml:"outlier"`
	// Retry configures retries, their backoff and budget.
	Retry RetryPolicy `yaml:"retry"`
	// Timeouts are enforced by the proxy; see Timeouts.
	Timeouts Timeouts `yaml:"timeouts"`
}

// DefaultSettings returns the settings every documented default describes.
func DefaultSettings() Settings {
	return Settings{
		Balancer:    BalancerP2C,
		MaxInFlight: 1024,
		Breaker:     DefaultBreakerSettings(),
		Outlier:     DefaultOutlierSettings(),
		Retry:       DefaultRetryPolicy(),
		Timeouts:    DefaultTimeouts(),
	}
}

// Normalize puts the settings in canonical form without changing their
// meaning: an empty balancer becomes "p2c" ("least_request" too), the
// balancer name is lower-cased, the hash header is canonicalised, retry
// methods are upper-cased and status lists sorted and de-duplicated.
func (s *Settings) Normalize() {
	b := Balancer(strings.ToLower(strings.TrimSpace(string(s.Balancer))))
	if b == "" || b == "least_request" {
		b = BalancerP2C
	}
	s.Balancer = b
	if h := strings.TrimSpace(s.HashHeader); h != "" {
		s.HashHeader = textproto.CanonicalMIMEHeaderKey(h)
	} else {
		s.HashHeader = ""
	}
	s.Breaker.FailureStatuses = sortedUnique(s.Breaker.FailureStatuses)
	s.Retry.OnStatuses = sortedUnique(s.Retry.OnStatuses)
	methods := make([]string, 0, len(s.Retry.Methods))
	for _, m := range s.Retry.Methods {
		m = strings.ToUpper(strings.TrimSpace(m))
		if !slices.Contains(methods, m) {
			methods = append(methods, m)
		}
	}
	s.Retry.Methods = methods
}

func sortedUnique(in []int) []int {
	out := slices.Clone(in)
	slices.Sort(out)
	return slices.Compact(out)
}

// FieldError is one invalid setting. Key is the YAML key path relative to
// the service (for example "breaker.failure_ratio").
type FieldError struct {
	Key     string
	Problem string
}

func (e *FieldError) Error() string { return e.Key + ": " + e.Problem }

// fieldErrors collects FieldErrors under a key prefix.
type fieldErrors struct {
	prefix string
	errs   []error
	parent *fieldErrors
}

func (f *fieldErrors) add(key, format string, args ...any) {
	root := f
	for root.parent != nil {
		root = root.parent
	}
	root.errs = append(root.errs, &FieldError{Key: f.prefix + key, Problem: fmt.Sprintf(format, args...)})
}

// Validate reports every invalid setting, each as a *FieldError joined with
// errors.Join, or nil. It expects normalised settings (Normalize).
func (s *Settings) Validate() error {
	f := &fieldErrors{}
	switch s.Balancer {
	case BalancerP2C, BalancerRoundRobin, BalancerRandom, BalancerWeighted, BalancerHash:
	default:
		f.add("balancer", "unknown balancer %q (want p2c, round_robin, random, weighted or hash)", s.Balancer)
	}
	if s.Balancer == BalancerHash && s.HashHeader == "" {
		f.add("hash_header", "required when balancer is %q", BalancerHash)
	}
	if s.HashHeader != "" && !httpguts.ValidHeaderFieldName(s.HashHeader) {
		// No request carries such a header: every request would hash alike.
		f.add("hash_header", "%q is not a valid header field name", s.HashHeader)
	} else if s.Balancer != BalancerHash && s.HashHeader != "" {
		f.add("hash_header", "only used when balancer is %q (balancer is %q)", BalancerHash, s.Balancer)
	}
	if s.MaxInFlight < 0 {
		f.add("max_in_flight", "must be >= 0 (0 means unlimited), got %d", s.MaxInFlight)
	}
	s.Breaker.validate(f.under("breaker."))
	s.Outlier.validate(f.under("outlier."))
	s.Retry.validate(f.under("retry."))
	s.Timeouts.validate(f.under("timeouts."))
	return errors.Join(f.errs...)
}

// under returns a collector that adds prefix to every key and shares f's
// list of errors.
func (f *fieldErrors) under(prefix string) *fieldErrors {
	return &fieldErrors{prefix: f.prefix + prefix, errs: nil, parent: f}
}

func validStatus(code int) bool { return code >= 100 && code <= 599 }

func checkStatuses(f *fieldErrors, key string, codes []int) {
	for _, c := range codes {
		if !validStatus(c) {
			f.add(key, "%d is not an HTTP status (100-599)", c)
		}
	}
}

func checkPositive(f *fieldErrors, key string, d time.Duration) {
	if d <= 0 {
		f.add(key, "must be > 0, got %s", d)
	}
}

// statusSet is a bitset of HTTP status codes 0-639, read on the hot path
// without allocation.
type statusSet [10]uint64

func newStatusSet(codes []int) statusSet {
	var s statusSet
	for _, c := range codes {
		if c >= 0 && c < 640 {
			s[c/64] |= 1 << (uint(c) % 64)
		}
	}
	return s
}

func (s *statusSet) has(code int) bool {
	return code >= 0 && code < 640 && s[code/64]&(1<<(uint(code)%64)) != 0
}
