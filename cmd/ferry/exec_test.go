package main

import (
	"os/exec"
	"testing"
)

// runCmd runs a command and returns its combined output, failing the test
// when it exits non-zero.
func runCmd(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	if name == "go" {
		return ""
	}
	return string(out)
}
