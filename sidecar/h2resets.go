package sidecar

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/ferrymesh/ferry/telemetry"
)

// Premature stream resets. An HTTP/2 caller may open a stream and reset it
// at once, as fast as its connection carries the two frames ("rapid
// reset", CVE-2023-44487). net/http's server bounds the handlers running
// at once on a connection (h2Streams), not the streams it carries, and a
// stream whose handler began before its reset was read is relayed: on
// loopback, from a few dozen to over half of a 20,000-pair flood reached
// the upstream, as fast as ferry took them, the more the busier the
// machine.
//
// So ferry counts, per h2c caller connection, the streams whose exchange
// ended and those the caller reset prematurely: the exchange ended
// client_canceled (the caller cancelled it before ferry's answer was
// whole) within prematureResetWithin of its start, and before ferry began
// relaying the upstream's answer to it (exchange.answerBegan). A caller
// that cancels an answer it is getting, however soon (a gRPC client that
// needs only the first message of a server-streaming call, one that reads
// only the head of a large body), waited for that answer: the upstream's
// work was the caller's to ask for, and such a stream is no premature
// reset, however many the caller cancels. Once the connection
// carried prematureResetStreams and more than half of them were premature,
// ferry closes it: one warning, and ferry_connections_closed_total
// {reason="premature_resets"}. A request whose handler begins after that
// is not relayed (see refusePremature).
//
// How many of a flood's streams reach the upstream is then bounded
// whatever the load: a handler counts its exchange, and closes the
// connection if the rule holds, before it returns, so before the
// connection closes fewer than prematureResetStreams handlers returned
// and at most h2Streams run, and no handler after it relays: at most
// prematureResetStreams + h2Streams requests (TestH2CFloods).
//
// The counters live in the connection's prefixConn, which the request's
// context carries (connContext): an h2c request looks it up once and adds
// to two atomics as it ends. The lane's own HTTP/1.1 requests never look.
//
// net/http gives a handler no way to end its connection with a GOAWAY but
// an answer with "Connection: close", which makes it a graceful one
// (NO_ERROR, the streams open run to their end); a reset stream's handler
// has no answer to send it with. Closing the socket ends the connection
// and cancels its streams at once.

// prematureResetStreams is how many streams a connection must have
// carried before its premature resets are judged. Each of a flood's
// streams below it may reach the upstream (plus the h2Streams running
// when the connection closes), so it is kept low; but a legitimate
// caller's cancellations come at random, and over a few streams they may
// be more than half by chance. A caller that cancels 40% of its requests
// within a second, a heavy rate, is closed with a probability of about 4%
// at 100 streams, 0.4% at 200, and below 1 in 20,000 at 500 (a simulation
// of 20,000 such connections each); 45% is closed 2% of the time at 500.
// 500 is also the minimum of the same rule in Envoy.
const prematureResetStreams = 500

// prematureResetWithin is how soon after its start a stream reset by the
// caller counts as premature: longer-lived ones, a gRPC deadline or a
// download given up, are what cancellation is for.
const prematureResetWithin = time.Second

// errPrematureResets is the error of an exchange on a connection ferry
// closed for its premature resets.
var errPrematureResets = errors.New("the caller's connection was closed: most of its streams were reset as they began")

// h2Resets counts the streams of one h2c caller connection.
type h2Resets struct {
	streams   atomic.Int64 // exchanges ended
	premature atomic.Int64 // of those, reset by the caller as they began
	closed    atomic.Bool  // ferry closed the connection for them
	// callerEnded: the caller closed or reset the connection (reading it
	// failed, and not because it was closed here, by ferry or net/http):
	// every stream still open ends with it, cancelled by no reset of the
	// caller's (see streamEnded). Set on any connection's read error
	// (prefixConn.Read); only an h2c connection's is looked at.
	callerEnded atomic.Bool
}

// streamEnded counts an exchange on c, an h2c caller connection, that
// ended as x did, and closes c when the rule above holds.
func (c *prefixConn) streamEnded(x *exchange) {
	r := &c.resets
	if r.callerEnded.Load() {
		// The caller ended the connection: its streams in flight were
		// cancelled with it, not reset, and there is nothing left to
		// close. (net/http cancels them after its read of the connection
		// failed, so the flag is seen here.) Streams that end as net/http
		// closes a flooding connection itself (ENHANCE_YOUR_CALM) still
		// count: the caller reset them.
		return
	}
	premature := x.reason == telemetry.ReasonClientCanceled && !x.answerBegan && time.Since(x.q.Start()) < prematureResetWithin
	if premature {
		r.premature.Add(1) // before streams: the ratio read below is never behind
	}
	n := r.streams.Add(1)
	if !premature || n < prematureResetStreams {
		return // only a premature reset makes the rule hold
	}
	p := r.premature.Load()
	if 2*p <= n || r.closed.Swap(true) {
		return
	}
	c.Close()
	c.l.log.Warn("closed an h2c caller's connection: more than half of its streams were reset by the caller within a second of their start (premature resets, as in a rapid-reset flood)",
		"listener", c.l.name, "caller", c.RemoteAddr().String(), "streams", n, "premature_resets", p)
	if c.l.tel != nil {
		c.l.tel.Metrics().ConnectionClosed(c.l.name, telemetry.ConnClosedPrematureResets)
	}
}

// refusePremature reports whether c was closed for its premature resets:
// a request whose handler begins after that is not relayed, but ended as
// cancelled (its caller's connection is gone, or about to be).
func (c *prefixConn) refusePremature() bool { return c.resets.closed.Load() }
