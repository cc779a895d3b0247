package consultest

import (
	"fmt"
	"os"
	"syscall"
)

// Windows has neither SIGSTOP nor SIGCONT: these values only stand for
// them, and canSignal refuses both.
const sigStop, sigCont = syscall.Signal(-1), syscall.Signal(-2)

// canSignal reports why sig cannot be sent to the agent.
func canSignal(sig syscall.Signal) error {
	name := "SIGSTOP"
	if sig == sigCont {
		name = "SIGCONT"
	}
	return fmt.Errorf("Pause and Resume need %s, which Windows does not have", name)
}

// isStopped is never called on Windows: Pause skips the test first.
func isStopped(int) (bool, error) { return false, canSignal(sigStop) }

// terminate kills the agent: os.Process.Signal on Windows can only kill,
// so there is no SIGTERM to ask it to exit cleanly first. An agent cannot
// be paused here, so there is none to resume.
func terminate(p *os.Process) { _ = p.Kill() }
