package telemetry

import (
	"context"
	"net/http"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/sdk/resource"
	"go.opentelemetry.io/otel/trace"

	"github.com/ferrymesh/ferry/internal/linewriter"
)

// Prometheus names of ferry's metrics, as they appear on /metrics. The
// Grafana dashboard in deploy/grafana is built on exactly these.
const (
	MetricRequests          = "ferry_requests_total"                  // counter: listener, service, endpoint, status_class, reason
	MetricRequestDuration   = "ferry_request_duration_seconds"        // histogram: listener, service, status_class
	MetricInFlight          = "ferry_requests_in_flight"              // gauge: listener
	MetricBodyBytes         = "ferry_body_bytes_total"                // counter: listener, service, direction (in|out)
	MetricRetries           = "ferry_retries_total"                   // counter: service, reason
	MetricBreakerState      = "ferry_breaker_state"                   // gauge 0 closed, 1 half-open, 2 open: service, endpoint
	MetricBreakerTransition = "ferry_breaker_transitions_total"       // counter: service, to
	MetricEjections         = "ferry_ejections_total"                 // counter: service
	MetricConnLimit         = "ferry_connection_limit_reached_total"  // counter: listener
	MetricConnsClosed       = "ferry_connections_closed_total"        // counter: listener, reason
	MetricSnapshotAge       = "ferry_consul_snapshot_age_seconds"     // gauge: service
	MetricWatchErrors       = "ferry_consul_watch_errors_total"       // counter: service
	MetricSpansDropped      = "ferry_trace_spans_dropped_total"       // counter: spans lost on a full export queue
	MetricSpansExported     = "ferry_trace_spans_exported_total"      // counter
	MetricSpansExportFailed = "ferry_trace_spans_export_failed_total" // counter: spans in failed exports
	MetricSpanQueue         = "ferry_trace_queue_spans"               // gauge: spans waiting for export
)

// cardinalityLimit caps the series of any one metric, the overflow series
// included; beyond it new label sets fold into one series labelled
// otel_metric_overflow="true".
const cardinalityLimit = 2000

// endpointSeriesRetireAfter is how long a ferry_requests_total series of
// an endpoint no longer in force must have gone without a count before a
// scrape forgets it. Consul endpoints come and go; without this the
// series of endpoints long gone would fill the cap and push the live
// ones' into the overflow series. Ten minutes covers many scrape
// intervals, so Prometheus has read the series' last value, and the end of
// most exchanges the endpoint still had in flight when it left. A variable
// for tests.
var endpointSeriesRetireAfter = 10 * time.Minute

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
	reg     *registry
	handler http.Handler
	now     func() time.Time

	requests          *family
	duration          *family
	inFlight          *family
	bodyBytes         *family
	retries           *family
	breakerState      *family
	breakerTransition *family
	ejections         *family
	connLimit         *family
	closedForRoom     *family
	connsClosed       *family
	watchErrors       *family
	reloads           *family
	reloadOK          *family

	// snapshots yields the Consul snapshots in force and when Consul last
	// confirmed each (see KnownSnapshots); nil until set.
	snapshots atomic.Pointer[ConsulSnapshots]
	labels    requestMetricLabels
	// logDropped counts the access log lines dropped; nil when ferry does
	// not buffer the access log.
	logDropped atomic.Pointer[linewriter.Writer]
	// endpoints yields the endpoints that exist, by service (see
	// KnownEndpoints); nil until set.
	endpoints atomic.Pointer[Breakers]
}

