//go:build !linux

package sidecar

import (
	"testing"

	"github.com/ferrymesh/ferry/discovery/consultest"
)

// killAgent needs Linux: it finds the agent's process in /proc (see
// consulfaults_linux_test.go). Elsewhere the test that calls it is skipped.
func killAgent(t *testing.T, _ *consultest.Agent) {
	t.Helper()
	t.Skip("killing the consul agent finds its process in /proc, which only Linux has")
}
