package discovery

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ferrymesh/ferry/internal/dialhost"
)

// ferry's own client for the four Consul HTTP API calls it makes (health of
// a service as a blocking query; register, update the TTL check of and
// deregister the local service). It reads the standard environment and
// sends the requests the official Go client (github.com/hashicorp/consul/api)
// sends for the same calls; that client, with its dependencies, was about
// 0.6 MiB of ferry's resident memory at idle, in every sidecar.

// The environment variables of the standard Consul configuration.
const (
	envConsulAddr          = "CONSUL_HTTP_ADDR"
	envConsulToken         = "CONSUL_HTTP_TOKEN"
	envConsulTokenFile     = "CONSUL_HTTP_TOKEN_FILE"
	envConsulAuth          = "CONSUL_HTTP_AUTH"
	envConsulSSL           = "CONSUL_HTTP_SSL"
	envConsulTLSServerName = "CONSUL_TLS_SERVER_NAME"
	envConsulCAFile        = "CONSUL_CACERT"
	envConsulCAPath        = "CONSUL_CAPATH"
	envConsulClientCert    = "CONSUL_CLIENT_CERT"
	envConsulClientKey     = "CONSUL_CLIENT_KEY"
	envConsulSSLVerify     = "CONSUL_HTTP_SSL_VERIFY"
	envConsulNamespace     = "CONSUL_NAMESPACE"
	envConsulPartition     = "CONSUL_PARTITION"
)

// Check statuses.
const (
	consulPassing  = "passing"
	consulCritical = "critical"
)

// consulClientConfig is where and how to reach the agent.
type consulClientConfig struct {
	Address    string // host:port, or scheme://host:port[/prefix], or unix:///path
	Scheme     string // http or https
	Token      string
	TokenFile  string
	Datacenter string
	Namespace  string
	Partition  string
	WaitTime   time.Duration // default wait of blocking queries
	AuthUser   string        // HTTP basic auth, when AuthSet
	AuthPass   string
	AuthSet    bool
	TLS        consulTLSConfig
	Keys       consulKeys // where the settings came from, for errors
}

// consulKeys name where each setting an error can come from was read: an
// environment variable (CONSUL_CACERT) or a config key (consul.ca_file).
// Empty: the error names none.
type consulKeys struct {
	Address, TokenFile, ServerName, CAFile, CAPath, CertFile, KeyFile string
}

// named prefixes err with the key it came from, when known.
func named(key string, err error) error {
	if key == "" {
		return err
	}
	return fmt.Errorf("%s: %w", key, err)
}

type consulTLSConfig struct {
	ServerName         string // host[:port]
	CAFile             string
	CAPath             string
	CertFile           string
	KeyFile            string
	InsecureSkipVerify bool
}

// consulEnvConfig reads the standard environment: CONSUL_HTTP_ADDR (default
// localhost:8500), CONSUL_HTTP_TOKEN(_FILE), CONSUL_HTTP_AUTH (user[:pass]),
// CONSUL_HTTP_SSL, CONSUL_TLS_SERVER_NAME, CONSUL_CACERT, CONSUL_CAPATH,
// CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY, CONSUL_HTTP_SSL_VERIFY,
// CONSUL_NAMESPACE and CONSUL_PARTITION. A boolean (CONSUL_HTTP_SSL,
// CONSUL_HTTP_SSL_VERIFY) that strconv.ParseBool does not read is an error
// naming the variable: the official client logs it and reads false, which
// sends plain http to an agent that wants https (CONSUL_HTTP_SSL=yes) and
// turns the verification of the agent's certificate off
// (CONSUL_HTTP_SSL_VERIFY=yes), with nothing in ferry's log to say why.
func consulEnvConfig() (consulClientConfig, error) {
	c := consulClientConfig{Address: "localhost:8500", Scheme: "http"}
	c.Keys = consulKeys{
		Address: envConsulAddr, TokenFile: envConsulTokenFile, ServerName: envConsulTLSServerName,
		CAFile: envConsulCAFile, CAPath: envConsulCAPath, CertFile: envConsulClientCert, KeyFile: envConsulClientKey,
	}
	set := func(dst *string, env string) {
		if v := os.Getenv(env); v != "" {
			*dst = v
		}
	}
	set(&c.Address, envConsulAddr)
	set(&c.TokenFile, envConsulTokenFile)
	set(&c.Token, envConsulToken)
	if auth := os.Getenv(envConsulAuth); auth != "" {
		c.AuthUser, c.AuthPass, _ = strings.Cut(auth, ":")
		c.AuthSet = true
	}
	if v := os.Getenv(envConsulSSL); v != "" {
		on, err := envBool(envConsulSSL, v)
		if err != nil {
			return c, err
		}
		if on {
			c.Scheme = "https"
		}
	}
	set(&c.TLS.ServerName, envConsulTLSServerName)
	set(&c.TLS.CAFile, envConsulCAFile)
	set(&c.TLS.CAPath, envConsulCAPath)
	set(&c.TLS.CertFile, envConsulClientCert)
	set(&c.TLS.KeyFile, envConsulClientKey)
	if v := os.Getenv(envConsulSSLVerify); v != "" {
		verify, err := envBool(envConsulSSLVerify, v)
		if err != nil {
			return c, err
		}
		if !verify {
			c.TLS.InsecureSkipVerify = true
		}
	}
	set(&c.Namespace, envConsulNamespace)
	set(&c.Partition, envConsulPartition)
	return c, nil
}

