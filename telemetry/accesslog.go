package telemetry

import (
	"context"
	"log/slog"
	"time"
)

// Access log keys: one JSON object per request, written when it ends.
//
//	{"time":"...","level":"INFO","msg":"request","listener":"outbound",
//	 "method":"GET","route":"files","service":"files","endpoint":"10.0.0.7:8080",
//	 "status":200,"duration_ms":12.5,"bytes_in":0,"bytes_out":5120,
//	 "attempts":1,"reason":"","trace_id":"4bf9...","span_id":"00f0..."}
//
// trace_id and span_id are the server span's (empty when the request is not
// traced). Failures the proxy made are logged at WARN. A gRPC call's line
// ends with grpc_status: the gRPC status code its caller got
// (status stays the HTTP status, 200 for a call the upstream answered);
// other requests' lines have no grpc_status.
const accessLogMsg = "request"

func (t *Telemetry) logRequest(q *Request, o Outcome, elapsed time.Duration) {
	if t.log == nil {
		return
	}
	level := slog.LevelInfo
	if o.Reason != "" {
		level = slog.LevelWarn
	}
	var traceID, spanID string
	if sc := q.span.SpanContext(); sc.IsValid() {
		traceID, spanID = sc.TraceID().String(), sc.SpanID().String()
	}
	attrs := [...]slog.Attr{
		slog.String("listener", string(q.listener)),
		slog.String("method", q.method),
		slog.String("route", q.route),
		slog.String("service", q.service),
		slog.String("endpoint", q.endpoint),
		slog.Int("status", o.Status),
		slog.Float64("duration_ms", float64(elapsed.Microseconds())/1000),
		slog.Int64("bytes_in", o.BytesIn),
		slog.Int64("bytes_out", o.BytesOut),
		slog.Int("attempts", q.attempts),
		slog.String("reason", o.Reason),
		slog.String("trace_id", traceID),
		slog.String("span_id", spanID),
		{}, // grpc_status, for a gRPC call
	}
	n := len(attrs) - 1 // other requests' lines cost nothing more than before
	if o.GRPC {
		attrs[n] = slog.Int("grpc_status", o.GRPCStatus)
		n++
	}
	t.log.LogAttrs(context.Background(), level, accessLogMsg, attrs[:n]...)
}
