// Package discovery answers "which endpoints serve this service right now".
//
// It owns the Resolver abstraction, the static resolver (endpoints written in
// the config file, ferry's embedded default), the Consul watcher and ferry's
// self-registration in Consul. Every service is exposed as a *Service whose
// current endpoint set is an immutable *Snapshot swapped atomically, so the
// proxy reads it on the hot path without locks while watchers replace it in
// the background.
//
// Files: service.go (Endpoint, Snapshot, Service, Resolver), static.go (the
// static resolver), consul_config.go (the `consul:` config section over the
// standard CONSUL_* environment), consul.go (the Consul resolver: one watch
// per service, stats, Close), consul_watch.go (the blocking-query loop and
// its index rules), register.go (Registrar: self-registration with a TTL
// readiness check), backoff.go (jittered bounded retry pacing).
// discovery/consultest runs a real `consul agent -dev` for tests.
//
// discovery does not pick endpoints (that is resilience) and never imports
// sidecar, resilience or telemetry.
package discovery
