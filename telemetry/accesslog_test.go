package telemetry

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/internal/syncbuf"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

func TestAccessLogLine(t *testing.T) {
	tel, _, logs := recorded(t, Config{}, env{})
	r := incoming("GET", "http://files/report.pdf", nil)
	_, req := tel.StartRequest(r, Outbound)
	req.SetRoute("files", "files")
	att := req.StartAttempt(upstream(t, tel, r, "http://files/report.pdf"), AttemptInfo{Endpoint: "10.0.0.7:8080", Attempt: 1})
	att.End(Outcome{Status: 200, BytesIn: 4096})
	req.End(Outcome{Status: 200, BytesIn: 7, BytesOut: 4096, Reason: ReasonBodyBroken})

	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("%d access log lines, want 1: %q", len(lines), logs.String())
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &got); err != nil {
		t.Fatalf("not JSON: %v: %s", err, lines[0])
	}
	sc := req.Span().SpanContext()
	for k, want := range map[string]any{
		"msg": "request", "level": "WARN", "listener": "outbound", "method": "GET", "route": "files",
		"service": "files", "endpoint": "10.0.0.7:8080", "status": 200.0, "bytes_in": 7.0,
		"bytes_out": 4096.0, "attempts": 1.0, "reason": ReasonBodyBroken,
		"trace_id": sc.TraceID().String(), "span_id": sc.SpanID().String(),
	} {
		if got[k] != want {
			t.Errorf("%s = %v, want %v", k, got[k], want)
		}
	}
	if d, ok := got["duration_ms"].(float64); !ok || d < 0 {
		t.Errorf("duration_ms = %v", got["duration_ms"])
	}
	if _, ok := got["time"]; !ok {
		t.Error("no time")
	}
}

func TestAccessLogOffAndFile(t *testing.T) {
	off, err := New(t.Context(), Config{AccessLog: "off"}, WithEnv(env{}.get), WithAccessLogWriter(&syncbuf.Buffer{}))
	if err != nil {
		t.Fatal(err)
	}
	if off.log != nil {
		t.Error("access_log: off still logs")
	}
	off.Shutdown(t.Context())

	path := filepath.Join(t.TempDir(), "access.log")
	tel, err := New(t.Context(), Config{AccessLog: path}, WithEnv(env{}.get))
	if err != nil {
		t.Fatal(err)
	}
	_, req := tel.StartRequest(incoming("GET", "http://a/", nil), Inbound)
	req.End(Outcome{Status: 204})
	if err := tel.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"status":204`) || !strings.Contains(string(b), `"listener":"inbound"`) {
		t.Errorf("file log %q", b)
	}

	_, err = New(t.Context(), Config{AccessLog: filepath.Join(t.TempDir(), "no", "such", "dir", "x.log")}, WithEnv(env{}.get))
	if err == nil || !strings.HasPrefix(err.Error(), "telemetry.access_log: ") {
		t.Errorf("unwritable access log error %v", err)
	}
}

func TestShutdownTwice(t *testing.T) {
	tel, _, _ := recorded(t, Config{}, env{})
	if err := tel.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := tel.Shutdown(t.Context()); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
}

// A request answered before any handler saw it is counted and logged with
// its status and reason, without a span or an in-flight count.
func TestAnsweredCountsAndLogs(t *testing.T) {
	tel, rec, logs := recorded(t, Config{}, env{})
	tel.Answered(Inbound, 431, ReasonHeaderTooLarge)
	tel.Answered(Inbound, 200, "")
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d access log lines, want 2: %q", len(lines), logs.String())
	}
	for i, want := range []map[string]any{
		{"level": "WARN", "listener": "inbound", "method": "", "route": "", "status": 431.0, "reason": ReasonHeaderTooLarge, "trace_id": ""},
		{"level": "INFO", "listener": "inbound", "method": "", "route": "", "status": 200.0, "reason": "", "trace_id": ""},
	} {
		var got map[string]any
		if err := json.Unmarshal([]byte(lines[i]), &got); err != nil {
			t.Fatalf("not JSON: %v: %s", err, lines[i])
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("line %d: %s = %v, want %v", i, k, got[k], v)
			}
		}
	}
	if n := len(rec.Ended()); n != 0 {
		t.Errorf("%d spans, want none", n)
	}
	if n := tel.Metrics().InFlight(); n != 0 {
		t.Errorf("in flight %d, want 0", n)
	}
	body, _ := scrape(t, tel.MetricsHandler(), "")
	for _, want := range []string{
		`ferry_requests_total{endpoint="",listener="inbound",reason="header_too_large",service="",status_class="4xx"} 1`,
		`ferry_requests_total{endpoint="",listener="inbound",reason="",service="",status_class="2xx"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("no %s in:\n%s", want, body)
		}
	}
	if strings.Contains(body, `ferry_request_duration_seconds_count{listener="inbound"`) {
		t.Error("a duration recorded for a request whose start is unknown")
	}
}

