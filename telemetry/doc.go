// Package telemetry owns ferry's observability: the OpenTelemetry tracing
// set-up built from the standard OTEL_* environment (with overrides
// from the `telemetry:` section of the config file), the propagators (W3C
// tracecontext and baggage by default, B3 single and multi header on request),
// ferry's tracer provider over the SDK's samplers and span processors,
// the span helpers the proxy calls for every request and every upstream
// attempt, ferry's metrics registry and its Prometheus/OpenMetrics handler
// mounted at /metrics on the admin listener, and the JSON access log.
//
// It does not own routing, endpoint selection, breakers or the body copy: the
// sidecar package drives the lifecycle and tells this package what happened.
// It never imports sidecar, discovery or resilience.
//
// # Lifecycle of one request
//
//	ctx, req := tel.StartRequest(r, telemetry.Outbound) // server span, in-flight +1
//	req.SetRoute("files", "files")                        // route name and service
//	for _, h := range tel.PropagationHeaders() {          // tracing on: never pass the caller's through
//		out.Header.Del(h)
//	}
//	att := req.StartAttempt(out, telemetry.AttemptInfo{Endpoint: "10.0.0.7:8080", Attempt: 1})
//	att.Inject(out.Header)                                // new traceparent, parent = client span
//	... response headers arrive: att.SetStatus(resp.StatusCode)
//	... last body byte relayed:
//	att.End(telemetry.Outcome{Status: 200, BytesIn: respBytes, BytesOut: reqBytes})
//	req.End(telemetry.Outcome{Status: 200, BytesIn: reqBytes, BytesOut: respBytes})
//
// Spans end when End is called, so a ten-minute download is a ten-minute span.
// A Request and its Attempts are driven by one goroutine at a time (the
// proxy's handler); End is idempotent. Every started Request must be ended,
// or the in-flight gauge drifts.
//
// # Tracing off
//
// When tracing is off (no OTLP endpoint configured, OTEL_TRACES_EXPORTER=none
// or OTEL_SDK_DISABLED=true) the tracer is the OpenTelemetry no-op tracer:
// ferry adds no span to the trace, PropagationHeaders lists none and Inject
// writes nothing, so the upstream gets the caller's propagation headers as
// they came. Metrics and the access log (with the caller's trace and span
// IDs) still work.
//
// # Unreachable collectors
//
// Finished spans go through ferry's batch queue (queue.go), which is
// bounded and never blocks the caller, to ferry's OTLP exporter (otlp*.go).
// A span that finds the queue full is dropped and counted in
// ferry_trace_spans_dropped_total.
package telemetry
