//go:build linux

package sidecar

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/discovery/consultest"
)

// killAgent sends SIGKILL to the agent's process (found by its HTTP port
// on its command line: consultest starts it with -http-port) and waits
// until its HTTP port refuses connections.
func killAgent(t *testing.T, agent *consultest.Agent) {
	t.Helper()
	pid := agentPID(t, agent)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill consul agent %d: %v", pid, err)
	}
	waitFor(t, "the killed agent's port to refuse", 10*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", agent.HTTPAddr, time.Second)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
}

func agentPID(t *testing.T, agent *consultest.Agent) int {
	t.Helper()
	want := []byte("\x00-http-port\x00" + strconv.Itoa(agent.HTTPPort) + "\x00")
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		cmdline, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil || !bytes.Contains(cmdline, want) || !bytes.Contains(cmdline, []byte("\x00agent\x00-dev\x00")) {
			continue
		}
		pid, err := strconv.Atoi(filepath.Base(d))
		if err == nil {
			return pid
		}
	}
	t.Fatalf("no consul agent process with -http-port %d", agent.HTTPPort)
	return 0
}
