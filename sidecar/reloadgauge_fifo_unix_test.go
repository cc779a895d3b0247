//go:build unix

package sidecar

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The watcher reads the file, then takes the lock the reloads share. A
// SIGHUP whose read failed in between (the file gone by then) set the
// gauge to 0 after the watcher's read: that read, of the content in force,
// says nothing of the file since, and must not set the gauge back to 1.
// It did: the gauge said the last reload succeeded while the file was
// missing and the last reload (the SIGHUP) had failed. The next poll that
// reads the content in force sets it back to 1.
func TestReloadGaugeNotBackOnAReadBeforeTheFailedSIGHUP(t *testing.T) {
	a := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "a") }))
	inForce := []byte(reloadConfig(a, ""))
	sc := startSidecar(t, mustParse(t, string(inForce)), Options{})
	// The watcher's read of path opens the FIFO, and ends when the test
	// has written to it and closed it: the SIGHUP goes in between.
	path, fifo := fifoConfigPath(t)
	gauge := func(when, want string) {
		t.Helper()
		if m := metricsText(sc); !strings.Contains(m, "\nferry_config_last_reload_successful "+want+"\n") {
			t.Errorf("%s: want ferry_config_last_reload_successful %s:\n%s", when, want, grepLines(m, "ferry_config_"))
		}
	}
	steps := stepFileReads(sc)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go sc.WatchConfigFile(ctx, path, time.Second, inForce)
	next := steps.wait(t)
	close(next.next)
	wr := openFIFOWriter(t, fifo, 10*time.Second, "the watcher")
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := sc.ReloadFile(context.Background(), path); err == nil {
		t.Fatal("SIGHUP on a missing file succeeded")
	}
	gauge("after SIGHUP on a missing file", "0")
	if _, err := wr.Write(inForce); err != nil {
		t.Fatal(err)
	}
	wr.Close()
	next = steps.wait(t)
	gauge("after a watcher read that began before the failed SIGHUP", "0")

	if err := os.WriteFile(path, inForce, 0o600); err != nil {
		t.Fatal(err)
	}
	close(next.next)
	next = steps.wait(t)
	gauge("after the file read again as the config in force", "1")
	close(next.next)
}

// fifoConfigPath makes a FIFO in a temporary folder and a config path
// (ferry.yaml) that is a symlink to it.
func fifoConfigPath(t *testing.T) (path, fifo string) {
	t.Helper()
	dir := t.TempDir()
	path, fifo = filepath.Join(dir, "ferry.yaml"), filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(fifo, path); err != nil {
		t.Fatal(err)
	}
	return path, fifo
}
