package telemetry

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/ferrymesh/ferry/internal/localnet/localnettest"
)

// stuckExporter is a collector that accepts a connection and never answers:
// every export blocks until release is closed (or its context ends).
type stuckExporter struct {
	release  chan struct{}
	mu       sync.Mutex
	exported int
	calls    chan struct{}
}

func (e *stuckExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	select {
	case e.calls <- struct{}{}:
	default:
	}
	select {
	case <-e.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	e.mu.Lock()
	e.exported += len(spans)
	e.mu.Unlock()
	return nil
}

func (e *stuckExporter) Shutdown(context.Context) error { return nil }

// endSpans runs n requests through the helpers, each with one attempt.
func endSpans(t *testing.T, tel *Telemetry, n int) {
	t.Helper()
	for range n {
		r := incoming("GET", "http://files/x", nil)
		_, req := tel.StartRequest(r, Outbound)
		req.StartAttempt(upstream(t, tel, r, "http://files/x"), AttemptInfo{Endpoint: "10.0.0.7:8080", Attempt: 1}).End(Outcome{Status: 200})
		req.End(Outcome{Status: 200})
	}
}

func TestStuckCollectorDropsInsteadOfBlocking(t *testing.T) {
	exp := &stuckExporter{release: make(chan struct{}), calls: make(chan struct{}, 1)}
	cfg := Config{QueueSize: 8, BatchSize: 4, BatchTimeout: time.Millisecond, AccessLog: "off"}
	tel, err := New(t.Context(), cfg, WithEnv(env{}.get), WithSpanExporter(exp))
	if err != nil {
		t.Fatal(err)
	}
	// Wait until the first export is stuck in the collector.
	endSpans(t, tel, 2) // 4 spans: one full batch
	select {
	case <-exp.calls:
	case <-time.After(10 * time.Second):
		t.Fatal("no export started")
	}
	// 100 more requests (200 spans) while the collector hangs: every End
	// returns (this loop finishing is the proof it never blocks), the queue
	// stays at its bound and the overflow is counted.
	endSpans(t, tel, 100)
	q := tel.queue
	if got := q.Pending(); got != 8 {
		t.Errorf("pending %d, want the queue bound 8", got)
	}
	if got := q.Dropped(); got != 204-8 {
		t.Errorf("dropped %d, want %d", got, 204-8)
	}
	body, _ := scrape(t, tel.MetricsHandler(), "")
	for _, want := range []string{MetricSpansDropped + " 196", MetricSpanQueue + " 8", MetricSpansExported + " 0"} {
		if !containsLine(body, want) {
			t.Errorf("metrics lack %q:\n%s", want, grepFerry(body))
		}
	}

	// The collector recovers; Shutdown flushes what was queued.
	close(exp.release)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := tel.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	exp.mu.Lock()
	defer exp.mu.Unlock()
	if exp.exported != 8 || q.exported.Load() != 8 || q.Pending() != 0 {
		t.Errorf("after shutdown exported %d (counted %d), pending %d; want 8, 8, 0", exp.exported, q.exported.Load(), q.Pending())
	}
}

func TestUnreachableCollectorIsBounded(t *testing.T) {
	for _, proto := range []string{ProtocolGRPC, ProtocolHTTPProtobuf} {
		t.Run(proto, func(t *testing.T) {
			// A port nobody listens on, held for the test's life.
			addr := localnettest.RefusedAddr(t)
			cfg := Config{Endpoint: "http://" + addr, Protocol: proto, QueueSize: 16, BatchSize: 8,
				ExportTimeout: 2 * time.Second, AccessLog: "off"}
			tel, err := New(t.Context(), cfg, WithEnv(env{}.get))
			if err != nil {
				t.Fatalf("New with an unreachable collector: %v", err)
			}
			if !tel.TracingEnabled() {
				t.Fatal("tracing off")
			}
			endSpans(t, tel, 200)
			q := tel.queue
			if p := q.Pending(); p > 16 {
				t.Errorf("pending %d above the bound 16", p)
			}
			// Every span is accounted for: queued, dropped, or in a failed export.
			if got := q.Pending() + q.Dropped() + q.exportFailed.Load() + q.exported.Load(); got < 400-16 || got > 400 {
				t.Errorf("accounted %d of 400 spans", got)
			}
			if q.Dropped() == 0 {
				t.Error("nothing dropped although 400 spans met a queue of 16 and no collector")
			}
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			// Shutdown is bounded by its context even with spans queued for a dead collector.
			_ = tel.Shutdown(ctx)
			if ctx.Err() != nil {
				t.Error("shutdown used its whole deadline")
			}
		})
	}
}

func containsLine(body, prefix string) bool {
	for _, l := range splitLines(body) {
		if l == prefix {
			return true
		}
	}
	return false
}

func splitLines(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// recordingExporter keeps the sizes of the batches it gets.
type recordingExporter struct {
	mu      sync.Mutex
	batches []int
}

func (e *recordingExporter) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.batches = append(e.batches, len(spans))
	return nil
}

func (e *recordingExporter) Shutdown(context.Context) error { return nil }

func (e *recordingExporter) sizes() []int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]int(nil), e.batches...)
}

