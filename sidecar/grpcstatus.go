package sidecar

import (
	"net/http"
	"strconv"
	"strings"
)

// A gRPC server answers HTTP 200 to every call it takes, and says how the
// call went in the grpc-status field: in the trailers after the messages,
// or in the head of a trailers-only response. A server that cannot serve
// (overloaded, shutting down, its own dependencies gone) ends its calls
// UNAVAILABLE, not with a 503; the breaker and outlier ejection judge a
// gRPC response by what that status means for the server's health.

// grpcHealthStatus returns the HTTP status the breaker and outlier
// ejection judge a whole gRPC response of an HTTP/2 upstream by (its body,
// of body bytes, read to its end), or 0 to judge it by its own status:
//
//   - UNAVAILABLE (14): 503, a failure of the server;
//   - UNKNOWN (2), INTERNAL (13), DATA_LOSS (15): 500, the server's error;
//   - no grpc-status at all: what gRPC clients make of that (see
//     grpcCallerStatus), INTERNAL after messages, else UNKNOWN: 500;
//   - every other status, OK included: the response's own (200). These
//     say the call was at fault (its arguments, its method, the state it
//     asked for), or the caller ended it (CANCELLED, DEADLINE_EXCEEDED:
//     the caller's own deadline, from grpc-timeout), which is not the
//     server's failure, as a caller that goes away is not.
func grpcHealthStatus(res *http.Response, body int64) int {
	if res.ProtoMajor != 2 || res.StatusCode != http.StatusOK || !isGRPC(res.Header["Content-Type"]) {
		return 0
	}
	return grpcHealthOfCode(grpcCallerStatus(res, body))
}

// grpcHealthOfCode is grpcHealthStatus for a gRPC status code, of a gRPC
// or a gRPC-Web response.
func grpcHealthOfCode(code int) int {
	switch code {
	case 14:
		return http.StatusServiceUnavailable
	case 2, 13, 15:
		return http.StatusInternalServerError
	}
	return 0
}

// grpcStatus returns the gRPC status a whole gRPC response of an HTTP/2
// upstream ended with: grpc-status of its trailers, or of its head in a
// trailers-only response. ok is false for any other response, and for one
// without a grpc-status. The value is read as grpc-go's client reads it,
// so that ferry's spans, access log and breaker see the status the
// caller's client does: a decimal number strconv.ParseInt takes in 32
// bits (a sign and leading zeros allowed: "+14" and "014" are 14), as a
// uint32 ("-1" is 4294967295); of several fields the last; and UNKNOWN
// for a value it refuses ("five", "5 ", "", beyond 32 bits), which ends
// the call UNKNOWN there. The trailers are the response's only once its
// body was read to its end.
func grpcStatus(res *http.Response) (code int, ok bool) {
	if res.ProtoMajor != 2 || res.StatusCode != http.StatusOK || !isGRPC(res.Header["Content-Type"]) {
		return 0, false
	}
	v, ok := res.Trailer["Grpc-Status"]
	if !ok {
		v = res.Header["Grpc-Status"] // trailers-only
	}
	return parseGRPCStatus(v)
}

// parseGRPCStatus reads the values of grpc-status fields as grpcStatus
// says; ok is false for none.
func parseGRPCStatus(v []string) (code int, ok bool) {
	if len(v) == 0 {
		return 0, false
	}
	for _, s := range v {
		n, err := strconv.ParseInt(s, 10, 32)
		if err != nil {
			return grpcUnknown, true
		}
		code = int(uint32(n))
	}
	return code, true
}

// isGRPC reports whether a Content-Type is gRPC's: application/grpc,
// alone or with a +format or parameters (not gRPC-Web's, whose status
// travels in its body).
func isGRPC(ct []string) bool {
	if len(ct) != 1 {
		return false
	}
	rest, ok := strings.CutPrefix(ct[0], "application/grpc")
	return ok && (rest == "" || rest[0] == '+' || rest[0] == ';')
}

// grpcCallerStatus returns the gRPC status a gRPC call's caller gets from
// res, a whole answer of the upstream's: its grpc-status (see grpcStatus),
// or, for an answer that carries none a client can read, the status gRPC
// clients make of it (gRPC's doc/http-grpc-status-mapping.md, as grpc-go
// and grpc-java apply it): an HTTP error status maps to a code (an
// overloaded or absent upstream's 502, 503, 504 or 429 to UNAVAILABLE),
// a gRPC 200 whose body (body bytes of it were relayed) ended without
// trailers is INTERNAL ("server closed the stream without sending
// trailers"), and any other 200 without a grpc-status a client can read
// is UNKNOWN. Without it, a call that a load balancer in front of the
// upstream refused with a plain 503 would carry no gRPC status in ferry's
// spans and access log, while the caller saw UNAVAILABLE.
func grpcCallerStatus(res *http.Response, body int64) int {
	if code, ok := grpcStatus(res); ok {
		return code
	}
	if res.StatusCode == http.StatusOK && body > 0 && isGRPC(res.Header["Content-Type"]) {
		return grpcInternal
	}
	return grpcCodeOfHTTP(res.StatusCode)
}

// grpcHeadStatus is grpcCallerStatus for an answer whose body is left
// unread (discarded for a retry): false when its status would come in the
// trailers.
func grpcHeadStatus(res *http.Response) (int, bool) {
	if res.StatusCode == http.StatusOK && isGRPC(res.Header["Content-Type"]) && res.Header["Grpc-Status"] == nil {
		return 0, false
	}
	return grpcCallerStatus(res, 0), true
}
