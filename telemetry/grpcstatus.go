package telemetry

import (
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// A gRPC call is answered HTTP 200 however it went; its outcome is the
// grpc-status the caller got. ferry's spans carry it as the RPC semantic
// conventions ask (rpc.system.name "grpc", rpc.response.status_code the
// code's name), and as rpc.grpc.status_code, the number, which the
// conventions before 1.39 named and which dashboards and backends built on
// them still read.

// AttrGRPCStatusCode is the numeric gRPC status of a gRPC call's span
// (rpc.grpc.status_code of the semantic conventions up to 1.38).
const AttrGRPCStatusCode = attribute.Key("rpc.grpc.status_code")

// grpcCodeNames are the names of gRPC's status codes (gRPC's
// doc/statuscodes.md), indexed by code.
var grpcCodeNames = [...]string{
	"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
	"NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
	"FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
	"INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
}

// grpcStatusName is code's name, or the number for a code gRPC does not
// define.
func grpcStatusName(code int32) string {
	if code >= 0 && int(code) < len(grpcCodeNames) {
		return grpcCodeNames[code]
	}
	return strconv.Itoa(int(code))
}

// grpcServerError reports whether a server span ending with code is an
// error, as gRPC's semantic conventions have it: only the codes that say
// the server failed (UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL,
// UNAVAILABLE, DATA_LOSS), not those that say the call was at fault. A
// client span is an error for every code but OK.
func grpcServerError(code int32) bool {
	switch code {
	case 2, 4, 12, 13, 14, 15:
		return true
	}
	return false
}

// eachGRPC yields the gRPC status attributes of a gRPC call's span.
func (a *proxyAttrs) eachGRPC(s attrSink) {
	if !a.grpc {
		return
	}
	s.str(semconv.RPCSystemNameKey, "grpc")
	s.str(semconv.RPCResponseStatusCodeKey, grpcStatusName(a.grpcCode))
	s.num(AttrGRPCStatusCode, int64(a.grpcCode))
}
