package sidecar

import (
	"context"
	"net"
	"net/http"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrymesh/ferry/discovery"
	"github.com/ferrymesh/ferry/resilience"
)

// upstream is one service as a proxy sees it: its live endpoints, the
// breakers and balancer that choose among them, and the connection pools
// that reach them.
type upstream struct {
	name       string
	svc        *discovery.Service
	res        *resilience.Upstream
	settings   resilience.Settings
	protocol   string // ProtocolAuto, ProtocolHTTP1 or ProtocolH2C
	timeouts   resilience.Timeouts
	hashHeader string            // balancer key header; "" unless balancer is hash
	h1         http.RoundTripper // HTTP/1.1, also used for upgrades
	h2c        http.RoundTripper // HTTP/2 with prior knowledge over cleartext
	peer       *h2cPeer          // h2c's: which endpoints answered it in HTTP/1
	feed       *feed             // whose discovery feeds res
	// retired is set once h1 and h2c are closed with their generation
	// (shared with the generations that carried them, see carryPools):
	// an exchange still running on them closes its connection when it
	// ends, which net/http's HTTP/2 pool would keep idle.
	retired *atomic.Bool
}

// feed says which upstream's discovery feeds a balancer: after a reload
// two generations of a service may share one (see carryPools), and only
// the owner's endpoints may reach it, or the generation going away could
// overwrite (or empty) the endpoints of the one in force.
type feed struct {
	mu      sync.Mutex
	owner   *upstream
	applied *discovery.Snapshot // the snapshot the balancer has
}

func newUpstream(name string, svc *discovery.Service, protocol, protocolKey string, s resilience.Settings, opts []resilience.Option) (*upstream, error) {
	res, err := resilience.NewUpstream(name, s, opts...)
	if err != nil {
		return nil, err
	}
	s = res.Settings()
	up := &upstream{
		name:       name,
		svc:        svc,
		res:        res,
		settings:   s,
		protocol:   protocol,
		timeouts:   s.Timeouts,
		hashHeader: s.HashHeader,
		h1:         newTransport(s.Timeouts, nil),
		peer:       &h2cPeer{key: protocolKey, protocol: protocol},
		retired:    new(atomic.Bool),
	}
	up.h2c = newTransport(s.Timeouts, up.peer)
	up.feed = &feed{owner: up}
	up.sync()
	return up, nil
}

// sync hands the balancer the endpoints of the service's latest snapshot,
// when u owns the balancer's feed. The snapshot is read under the feed's
// lock, so whichever call comes last leaves the latest one in force.
func (u *upstream) sync() {
	f := u.feed
	f.mu.Lock()
	defer f.mu.Unlock()
	snap := u.svc.Snapshot()
	if f.owner != u || f.applied == snap {
		return
	}
	eps := make([]resilience.Endpoint, len(snap.Endpoints))
	for i, ep := range snap.Endpoints {
		eps[i] = resilience.Endpoint{Addr: ep.Addr, Weight: ep.Weight}
	}
	u.res.Update(eps)
	f.applied = snap
}

// takeFeed makes u the owner of its balancer's feed and syncs it.
func (u *upstream) takeFeed() {
	u.feed.mu.Lock()
	u.feed.owner, u.feed.applied = u, nil
	u.feed.mu.Unlock()
	u.sync()
}

// follow keeps the balancer's endpoints in step with discovery until ctx
// ends. Breaker and ejection state of endpoints that stay is kept.
func (u *upstream) follow(ctx context.Context) {
	for {
		changed := u.svc.Changed()
		u.sync()
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

// sameSettings reports whether two generations of a service may share
// connection pools and breaker state.
func (u *upstream) sameSettings(o *upstream) bool {
	return u.protocol == o.protocol && reflect.DeepEqual(u.settings, o.settings)
}

// testHookH2CDialed, set by tests only, sees each h2c upstream connection
// dialled.
var testHookH2CDialed atomic.Pointer[func(*frameCapConn)]

// newTransport builds the HTTP/1.1 or h2c connection pool for one upstream
// service. It never consults HTTP_PROXY, never adds Accept-Encoding (bodies
// pass untouched) and tags connect failures so they answer 502/504 with the
// endpoint named. The HTTP/1.1 one sends bodiless requests through the
// zero-copy client (splice.go). h2c, when set, makes it the h2c pool, and
// says which config key chose HTTP/2 for the upstream.
func newTransport(t resilience.Timeouts, h2c *h2cPeer) http.RoundTripper {
	d := &net.Dialer{Timeout: t.Connect, KeepAlive: 30 * time.Second}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, &dialError{addr: addr, err: err}
		}
		return c, nil
	}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           dial,
		DisableCompression:    true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: t.ResponseHeader,
		ExpectContinueTimeout: continueTimeout,
		WriteBufferSize:       32 << 10,
		ReadBufferSize:        32 << 10,
	}
	if h2c != nil {
		pingAfter, pingTimeout := h2PingAfter, h2PingTimeout // read once, as h2Windows does
		p := new(http.Protocols)
		p.SetUnencryptedHTTP2(true)
		tr.Protocols = p
		tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dial(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			fc := &frameCapConn{Conn: c, peer: h2c, addr: addr}
			fc.startPinger(pingAfter, pingTimeout)
			if h := testHookH2CDialed.Load(); h != nil {
				(*h)(fc)
			}
			return fc, nil
		}
		// Flow control is the only bound on what an HTTP/2 upstream may
		// send ahead of a slow caller: keep it near the HTTP/1.1 path's
		// buffers instead of net/http's 4 MiB per stream.
		tr.HTTP2 = h2Windows(false)
		return tr
	}
	// Response heads are bounded alike whichever client reads them.
	tr.MaxResponseHeaderBytes = maxResponseHeader
	// The Transport's connections put response heads right (headFixConn).
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &headFixConn{Conn: c}, nil
	}
	return &fastH1{dial: dial, responseHeader: t.ResponseHeader, fallback: tr}
}