func newMetrics(res *resource.Resource, q *spanQueue) (*Metrics, error) {
	r := &registry{}
	m := &Metrics{reg: r, handler: r, now: time.Now}
	m.requests = r.counter("ferry_requests",
		"Requests handled, by listener, service, upstream endpoint, status class and proxy failure reason.",
		"listener", "service", "endpoint", "status_class", "reason")
	m.duration = r.histogram("ferry_request_duration_seconds",
		"Time from the request's arrival to its last response body byte.", durationBuckets,
		"listener", "service", "status_class")
	m.inFlight = r.gauge("ferry_requests_in_flight", "Requests started and not yet finished.", "listener")
	m.bodyBytes = r.counter("ferry_body_bytes",
		"Body bytes streamed: in = request body bytes passed on upstream, out = response body bytes sent to callers.",
		"listener", "service", "direction")
	m.retries = r.counter("ferry_retries", "Upstream attempts retried, by service and reason.", "service", "reason")
	m.breakerState = r.gauge("ferry_breaker_state",
		"Circuit breaker state per endpoint: 0 closed, 1 half-open, 2 open.", "service", "endpoint")
	m.breakerTransition = r.counter("ferry_breaker_transitions",
		"Circuit breaker state changes, by service and new state.", "service", "to")
	m.ejections = r.counter("ferry_ejections", "Endpoints ejected as outliers, by service.", "service")
	m.connLimit = r.counter("ferry_connection_limit_reached",
		"Times a new connection found a listener at limits.max_connections and waited for room, by listener: one per episode at the bound.", "listener")
	m.closedForRoom = r.counter("ferry_connections_closed_for_room",
		"Idle keep-alive connections a listener at limits.max_connections closed to make room for a new one, by listener.", "listener")
	m.connsClosed = r.counter("ferry_connections_closed",
		"Caller connections a proxy listener closed in defence, by listener and reason (premature_resets: an h2c connection whose caller reset most of its streams as they began).", "listener", "reason")
	m.watchErrors = r.counter("ferry_consul_watch_errors", "Failed Consul watch queries, by service.", "service")
	m.reloads = r.counter("ferry_config_reloads", "Config file reloads tried (SIGHUP, a changed file, a retry), by result: applied or rejected.", "result")
	m.reloadOK = r.gauge("ferry_config_last_reload_successful", "1 while the config file's last reload applied (or none was tried), 0 while it was rejected and the config in force is older than the file.")
	m.reloadOK.with().set(1)
	r.collected("ferry_consul_snapshot_age_seconds",
		"Seconds the endpoint snapshot ferry routes with has gone unconfirmed by Consul, by service: 0 while its watch waits on an agent that answers, growing from the last answer while queries fail.", kindGauge,
		func(emit func(float64, ...string)) {
			snapshots := m.snapshots.Load()
			if snapshots == nil {
				return
			}
			now := m.now()
			(*snapshots)(func(service string, confirmed time.Time) bool {
				age := 0.0
				if !confirmed.IsZero() {
					age = max(now.Sub(confirmed).Seconds(), 0)
				}
				emit(age, service)
				return true
			})
		}, "service")
	r.collected("ferry_access_log_dropped",
		"Access log lines dropped because their destination did not take them fast enough, or refused them (a write error such as a full disk).", kindCounter,
		func(emit func(float64, ...string)) {
			if w := m.logDropped.Load(); w != nil {
				emit(float64(w.Dropped()))
			}
		})
	r.prepare = append(r.prepare, m.syncEndpoints)
	if q != nil {
		registerQueueMetrics(r, q)
	}
	registerTargetInfo(r, res)
	registerRuntimeMetrics(r)
	m.labels = newRequestMetricLabels(m)
	return m, nil
}

func registerQueueMetrics(r *registry, q *spanQueue) {
	for _, c := range []struct {
		name, help string
		kind       metricKind
		v          *atomic.Int64
	}{
		{"ferry_trace_spans_dropped", "Finished spans dropped because the export queue was full.", kindCounter, &q.dropped},
		{"ferry_trace_spans_exported", "Spans exported to the collector.", kindCounter, &q.exported},
		{"ferry_trace_spans_export_failed", "Spans in export calls that failed.", kindCounter, &q.exportFailed},
		{"ferry_trace_queue_spans", "Finished spans waiting for export.", kindGauge, &q.pending},
	} {
		r.collected(c.name, c.help, c.kind, func(emit func(float64, ...string)) { emit(float64(c.v.Load())) })
	}
}

// registerTargetInfo exposes the resource attributes as target_info's
// labels, named by promLabelName.
func registerTargetInfo(r *registry, res *resource.Resource) {
	attrs := res.Attributes()
	if len(attrs) == 0 {
		return
	}
	// Keys that map to the same label name ("k8s.pod.name",
	// "k8s_pod_name") share one label, their values joined with ";" in
	// key order (attrs is sorted by key), as the OpenTelemetry Prometheus
	// compatibility rules ask: a label named twice would fail the whole
	// scrape.
	var names, values []string
	at := map[string]int{}
	for _, kv := range attrs {
		name, v := promLabelName(string(kv.Key)), kv.Value.Emit()
		if i, ok := at[name]; ok {
			values[i] += ";" + v
			continue
		}
		at[name] = len(names)
		names, values = append(names, name), append(values, v)
	}
	r.collected("target_info", "Target metadata", kindGauge,
		func(emit func(float64, ...string)) { emit(1, values...) }, names...)
}

