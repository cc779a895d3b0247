//go:build linux

package main

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/internal/syncbuf"
)

// A `ferry demo` stopped before it is done stops the ferry it started and
// removes its files. A SIGTERM to the demo alone (kill PID, a supervisor,
// a CI runner ending the job's process) killed it on the spot (Go's
// default action): its child `ferry run` was left running, adopted by
// init, with its two ports and its temporary directory; a Ctrl-C (SIGINT
// to the whole process group) stopped the child too, but left the
// directory, ferry-demo-*, behind each time.
func TestDemoStoppedStopsItsFerry(t *testing.T) {
	bin := ferryBin(t)
	for _, tc := range []struct {
		name  string
		group bool // the signal goes to the demo's process group, as a terminal's Ctrl-C does
		sig   syscall.Signal
		// size is the demo's --size; with midDownload the signal comes
		// once the download through ferry shows progress, else while the
		// demo computes the payload's digest, before it.
		size        string
		midDownload bool
	}{
		{"SIGTERM to the demo alone, mid-download", false, syscall.SIGTERM, "3GiB", true},
		{"SIGINT to its process group, mid-download", true, syscall.SIGINT, "3GiB", true},
		{"SIGTERM to the demo alone, before the download", false, syscall.SIGTERM, "1000GiB", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := startDemo(t, bin, tc.size)
			cmd, stderr := d.cmd, d.stderr

			if tc.midDownload {
				// The progress bar: drawn once the download began.
				deadline := time.Now().Add(60 * time.Second)
				for !strings.Contains(stderr.String(), "via ferry [") {
					if time.Now().After(deadline) {
						t.Fatalf("the download through ferry did not begin within 60s; stderr:\n%s", stderr.String())
					}
					time.Sleep(10 * time.Millisecond) // polling a condition, not synchronising
				}
			}
			target := cmd.Process.Pid
			if tc.group {
				target = -target
			}
			if err := syscall.Kill(target, tc.sig); err != nil {
				t.Fatal(err)
			}
			err := recvWithin(t, d.exited, 30*time.Second, "the demo to exit")
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
					t.Errorf("the demo was killed by %v instead of stopping its ferry and exiting; stdout:\n%s", ws.Signal(), d.out.String())
				}
			}
			d.checkCleanedUp(t)
			if !strings.Contains(stderr.String(), "stopped by a signal") {
				t.Errorf("the demo does not say it was stopped; stderr:\n%s", stderr.String())
			}
		})
	}
}

// demoRun is a `ferry demo` started in a process group of its own (as
// from a terminal), and the ferry it started.
type demoRun struct {
	cmd    *exec.Cmd
	stderr *syncbuf.Buffer
	out    *strings.Builder // its stdout, whole once exited has a value
	exited chan error
	child  int    // its ferry's pid
	dir    string // its ferry's config directory, ferry-demo-*
}

var demoPidLine = regexp.MustCompile(`ferry pid (\d+) `)

// startDemo starts `ferry demo --size size` and waits for the ferry it
// starts; both are killed, and the directory removed, when the test ends.
func startDemo(t *testing.T, bin, size string) *demoRun {
	t.Helper()
	d := &demoRun{cmd: exec.Command(bin, "demo", "--size", size), stderr: new(syncbuf.Buffer), out: new(strings.Builder), exited: make(chan error, 1)}
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := d.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	d.cmd.Stderr = d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	child := make(chan int, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			d.out.WriteString(sc.Text() + "\n")
			if m := demoPidLine.FindStringSubmatch(sc.Text()); m != nil {
				pid, _ := strconv.Atoi(m[1])
				child <- pid
			}
		}
		d.exited <- d.cmd.Wait()
	}()
	t.Cleanup(func() { d.cmd.Process.Kill() })
	d.child = recvWithin(t, child, 30*time.Second, "the demo to start its ferry")
	// Whatever the outcome, the child goes when the test does.
	t.Cleanup(func() { syscall.Kill(d.child, syscall.SIGKILL) })
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(d.child) + "/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	d.dir = filepath.Dir(args[len(args)-1]) // ferry run --config DIR/ferry.yaml
	if !strings.Contains(filepath.Base(d.dir), "ferry-demo-") {
		t.Fatalf("the child's command line %q names no demo config", args)
	}
	t.Cleanup(func() { os.RemoveAll(d.dir) })
	return d
}

