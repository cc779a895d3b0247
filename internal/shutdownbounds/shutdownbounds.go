// Package shutdownbounds holds how long ferry's shutdown may still take
// once the drain's grace period has ended. The sidecar and cmd/ferry spend
// them, one after the other; the Kubernetes injector adds them up against a
// pod's terminationGracePeriodSeconds. It is a leaf package so the injector can
// use the same numbers without importing the sidecar.
package shutdownbounds

import "time"

const (
	// ReportWait bounds the wait, at the end of a drain that had to cut
	// exchanges, for those exchanges to answer their callers (a 503 for
	// one whose response had not begun) and for their spans and access
	// log lines to be reported.
	ReportWait = 2 * time.Second
	// TelemetryFlush bounds the flush of telemetry (queued spans, the
	// access log) as ferry exits.
	TelemetryFlush = 5 * time.Second
	// LogClose bounds, as ferry exits, the write of the log lines still
	// buffered for stderr (cmd/ferry's log writer, which a stderr nobody
	// drains must not hold up forever).
	LogClose = 2 * time.Second
)