// promLabelName makes a resource attribute key a Prometheus label name as
// the OpenTelemetry Prometheus compatibility rules do: every character
// outside [a-zA-Z0-9_], and a leading digit, becomes "_", and a run of "_"
// becomes one. So no name starts with "__", which Prometheus reserves: a
// key "__name__" would otherwise give target_info a second metric name
// ("_name_" instead), and "__address__" a label relabelling drops.
func promLabelName(s string) string {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' && i > 0) {
			c = '_'
		}
		if c == '_' && len(b) > 0 && b[len(b)-1] == '_' {
			continue
		}
		b = append(b, c)
	}
	if len(b) == 0 {
		return "_"
	}
	return string(b)
}

func (m *Metrics) shutdown(context.Context) error { return nil }

// requestStarted counts a request in flight on listener l, and returns
// the series that requestDone takes the count from again. (The in-flight
// series are never dropped: the series a request started in is still the
// listener's when it is done.)
func (m *Metrics) requestStarted(l Listener) *series {
	s := m.labels.listener.get(string(l))
	s.add(1)
	return s
}

// requestDone ends the in-flight count of a request in s (requestStarted's),
// once everything about it was reported (see Request.End).
func (m *Metrics) requestDone(s *series) {
	if s != nil { // nil: never counted
		s.add(-1)
	}
}

// InFlight is the number of requests started and not yet wholly reported
// (span ended, access log line written), over every listener.
func (m *Metrics) InFlight() int64 { return m.inFlight.sum() }

// requestEnded records a request that finished at end: its count, duration
// and body bytes (exemplars from the span in ctx when it is sampled).
// The series are looked up through sm when it is not nil (see
// SeriesMemo).
func (m *Metrics) requestEnded(sc trace.SpanContext, l Listener, service, endpoint string, o Outcome, elapsed time.Duration, end time.Time, sm *SeriesMemo) {
	ref, sampled := spanRefOf(sc, end)
	class := statusClass(o.Status)
	var mr *memo[requestLabels]
	var md *memo[durationLabels]
	var mi, mo *memo[bytesLabels]
	if sm != nil {
		mr, md, mi, mo = &sm.requests, &sm.duration, &sm.bytesIn, &sm.bytesOut
	}
	m.labels.requests.getVia(requestLabels{string(l), service, endpoint, class, boundedReason(o.Reason)}, mr).addSampled(1, ref, sampled)
	m.labels.duration.getVia(durationLabels{string(l), service, class}, md).observe(elapsed.Seconds(), ref, sampled)
	if o.BytesIn > 0 {
		m.labels.bytes.getVia(bytesLabels{string(l), service, "in"}, mi).addSampled(o.BytesIn, ref, sampled)
	}
	if o.BytesOut > 0 {
		m.labels.bytes.getVia(bytesLabels{string(l), service, "out"}, mo).addSampled(o.BytesOut, ref, sampled)
	}
}

// requestAnswered counts a request answered before any handler saw it: no
// service, endpoint, duration or body.
func (m *Metrics) requestAnswered(l Listener, status int, reason string) {
	m.labels.requests.get(requestLabels{string(l), "", "", statusClass(status), boundedReason(reason)}).add(1)
}

// SetBreakerState records the current breaker state of one endpoint.
func (m *Metrics) SetBreakerState(service, endpoint string, state BreakerState) {
	m.breakerState.with(service, endpoint).set(state.gaugeValue())
}

// BreakerTransition counts a breaker state change, and records the new
// state until KnownEndpoints is set; from then on each scrape reads the
// state from the breakers in force (syncEndpoints) and nothing else sets
// it. A transition's report can come late: the goroutine that made the
// change may be held up before reporting it while a reload replaces the
// breaker (or drops its endpoint) and a scrape reads the breakers in
// force. Were it recorded then, between the scrape's read and its
// output, the scrape would show the replaced breaker's state, or the
// series of an endpoint no longer in force. To attach the transition to
// a request's span as well, use Request.BreakerTransition.
func (m *Metrics) BreakerTransition(service, endpoint string, to BreakerState) {
	m.breakerTransition.with(service, string(to)).add(1)
	if m.endpoints.Load() == nil {
		m.SetBreakerState(service, endpoint, to)
	}
}

// Breakers yields every endpoint in force, by service, with the state of
// its breaker ("" when its service has no breaker).
type Breakers func(yield func(service, endpoint string, state BreakerState) bool)

// KnownEndpoints sets what a scrape asks which endpoints exist and what
// their breakers' states are. ferry_breaker_state then reports exactly
// those: a series of any other endpoint (one that left discovery, or whose
// service was dropped) goes, and one whose breaker a reload replaced shows
// the new breaker's state, where the state of the last transition would
// otherwise stay for good. Until it is set, the series follow the
// transitions only; once it is set, only what it yields at each scrape.
func (m *Metrics) KnownEndpoints(endpoints Breakers) {
	m.endpoints.Store(&endpoints)
}

