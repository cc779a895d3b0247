//go:build unix

package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A SIGTERM or SIGINT while ferry starts up (here: while it reads its
// config file, a FIFO the test holds) ends it cleanly: it says so and
// exits 0 without listening, or, when the signal reached it only as it
// began serving, drains and exits 0. It used to kill ferry on the spot
// (Go's default action, exit status "signal: terminated"), since ferry
// took the signals only once its sidecar was built.
func TestSignalDuringStartUpExitsCleanly(t *testing.T) {
	cfg := oneUpstreamConfig("127.0.0.1:1", "")
	for _, sig := range []os.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			fifo := filepath.Join(t.TempDir(), "ferry.yaml")
			if err := syscall.Mkfifo(fifo, 0o600); err != nil {
				t.Fatal(err)
			}
			p := startFerryProc(t, []string{"run", "--config", fifo}, nil)
			// ferry is in main, past every package's initialisation,
			// before anything is built.
			w := openWhenRead(t, fifo)
			p.signal(sig)
			w.WriteString(cfg)
			w.Close()
			if code := p.exitCode(20 * time.Second); code != exitOK {
				t.Fatalf("exit code %d after %v during start-up, want 0; log:\n%s", code, sig, p.log())
			}
			// The signal reaches ferry's channel a moment after the
			// process took it, and ferry meanwhile goes on starting:
			// it is seen before ferry serves (most often), or once it
			// serves, and drained like any other.
			seen := func(msg string) bool {
				for _, m := range p.seen {
					if m["msg"] == msg && (m["signal"] == nil || m["signal"] == sig.String()) {
						return true
					}
				}
				return false
			}
			log := p.log()
			switch {
			case seen("signal received during start-up; exiting without serving"):
				if strings.Contains(log, `"listening"`) || strings.Contains(log, `"draining"`) {
					t.Fatalf("ferry listened or drained after a signal during start-up:\n%s", log)
				}
			case seen("signal received; draining") && (seen("stop requested before ferry started serving; not starting") || seen("drained")):
				t.Logf("the signal reached ferry's channel only once it was starting to serve; it stopped cleanly:\n%s", log)
			default:
				t.Fatalf("no sign of the %v in ferry's log:\n%s", sig, log)
			}
		})
	}
}

// openWhenRead opens the FIFO path to write once a reader opened it: then
// ferry is reading it.
func openWhenRead(t *testing.T, path string) *os.File {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0)
		if err == nil {
			return f
		}
		if !errors.Is(err, syscall.ENXIO) || time.Now().After(deadline) {
			t.Fatalf("ferry did not open %s: %v", path, err)
		}
		time.Sleep(time.Millisecond) // a polling pace
	}
}

