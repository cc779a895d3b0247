package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/otlptranslator"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
)

// Prometheus names of ferry's metrics, as they appear on /metrics. The
// Grafana dashboard in deploy/grafana is built on exactly these.
const (
	MetricRequests          = "ferry_requests_total"                  // counter: listener, service, endpoint, status_class, reason
	MetricRequestDuration   = "ferry_request_duration_seconds"        // histogram: listener, service, status_class
	MetricInFlight          = "ferry_requests_in_flight"              // gauge: listener, service
	MetricBodyBytes         = "ferry_body_bytes_total"                // counter: listener, service, direction (in|out)
	MetricRetries           = "ferry_retries_total"                   // counter: service, reason
	MetricBreakerState      = "ferry_breaker_state"                   // gauge 0 closed, 1 half-open, 2 open: service, endpoint
	MetricBreakerTransition = "ferry_breaker_transitions_total"       // counter: service, to
	MetricEjections         = "ferry_ejections_total"                 // counter: service
	MetricSnapshotAge       = "ferry_consul_snapshot_age_seconds"     // gauge: service
	MetricWatchErrors       = "ferry_consul_watch_errors_total"       // counter: service
	MetricSpansDropped      = "ferry_trace_spans_dropped_total"       // counter: spans lost on a full export queue
	MetricSpansExported     = "ferry_trace_spans_exported_total"      // counter
	MetricSpansExportFailed = "ferry_trace_spans_export_failed_total" // counter: spans in failed exports
	MetricSpanQueue         = "ferry_trace_queue_spans"               // gauge: spans waiting for export
)

// cardinalityLimit caps the series of any one instrument; beyond it the SDK
// folds new label sets into one otel_metric_overflow series.
const cardinalityLimit = 2000

// durationBuckets span fast API calls to long streamed downloads.
var durationBuckets = []float64{
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900,
}

// BreakerState is a circuit breaker state as ferry reports it.
type BreakerState string

// Breaker states, with their ferry_breaker_state gauge values 0, 1, 2.
const (
	BreakerClosed   BreakerState = "closed"
	BreakerHalfOpen BreakerState = "half_open"
	BreakerOpen     BreakerState = "open"
)

func (s BreakerState) gaugeValue() int64 {
	switch s {
	case BreakerHalfOpen:
		return 1
	case BreakerOpen:
		return 2
	default:
		return 0
	}
}

// Metrics holds ferry's instruments. The request-scoped ones are fed by
// Request and Attempt; the others by the methods below, which the sidecar
// calls from its discovery and resilience hooks. Methods are safe for
// concurrent use and never block.
type Metrics struct {
	provider *sdkmetric.MeterProvider
	handler  http.Handler
	now      func() time.Time

	requests          metric.Int64Counter
	duration          metric.Float64Histogram
	inFlight          metric.Int64UpDownCounter
	bodyBytes         metric.Int64Counter
	retries           metric.Int64Counter
	breakerState      metric.Int64Gauge
	breakerTransition metric.Int64Counter
	ejections         metric.Int64Counter
	watchErrors       metric.Int64Counter

	snapshots sync.Map // service -> time.Time of the last snapshot
	labels    requestMetricLabels
}

