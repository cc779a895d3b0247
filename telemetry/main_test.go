package telemetry

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test must leave no goroutine behind: exporters, batch processors and
// Jaeger helpers are all shut down by the end.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