// A SIGHUP while ferry starts up does not kill it (Go's default action,
// before ferry took SIGHUP once its sidecar was built): it is acted on
// once ferry runs. The config here is a FIFO (to hold ferry in its
// start-up), which ferry reads once: the SIGHUP says it cannot re-read it.
func TestSIGHUPDuringStartUpReloadsOnceRunning(t *testing.T) {
	cfg := oneUpstreamConfig("127.0.0.1:1", "")
	fifo := filepath.Join(t.TempDir(), "ferry.yaml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	p := startFerryProc(t, []string{"run", "--config", fifo, "--config-poll", "0"}, nil)
	w := openWhenRead(t, fifo)
	p.signal(syscall.SIGHUP)
	w.WriteString(cfg)
	w.Close()
	p.waitLog(20*time.Second, func(m map[string]any) bool { return m["msg"] == "listening" && m["listener"] == "admin" })
	p.waitLog(20*time.Second, func(m map[string]any) bool {
		return strings.HasPrefix(fmt.Sprint(m["msg"]), "SIGHUP: ") && strings.Contains(fmt.Sprint(m["msg"]), "pipe")
	})
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(20 * time.Second); code != exitOK {
		t.Fatalf("exit code %d, want 0; log:\n%s", code, p.log())
	}
}

// initLine is a line GODEBUG=inittrace=1 prints once a package's
// initialisation is over.
var initLine = regexp.MustCompile(`(?m)^init (\S+) @([0-9.]+) ms`)

// SIGTERM right after ferry starts, 30 times, at delays spread over its
// first few milliseconds: ferry is never killed by it once any of its own
// packages began initialising (GODEBUG=inittrace=1 prints each package's
// line once its initialisation is over; ferry's first is the one that
// takes the signals). A run killed before that is in the window ferry
// cannot cover, the Go runtime's and the standard library's own
// initialisation; the test counts those runs and logs how long that
// window lasted. Every other run exits 0.
func TestSignalRightAfterStartNeverKillsFerry(t *testing.T) {
	bin := ferryBin(t)
	cfg := oneUpstreamConfig("127.0.0.1:1", "")
	const runs = 30
	var early int
	var windows []float64 // ms from the runtime's start to ferry's first package initialised
	for i := range runs {
		cmd := exec.Command(bin, "run", "--config-env", "FERRY_TEST_CFG")
		cmd.Env = append(os.Environ(), "FERRY_TEST_CFG="+cfg, "GODEBUG=inittrace=1")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// The delay is what the test varies, not a wait for something:
		// 0 to 5.8 ms after the process began.
		if d := time.Duration(i) * 200 * time.Microsecond; d > 0 {
			time.Sleep(d)
		}
		cmd.Process.Signal(syscall.SIGTERM)
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		var err error
		select {
		case err = <-exited:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-exited
			t.Fatalf("run %d: ferry did not exit within 20s of SIGTERM; stderr:\n%s", i, stderr.String())
		}
		out := stderr.String()
		first := ""
		for _, m := range initLine.FindAllStringSubmatch(out, -1) {
			if strings.HasPrefix(m[1], "github.com/ferrymesh/ferry/") {
				first = m[1]
				if first != "github.com/ferrymesh/ferry/internal/startsignal" {
					t.Fatalf("run %d: %s initialised before ferry took the signals (internal/startsignal); stderr:\n%s", i, first, stderr.String())
				}
				if ms, err := strconv.ParseFloat(m[2], 64); err == nil {
					windows = append(windows, ms)
				}
				break
			}
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				if first != "" {
					t.Fatalf("run %d: ferry was killed by %v after %s had initialised (%v after start); stderr:\n%s", i, ws.Signal(), first, time.Duration(i)*200*time.Microsecond, out)
				}
				early++
				continue
			}
		}
		if err != nil {
			t.Fatalf("run %d: ferry exited with %v after SIGTERM, want 0; stderr:\n%s", i, err, out)
		}
		if strings.Contains(out, "panic") {
			t.Fatalf("run %d: stderr:\n%s", i, out)
		}
	}
	sort.Float64s(windows)
	median := 0.0
	if len(windows) > 0 {
		median = windows[len(windows)/2]
	}
	t.Logf("%d of %d runs killed before ferry's first package initialised (the uncovered window); ferry's signal handling began %.2f ms (median of %d runs) after the Go runtime started", early, runs, median, len(windows))
}

// A config file written just before start-up is read again once it
// settles; a SIGTERM during that wait ends ferry cleanly, at once, as any
// signal during start-up does (not after the settle interval, here a
// minute).
func TestSignalWhileConfigSettlesExitsCleanly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ferry.yaml")
	if err := os.WriteFile(path, []byte(oneUpstreamConfig("127.0.0.1:1", "")), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startFerryProc(t, []string{"run", "--config", path, "--config-settle", "1m", "--log-level", "debug"}, nil)
	p.waitLog(20*time.Second, func(m map[string]any) bool {
		return strings.HasPrefix(fmt.Sprint(m["msg"]), "config file changed just before start-up")
	})
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(20 * time.Second); code != exitOK {
		t.Fatalf("exit code %d, want 0; log:\n%s", code, p.log())
	}
	if log := p.log(); !strings.Contains(log, "signal received during start-up; exiting without serving") || strings.Contains(log, `"listening"`) {
		t.Fatalf("want ferry to stop during start-up without listening; log:\n%s", log)
	}
}