// An access log file on a full disk (/dev/full refuses every write with
// ENOSPC) loses its lines: each is counted in
// ferry_access_log_dropped_total, and ferry's log gets one warning naming
// the file. Neither happened: the metric stayed 0 with every line lost,
// and nothing was said.
func TestAccessLogLinesAFullDiskRefusesAreCounted(t *testing.T) {
	if f, err := os.OpenFile("/dev/full", os.O_WRONLY, 0); err != nil {
		t.Skipf("/dev/full: %v", err)
	} else {
		f.Close()
	}
	var warnings syncbuf.Buffer
	tel, err := New(context.Background(), Config{AccessLog: "/dev/full"}, WithEnv(env{}.get),
		WithLog(slog.New(slog.NewJSONHandler(&warnings, nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	for i := range 5 {
		logRequests(tel, fmt.Sprintf("M%d", i))
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		body, _ := scrape(t, tel.MetricsHandler(), "")
		if strings.Contains(body, "\nferry_access_log_dropped_total 5\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("want 5 dropped lines counted:\n%s", grepFerry(body))
		}
		time.Sleep(10 * time.Millisecond) // a polling pace
	}
	if err := tel.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := warnings.String(); strings.Count(got, "\n") != 1 || !strings.Contains(got, "no space left on device") {
		t.Fatalf("ferry's log, want one warning about the full disk:\n%s", got)
	}
}

// A request its server dates itself (StartRequestIn and EndAt, with the
// readings of the clock ferry's HTTP/1.1 lane takes as the head came and
// as the response went) lasts from one reading to the other: its span,
// its access log line and its duration histogram say so, with tracing on
// and off.
func TestRequestDatedByItsServer(t *testing.T) {
	for _, tracing := range []bool{true, false} {
		logs := &syncbuf.Buffer{}
		opts := []Option{WithEnv(env{}.get), WithAccessLogWriter(logs)}
		var rec *tracetest.SpanRecorder
		if tracing {
			rec = tracetest.NewSpanRecorder()
			opts = append(opts, WithSpanProcessor(rec))
		}
		tel, err := New(t.Context(), Config{}, opts...)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now().Add(-time.Hour)
		end := start.Add(1500 * time.Millisecond)
		_, req := tel.StartRequestIn(nil, incoming("GET", "http://files/a", nil), Outbound, start)
		req.SetRoute("files", "files")
		if !req.Start().Equal(start) {
			t.Errorf("tracing %v: request started %v, want %v", tracing, req.Start(), start)
		}
		req.EndAt(Outcome{Status: 200}, end)

		var line map[string]any
		if err := json.Unmarshal([]byte(strings.TrimSpace(logs.String())), &line); err != nil {
			t.Fatalf("tracing %v: access log %q: %v", tracing, logs.String(), err)
		}
		if line["duration_ms"] != 1500.0 {
			t.Errorf("tracing %v: duration_ms = %v, want 1500", tracing, line["duration_ms"])
		}
		body, _ := scrape(t, tel.MetricsHandler(), "")
		if want := `ferry_request_duration_seconds_sum{listener="outbound",service="files",status_class="2xx"} 1.5`; !strings.Contains(body, want) {
			t.Errorf("tracing %v: metrics lack %s", tracing, want)
		}
		if tracing {
			spans := rec.Ended()
			if len(spans) != 1 || !spans[0].StartTime().Equal(start) || !spans[0].EndTime().Equal(end) {
				t.Errorf("spans %v, want one from %v to %v", spans, start, end)
			}
		}
		if err := tel.Shutdown(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
}