// envBool reads the boolean variable key, whose value is v, as Consul's
// clients do (strconv.ParseBool); any other value is an error naming key
// and the values it takes.
func envBool(key, v string) (bool, error) {
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%s: %q is not a boolean (want one of 1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False)", key, v)
	}
	return b, nil
}

// resolveConsulToken picks the token the way the official client does:
// a token file set in the config (not the environment's) first, then a
// token set in the config, then the environment's token file, then its
// token. A token file that is empty leaves the token as it was. A token
// from a file follows the file (see consulToken).
func resolveConsulToken(cfg, env consulClientConfig) (*consulToken, error) {
	switch {
	case cfg.TokenFile != "" && cfg.TokenFile != env.TokenFile:
		return newConsulTokenFile(cfg.TokenFile, cfg.Token)
	case cfg.Token != "" && cfg.Token != env.Token:
		return newConsulToken(cfg.Token), nil
	case env.TokenFile != "":
		return newConsulTokenFile(env.TokenFile, cfg.Token)
	}
	return newConsulToken(env.Token), nil
}

// consulClient talks to one agent.
type consulClient struct {
	cfg        consulClientConfig
	scheme     string
	host       string // host:port, or a socket path
	pathPrefix string
	token      *consulToken
	http       *http.Client
	transport  *http.Transport // the pooled transport, closed on Close
	lost       atomic.Uint64   // connections the agent closed (see connsLost)
}

// connsLost is how many connections to the agent the agent closed (or
// reset) so far; ferry's own closes do not count. Consul never closes a
// connection it is not done with while it runs, so a new count says the
// agent may have restarted: with its state reset, its index starts over
// lower, and a blocking query with an index the old agent gave would wait
// out its whole wait before the new one answers (see watch.step).
func (c *consulClient) connsLost() uint64 { return c.lost.Load() }

// countLost wraps dial so that every connection it makes counts the agent
// closing it in c.lost.
func (c *consulClient) countLost(dial func(context.Context, string, string) (net.Conn, error)) func(context.Context, string, string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &agentConn{Conn: conn, lost: &c.lost}, nil
	}
}

// agentConn is a connection to the agent that counts, once, a read that
// fails while ferry has not closed it: the agent closed or reset it.
type agentConn struct {
	net.Conn
	lost    *atomic.Uint64
	closed  atomic.Bool // by ferry
	counted atomic.Bool
}

func (c *agentConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil && !c.closed.Load() && c.counted.CompareAndSwap(false, true) {
		c.lost.Add(1)
	}
	return n, err
}

func (c *agentConn) Close() error {
	c.closed.Store(true)
	return c.Conn.Close()
}

