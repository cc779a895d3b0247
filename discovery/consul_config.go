package discovery

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Defaults and bounds of ConsulConfig.
const (
	// DefaultConsulWaitTime is how long one blocking query may wait for a
	// change. With nothing changing, each watched service costs about
	// 60s/WaitTime requests per minute; a lost agent is noticed within about
	// WaitTime even when no TCP reset arrives.
	DefaultConsulWaitTime = 60 * time.Second
	// MaxConsulWaitTime is the longest wait Consul accepts (10 minutes).
	MaxConsulWaitTime = 10 * time.Minute
	// DefaultConsulMaxStale bounds how far behind the leader a stale read
	// may be before ferry repeats the query against the leader.
	DefaultConsulMaxStale = 10 * time.Second
	// DefaultConsulReadyWait bounds how long ferry reports not ready while
	// it waits for Consul's first answer for the services its routes lead
	// to (see ConsulConfig.ReadyWait).
	DefaultConsulReadyWait = 30 * time.Second
)

// redacted replaces secrets wherever ferry prints configuration.
const redacted = "[redacted]"

// ConsulConfig is the `consul:` section of ferry's config file. Every field is
// an override on top of the standard Consul environment as Consul's own
// clients read it (CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, CONSUL_HTTP_TOKEN_FILE,
// CONSUL_HTTP_SSL, CONSUL_CACERT, CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY,
// CONSUL_HTTP_SSL_VERIFY, CONSUL_NAMESPACE, CONSUL_PARTITION, ...): an empty
// field keeps what the environment says.
//
// The token is a secret: String, GoString (so fmt and slog), JSON and YAML output
// show it as "[redacted]", and errors from the Consul resolver never carry it.
type ConsulConfig struct {
	// Address is the agent's HTTP address, host:port, http(s)://host:port
	// or unix:///path. Empty: CONSUL_HTTP_ADDR, else 127.0.0.1:8500.
	Address string `yaml:"address,omitempty" json:"address,omitempty"`
	// Scheme is "http" or "https". Empty: from the environment (http).
	Scheme string `yaml:"scheme,omitempty" json:"scheme,omitempty"`
	// Token is the ACL token. Empty: CONSUL_HTTP_TOKEN(_FILE).
	Token string `yaml:"token,omitempty" json:"token,omitempty"`
	// TokenFile is a file holding the ACL token. Empty: from the
	// environment. A rotated token is picked up without a restart: the
	// file is looked at again at most once a second, and read again when
	// Consul refuses the token.
	TokenFile string `yaml:"token_file,omitempty" json:"token_file,omitempty"`
	// Datacenter to query. Empty: the agent's own datacenter. A watched
	// service may name another one.
	Datacenter string `yaml:"datacenter,omitempty" json:"datacenter,omitempty"`
	// Namespace (Consul Enterprise). Passed through only when set.
	Namespace string `yaml:"namespace,omitempty" json:"namespace,omitempty"`
	// Partition (Consul Enterprise). Passed through only when set.
	Partition string `yaml:"partition,omitempty" json:"partition,omitempty"`
	// CAFile verifies the agent's certificate. Empty: CONSUL_CACERT.
	CAFile string `yaml:"ca_file,omitempty" json:"ca_file,omitempty"`
	// CertFile and KeyFile are the client certificate for mutual TLS; both
	// or neither. Empty: CONSUL_CLIENT_CERT / CONSUL_CLIENT_KEY.
	CertFile string `yaml:"cert_file,omitempty" json:"cert_file,omitempty"`
	KeyFile  string `yaml:"key_file,omitempty" json:"key_file,omitempty"`
	// InsecureSkipVerify turns off verification of the agent's certificate.
	// False keeps the environment's CONSUL_HTTP_SSL_VERIFY.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify,omitempty" json:"insecure_skip_verify,omitempty"`
	// WaitTime is the longest one blocking query waits for a change.
	// Zero: DefaultConsulWaitTime (60s). At most 10m.
	WaitTime time.Duration `yaml:"wait_time,omitempty" json:"wait_time,omitempty"`
	// MaxStale is how far behind the leader a server answering a stale read
	// may be; a staler answer is fetched again from the leader. Zero:
	// DefaultConsulMaxStale (10s).
	MaxStale time.Duration `yaml:"max_stale,omitempty" json:"max_stale,omitempty"`
	// ReadyWait is how long ferry reports not ready (/ready 503, its
	// registration's check critical) while it waits for Consul's first
	// answer for every service its routes lead to. Past it ferry reports
	// ready anyway, says so in a warning, and a service still without an
	// answer gets 503 "endpoints not resolved yet" until its answer comes:
	// an agent that does not answer at start-up must not keep the pod's
	// application from starting for good. Zero: DefaultConsulReadyWait
	// (30s).
	ReadyWait time.Duration `yaml:"ready_wait,omitempty" json:"ready_wait,omitempty"`
}

