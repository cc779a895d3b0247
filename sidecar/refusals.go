package sidecar

import (
	"bytes"
	"net"
	"net/http"

	"github.com/ferrymesh/ferry/telemetry"
)

// Requests net/http's server answers itself. A connection the lane hands
// over may carry a head net/http refuses before any handler sees it: 431
// for a head over limits.max_header_bytes, 400 for a malformed request line
// or Host, 501 for an unknown transfer coding, 417 for an unknown
// expectation (and 200 for "OPTIONS *"). Those answers stay net/http's,
// byte for byte; ferry only watches them go out, to report each one as a
// request (Telemetry.Answered: ferry_requests_total and an access log
// line).
//
// net/http says, through ConnState, when it is about to read a connection's
// first head (StateNew) or its next one (StateIdle, after the last
// response went out); the handler marks the head it is given as taken. The
// first write on a connection between the two is net/http's own answer,
// whose status line it reads. (StateActive would not do: net/http reports
// it only for a head that needed bytes from the socket, not for one
// pipelined behind the last.) An HTTP/2 connection's first write is a
// SETTINGS frame, no status line, and nothing after it is looked at.

// watchAnswers makes srv, the server of a lane's handed-over connections,
// show its own answers to the connections' Write (see prefixConn.Write).
func watchAnswers(srv *http.Server) {
	prev := srv.ConnState
	srv.ConnState = func(c net.Conn, s http.ConnState) {
		if pc, ok := c.(*prefixConn); ok && (s == http.StateNew || s == http.StateIdle) {
			pc.unhandled.Store(true)
		}
		if prev != nil {
			prev(c, s)
		}
	}
	h := srv.Handler
	if h == nil {
		h = http.DefaultServeMux // as net/http's server
	}
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if pc, ok := r.Context().Value(handedConnKey{}).(*prefixConn); ok {
			pc.unhandled.Store(false)
		}
		h.ServeHTTP(w, r)
	})
}

// Write reports an answer net/http writes to a head no handler took.
func (c *prefixConn) Write(p []byte) (int, error) {
	if c.unhandled.Load() {
		c.unhandled.Store(false)
		if status := statusOf(p); status != 0 {
			c.l.answered(status, answerReason(status))
		}
	}
	return c.Conn.Write(p)
}

// statusOf reads the status of the HTTP/1.x response that p begins; 0 when
// p begins none. net/http answers an HTTP/1.0 request with an HTTP/1.0
// status line (the 200 to "OPTIONS *", a 417), its refusals of heads it
// could not read with an HTTP/1.1 one.
func statusOf(p []byte) int {
	const proto = "HTTP/1.x "
	if len(p) < len(proto)+4 || !bytes.HasPrefix(p, []byte("HTTP/1.")) || (p[7] != '0' && p[7] != '1') || p[8] != ' ' {
		return 0
	}
	code := p[len(proto) : len(proto)+4]
	if code[3] != ' ' && code[3] != '\r' {
		return 0
	}
	n := 0
	for _, c := range code[:3] {
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// answerReason is the reason reported for net/http's own answer status.
func answerReason(status int) string {
	switch {
	case status == http.StatusRequestHeaderFieldsTooLarge:
		return telemetry.ReasonHeaderTooLarge
	case status == http.StatusBadRequest:
		return telemetry.ReasonMalformedRequest
	case status >= 400:
		return telemetry.ReasonUnsupportedRequest
	}
	return ""
}

// answered reports a request the lane, or net/http's server for it,
// answered with status before any handler saw it.
func (l *lane) answered(status int, reason string) {
	if l.tel != nil {
		l.tel.Answered(telemetry.Listener(l.name), status, reason)
	}
}
