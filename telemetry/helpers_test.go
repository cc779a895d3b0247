package telemetry

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/ferrymesh/ferry/internal/syncbuf"
)

// env is a fake environment for WithEnv.
type env map[string]string

func (e env) get(k string) string { return e[k] }

// recorded builds Telemetry whose spans go to an in-memory recorder.
func recorded(t testing.TB, cfg Config, e env) (*Telemetry, *tracetest.SpanRecorder, *syncbuf.Buffer) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	logs := &syncbuf.Buffer{}
	tel, err := New(context.Background(), cfg, WithEnv(e.get), WithSpanProcessor(rec), WithAccessLogWriter(logs))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tel.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return tel, rec, logs
}

// incoming builds a request as a listener would receive it.
func incoming(method, target string, hdr map[string]string) *http.Request {
	r := httptest.NewRequest(method, target, nil)
	r.RemoteAddr = "10.1.2.3:40000"
	r.Header.Set("User-Agent", "ferry-test/1")
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	return r
}

// upstream builds the request the sidecar would send for r, with the
// caller's propagation headers removed.
func upstream(t testing.TB, tel *Telemetry, r *http.Request, target string) *http.Request {
	t.Helper()
	out, err := http.NewRequest(r.Method, target, nil)
	if err != nil {
		t.Fatal(err)
	}
	out.Header = r.Header.Clone()
	for _, h := range tel.PropagationHeaders() {
		out.Header.Del(h)
	}
	return out
}

func spanByKind(t testing.TB, spans []sdktrace.ReadOnlySpan, kind string) sdktrace.ReadOnlySpan {
	t.Helper()
	for _, s := range spans {
		if s.SpanKind().String() == kind {
			return s
		}
	}
	t.Fatalf("no %s span among %d", kind, len(spans))
	return nil
}

func attrMap(s sdktrace.ReadOnlySpan) map[string]any {
	m := map[string]any{}
	for _, kv := range s.Attributes() {
		m[string(kv.Key)] = kv.Value.AsInterface()
	}
	return m
}
