package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/ferrymesh/ferry/internal/linewriter"
)

// instrumentationName is the tracer and meter scope name.
const instrumentationName = "github.com/ferrymesh/ferry/telemetry"

// Telemetry holds ferry's providers, propagator, metrics and access log.
// Build one with New at startup, share it between listeners, and call
// Shutdown on exit. All methods are safe for concurrent use.
type Telemetry struct {
	s          settings
	tp         trace.TracerProvider
	prov       *tracerProvider // nil when tracing is off
	tracer     trace.Tracer
	own        *tracer    // tracer, when it is ferry's (tracing on)
	queue      *spanQueue // nil when tracing is off or an exporter was injected without queueing
	propagator propagation.TextMapPropagator
	propParts  []propagation.TextMapPropagator // what propagator composes (newPropagator)
	readKeys   []string                        // what the propagator reads, canonical (see readKeys)
	readAll    bool                            // it may read any field
	readsB3    bool                            // it reads B3 (either form reads both: b3Decision)
	ownExtract bool                            // ferry extracts what it reads itself (ownExtraction)
	spanNames  spanNames                       // the server spans' names by route (SetRoute)
	others     []otherFormat                   // the trace context formats it does not read (tracing on)
	metrics    *Metrics
	log        *accessLog         // nil when the access log is off
	logBuf     *linewriter.Writer // between log and a destination ferry opened; nil otherwise
	logCloser  io.Closer
	warnLog    *slog.Logger // ferry's own log, for what telemetry warns about; nil: otel.Handle

	shutdownOnce sync.Once
	shutdownErr  error
}

// Option changes how New builds Telemetry; mostly for tests and benchmarks.
type Option func(*options)

type options struct {
	getenv    func(string) string
	exporter  sdktrace.SpanExporter
	processor sdktrace.SpanProcessor
	logOut    io.Writer
	warnLog   *slog.Logger
}

// WithEnv reads the OTEL_* variables through getenv instead of os.Getenv.
func WithEnv(getenv func(string) string) Option {
	return func(o *options) { o.getenv = getenv }
}

// WithSpanExporter turns tracing on and sends spans to exp through the usual
// bounded batch queue instead of an OTLP exporter.
func WithSpanExporter(exp sdktrace.SpanExporter) Option {
	return func(o *options) { o.exporter = exp }
}

// WithSpanProcessor turns tracing on and hands finished spans to p directly
// (for example tracetest.NewSpanRecorder in tests), with no batch queue.
func WithSpanProcessor(p sdktrace.SpanProcessor) Option {
	return func(o *options) { o.processor = p }
}

// WithAccessLogWriter writes the access log to w, whatever Config.AccessLog
// says (unless it says "off").
func WithAccessLogWriter(w io.Writer) Option {
	return func(o *options) { o.logOut = w }
}

// WithLog gives telemetry ferry's own log for its warnings (an access log
// file it could not reopen). Without it they go to otel.Handle.
func WithLog(l *slog.Logger) Option {
	return func(o *options) { o.warnLog = l }
}

// New builds ferry's telemetry from cfg over the OTEL_* environment. It
// does not contact the collector: an unreachable collector shows up later as
// export failures and dropped spans, never as an error here or as latency.
func New(ctx context.Context, cfg Config, opts ...Option) (*Telemetry, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	s, err := resolve(cfg, o.getenv)
	if err != nil {
		return nil, err
	}
	if o.exporter != nil || o.processor != nil {
		s.tracing = true
	}
	t := &Telemetry{s: s, warnLog: o.warnLog}

	prop, parts, err := newPropagator(s.propagators)
	if err != nil {
		return nil, fmt.Errorf("telemetry.propagators: %w", err)
	}
	t.propagator, t.propParts = prop, parts
	t.readsB3 = !slices.Contains(s.propagators, "none") &&
		(slices.Contains(s.propagators, "b3") || slices.Contains(s.propagators, "b3multi"))
	t.readKeys, t.readAll = readKeys(prop)
	t.ownExtract = ownExtraction(parts)

	res, err := t.resource(ctx)
	if err != nil {
		return nil, err
	}
	if s.tracing {
		t.others = otherFormats(s.propagators)
		t.startTracing(res, o)
	} else {
		t.tp = noop.NewTracerProvider()
	}
	t.tracer = t.tp.Tracer(instrumentationName)
	t.own, _ = t.tracer.(*tracer)

	if t.metrics, err = newMetrics(res, t.queue); err != nil {
		_ = t.shutdownTracing(ctx)
		return nil, err
	}

	if err := t.openAccessLog(o.logOut); err != nil {
		_ = t.shutdownTracing(ctx)
		_ = t.metrics.shutdown(ctx)
		return nil, err
	}
	return t, nil
}

