package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ferry_config_last_reload_successful says whether the file holds a config
// ferry rejected. A SIGHUP whose read of the file failed (a file still
// being written, or gone for a moment) sets it to 0; once the file reads
// again as the content in force, the watcher sees no change and tries
// nothing, and the gauge must go back to 1 all the same: the file and the
// config in force agree. It stayed 0 until the next change of the file
// applied. A file back at a content ferry rejected keeps it at 0.
func TestReloadGaugeBackWhenFileSettlesToTheConfigInForce(t *testing.T) {
	a := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "a") }))
	inForce := []byte(reloadConfig(a, ""))
	sc := startSidecar(t, mustParse(t, string(inForce)), Options{})
	path := filepath.Join(t.TempDir(), "ferry.yaml")
	write := func(data []byte) {
		t.Helper()
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	gauge := func(when, want string, rejected int) {
		t.Helper()
		m := metricsText(sc)
		if !strings.Contains(m, "\nferry_config_last_reload_successful "+want+"\n") {
			t.Errorf("%s: want ferry_config_last_reload_successful %s:\n%s", when, want, grepLines(m, "ferry_config_"))
		}
		if l := fmt.Sprintf(`ferry_config_reloads_total{result="rejected"} %d`, rejected); !strings.Contains(m, "\n"+l+"\n") || strings.Contains(m, `result="applied"`) {
			t.Errorf("%s: want %s and no reload applied:\n%s", when, l, grepLines(m, "ferry_config_"))
		}
	}
	write(inForce)

	// SIGHUP while a writer keeps rewriting the file: refused.
	err := reloadFileStepped(t, sc, stepFileReads(sc), path, func(i int) {
		write([]byte(reloadConfig(a, fmt.Sprintf("# version %d\n", i))))
	})
	if !errors.Is(err, errStillChanging) {
		t.Fatalf("SIGHUP on a file that keeps changing: %v", err)
	}
	gauge("after SIGHUP on a file being written", "0", 1)

	// The writer puts the content in force back; the watcher reads it.
	write(inForce)
	steps := stepFileReads(sc)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go sc.WatchConfigFile(ctx, path, time.Second, inForce)
	// Each wait the watcher asks for comes once it is done with its
	// read before: ending one and taking the next is one poll.
	next := steps.wait(t)
	close(next.next)
	next = steps.wait(t)
	gauge("after the file settled back to the config in force", "1", 1)

	// SIGHUP while the file is gone for a moment: refused too.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := sc.ReloadFile(context.Background(), path); err == nil {
		t.Fatal("SIGHUP on a missing file succeeded")
	}
	gauge("after SIGHUP on a missing file", "0", 2)
	write(inForce)
	close(next.next)
	next = steps.wait(t)
	gauge("after the file came back as the config in force", "1", 2)

	// A content ferry rejects, then a failed read, then that content
	// again: the file holds a rejected config, 0 it stays.
	bad := []byte(reloadConfig("nohost", ""))
	write(bad)
	for range 2 { // the change, then the read that finds it settled
		close(next.next)
		next = steps.wait(t)
	}
	gauge("after the watcher rejected a bad config", "0", 3)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := sc.ReloadFile(context.Background(), path); err == nil {
		t.Fatal("SIGHUP on a missing file succeeded")
	}
	write(bad)
	close(next.next)
	next = steps.wait(t)
	gauge("after the file came back as the rejected config", "0", 4)
	close(next.next)
}

// openFIFOWriter opens the FIFO at fifo to write once a reader (who: the
// watcher, a settle read) has it open to read, and fails the test if none
// has within d: a read of the config path that does not wait for a FIFO's
// writer (an O_NONBLOCK open reads it empty at once) has come and gone,
// and a blocking open to write would wait for ever. A non-blocking open to
// write fails (ENXIO) until a reader has the FIFO open, blocked in its
// open or not; writes to it still wait as they must (Go's poller).
func openFIFOWriter(t *testing.T, fifo string, d time.Duration, who string) *os.File {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		wr, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0)
		if err == nil {
			return wr
		}
		if !errors.Is(err, syscall.ENXIO) {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("opening the FIFO at the config path to write: no reader after %v; %s had not opened it to read, or read it and went on without waiting for a writer", d, who)
		}
		time.Sleep(time.Millisecond)
	}
}
