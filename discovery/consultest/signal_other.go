//go:build !windows

package consultest

import (
	"os"
	"syscall"
)

const sigStop, sigCont = syscall.SIGSTOP, syscall.SIGCONT

// canSignal reports why sig cannot be sent to the agent: here it always can.
func canSignal(syscall.Signal) error { return nil }

// terminate asks the agent to exit (SIGTERM); Stop waits for it.
func terminate(p *os.Process) {
	_ = p.Signal(syscall.SIGCONT) // a paused agent cannot exit
	_ = p.Signal(syscall.SIGTERM)
}