// Validate reports the first bad field, naming its key as written in the
// config file (for example "consul.wait_time: must not be negative").
func (c ConsulConfig) Validate() error {
	if c.Address != "" {
		if err := validateConsulAddress(c.Address); err != nil {
			return fmt.Errorf("consul.address: %w", err)
		}
	}
	switch c.Scheme {
	case "", "http", "https":
	default:
		return fmt.Errorf("consul.scheme: %q is neither http nor https", c.Scheme)
	}
	if c.Datacenter != "" {
		if err := CheckDatacenter(c.Datacenter); err != nil {
			return fmt.Errorf("consul.datacenter: %w", err)
		}
	}
	if c.Token != "" && c.TokenFile != "" {
		return fmt.Errorf("consul.token_file: set together with consul.token; keep one")
	}
	for _, f := range []struct{ key, path string }{
		{"consul.token_file", c.TokenFile},
		{"consul.ca_file", c.CAFile},
		{"consul.cert_file", c.CertFile},
		{"consul.key_file", c.KeyFile},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return fmt.Errorf("%s: %w", f.key, err)
		}
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		if c.CertFile == "" {
			return fmt.Errorf("consul.cert_file: required when consul.key_file is set")
		}
		return fmt.Errorf("consul.key_file: required when consul.cert_file is set")
	}
	if c.WaitTime < 0 {
		return fmt.Errorf("consul.wait_time: %s must not be negative", c.WaitTime)
	}
	if c.WaitTime > MaxConsulWaitTime {
		return fmt.Errorf("consul.wait_time: %s is over Consul's limit of %s", c.WaitTime, MaxConsulWaitTime)
	}
	if c.WaitTime != 0 && c.WaitTime < time.Millisecond {
		return fmt.Errorf("consul.wait_time: %s is below Consul's resolution of 1ms", c.WaitTime)
	}
	if c.MaxStale < 0 {
		return fmt.Errorf("consul.max_stale: %s must not be negative", c.MaxStale)
	}
	if c.ReadyWait < 0 {
		return fmt.Errorf("consul.ready_wait: %s must not be negative", c.ReadyWait)
	}
	return nil
}

func validateConsulAddress(addr string) error {
	if strings.Contains(addr, "://") {
		u, err := url.Parse(addr)
		if err != nil {
			return err
		}
		switch u.Scheme {
		case "http", "https":
			if u.Host == "" {
				return fmt.Errorf("%q has no host", addr)
			}
			// No port is the scheme's own (80, 443); one written out
			// follows the file's rule for ports.
			if strings.HasSuffix(u.Host, ":") || u.Port() != "" {
				if err := checkConsulPort(u.Port()); err != nil {
					return fmt.Errorf("%q: port %q: %w", addr, u.Port(), err)
				}
			}
		case "unix":
			if u.Path == "" {
				return fmt.Errorf("%q has no socket path", addr)
			}
		default:
			return fmt.Errorf("%q: scheme %q is not http, https or unix", addr, u.Scheme)
		}
		return nil
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", addr, err)
	}
	if err := checkConsulPort(port); err != nil {
		return fmt.Errorf("%q: port %q: %w", addr, port, err)
	}
	return nil
}

// checkConsulPort holds the agent's port to the rule every port of ferry's
// config file follows: plain digits, no sign or leading zero (net.Dial
// reads "08500" as 8500, another text for the same port), 1-65535. Any
// other port fails every query ("dial tcp: address 99999: invalid port")
// while ferry would start and report ready as if Consul were merely down.
func checkConsulPort(port string) error {
	switch {
	case port == "":
		return errors.New("missing port")
	case strings.Trim(port, "0123456789") != "":
		return errors.New("want a number 1-65535, digits only")
	case len(port) > 1 && port[0] == '0':
		return fmt.Errorf("leading zero; write %s", strings.TrimLeft(port, "0"))
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return errors.New("out of range 1-65535")
	}
	return nil
}

