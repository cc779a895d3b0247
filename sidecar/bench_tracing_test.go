package sidecar

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/ferrymesh/ferry/telemetry"
)

// discardExporter accepts every span batch and drops it: the cost measured
// is ferry's and the SDK's, not a collector's.
type discardExporter struct{}

func (discardExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discardExporter) Shutdown(context.Context) error                             { return nil }

// BenchmarkTracing compares small requests (1 KiB) through ferry with
// tracing off and on (100% sampled, spans batched to an exporter that
// discards them). Access log off in both.
func BenchmarkTracing(b *testing.B) {
	addr := benchOrigin(b)
	for _, mode := range []string{"off", "on"} {
		b.Run(mode, func(b *testing.B) {
			opts := []telemetry.Option{telemetry.WithEnv(func(string) string { return "" })}
			if mode == "on" {
				opts = append(opts, telemetry.WithSpanExporter(discardExporter{}))
			}
			tel, err := telemetry.New(context.Background(), telemetry.Config{AccessLog: "off", Sampler: "always_on"}, opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer tel.Shutdown(context.Background())
			cfg, err := ParseConfig([]byte(fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: svc } ] }
services: { svc: { endpoints: [%s] } }
`, addr)))
			if err != nil {
				b.Fatal(err)
			}
			sc, err := New(cfg, Options{Telemetry: tel})
			if err != nil {
				b.Fatal(err)
			}
			if err := sc.Start(); err != nil {
				b.Fatal(err)
			}
			defer sc.Shutdown(context.Background())
			c := benchClient(b, false)
			url := "http://" + sc.Addr("outbound") + "/get?size=1024"
			b.ReportAllocs()
			for b.Loop() {
				res, err := c.Get(url)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != http.StatusOK {
					b.Fatalf("status %d", res.StatusCode)
				}
			}
		})
	}
}
