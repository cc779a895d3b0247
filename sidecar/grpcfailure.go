package sidecar

import (
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"
)

// A gRPC client reads how a call went in grpc-status and grpc-message, not
// in the HTTP status or body: a proxy-made failure answered as text/plain
// reaches it as "unexpected HTTP status code received from server", with
// ferry's reason at best buried in a dump of the body. A gRPC call (see
// grpcCall) is answered ferry's failures in gRPC's form instead: a
// trailers-only response (gRPC over HTTP/2, "Responses"), one HEADERS frame
// that ends the stream, with :status 200, content-type application/grpc,
// grpc-status and grpc-message, and X-Ferry-Error as for every caller.

// gRPC status codes ferry answers with (gRPC's doc/statuscodes.md).
const (
	grpcUnknown           = 2
	grpcDeadlineExceeded  = 4
	grpcPermissionDenied  = 7
	grpcResourceExhausted = 8
	grpcUnimplemented     = 12
	grpcInternal          = 13
	grpcUnavailable       = 14
	grpcUnauthenticated   = 16
)

// grpcReasonMax caps the reason a gRPC answer carries, in bytes. gRPC's
// spec lets clients refuse a trailers-only head over 8 KiB (grpc-java and
// gRPC C++ do by default), and the reason goes in it twice: in
// X-Ferry-Error, and in grpc-message where percent-encoding may triple it.
// A reason quotes the request's path and authority, which the caller
// chose, so it can be longer than that.
const grpcReasonMax = 1024

// grpcCall reports whether r is a gRPC call, to be answered ferry's
// failures in gRPC's form: an HTTP/2 request whose Content-Type is
// application/grpc, alone or followed by a +format or parameters. The
// type is matched without regard to case (media types are
// case-insensitive, RFC 9110 8.3.1). gRPC-Web (application/grpc-web) is
// not: it has its own form (grpcWebRequest). Neither is a request over
// HTTP/1: gRPC is defined over HTTP/2, and a 200 would read as success to
// a client that does not look for grpc-status; it gets the plain answer.
func grpcCall(r *http.Request) bool {
	return r.ProtoMajor == 2 && grpcType(r.Header["Content-Type"])
}

// grpcType reports whether the Content-Type ct is application/grpc, alone
// or followed by a +format or parameters, without regard to case.
func grpcType(ct []string) bool {
	if len(ct) != 1 {
		return false
	}
	const base = "application/grpc"
	v := ct[0]
	if len(v) < len(base) || !strings.EqualFold(v[:len(base)], base) {
		return false
	}
	rest := v[len(base):]
	return rest == "" || rest[0] == '+' || rest[0] == ';'
}

// grpcCode is the gRPC status a gRPC caller gets for a failure ferry
// answers with HTTP status, as gRPC's mapping of HTTP statuses to gRPC
// codes (doc/http-grpc-status-mapping.md) gives it: what grpc-go and
// other clients made of ferry's HTTP answer before, so callers' retry
// policies see the codes they saw. UNAVAILABLE, which gRPC's retry
// policies commonly retry, stays where that mapping puts it (429, 502,
// 503) and goes nowhere else.
//
// Two exceptions. A 504, one of ferry's timeouts (response_header,
// per_try, overall, body_idle), is DEADLINE_EXCEEDED: the request reached
// the upstream, which may have run it, and UNAVAILABLE would have a
// client's retry policy send it again; gRPC's own clients end a call whose
// deadline passed with DEADLINE_EXCEEDED, which retry policies leave
// alone. A connect that timed out sent nothing (unsent) and stays
// UNAVAILABLE, as a refused one. And 413, a request body over
// limits.max_request_body_bytes, is RESOURCE_EXHAUSTED, the code gRPC's
// own libraries end a call with when a message is larger than their
// configured limit (doc/statuscodes.md), where the mapping's UNKNOWN would
// say nothing. It is not retried by default, and sending the same body
// again would fail the same way.
func grpcCode(f failure) int {
	switch f.status {
	case http.StatusRequestEntityTooLarge:
		return grpcResourceExhausted
	case http.StatusGatewayTimeout:
		if !f.unsent {
			return grpcDeadlineExceeded
		}
	}
	return grpcCodeOfHTTP(f.status)
}

// grpcCodeOfHTTP is the gRPC status gRPC clients make of an HTTP status
// that came without one (gRPC's doc/http-grpc-status-mapping.md).
func grpcCodeOfHTTP(status int) int {
	switch status {
	case http.StatusBadRequest:
		return grpcInternal
	case http.StatusUnauthorized:
		return grpcUnauthenticated
	case http.StatusForbidden:
		return grpcPermissionDenied
	case http.StatusNotFound:
		return grpcUnimplemented
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return grpcUnavailable
	}
	return grpcUnknown
}

// grpcPercentEncode encodes s as grpc-message requires: bytes from space
// to '~' but '%' as they are, every other byte (those of UTF-8 beyond
// ASCII, control bytes, '%') as %XX.
func grpcPercentEncode(s string) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '%' {
			n++
		}
	}
	if n == 0 {
		return s
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(s)+2*n)
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '%' {
			b = append(b, '%', hex[c>>4], hex[c&0xf])
		} else {
			b = append(b, c)
		}
	}
	return string(b)
}

// grpcReason is reason cut to grpcReasonMax bytes, at a character's
// start, with "..." to say so.
func grpcReason(reason string) string {
	if len(reason) <= grpcReasonMax {
		return reason
	}
	cut := grpcReasonMax - len("...")
	for cut > 0 && !utf8.RuneStart(reason[cut]) {
		cut--
	}
	return reason[:cut] + "..."
}

// writeGRPCFailure answers a gRPC call with a proxy-made failure as a
// trailers-only response. Nothing is written after the head, so net/http's
// HTTP/2 server sends it as one HEADERS frame with END_STREAM when the
// handler returns; Content-Length set to nil keeps the server from adding
// "content-length: 0", which a trailers-only response does not carry.
func writeGRPCFailure(w http.ResponseWriter, f failure) {
	h := w.Header()
	clear(h)
	reason := grpcReason(f.reason)
	h["Content-Type"] = []string{"application/grpc"}
	h["Grpc-Status"] = []string{strconv.Itoa(grpcCode(f))}
	h["Grpc-Message"] = []string{grpcPercentEncode(reason)}
	h["X-Ferry-Error"] = []string{sanitizeHeaderValue(reason)}
	h["Content-Length"] = nil
	w.WriteHeader(http.StatusOK)
}