// A full batch is exported at once, without waiting for the batch timeout;
// ForceFlush exports a partial one; Shutdown exports the rest.
func TestQueueBatchesAndFlushes(t *testing.T) {
	exp := &recordingExporter{}
	cfg := Config{QueueSize: 64, BatchSize: 4, BatchTimeout: time.Hour, AccessLog: "off"}
	tel, err := New(t.Context(), cfg, WithEnv(env{}.get), WithSpanExporter(exp))
	if err != nil {
		t.Fatal(err)
	}
	endSpans(t, tel, 2) // 4 spans: one full batch
	deadline := time.Now().Add(10 * time.Second)
	for len(exp.sizes()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("a full batch was not exported before the batch timeout")
		}
		time.Sleep(time.Millisecond) // polling, with a deadline
	}
	endSpans(t, tel, 1) // 2 spans: a partial batch, held until the timeout
	if err := tel.ForceFlush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := exp.sizes(); len(got) != 2 || got[0] != 4 || got[1] != 2 {
		t.Errorf("batches %v after the flush, want [4 2]", got)
	}
	endSpans(t, tel, 5) // 10 spans
	if err := tel.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, n := range exp.sizes() {
		if n > 4 {
			t.Errorf("a batch of %d spans, above the batch size 4", n)
		}
		total += n
	}
	if total != 16 || tel.queue.Pending() != 0 || tel.queue.exported.Load() != 16 {
		t.Errorf("exported %d spans (counted %d), pending %d; want 16, 16, 0", total, tel.queue.exported.Load(), tel.queue.Pending())
	}
	endSpans(t, tel, 1) // after Shutdown: discarded, not queued
	if tel.queue.Pending() != 0 {
		t.Error("a span ended after Shutdown was queued")
	}
}

// An export that is retrying when Shutdown begins stops retrying: a
// collector that answers every export 503 (or is down) costs Shutdown that
// export's current attempt and the final flush's one attempt per batch,
// never the rest of the export's timeout, which at the default 10 s outlasts
// the 5 s ferry gives the flush at its exit.
func TestShutdownEndsAnExportsRetries(t *testing.T) {
	for _, proto := range []string{ProtocolHTTPProtobuf, ProtocolGRPC} {
		t.Run(proto, func(t *testing.T) {
			errs := captureErrors(t)
			tried := make(chan struct{}, 100)
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				tried <- struct{}{}
				if proto == ProtocolGRPC {
					w.Header().Set("Content-Type", "application/grpc")
					w.Header().Set("Grpc-Status", "14") // UNAVAILABLE, retried
					return
				}
				w.WriteHeader(http.StatusServiceUnavailable)
			}))
			srv.EnableHTTP2 = true
			p := new(http.Protocols)
			p.SetHTTP1(true)
			p.SetUnencryptedHTTP2(true)
			srv.Config.Protocols = p
			srv.Start()
			t.Cleanup(srv.Close)
			cfg := Config{Endpoint: srv.URL, Protocol: proto, BatchTimeout: time.Millisecond, AccessLog: "off"}
			tel, err := New(t.Context(), cfg, WithEnv(env{}.get))
			if err != nil {
				t.Fatal(err)
			}
			endSpans(t, tel, 1)
			select {
			case <-tried:
			case <-time.After(10 * time.Second):
				t.Fatal("no export reached the collector")
			}
			// The export now waits to retry (0.5 s, doubling to 5 s).
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			err = tel.Shutdown(ctx)
			if ctx.Err() != nil {
				t.Errorf("shutdown used its whole 5 s (%v): the export kept retrying; %d attempts", err, 1+len(tried))
			}
			if q := tel.queue; q.exportFailed.Load() != 2 || q.Pending() != 0 {
				t.Errorf("export failed counted %d, pending %d; want the 2 spans failed, none pending", q.exportFailed.Load(), q.Pending())
			}
			select {
			case err := <-errs:
				if !strings.Contains(err.Error(), "not retried: telemetry is shutting down") {
					t.Errorf("the export's error %q does not say why it was not retried", err)
				}
			default:
				t.Error("the failed export reached no error handler")
			}
		})
	}
}
