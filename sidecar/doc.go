// Package sidecar is ferry's data plane: the outbound listener the local
// application calls upstreams through, the inbound listener the mesh calls
// the application through, the admin listener, routing, and the HTTP relay
// that streams every body as it arrives without holding it in memory.
//
// It owns the config file as a whole and composes discovery (endpoints),
// resilience (picks and breakers) and telemetry (spans, metrics, logs)
// through small interfaces. It does not find endpoints itself.
package sidecar