// transportFor picks HTTP/1.1 or h2c for one request. Upgrades need
// HTTP/1.1; "auto" speaks to the upstream the protocol the caller spoke.
func (u *upstream) transportFor(r *http.Request, upgrade bool) http.RoundTripper {
	switch {
	case upgrade:
		return u.h1
	case u.protocol == ProtocolH2C:
		return u.h2c
	case u.protocol == ProtocolAuto && r.ProtoMajor == 2:
		return u.h2c
	default:
		return u.h1
	}
}

// close drops idle pooled connections; the pools are retired.
func (u *upstream) close() {
	u.retired.Store(true)
	for _, rt := range []http.RoundTripper{u.h1, u.h2c} {
		if c, ok := rt.(interface{ CloseIdleConnections() }); ok {
			c.CloseIdleConnections()
		}
	}
}

// exchangeEnded closes, once an exchange on u ended, the connections it
// left idle in pools retired meanwhile.
func (u *upstream) exchangeEnded() {
	if u.retired.Load() {
		u.close()
	}
}

// HTTP/2 flow control on ferry's listeners and toward upstreams alike. A
// stream's window bounds what a slow reader on the other side costs ferry:
// h2StreamWindow per stream in flight. The connection's window must not be
// a second, shared bound: net/http gives it back only as a stream's data is
// read, so a few stalled streams would stop every other stream on the
// connection (other callers' answers on a pooled upstream connection, the
// rest of an app's requests on its one connection to ferry). It is as
// large as the streams a connection may carry (h2Streams on the
// listeners; toward upstreams, the upstream's limit, with max_in_flight
// bounding the exchanges).
const (
	h2StreamWindow = 256 << 10
	h2Streams      = 250
)

// An h2c upstream connection that read no frame for h2PingAfter is pinged,
// and closed if no answer came within h2PingTimeout: one whose host died
// or whose route dropped (no reset, no close) otherwise takes every request
// after it, each waiting out response_header, until TCP gives up minutes
// later. h2PingAfter is no shorter than gRPC servers' default keepalive
// enforcement (grpc-go and grpc-java: at most one ping per 5 minutes while
// calls are open, none without): a client pinging more often gets GOAWAY
// ENHANCE_YOUR_CALM "too_many_pings" on its third ping without data in
// between, and the connection closed with every call on it. Idle pooled
// connections (IdleConnTimeout, 90 s) are closed before they are pinged.
// Variables for tests.
var (
	h2PingAfter   = 5 * time.Minute
	h2PingTimeout = 5 * time.Second
)

// h2Windows is the HTTP/2 configuration of a listener (server) or of an
// upstream's client: the windows above and frames of at most h2MaxFrame
// (each connection reads through a buffer as large as the largest frame
// it got).
func h2Windows(server bool) *http.HTTP2Config {
	c := &http.HTTP2Config{
		MaxReceiveBufferPerStream:     h2StreamWindow,
		MaxReceiveBufferPerConnection: 1 << 30, // net/http's client adds it to the initial 64 KiB: 1<<31-1 overflows the window

		MaxReadFrameSize: h2MaxFrame,
	}
	if server {
		c.MaxConcurrentStreams = h2Streams
		c.MaxReceiveBufferPerConnection = h2Streams * h2StreamWindow
	}
	// Toward upstreams, h2cPinger pings idle connections: net/http's
	// SendPingTimeout would keep each closed connection in memory for
	// h2PingAfter.
	return c
}
