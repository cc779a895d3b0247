package main

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// A demo whose ferry exits before it is ready (here its environment holds
// a telemetry setting ferry refuses) reports the ferry's error at once.
// The demo took ferry's exit from the channel its clean-up waited on,
// which then waited its whole 10 s for an exit that had already come.
func TestDemoReportsAFerryThatDidNotStartAtOnce(t *testing.T) {
	bin := ferryBin(t)
	cmd := exec.Command(bin, "demo", "--size", "1KiB")
	cmd.Env = append(os.Environ(), "OTEL_TRACES_SAMPLER=bogus")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(start)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitFail {
		t.Fatalf("demo: %v, want exit %d; output:\n%s", err, exitFail, out)
	}
	if !strings.Contains(string(out), `OTEL_TRACES_SAMPLER: unknown "bogus"`) {
		t.Errorf("the demo does not pass on its ferry's error:\n%s", out)
	}
	// 10 s and more before; well under a second on an idle machine.
	if took > 5*time.Second {
		t.Errorf("the demo took %v to report that its ferry exited", took.Round(time.Millisecond))
	}
}
