package jaegertest

import (
	"testing"

	"github.com/ferrymesh/ferry/internal/tooltest"
)

// Binary returns the path of the Jaeger v2 binary: $FERRY_JAEGER_BIN, else
// <repo root>/bin/jaeger, else whatever `scripts/tool.sh jaeger` builds.
// When none works it skips the test, or fails it when $CI is set.
func Binary(t testing.TB) string {
	t.Helper()
	return tooltest.Binary(t, "jaeger")
}
