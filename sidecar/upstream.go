package sidecar

import (
	"context"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/ferrymesh/ferry/discovery"
)

// upstream is one service as a proxy sees it: its live endpoints and the
// connection pools that reach them.
type upstream struct {
	name     string
	svc      *discovery.Service
	protocol string // ProtocolAuto, ProtocolHTTP1 or ProtocolH2C
	timeouts TimeoutsConfig
	h1       http.RoundTripper // HTTP/1.1, also used for upgrades
	h2c      http.RoundTripper // HTTP/2 with prior knowledge over cleartext
	next     atomic.Uint64     // round-robin cursor
}

func newUpstream(name string, svc *discovery.Service, protocol string, t TimeoutsConfig) *upstream {
	return &upstream{
		name:     name,
		svc:      svc,
		protocol: protocol,
		timeouts: t,
		h1:       newTransport(t, false),
		h2c:      newTransport(t, true),
	}
}

// newTransport builds the connection pool for one upstream service. It never
// consults HTTP_PROXY, never adds Accept-Encoding (bodies pass untouched) and
// tags connect failures so they answer 502/504 with the endpoint named.
func newTransport(t TimeoutsConfig, h2c bool) *http.Transport {
	d := &net.Dialer{Timeout: t.Connect, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, &dialError{addr: addr, err: err}
			}
			return c, nil
		},
		DisableCompression:    true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: t.ResponseHeader,
		ExpectContinueTimeout: time.Second,
		WriteBufferSize:       32 << 10,
		ReadBufferSize:        32 << 10,
	}
	if h2c {
		p := new(http.Protocols)
		p.SetUnencryptedHTTP2(true)
		tr.Protocols = p
	}
	return tr
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

// pick chooses an endpoint round-robin from the current snapshot.
func (u *upstream) pick(snap *discovery.Snapshot) string {
	n := u.next.Add(1) - 1
	return snap.Endpoints[n%uint64(len(snap.Endpoints))].Addr
}

// close drops idle pooled connections.
func (u *upstream) close() {
	for _, rt := range []http.RoundTripper{u.h1, u.h2c} {
		if c, ok := rt.(interface{ CloseIdleConnections() }); ok {
			c.CloseIdleConnections()
		}
	}
}