// newConsulClient builds a client for cfg, whose token fields are already
// laid over env (the environment it was built from).
func newConsulClient(cfg, env consulClientConfig) (*consulClient, error) {
	c := &consulClient{cfg: cfg, scheme: cfg.Scheme, host: cfg.Address}
	if c.scheme == "" {
		c.scheme = "http"
	}
	if c.host == "" {
		c.host = "localhost:8500"
	}
	tlsConf, err := consulTLS(cfg.TLS, cfg.Keys)
	if err != nil {
		return nil, err
	}
	c.transport = consulTransport()
	c.transport.TLSClientConfig = tlsConf
	c.transport.DialContext = c.countLost(c.transport.DialContext)
	c.http = &http.Client{Transport: c.transport}
	if scheme, rest, ok := strings.Cut(c.host, "://"); ok {
		switch scheme {
		case "http":
		case "https":
			c.scheme = "https"
		case "unix":
			t := consulTransport()
			t.DisableKeepAlives = true
			t.MaxIdleConnsPerHost = -1
			t.TLSClientConfig = tlsConf.Clone()
			t.DialContext = c.countLost(func(context.Context, string, string) (net.Conn, error) {
				return net.Dial("unix", rest)
			})
			c.http = &http.Client{Transport: t}
		default:
			return nil, named(cfg.Keys.Address, fmt.Errorf("Unknown protocol scheme: %s", scheme))
		}
		c.host = rest
		if scheme == "http" || scheme == "https" {
			if host, prefix, ok := strings.Cut(rest, "/"); ok {
				c.host, c.pathPrefix = host, "/"+prefix
			}
			c.host = dialhost.Bracket(c.host)
		}
	} else {
		c.host = dialhost.Bracket(c.host)
	}
	if !strings.HasPrefix(c.host, "/") {
		// Every request's URL starts so: one that does not parse (a
		// CONSUL_HTTP_ADDR of "::::") would fail every request.
		u, err := url.Parse(c.scheme + "://" + c.host + c.pathPrefix)
		if err != nil {
			return nil, named(cfg.Keys.Address, fmt.Errorf("%q is no address to send a request to: %v", cfg.Address, err))
		}
		// url.Parse takes any digits for a port; a dial takes 1-65535.
		if p := u.Port(); p != "" {
			if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
				return nil, named(cfg.Keys.Address, fmt.Errorf("%q is no address to send a request to: port %s is outside 1-65535", cfg.Address, p))
			}
		}
	}
	if c.token, err = resolveConsulToken(cfg, env); err != nil {
		return nil, named(cfg.Keys.TokenFile, err)
	}
	return c, nil
}

// sameCluster reports whether c and o ask the same agent for the same
// datacenter, namespace and partition: their indexes and answers are one
// Consul's.
func (c *consulClient) sameCluster(o *consulClient) bool {
	return c.scheme == o.scheme && c.host == o.host && c.pathPrefix == o.pathPrefix &&
		c.cfg.Datacenter == o.cfg.Datacenter && c.cfg.Namespace == o.cfg.Namespace && c.cfg.Partition == o.cfg.Partition
}

// consulTransport is a pooled transport with the official client's
// settings (proxy from the environment, 30s dial timeout and keep-alive).
func consulTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          100,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: 1 * time.Second,
		ForceAttemptHTTP2:     true,
		MaxIdleConnsPerHost:   runtime.GOMAXPROCS(0) + 1,
	}
}

// consulTLS builds the TLS settings: server name, client certificate, CA
// file (else every PEM file under CA path; else the system roots).
func consulTLS(t consulTLSConfig, keys consulKeys) (*tls.Config, error) {
	conf := &tls.Config{InsecureSkipVerify: t.InsecureSkipVerify}
	if server := t.ServerName; server != "" {
		if strings.LastIndex(server, ":") > strings.LastIndex(server, "]") {
			host, _, err := net.SplitHostPort(server)
			if err != nil {
				return nil, named(keys.ServerName, err)
			}
			server = host
		}
		conf.ServerName = server
	}
	if t.CertFile != "" && t.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, named(pairKeys(keys), err)
		}
		conf.Certificates = []tls.Certificate{cert}
	} else if t.CertFile != "" {
		return nil, named(keys.CertFile, fmt.Errorf("both client cert and client key must be provided (%s is not set)", orUnnamed(keys.KeyFile)))
	} else if t.KeyFile != "" {
		return nil, named(keys.KeyFile, fmt.Errorf("both client cert and client key must be provided (%s is not set)", orUnnamed(keys.CertFile)))
	}
	switch {
	case t.CAFile != "":
		pool := x509.NewCertPool()
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, named(keys.CAFile, fmt.Errorf("Error loading CA File: %s", err))
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, named(keys.CAFile, fmt.Errorf("Error loading CA File: Couldn't parse PEM in: %s", t.CAFile))
		}
		conf.RootCAs = pool
	case t.CAPath != "":
		pool := x509.NewCertPool()
		err := filepath.Walk(t.CAPath, func(path string, info os.FileInfo, err error) error {
			if err != nil || info.IsDir() {
				return err
			}
			pem, err := os.ReadFile(path)
			if err != nil {
				return fmt.Errorf("Error loading file from CAPath: %s", err)
			}
			if !pool.AppendCertsFromPEM(pem) {
				return fmt.Errorf("Error loading CA Path: Couldn't parse PEM in: %s", path)
			}
			return nil
		})
		if err != nil {
			return nil, named(keys.CAPath, err)
		}
		conf.RootCAs = pool
	}
	return conf, nil
}