// syncEndpoints sets ferry_breaker_state from KnownEndpoints, and
// forgets the ferry_requests_total series of endpoints no longer in force
// that have gone endpointSeriesRetireAfter without a count; it runs
// before every scrape.
func (m *Metrics) syncEndpoints() {
	endpoints := m.endpoints.Load()
	if endpoints == nil {
		return
	}
	inForce := map[[2]string]bool{}
	breakers := map[[2]string]BreakerState{}
	(*endpoints)(func(service, endpoint string, state BreakerState) bool {
		k := [2]string{service, endpoint}
		inForce[k] = true
		if state != "" {
			breakers[k] = state
		}
		return true
	})
	m.breakerState.retain(func(values []string) bool {
		_, ok := breakers[[2]string{values[0], values[1]}]
		return ok
	})
	for k, state := range breakers {
		m.SetBreakerState(k[0], k[1], state)
	}
	// ferry_requests_total: listener, service, endpoint, ...; a request
	// answered without an endpoint ("") is no endpoint's.
	gone := func(values []string) bool {
		return values[2] != "" && !inForce[[2]string{values[1], values[2]}]
	}
	if m.requests.retireIdle(m.now(), endpointSeriesRetireAfter, gone) {
		m.labels.requests.reset()
	}
}

// Ejection counts an endpoint ejected as an outlier.
func (m *Metrics) Ejection(service string) {
	m.ejections.with(service).add(1)
}

// ConnectionLimitReached counts a listener at limits.max_connections that
// a new connection found full, once per episode at the bound.
func (m *Metrics) ConnectionLimitReached(listener string) {
	m.connLimit.with(listener).add(1)
}

// ConnectionClosedForRoom counts an idle keep-alive connection a listener
// at limits.max_connections closed to make room for a new one.
func (m *Metrics) ConnectionClosedForRoom(listener string) {
	m.closedForRoom.with(listener).add(1)
}

// Reasons a proxy listener closes a caller's connection in defence
// (ConnectionClosed).
const (
	// ConnClosedPrematureResets: an h2c connection whose caller reset more
	// than half of its streams (of at least a few hundred) within a
	// second of their start, as a rapid-reset flood does.
	ConnClosedPrematureResets = "premature_resets"
)

// ConnectionClosed counts a caller connection a proxy listener closed in
// defence; reason is a ConnClosed* constant.
func (m *Metrics) ConnectionClosed(listener, reason string) {
	m.connsClosed.with(listener, reason).add(1)
}

// Retry counts a retried upstream attempt. reason should come from a small
// fixed set (for example a Reason constant).
func (m *Metrics) Retry(ctx context.Context, service, reason string) {
	ref, sampled := spanRefFrom(ctx)
	m.retries.with(service, boundedReason(reason)).addSampled(1, ref, sampled)
}

// ConsulSnapshots yields each service in force whose endpoints come from a
// Consul watch that has answered, with when Consul last confirmed them: the
// zero time while the watch waits on an agent that answers (the snapshot
// is current, and would learn of a change at once), the time of its last
// answer while its queries fail.
type ConsulSnapshots func(yield func(service string, confirmed time.Time) bool)

// KnownSnapshots sets what a scrape asks for the Consul snapshots' ages:
// ferry_consul_snapshot_age_seconds then reports exactly those services,
// as their watches stand at the scrape (0 while current, growing from the
// last answer while failing), the way /upstreams shows them. A service
// that left the config, or turned static, goes with its watch. Until it
// is set, the gauge has no series.
func (m *Metrics) KnownSnapshots(snapshots ConsulSnapshots) {
	m.snapshots.Store(&snapshots)
}

// WatchError counts a failed Consul watch query for service.
func (m *Metrics) WatchError(service string) {
	m.watchErrors.with(service).add(1)
}

// ConfigReload counts a reload of the config file, applied or rejected.
func (m *Metrics) ConfigReload(applied bool) {
	result, ok := "rejected", int64(0)
	if applied {
		result, ok = "applied", 1
	}
	m.reloads.with(result).add(1)
	m.reloadOK.with().set(ok)
}

// SetLastReloadSuccessful sets ferry_config_last_reload_successful without
// counting a reload: when the config file reads again, after a read that
// failed, as the content last tried, whose reload applied (ok) or not.
func (m *Metrics) SetLastReloadSuccessful(ok bool) {
	v := int64(0)
	if ok {
		v = 1
	}
	m.reloadOK.with().set(v)
}
