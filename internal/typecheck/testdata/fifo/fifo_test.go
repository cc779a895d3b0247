package fifo

import (
	"syscall"
	"testing"
)

// A test file is checked too: syscall.Kill does not exist on Windows.
func TestKill(t *testing.T) { _ = syscall.Kill(0, 0) }