// pairKeys names the client certificate's two keys together.
func pairKeys(keys consulKeys) string {
	if keys.CertFile == "" || keys.KeyFile == "" {
		return keys.CertFile + keys.KeyFile
	}
	return keys.CertFile + ", " + keys.KeyFile
}

func orUnnamed(key string) string {
	if key == "" {
		return "the other"
	}
	return key
}

// consulStatusError is an answer other than 200, with its body.
type consulStatusError struct {
	Code int
	Body string
}

func (e consulStatusError) Error() string {
	return fmt.Sprintf("Unexpected response code: %d (%s)", e.Code, e.Body)
}

// consulQuery are the options of a read.
type consulQuery struct {
	Datacenter string
	WaitIndex  uint64
	WaitTime   time.Duration
	AllowStale bool
}

// consulQueryMeta is what a read's answer says about itself.
type consulQueryMeta struct {
	LastIndex   uint64
	LastContact time.Duration
	KnownLeader bool
	// FilteredByACLs: the token could not read some of the results, which
	// Consul left out (X-Consul-Results-Filtered-By-ACLs).
	FilteredByACLs bool
	// Backend is the query backend that answered (X-Consul-Query-Backend:
	// "streaming" or "blocking-query"; "" from older agents).
	Backend string
}

// do sends one request: the client's datacenter, namespace, partition,
// default wait and token, then the query's options, then params. A status
// other than 200 is a consulStatusError.
func (c *consulClient) do(ctx context.Context, method, path string, q *consulQuery, params url.Values, body any) (*http.Response, error) {
	v := url.Values{}
	if c.cfg.Datacenter != "" {
		v.Set("dc", c.cfg.Datacenter)
	}
	if c.cfg.Namespace != "" {
		v.Set("ns", c.cfg.Namespace)
	}
	if c.cfg.Partition != "" {
		v.Set("partition", c.cfg.Partition)
	}
	if c.cfg.WaitTime != 0 {
		v.Set("wait", durToMsec(c.cfg.WaitTime))
	}
	if q != nil {
		if q.Datacenter != "" {
			v.Set("dc", q.Datacenter)
		}
		if q.AllowStale {
			v.Set("stale", "")
		}
		if q.WaitIndex != 0 {
			v.Set("index", strconv.FormatUint(q.WaitIndex, 10))
		}
		if q.WaitTime != 0 {
			v.Set("wait", durToMsec(q.WaitTime))
		}
	}
	for k, vals := range params {
		v[k] = vals
	}
	var data []byte
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		data = append(b, '\n')
	}
	host := c.host
	if strings.HasPrefix(host, "/") {
		host = "localhost" // a unix socket
	}
	u := &url.URL{Scheme: c.scheme, Host: host, Path: c.pathPrefix + path, RawQuery: v.Encode()}
	token := c.token.get()
	resp, err := c.send(ctx, method, u.String(), data, token)
	var se consulStatusError
	if !errors.As(err, &se) || se.Code != http.StatusForbidden {
		return resp, err
	}
	// Consul refused the token: revoked ("ACL not found") or without
	// the right ("Permission denied"). A token from a file may have been
	// rotated since it was read: the request goes again, once, with the
	// file's new token.
	changed, rerr := c.token.reload(token)
	if rerr != nil {
		return nil, fmt.Errorf("%w (%v)", err, rerr)
	}
	if !changed {
		return nil, err
	}
	return c.send(ctx, method, u.String(), data, c.token.get())
}