// checkCleanedUp checks, once the demo exited, that its ferry is gone (or
// a zombie nobody reaped yet: it has exited all the same) and its
// directory removed.
func (d *demoRun) checkCleanedUp(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for alive(d.child) {
		if time.Now().After(deadline) {
			t.Fatalf("the demo's ferry (pid %d) still runs 10s after the demo exited; stderr:\n%s", d.child, d.stderr.String())
		}
		time.Sleep(10 * time.Millisecond) // polling a condition, not synchronising
	}
	if _, err := os.Stat(d.dir); !os.IsNotExist(err) {
		t.Errorf("the demo's directory %s is left behind (stat: %v)", d.dir, err)
	}
}

// alive reports whether process pid exists and has not exited.
func alive(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) state ...: the state follows the last ')'.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func recvWithin[T any](t *testing.T, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("timed out after %v waiting for %s", d, what)
		var zero T
		return zero
	}
}

// A second Ctrl-C while the demo cleans up after the first ends it at
// once: it kills its ferry, removes its files and exits 1. The demo
// waited up to 10 s for its ferry to exit after the SIGTERM it sends it,
// with the second SIGINT caught and ignored meanwhile. The test stops the
// demo's ferry (SIGSTOP), as a ferry that is slow to exit, and presses
// Ctrl-C twice: SIGINT to the demo's process group, once the demo is
// seen cleaning up (its SIGTERM waits, pending, in the stopped ferry),
// again.
func TestDemoSecondInterruptStopsAtOnce(t *testing.T) {
	bin := ferryBin(t)
	// 1000GiB: the demo is still computing the payload's digest when it
	// is interrupted, without a download taking the machine's CPU.
	d := startDemo(t, bin, "1000GiB")
	cmd, stderr, pid := d.cmd, d.stderr, d.child

	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	// The demo is cleaning up once its SIGTERM is pending in its ferry.
	deadline := time.Now().Add(30 * time.Second)
	for !pending(pid, syscall.SIGTERM) {
		if time.Now().After(deadline) {
			t.Fatalf("the demo did not send its stopped ferry SIGTERM within 30s of a SIGINT; stderr:\n%s", stderr.String())
		}
		time.Sleep(5 * time.Millisecond) // polling a condition, not synchronising
	}
	second := time.Now()
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	err := recvWithin(t, d.exited, 30*time.Second, "the demo to exit")
	took := time.Since(second)
	var ee *exec.ExitError
	switch {
	case !errors.As(err, &ee):
		t.Errorf("the demo exited %v after the second SIGINT, want exit status %d", err, exitFail)
	case ee.Sys().(syscall.WaitStatus).Signaled():
		t.Errorf("the demo was killed by %v, want it to kill its ferry and exit %d", ee.Sys().(syscall.WaitStatus).Signal(), exitFail)
	case ee.ExitCode() != exitFail:
		t.Errorf("the demo exited %d, want %d", ee.ExitCode(), exitFail)
	}
	// At once: the 10s the demo otherwise gives its ferry is far off.
	if took > 5*time.Second {
		t.Errorf("the demo exited %v after the second SIGINT, want at once", took.Round(time.Millisecond))
	}
	d.checkCleanedUp(t)
	if !strings.Contains(stderr.String(), "second signal") {
		t.Errorf("the demo does not say a second signal stopped it; stderr:\n%s", stderr.String())
	}
}

// pending reports whether sig waits, undelivered, for process pid (as it
// does for a stopped process).
func pending(pid int, sig syscall.Signal) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "SigPnd" && k != "ShdPnd") {
			continue
		}
		mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		if err == nil && mask&(1<<(uint(sig)-1)) != 0 {
			return true
		}
	}
	return false
}
