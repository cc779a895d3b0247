// Package resilience protects callers from bad upstream endpoints without
// ever buffering a request or response body.
//
// It owns, per upstream service:
//
//   - a circuit breaker per endpoint (sony/gobreaker v2, driven in two steps:
//     admission at Pick, outcome at Done, because a proxy knows the outcome
//     only after the response has been relayed);
//   - outlier ejection beside the breaker (consecutive 5xx eject an endpoint
//     for a time that grows with repeated ejection, never the whole service);
//   - load balancing picks: power of two choices on least in-flight requests
//     (the default), round robin, random, weighted and consistent hashing;
//   - a concurrency limit (max in-flight requests per service);
//   - the retry policy (replay-safe without buffering: no body, or no body
//     byte consumed yet), jittered backoff and a retry budget;
//   - timeout settings (the proxy enforces them; this package validates them).
//
// The entry point is Upstream: the proxy creates one per service with
// NewUpstream, feeds it endpoint sets with Update whenever discovery
// publishes a new snapshot, and for each attempt calls Pick, then Done with
// the Outcome; Done returns the Effect of that outcome alone (the breaker
// transition and ejection it caused), for the request's span. Breaker and
// ejection state of endpoints that persist across Update is kept.
//
// Time: everything that decides when traffic returns to an endpoint (the
// breaker's open period, ejection time, the retry budget's window) runs on an
// injected Clock, so tests move time instead of sleeping. gobreaker itself
// reads the wall clock; ferry keeps it out of the time-based decisions (see
// breaker.go) except for the closed-state counting window.
//
// resilience does not read bodies, dial, enforce timeouts, or know about
// HTTP handlers; it never imports sidecar, discovery or telemetry. Breaker
// state changes, ejections and retry decisions are reported through the
// Observer interface, which telemetry implements.
package resilience