// waitTime is WaitTime with its default applied.
func (c ConsulConfig) waitTime() time.Duration {
	if c.WaitTime == 0 {
		return DefaultConsulWaitTime
	}
	return c.WaitTime
}

// ReadyWaitOrDefault is ReadyWait with its default applied; c may be nil
// (no consul block).
func (c *ConsulConfig) ReadyWaitOrDefault() time.Duration {
	if c == nil || c.ReadyWait == 0 {
		return DefaultConsulReadyWait
	}
	return c.ReadyWait
}

// maxStale is MaxStale with its default applied.
func (c ConsulConfig) maxStale() time.Duration {
	if c.MaxStale == 0 {
		return DefaultConsulMaxStale
	}
	return c.MaxStale
}

// clientConfig returns the standard environment (consulEnvConfig) with
// the fields of c that are set laid over it, and the environment itself
// (the token's precedence depends on both). It validates c first.
func (c ConsulConfig) clientConfig() (cfg, env consulClientConfig, err error) {
	if err := c.Validate(); err != nil {
		return cfg, env, err
	}
	if env, err = consulEnvConfig(); err != nil {
		return cfg, env, err
	}
	cfg = env
	if c.Address != "" {
		cfg.Address, cfg.Keys.Address = c.Address, "consul.address"
	}
	if c.Scheme != "" {
		cfg.Scheme = c.Scheme
	}
	if c.Token != "" {
		cfg.Token = c.Token
		cfg.TokenFile = ""
	}
	if c.TokenFile != "" {
		cfg.TokenFile = c.TokenFile
		cfg.Token = ""
		cfg.Keys.TokenFile = "consul.token_file"
	}
	if c.Datacenter != "" {
		cfg.Datacenter = c.Datacenter
	}
	if c.Namespace != "" {
		cfg.Namespace = c.Namespace
	}
	if c.Partition != "" {
		cfg.Partition = c.Partition
	}
	if c.CAFile != "" {
		cfg.TLS.CAFile, cfg.Keys.CAFile = c.CAFile, "consul.ca_file"
	}
	if c.CertFile != "" {
		cfg.TLS.CertFile = c.CertFile
		cfg.TLS.KeyFile = c.KeyFile
		cfg.Keys.CertFile, cfg.Keys.KeyFile = "consul.cert_file", "consul.key_file"
	}
	if c.InsecureSkipVerify {
		cfg.TLS.InsecureSkipVerify = true
	}
	cfg.WaitTime = c.waitTime()
	return cfg, env, nil
}

// redactedCopy is c with the token replaced, for every printed form.
func (c ConsulConfig) redactedCopy() ConsulConfig {
	if c.Token != "" {
		c.Token = redacted
	}
	return c
}

// consulConfigPlain has ConsulConfig's fields and tags but none of its
// methods, so marshalling it does not recurse.
type consulConfigPlain ConsulConfig

// String prints the config for logs, with the token redacted.
func (c ConsulConfig) String() string {
	r := c.redactedCopy()
	return fmt.Sprintf("consul{address=%q scheme=%q token=%q token_file=%q datacenter=%q namespace=%q partition=%q ca_file=%q cert_file=%q key_file=%q insecure_skip_verify=%t wait_time=%s max_stale=%s}",
		r.Address, r.Scheme, r.Token, r.TokenFile, r.Datacenter, r.Namespace, r.Partition,
		r.CAFile, r.CertFile, r.KeyFile, r.InsecureSkipVerify, r.WaitTime, r.MaxStale)
}

// GoString keeps %#v from printing the token.
func (c ConsulConfig) GoString() string { return c.String() }

// MarshalJSON writes the config with the token redacted and durations as
// text ("1m0s"), for admin output.
func (c ConsulConfig) MarshalJSON() ([]byte, error) {
	type durations struct {
		consulConfigPlain
		WaitTime string `json:"wait_time,omitempty"`
		MaxStale string `json:"max_stale,omitempty"`
	}
	out := durations{consulConfigPlain: consulConfigPlain(c.redactedCopy())}
	if c.WaitTime != 0 {
		out.WaitTime = c.WaitTime.String()
	}
	if c.MaxStale != 0 {
		out.MaxStale = c.MaxStale.String()
	}
	return json.Marshal(out)
}

// MarshalYAML writes the config with the token redacted.
func (c ConsulConfig) MarshalYAML() (any, error) {
	return consulConfigPlain(c.redactedCopy()), nil
}