func newMetrics(res *resource.Resource, q *spanQueue) (*Metrics, error) {
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(
		otelprom.WithRegisterer(reg),
		otelprom.WithoutScopeInfo(),
		otelprom.WithTranslationStrategy(otlptranslator.UnderscoreEscapingWithSuffixes),
	)
	if err != nil {
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	m := &Metrics{now: time.Now, labels: newRequestMetricLabels()}
	m.provider = sdkmetric.NewMeterProvider(
		sdkmetric.WithReader(exp),
		sdkmetric.WithResource(res),
		sdkmetric.WithCardinalityLimit(cardinalityLimit),
	)
	m.handler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true})

	meter := m.provider.Meter(instrumentationName)
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	var e error
	m.requests, e = meter.Int64Counter("ferry.requests", metric.WithUnit("{request}"),
		metric.WithDescription("Requests handled, by listener, service, upstream endpoint, status class and proxy failure reason."))
	add(e)
	m.duration, e = meter.Float64Histogram("ferry.request.duration", metric.WithUnit("s"),
		metric.WithDescription("Time from the request's arrival to its last response body byte."),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	add(e)
	m.inFlight, e = meter.Int64UpDownCounter("ferry.requests.in_flight", metric.WithUnit("{request}"),
		metric.WithDescription("Requests started and not yet finished."))
	add(e)
	m.bodyBytes, e = meter.Int64Counter("ferry.body", metric.WithUnit("By"),
		metric.WithDescription("Body bytes streamed: in = request bodies received, out = response bodies sent."))
	add(e)
	m.retries, e = meter.Int64Counter("ferry.retries", metric.WithUnit("{retry}"),
		metric.WithDescription("Upstream attempts retried, by service and reason."))
	add(e)
	m.breakerState, e = meter.Int64Gauge("ferry.breaker.state",
		metric.WithDescription("Circuit breaker state per endpoint: 0 closed, 1 half-open, 2 open."))
	add(e)
	m.breakerTransition, e = meter.Int64Counter("ferry.breaker.transitions", metric.WithUnit("{transition}"),
		metric.WithDescription("Circuit breaker state changes, by service and new state."))
	add(e)
	m.ejections, e = meter.Int64Counter("ferry.ejections", metric.WithUnit("{ejection}"),
		metric.WithDescription("Endpoints ejected as outliers, by service."))
	add(e)
	m.watchErrors, e = meter.Int64Counter("ferry.consul.watch.errors", metric.WithUnit("{error}"),
		metric.WithDescription("Failed Consul watch queries, by service."))
	add(e)

	age, e := meter.Float64ObservableGauge("ferry.consul.snapshot.age", metric.WithUnit("s"),
		metric.WithDescription("Age of the endpoint snapshot ferry routes with, by service."))
	add(e)
	if e == nil {
		_, e = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
			now := m.now()
			m.snapshots.Range(func(k, v any) bool {
				o.ObserveFloat64(age, now.Sub(v.(time.Time)).Seconds(),
					metric.WithAttributes(attribute.String("service", k.(string))))
				return true
			})
			return nil
		}, age)
		add(e)
	}
	if q != nil {
		add(registerQueueMetrics(meter, q))
	}
	if err := errors.Join(errs...); err != nil {
		_ = m.provider.Shutdown(context.Background())
		return nil, fmt.Errorf("telemetry metrics: %w", err)
	}
	return m, nil
}

func registerQueueMetrics(meter metric.Meter, q *spanQueue) error {
	dropped, err1 := meter.Int64ObservableCounter("ferry.trace.spans.dropped", metric.WithUnit("{span}"),
		metric.WithDescription("Finished spans dropped because the export queue was full."))
	exported, err2 := meter.Int64ObservableCounter("ferry.trace.spans.exported", metric.WithUnit("{span}"),
		metric.WithDescription("Spans exported to the collector."))
	failed, err3 := meter.Int64ObservableCounter("ferry.trace.spans.export_failed", metric.WithUnit("{span}"),
		metric.WithDescription("Spans in export calls that failed."))
	queued, err4 := meter.Int64ObservableGauge("ferry.trace.queue.spans", metric.WithUnit("{span}"),
		metric.WithDescription("Finished spans waiting for export."))
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return err
	}
	_, err := meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(dropped, q.dropped.Load())
		o.ObserveInt64(exported, q.exported.Load())
		o.ObserveInt64(failed, q.exportFailed.Load())
		o.ObserveInt64(queued, q.pending.Load())
		return nil
	}, dropped, exported, failed, queued)
	return err
}

func (m *Metrics) shutdown(ctx context.Context) error {
	return m.provider.Shutdown(ctx)
}

// SetBreakerState records the current breaker state of one endpoint.
func (m *Metrics) SetBreakerState(service, endpoint string, state BreakerState) {
	m.breakerState.Record(context.Background(), state.gaugeValue(), metric.WithAttributes(
		attribute.String("service", service), attribute.String("endpoint", endpoint)))
}

// BreakerTransition counts a breaker state change and records the new state.
// To attach it to a request's span as well, use Request.BreakerTransition.
func (m *Metrics) BreakerTransition(service, endpoint string, to BreakerState) {
	m.breakerTransition.Add(context.Background(), 1, metric.WithAttributes(
		attribute.String("service", service), attribute.String("to", string(to))))
	m.SetBreakerState(service, endpoint, to)
}

// Ejection counts an endpoint ejected as an outlier.
func (m *Metrics) Ejection(service string) {
	m.ejections.Add(context.Background(), 1, metric.WithAttributes(attribute.String("service", service)))
}

// Retry counts a retried upstream attempt. reason should come from a small
// fixed set (for example a Reason constant).
func (m *Metrics) Retry(ctx context.Context, service, reason string) {
	m.retries.Add(ctx, 1, metric.WithAttributes(
		attribute.String("service", service), attribute.String("reason", boundedReason(reason))))
}

// SnapshotUpdated records that the endpoint snapshot of service was
// refreshed at at; ferry_consul_snapshot_age_seconds grows from there.
func (m *Metrics) SnapshotUpdated(service string, at time.Time) {
	m.snapshots.Store(service, at)
}

// ForgetService stops reporting the snapshot age of a service no longer
// routed to.
func (m *Metrics) ForgetService(service string) {
	m.snapshots.Delete(service)
}

// WatchError counts a failed Consul watch query for service.
func (m *Metrics) WatchError(service string) {
	m.watchErrors.Add(context.Background(), 1, metric.WithAttributes(attribute.String("service", service)))
}