// send sends one request with token. A status other than 200 is a
// consulStatusError.
func (c *consulClient) send(ctx context.Context, method, u string, body []byte, token string) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("X-Consul-Token", token)
	}
	if c.cfg.AuthSet {
		req.SetBasicAuth(c.cfg.AuthUser, c.cfg.AuthPass)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return nil, consulStatusError{Code: resp.StatusCode, Body: strings.TrimSpace(string(b))}
	}
	return resp, nil
}

// durToMsec writes a wait as Consul reads it: whole milliseconds, at least
// 1ms for a positive duration.
func durToMsec(d time.Duration) string {
	ms := d / time.Millisecond
	if d > 0 && ms == 0 {
		ms = 1
	}
	return strconv.FormatInt(int64(ms), 10) + "ms"
}

// write sends a PUT and discards the answer's body.
func (c *consulClient) write(ctx context.Context, path string, params url.Values, body any) error {
	resp, err := c.do(ctx, http.MethodPut, path, nil, params, body)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return err
}

// consulServiceEntry is one instance in a health answer.
type consulServiceEntry struct {
	Node    *consulNode
	Service *consulService
}

type consulNode struct {
	Node    string
	Address string
}

type consulService struct {
	ID      string
	Address string
	Port    int
	Tags    []string
	Weights consulWeights
}

type consulWeights struct {
	Passing int
	Warning int
}

// healthService is GET /v1/health/service/NAME?passing=1&tag=...: the
// passing instances carrying every tag, as a blocking query.
func (c *consulClient) healthService(ctx context.Context, service string, tags []string, q *consulQuery) ([]*consulServiceEntry, *consulQueryMeta, error) {
	params := url.Values{"passing": {"1"}}
	if len(tags) > 0 {
		params["tag"] = tags
	}
	resp, err := c.do(ctx, http.MethodGet, "/v1/health/service/"+service, q, params, nil)
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}()
	meta := &consulQueryMeta{
		KnownLeader:    resp.Header.Get("X-Consul-KnownLeader") == "true",
		FilteredByACLs: resp.Header.Get("X-Consul-Results-Filtered-By-ACLs") == "true",
		Backend:        resp.Header.Get("X-Consul-Query-Backend"),
	}
	// As the official client: a header that does not parse is left zero.
	if v := resp.Header.Get("X-Consul-Index"); v != "" {
		meta.LastIndex, _ = strconv.ParseUint(v, 10, 64)
	}
	if last, err := strconv.ParseUint(resp.Header.Get("X-Consul-LastContact"), 10, 64); err == nil && last <= 1<<63-1 {
		meta.LastContact = time.Duration(last) * time.Millisecond
	}
	var out []*consulServiceEntry
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, nil, err
	}
	return out, meta, nil
}

// consulRegistration is the body of PUT /v1/agent/service/register.
type consulRegistration struct {
	ID      string            `json:",omitempty"`
	Name    string            `json:",omitempty"`
	Tags    []string          `json:",omitempty"`
	Port    int               `json:",omitempty"`
	Address string            `json:",omitempty"`
	Meta    map[string]string `json:",omitempty"`
	Check   *consulCheck
}

type consulCheck struct {
	CheckID                        string `json:",omitempty"`
	Name                           string `json:",omitempty"`
	TTL                            string `json:",omitempty"`
	Status                         string `json:",omitempty"`
	Notes                          string `json:",omitempty"`
	DeregisterCriticalServiceAfter string `json:",omitempty"`
}

// registerService registers (or re-registers) a service with the local
// agent, replacing its checks, and returns the token the registration
// went with: the agent keeps it, and syncs the service to the catalog (and
// removes it from there) with it, not with the token of later requests.
func (c *consulClient) registerService(ctx context.Context, reg *consulRegistration) (token string, err error) {
	resp, err := c.do(ctx, http.MethodPut, "/v1/agent/service/register", nil, url.Values{"replace-existing-checks": {"true"}}, reg)
	if err != nil {
		return "", err
	}
	token = resp.Request.Header.Get("X-Consul-Token")
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return token, err
}

// updateTTL sets a TTL check's status and output.
func (c *consulClient) updateTTL(ctx context.Context, checkID, output, status string) error {
	return c.write(ctx, "/v1/agent/check/update/"+checkID, nil, struct{ Status, Output string }{status, output})
}

// deregisterService removes a service (and its checks) from the local agent.
func (c *consulClient) deregisterService(ctx context.Context, id string) error {
	return c.write(ctx, "/v1/agent/service/deregister/"+id, nil, nil)
}
