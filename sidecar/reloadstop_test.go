package sidecar

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/internal/syncbuf"
)

// A config file change waiting for its Consul services (the agent
// unreachable) that ferry's stop cuts short is no rejection. ferry cancels
// the context of its reloads when it begins to drain, and the reload in
// progress then ended as its resolve timeout would have: the retry of a
// change rejected before logged 'config change rejected again; ...; not
// tried again until the file changes' (the watcher's own try 'config
// change rejected; ...'), and counted a rejection, so an operator reading
// the log after an incident was told the change had failed again when
// ferry had only stopped waiting for it.
func TestReloadCutByTheDrainIsNoRejection(t *testing.T) {
	restore := reloadResolveTimeout // after the test's ferry stopped (a cleanup registered before it)
	t.Cleanup(func() { reloadResolveTimeout = restore })
	// Long enough that the drain surely comes while a try waits, short
	// enough for the first try's rejection.
	reloadResolveTimeout = time.Second
	a := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "a") }))
	initial := []byte(reloadConfig(a, ""))
	changed := []byte(consulConfig(deadAddr(t), `telemetry: { access_log: "off" }`))

	for _, tc := range []struct {
		name string
		// try starts the try the drain cuts; arm, once called, makes the
		// next look of a try at its services close resolving. try
		// returns a function that waits until the try has logged its
		// outcome.
		try func(t *testing.T, sc *Sidecar, ctx context.Context, path string, arm func()) (logged func())
	}{
		{"the retry of a rejected change", func(t *testing.T, sc *Sidecar, ctx context.Context, path string, arm func()) func() {
			// A SIGHUP's try is rejected and a retry planned, 1s on.
			if err := sc.ReloadFile(ctx, path); err == nil || !strings.Contains(err.Error(), "retried in 1s") {
				t.Fatalf("the first try: %v; want it rejected and a retry planned", err)
			}
			arm()
			// The retry logs its outcome holding fileMu.
			return func() { sc.fileMu.Lock(); sc.fileMu.Unlock() }
		}},
		{"the watcher's try", func(t *testing.T, sc *Sidecar, ctx context.Context, path string, arm func()) func() {
			arm()
			done := make(chan struct{})
			go func() { defer close(done); sc.WatchConfigFile(ctx, path, 10*time.Millisecond, initial) }()
			return func() { recv(t, done, 10*time.Second, "the watcher to return") }
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var armed atomic.Bool
			var once sync.Once
			resolving := make(chan struct{})
			testHookResolveChecked = func() {
				if armed.Load() {
					once.Do(func() { close(resolving) })
				}
			}
			t.Cleanup(func() { testHookResolveChecked = nil }) // after the sidecar stopped: registered before it
			logs := new(syncbuf.Buffer)
			sc := startSidecar(t, mustParse(t, string(initial)), Options{
				Log:          slog.New(slog.NewTextHandler(logs, nil)),
				ConfigSettle: 10 * time.Millisecond,
			})
			path := filepath.Join(t.TempDir(), "ferry.yaml")
			if err := os.WriteFile(path, changed, 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			logged := tc.try(t, sc, ctx, path, func() { armed.Store(true) })
			recv(t, resolving, 10*time.Second, "a try of the change to wait for its services")
			lines, rejected := strings.Count(logs.String(), "config change rejected"), rejectedReloads(sc)
			// What ferry run does on SIGTERM: its reloads' context ends,
			// then the drain.
			cancel()
			if err := sc.Shutdown(context.Background()); err != nil {
				t.Fatalf("shutdown: %v", err)
			}
			logged()
			out := logs.String()
			if strings.Count(out, "config change rejected") != lines {
				t.Errorf("the try the drain cut was logged as a rejection:\n%s", out)
			}
			if !strings.Contains(out, "ferry is stopping") {
				t.Errorf("no line says the change was not applied because ferry is stopping:\n%s", out)
			}
			if n := rejectedReloads(sc); n != rejected {
				t.Errorf("the try the drain cut was counted: %d rejected reloads, %d before it; ferry_config_ lines:\n%s", n, rejected, grepLines(metricsText(sc), "ferry_config_"))
			}
		})
	}
}

// rejectedReloads reads ferry_config_reloads_total{result="rejected"}
// from /metrics (0 while absent).
func rejectedReloads(sc *Sidecar) int {
	for _, l := range strings.Split(metricsText(sc), "\n") {
		if v, ok := strings.CutPrefix(l, `ferry_config_reloads_total{result="rejected"} `); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return 0
}