func (t *Telemetry) startTracing(res *resource.Resource, o options) {
	proc := o.processor
	if proc == nil {
		exp := o.exporter
		if exp == nil {
			exp = newOTLPExporter(t.s.endpoint, t.s.protocol, t.s.otlp)
		}
		t.queue = newSpanQueue(exp, t.s)
		proc = t.queue
	}
	sampler, known := t.sampler()
	t.prov = newTracerProvider(sampler, proc, res, t.s.spanLimits)
	t.prov.known = known
	t.tp = t.prov
}

func (t *Telemetry) resource(ctx context.Context) (*resource.Resource, error) {
	keys := make([]string, 0, len(t.s.resource))
	for k := range t.s.resource {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	attrs := make([]attribute.KeyValue, 0, len(keys)+1)
	for _, k := range keys {
		attrs = append(attrs, attribute.String(k, t.s.resource[k]))
	}
	attrs = append(attrs, semconv.ServiceName(t.s.serviceName))
	res, err := resource.New(ctx,
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithAttributes(attrs...),
	)
	if err != nil && res == nil {
		return nil, fmt.Errorf("telemetry resource: %w", err)
	}
	return res, nil
}

// sampler is the configured sampler, and which it is when its decision
// needs no asking (knownSampler).
func (t *Telemetry) sampler() (sdktrace.Sampler, knownSampler) {
	switch t.s.sampler {
	case SamplerAlwaysOn:
		return sdktrace.AlwaysSample(), samplerOn
	case SamplerAlwaysOff:
		return sdktrace.NeverSample(), samplerOff
	case SamplerTraceIDRatio:
		return sdktrace.TraceIDRatioBased(t.s.samplerArg), samplerOther
	case SamplerParentBasedAlwaysOff:
		return sdktrace.ParentBased(sdktrace.NeverSample()), samplerParentOff
	case SamplerParentBasedTraceIDRatio:
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(t.s.samplerArg)), samplerOther
	default:
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), samplerParentOn
	}
}

func (t *Telemetry) openAccessLog(w io.Writer) error {
	if t.s.accessLog == "off" {
		return nil
	}
	if w == nil {
		switch t.s.accessLog {
		case "stderr":
			w = os.Stderr
		case "stdout":
			w = os.Stdout
		default:
			// Reopened by logBuf's goroutine when logrotate moves it.
			f, err := linewriter.OpenFile(t.s.accessLog, t.warnAccessLog)
			if err != nil {
				return fmt.Errorf("telemetry.access_log: %w", err)
			}
			w, t.logCloser = f, f
		}
		// A destination that stops taking lines must not block requests:
		// lines go through a bounded buffer and are dropped past it.
		t.logBuf = linewriter.NewGathering(w, accessLogBuffer, accessLogGather)
		t.metrics.logDropped.Store(t.logBuf)
		w = t.logBuf
	}
	t.log = newAccessLog(w)
	return nil
}

func (t *Telemetry) warnAccessLog(err error) {
	if t.warnLog == nil {
		otel.Handle(fmt.Errorf("access log: %w", err))
		return
	}
	t.warnLog.Warn("access log file", "file", t.s.accessLog, "error", err.Error())
}

