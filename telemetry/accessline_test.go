package telemetry

import (
	"bytes"
	"context"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// slogLine is the access log line as slog's JSON handler writes the
// record, which ferry's own encoder must match byte for byte.
func slogLine(t *testing.T, q *Request, o Outcome, elapsed time.Duration, now time.Time, sc trace.SpanContext) []byte {
	var traceID, spanID string
	if sc.IsValid() {
		traceID, spanID = sc.TraceID().String(), sc.SpanID().String()
	}
	level := slog.LevelInfo
	if o.Reason != "" {
		level = slog.LevelWarn
	}
	r := slog.NewRecord(now, level, accessLogMsg, 0)
	r.AddAttrs(
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
	)
	if o.GRPC {
		r.AddAttrs(slog.Int("grpc_status", o.GRPCStatus))
	}
	var buf bytes.Buffer
	if err := slog.NewJSONHandler(&buf, nil).Handle(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// ferry's access log line is slog's JSON handler's, byte for byte: over
// strings with every escape (quotes, backslashes, control bytes, DEL,
// invalid UTF-8, U+2028 and U+2029, HTML's <>&), durations from zero to
// hours, times in several zones and with any number of fraction digits,
// traced and untraced requests, gRPC calls and failures.
func TestAccessLineIsSlogs(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pieces := []string{"a", "Z", "0", " ", "/", "-", ":", ".", "\"", "\\", "\n", "\r", "\t", "\x00", "\x01", "\x1f", "\x7f",
		"<", ">", "&", "é", "日本", "\u2028", "\u2029", "\xff", "\xc3", "\xe2\x80", "😀", "\ufffd", "%", "'"}
	str := func() string {
		var b []byte
		for range rng.IntN(12) {
			b = append(b, pieces[rng.IntN(len(pieces))]...)
		}
		return string(b)
	}
	zones := []*time.Location{time.UTC, time.Local, time.FixedZone("", 5*3600+45*60), time.FixedZone("x", -(3*3600 + 30*60)), time.FixedZone("s", 3600+17)}
	durations := []time.Duration{0, time.Microsecond, 999 * time.Microsecond, time.Millisecond, 1234567 * time.Microsecond, 3 * time.Hour, 17 * time.Nanosecond}
	base := time.Date(2026, 12, 3, 10, 48, 44, 479112001, time.UTC)
	for i := range 5000 {
		q := &Request{listener: Listener(str()), method: str(), route: str(), service: str(), endpoint: str(), attempts: rng.IntN(4)}
		o := Outcome{Status: rng.IntN(600), BytesIn: rng.Int64N(1 << 40), BytesOut: rng.Int64N(1 << 40)}
		if rng.IntN(2) == 0 {
			o.Reason = str()
		}
		if rng.IntN(4) == 0 {
			o.GRPC, o.GRPCStatus = true, rng.IntN(17)
		}
		elapsed := durations[rng.IntN(len(durations))]
		if rng.IntN(2) == 0 {
			elapsed = time.Duration(rng.Int64N(int64(time.Hour)))
		}
		now := base.Add(time.Duration(rng.Int64N(int64(400 * 24 * time.Hour)))).In(zones[rng.IntN(len(zones))])
		if rng.IntN(3) == 0 {
			now = now.Truncate(time.Duration([]int64{1, 10, 1000, 1e6, 1e9}[rng.IntN(5)]))
		}
		var sc trace.SpanContext
		if rng.IntN(2) == 0 {
			var tid trace.TraceID
			var sid trace.SpanID
			for j := range tid {
				tid[j] = byte(rng.IntN(256))
			}
			for j := range sid {
				sid[j] = byte(rng.IntN(256))
			}
			tid[0], sid[0] = 1, 1 // valid
			sc = trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid})
		}
		want := slogLine(t, q, o, elapsed, now, sc)
		got := appendAccessLine(nil, q, o, elapsed, now, sc)
		if !bytes.Equal(got, want) {
			t.Fatalf("case %d:\n got %s\nwant %s", i, got, want)
		}
	}
}

// A float as encoding/json writes it, exponents and all.
func TestAppendJSONFloat(t *testing.T) {
	for _, f := range []float64{0, 1e-7, 1e-6, 0.001, 1.5, 123456.789, 1e20, 1e21, 1.5e300, -2e-9} {
		var buf bytes.Buffer
		r := slog.NewRecord(time.Time{}, slog.LevelInfo, "", 0)
		r.AddAttrs(slog.Float64("f", f))
		slog.NewJSONHandler(&buf, nil).Handle(context.Background(), r)
		want := bytes.TrimSuffix(bytes.TrimPrefix(buf.Bytes(), []byte(`{"level":"INFO","msg":"","f":`)), []byte("}\n"))
		if got := appendJSONFloat(nil, f); !bytes.Equal(got, want) {
			t.Errorf("%v: got %s, want %s", f, got, want)
		}
	}
}

func BenchmarkAccessLine(b *testing.B) {
	q := &Request{listener: Outbound, method: "GET", route: "files", service: "files", endpoint: "10.0.0.7:8080", attempts: 1}
	o := Outcome{Status: 200, BytesOut: 5120}
	now := time.Now()
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf = appendAccessLine(buf[:0], q, o, 12500*time.Microsecond, now, trace.SpanContext{})
	}
}
