package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A config path that is a FIFO no writer has opened keeps the read at
// start-up waiting (as os.ReadFile's would), and so would a file under
// another process's write lease or a /dev/stdin nobody closes. A SIGTERM
// or SIGINT then still ends ferry at once, cleanly, without serving:
// ferry caught the signal from its start and waited for the read only.
func TestSignalWhileConfigReadWaitsExitsCleanly(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		path := filepath.Join(t.TempDir(), "ferry.fifo")
		if err := syscall.Mkfifo(path, 0o600); err != nil {
			t.Fatal(err)
		}
		p := startFerryProc(t, []string{"run", "--config", path}, nil)
		// The signal goes once the open waits for a writer: one of
		// ferry's threads sleeps in the kernel's wait for a FIFO's
		// partner.
		pid := p.cmd.Process.Pid
		deadline := time.Now().Add(20 * time.Second)
		for !waitsForFIFOWriter(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("%v: ferry never waited in its open of the FIFO; log:\n%s", sig, p.log())
			}
			time.Sleep(5 * time.Millisecond) // polling, with the deadline above
		}
		p.signal(sig)
		if code := p.exitCode(20 * time.Second); code != exitOK {
			t.Fatalf("%v: exit code %d, want 0; log:\n%s", sig, code, p.log())
		}
		if log := p.log(); !strings.Contains(log, "signal received during start-up; exiting without serving") || strings.Contains(log, `"listening"`) {
			t.Fatalf("%v: want ferry to stop during start-up without listening; log:\n%s", sig, log)
		}
	}
}

// waitsForFIFOWriter reports whether a thread of process pid sleeps in
// the kernel's wait for the other end of a FIFO.
func waitsForFIFOWriter(pid int) bool {
	tasks, _ := filepath.Glob(filepath.Join("/proc", strconv.Itoa(pid), "task", "*", "wchan"))
	for _, f := range tasks {
		if b, err := os.ReadFile(f); err == nil && strings.TrimSpace(string(b)) == "wait_for_partner" {
			return true
		}
	}
	return false
}
