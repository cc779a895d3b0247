package resilience

import (
	"errors"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// load decodes a service's resilience YAML the way the sidecar does: over
// the defaults, then Normalize and Validate.
func load(text string) (Settings, error) {
	s := DefaultSettings()
	if err := yaml.Unmarshal([]byte(text), &s); err != nil {
		return s, err
	}
	s.Normalize()
	return s, s.Validate()
}

func TestDefaultsAreValid(t *testing.T) {
	s := DefaultSettings()
	s.Normalize()
	if err := s.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	if !reflect.DeepEqual(s, DefaultSettings()) {
		t.Fatalf("Normalize changed the defaults:\n%+v\n%+v", s, DefaultSettings())
	}
	if s.Timeouts.Overall != 0 {
		t.Fatal("an overall timeout by default would cut long downloads")
	}
}

func TestSettingsFromYAML(t *testing.T) {
	for _, tc := range []struct {
		name  string
		yaml  string
		check func(*testing.T, Settings)
	}{
		{"empty keeps defaults", ``, func(t *testing.T, s Settings) {
			if !reflect.DeepEqual(s, DefaultSettings()) {
				t.Fatalf("%+v", s)
			}
		}},
		{"every key", `
balancer: Hash
hash_header: x-user-id
max_in_flight: 0
breaker:
  consecutive_failures: 0
  failure_ratio: 0.25
  min_requests: 50
  window: 30s
  open_duration: 1m
  half_open_probes: 3
  failure_statuses: [504, 503, 503, 500]
outlier:
  consecutive_5xx: 7
  base_ejection_time: 10s
  max_ejection_time: 2m
  max_ejection_percent: 34
retry:
  max_retries: 1
  methods: [get, post]
  on_statuses: [503]
  base_interval: 10ms
  max_interval: 1s
  budget: {ratio: 0.1, min_per_second: 2, window: 20s}
timeouts:
  connect: 250ms
  response_header: 5s
  per_try: 2s
  body_idle: 90s
  overall: 10m
  tunnel_idle: 1h
  tunnel_half_closed: 3s
`, func(t *testing.T, s Settings) {
			want := Settings{
				Balancer: BalancerHash, HashHeader: "X-User-Id", MaxInFlight: 0,
				Breaker: BreakerSettings{FailureRatio: 0.25, MinRequests: 50, Window: 30 * time.Second,
					OpenDuration: time.Minute, HalfOpenProbes: 3, FailureStatuses: []int{500, 503, 504}},
				Outlier: OutlierSettings{Consecutive5xx: 7, BaseEjectionTime: 10 * time.Second,
					MaxEjectionTime: 2 * time.Minute, MaxEjectionPercent: 34},
				Retry: RetryPolicy{MaxRetries: 1, Methods: []string{"GET", "POST"}, OnStatuses: []int{503},
					BaseInterval: 10 * time.Millisecond, MaxInterval: time.Second,
					Budget: BudgetSettings{Ratio: 0.1, MinPerSecond: 2, Window: 20 * time.Second}},
				Timeouts: Timeouts{Connect: 250 * time.Millisecond, ResponseHeader: 5 * time.Second,
					PerTry: 2 * time.Second, BodyIdle: 90 * time.Second, Overall: 10 * time.Minute,
					TunnelIdle: time.Hour, TunnelHalfClosed: 3 * time.Second},
			}
			if !reflect.DeepEqual(s, want) {
				t.Fatalf("got\n%+v\nwant\n%+v", s, want)
			}
		}},
		{"least_request alias", `balancer: least_request`, func(t *testing.T, s Settings) {
			if s.Balancer != BalancerP2C {
				t.Fatal(s.Balancer)
			}
		}},
		{"explicit zero turns a trigger off", `outlier: {consecutive_5xx: 0, base_ejection_time: 0s}`, func(t *testing.T, s Settings) {
			if s.Outlier.Consecutive5xx != 0 {
				t.Fatal(s.Outlier)
			}
		}},
		{"no breaker at all", `breaker: {consecutive_failures: 0, open_duration: 0s}`, func(t *testing.T, s Settings) {
			if s.Breaker.Enabled() {
				t.Fatal("enabled")
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := load(tc.yaml)
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			tc.check(t, s)
		})
	}
}

func TestSettingsErrorsNameTheKey(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		want []string // each a full "key: problem" prefix
	}{
		{`breaker: {failure_ratio: 1.5}`, []string{"breaker.failure_ratio: must be in (0,1]"}},
		{`breaker: {failure_ratio: -0.1}`, []string{"breaker.failure_ratio: must be in (0,1]"}},
		{`breaker: {failure_ratio: 0.5, min_requests: 0, window: 1ms}`, []string{"breaker.min_requests: must be >= 1", "breaker.window: must be >= 10ms"}},
		{`breaker: {open_duration: 0s}`, []string{"breaker.open_duration: must be > 0"}},
		{`breaker: {half_open_probes: 0}`, []string{"breaker.half_open_probes: must be in [1,1000]"}},
		{`breaker: {consecutive_failures: -1}`, []string{"breaker.consecutive_failures: must be >= 0"}},
		{`breaker: {consecutive_failures: 4294967297}`, []string{"breaker.consecutive_failures: must be <= 4294967295"}},
		{`breaker: {failure_ratio: 0.5, min_requests: 4294967296}`, []string{"breaker.min_requests: must be <= 4294967295"}},
		{`breaker: {failure_statuses: [503, 700]}`, []string{"breaker.failure_statuses: 700 is not an HTTP status"}},
		{`balancer: fastest`, []string{`balancer: unknown balancer "fastest"`}},
		{`balancer: hash`, []string{`hash_header: required when balancer is "hash"`}},
		{`hash_header: x-user`, []string{`hash_header: only used when balancer is "hash"`}},
		{`max_in_flight: -1`, []string{"max_in_flight: must be >= 0"}},
		{`outlier: {max_ejection_percent: 101}`, []string{"outlier.max_ejection_percent: must be in [0,100]"}},
		{`outlier: {base_ejection_time: 0s}`, []string{"outlier.base_ejection_time: must be > 0"}},
		{`outlier: {base_ejection_time: 1m, max_ejection_time: 30s}`, []string{"outlier.max_ejection_time: must be >= outlier.base_ejection_time"}},
		{`retry: {max_retries: 11}`, []string{"retry.max_retries: must be in [0,10]"}},
		{`retry: {methods: ["GE T"]}`, []string{`retry.methods: "GE T" is not an HTTP method`}},
		{`retry: {base_interval: 0s}`, []string{"retry.base_interval: must be > 0"}},
		{`retry: {base_interval: 1s, max_interval: 10ms}`, []string{"retry.max_interval: must be >= retry.base_interval"}},
		{`retry: {budget: {ratio: 2, min_per_second: -1, window: 1500ms}}`, []string{"retry.budget.ratio: must be in [0,1]", "retry.budget.min_per_second: must be >= 0", "retry.budget.window: must be whole seconds"}},
		{`timeouts: {connect: -1s}`, []string{"timeouts.connect: must be >= 0"}},
		{`timeouts: {tunnel_half_closed: -1s}`, []string{"timeouts.tunnel_half_closed: must be >= 0"}},
		{`timeouts: {overall: 1s, per_try: 2s, connect: 500ms}`, []string{"timeouts.per_try: 2s exceeds timeouts.overall 1s"}},
		{`timeouts: {overall: 1s}`, []string{"timeouts.connect: 5s exceeds timeouts.overall 1s"}},
	} {
		t.Run(tc.yaml, func(t *testing.T) {
			_, err := load(tc.yaml)
			if err == nil {
				t.Fatal("accepted")
			}
			var got []string
			for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
				var fe *FieldError
				if !errors.As(e, &fe) {
					t.Fatalf("%T is not a *FieldError: %v", e, e)
				}
				got = append(got, fe.Error())
			}
			if len(got) != len(tc.want) {
				t.Fatalf("errors %q, want %d", got, len(tc.want))
			}
			for i, w := range tc.want {
				if !strings.HasPrefix(got[i], w) {
					t.Fatalf("error %q does not start with %q", got[i], w)
				}
			}
		})
	}
}

func TestSettingsBadYAMLTypes(t *testing.T) {
	if _, err := load(`breaker: {open_duration: soon}`); err == nil || !strings.Contains(err.Error(), "soon") {
		t.Fatalf("bad duration: %v", err)
	}
}

func TestNormalizeDoesNotAlias(t *testing.T) {
	s := DefaultSettings()
	codes := []int{504, 502}
	s.Retry.OnStatuses = codes
	s.Normalize()
	if !slices.Equal(codes, []int{504, 502}) {
		t.Fatalf("Normalize sorted the caller's slice: %v", codes)
	}
}

// The README's configuration block is the defaults, spelled out.
func TestReadmeExampleIsTheDefaults(t *testing.T) {
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(data), "```yaml\n")
	block, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("no yaml block in README.md")
	}
	var s Settings // decoded over nothing: every key must be there
	if err := yaml.Unmarshal([]byte(block), &s); err != nil {
		t.Fatalf("README yaml: %v", err)
	}
	s.Normalize()
	if want := DefaultSettings(); !reflect.DeepEqual(s, want) {
		t.Fatalf("README says\n%+v\ndefaults are\n%+v", s, want)
	}
}
