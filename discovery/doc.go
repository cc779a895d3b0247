// Package discovery answers "which endpoints serve this service right now".
//
// It owns the Resolver abstraction, the static resolver (endpoints written in
// the config file, ferry's embedded default), the Consul watcher and ferry's
// self-registration in Consul. Every service is exposed as a *Service whose
// current endpoint set is an immutable *Snapshot swapped atomically, so the
// proxy reads it on the hot path without locks while watchers replace it in
// the background.
//
// discovery does not pick endpoints (that is resilience) and never imports
// sidecar, resilience or telemetry.
package discovery