// ReopenAccessLog has an access log file checked now (on SIGHUP) rather
// than within the second: when its path no longer names the open file
// (logrotate renamed or removed it), it is opened again. It never waits.
func (t *Telemetry) ReopenAccessLog() {
	if t.logBuf != nil {
		t.logBuf.Reopen()
	}
}

// accessLogBuffer bounds the access log lines waiting for their
// destination (about 4,000 lines).
const accessLogBuffer = 1 << 20

// accessLogGather is how long the access log's lines gather before they
// are written together: one write per 10 ms at most under load, where a
// write per request or so cost a small request a fifth of its CPU time.
// A line reaches its destination at most this late.
const accessLogGather = 10 * time.Millisecond

// TracingEnabled reports whether ferry records and exports spans.
func (t *Telemetry) TracingEnabled() bool { return t.prov != nil }

// TracerProvider is the provider behind the span helpers (a no-op provider
// when tracing is off).
func (t *Telemetry) TracerProvider() trace.TracerProvider { return t.tp }

// Propagator is the configured composite propagator.
func (t *Telemetry) Propagator() propagation.TextMapPropagator { return t.propagator }

// PropagationHeaders lists the header names the propagator reads and writes
// (e.g. traceparent, tracestate, baggage, b3). The sidecar deletes these
// from a request before forwarding it and calls Attempt.Inject. With
// tracing off it lists none: the caller's go on as they came (see
// Attempt.Inject). A B3
// propagator reads more than it writes (X-B3-ParentSpanId; the single b3
// form reads the multi-header one too): every B3 header goes, or the
// upstream would find the caller's ids beside ferry's.
func (t *Telemetry) PropagationHeaders() []string {
	if t.prov == nil {
		return nil
	}
	var out []string
	b3 := false
	for _, f := range t.propagator.Fields() {
		k := http.CanonicalHeaderKey(f)
		if k == "B3" || strings.HasPrefix(k, "X-B3-") {
			b3 = true
			continue
		}
		out = append(out, k)
	}
	if b3 {
		out = append(out, b3Headers...)
	}
	return out
}

// b3Headers are every header of B3 propagation, single and multi.
var b3Headers = []string{"B3", "X-B3-Traceid", "X-B3-Spanid", "X-B3-Parentspanid", "X-B3-Sampled", "X-B3-Flags"}

// Metrics is the instrument set the sidecar feeds (breaker state, Consul
// snapshot age, ...).
func (t *Telemetry) Metrics() *Metrics { return t.metrics }

// MetricsHandler serves Prometheus text, or OpenMetrics with exemplars when
// the scraper asks for it, for the admin listener's /metrics.
func (t *Telemetry) MetricsHandler() http.Handler { return t.metrics.handler }

// ForceFlush exports every finished span now.
func (t *Telemetry) ForceFlush(ctx context.Context) error {
	if t.prov == nil {
		return nil
	}
	return t.prov.ForceFlush(ctx)
}

// Shutdown flushes finished spans (bounded by ctx), stops the exporters and
// closes the access log file. Spans ended after Shutdown are discarded.
// Later calls return the first call's result.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	t.shutdownOnce.Do(func() {
		err := t.shutdownTracing(ctx)
		err = errors.Join(err, t.metrics.shutdown(ctx))
		if t.logBuf != nil {
			err = errors.Join(err, t.logBuf.Close(ctx))
		}
		if t.logCloser != nil {
			err = errors.Join(err, t.logCloser.Close())
		}
		t.shutdownErr = err
	})
	return t.shutdownErr
}

func (t *Telemetry) shutdownTracing(ctx context.Context) error {
	if t.prov == nil {
		return nil
	}
	if err := t.prov.Shutdown(ctx); err != nil {
		return fmt.Errorf("telemetry shutdown: %w", err)
	}
	return nil
}
