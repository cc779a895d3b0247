package sidecar

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/internal/syncbuf"
)

// A writer that rewrites the config file in place and pauses mid-file for
// longer than the settle interval (a script writing the file a part at a
// time, a tool waiting on something between two writes) leaves a prefix
// that reads the same twice. When that prefix is a valid config (here the
// route for / is missing), the watcher applied it, and a SIGHUP did too:
// ferry served a partial route table ('config reloaded') until the writer
// went on. The file is open for writing all that time, which Linux says
// (a read lease is refused on a file open for writing): ferry holds such
// a file's content back until no process has it open to write, and the
// config in force serves meanwhile. The watcher runs with its real timers.
func TestConfigFileOpenForWritingIsNotApplied(t *testing.T) {
	const settle = 20 * time.Millisecond
	a := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "a") }))
	b := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "b") }))
	whole, prefix := settleConfig(a, b, true), settleConfig(a, b, false)
	if _, err := ParseConfig([]byte(prefix)); err != nil {
		t.Fatalf("the test's premise: the prefix is a valid config: %v", err)
	}
	for _, by := range []string{"watcher", "SIGHUP"} {
		t.Run(by, func(t *testing.T) {
			logs := new(syncbuf.Buffer)
			initial := []byte(reloadConfig(a, "")) // every path to a
			sc := startSidecar(t, mustParse(t, string(initial)), Options{Log: slog.New(slog.NewTextHandler(logs, nil)), ConfigSettle: settle})
			url := "http://" + sc.Addr("outbound") + "/"
			path := filepath.Join(t.TempDir(), "ferry.yaml")
			if err := os.WriteFile(path, initial, 0o600); err != nil {
				t.Fatal(err)
			}
			// The writer truncates the file and writes the prefix, then
			// pauses, the file still open.
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteString(prefix); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if by == "watcher" {
				// Reads of the prefix, counted: three in a row read the
				// same bytes, settle apart, which applied it before.
				var prefixReads atomic.Int64
				hook := func(cur []byte) {
					if string(cur) == prefix {
						prefixReads.Add(1)
					}
				}
				testHookWatchRead.Store(&hook)
				t.Cleanup(func() { testHookWatchRead.Store(nil) })
				go sc.WatchConfigFile(ctx, path, 100*time.Millisecond, initial)
				deadline := time.Now().Add(20 * time.Second)
				for prefixReads.Load() < 4 {
					if time.Now().After(deadline) {
						t.Fatalf("the watcher read the prefix %d times in 20s", prefixReads.Load())
					}
					time.Sleep(time.Millisecond) // polling a condition, not synchronising
				}
			} else {
				// ReloadFile reads the file until it settles, up to
				// configSettleReads reads: the writer stays paused
				// throughout.
				err := sc.ReloadFile(ctx, path)
				if !errors.Is(err, errStillChanging) {
					t.Errorf("ReloadFile of a file open for writing: %v, want it refused as still being written", err)
				}
			}
			if _, body := get(t, h1Client(), url, ""); body != "a" {
				t.Fatalf("with the writer paused mid-file, / answered %q, want a: the prefix was applied; log:\n%s", body, logs.String())
			}
			if m := metricsText(sc); strings.Contains(m, `ferry_config_reloads_total{result="applied"}`) {
				t.Fatalf("a reload applied with the writer paused mid-file: %s", grepLines(m, "ferry_config_reloads_total{"))
			}
			if !strings.Contains(logs.String(), "open for writing") {
				t.Errorf("ferry does not say why the change is held back; log:\n%s", logs.String())
			}
			// The writer writes the rest and closes the file: it applies.
			if _, err := f.WriteString(whole[len(prefix):]); err != nil {
				t.Fatal(err)
			}
			f.Close()
			if by == "SIGHUP" {
				if err := sc.ReloadFile(ctx, path); err != nil {
					t.Fatalf("ReloadFile of the whole file: %v", err)
				}
			}
			deadline := time.Now().Add(20 * time.Second)
			for {
				if _, body := get(t, h1Client(), url, ""); body == "b" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the whole file not applied within 20s of the writer closing it; log:\n%s", logs.String())
				}
				time.Sleep(10 * time.Millisecond) // polling a condition, not synchronising
			}
			if _, body := get(t, h1Client(), url+"a/x", ""); body != "a" {
				t.Errorf("/a/x answered %q, want a (the whole file's first route)", body)
			}
		})
	}
}
