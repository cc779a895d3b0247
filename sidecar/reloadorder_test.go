package sidecar

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A change the watcher read is not applied over a newer one a SIGHUP
// applied meanwhile: the config in force is never older than one already
// applied. Before, the watcher, having read and settled content A, took
// the lock after a SIGHUP had applied B (the file rewritten again) and
// applied A over it, serving the older config until its next poll found B
// again (2.5 s with the defaults), and counting two more reloads.
func TestWatcherDoesNotApplyAnOlderContentOverASIGHUPs(t *testing.T) {
	o := func(name string) string {
		return origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) }))
	}
	a, b, c := o("a"), o("b"), o("c")
	sc := startFerry(t, reloadConfig(a, ""))
	url := "http://" + sc.Addr("outbound") + "/"
	path := filepath.Join(t.TempDir(), "ferry.yaml")
	initial := []byte(reloadConfig(a, ""))
	os.WriteFile(path, initial, 0o600)
	replace := func(text string) {
		tmp := path + ".new"
		if err := os.WriteFile(tmp, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}

	contentB := []byte(reloadConfig(b, ""))
	held := make(chan struct{})
	release := make(chan struct{})
	readsOfB := 0
	hook := func(cur []byte) {
		// The watcher's second read of B, which settles it: before it
		// takes the lock, the file changes to C and a SIGHUP applies C.
		if bytes.Equal(cur, contentB) {
			if readsOfB++; readsOfB < 2 {
				return
			}
			select {
			case <-held:
			default:
				close(held)
				<-release
			}
		}
	}
	testHookWatchRead.Store(&hook)
	t.Cleanup(func() { testHookWatchRead.Store(nil) })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		sc.WatchConfigFile(ctx, path, 10*time.Millisecond, initial)
	}()
	defer func() { cancel(); <-watched }()

	replace(reloadConfig(b, ""))
	recv(t, held, 10*time.Second, "the watcher's read of B")
	replace(reloadConfig(c, ""))
	if err := sc.ReloadFile(context.Background(), path); err != nil {
		t.Fatalf("SIGHUP's reload of C: %v", err)
	}
	if _, body := get(t, h1Client(), url, ""); body != "c" {
		t.Fatalf("after the SIGHUP's reload of C the service answers %q", body)
	}
	close(release)
	// The watcher goes on: give it polls to act on its read of B.
	deadline := time.Now().Add(500 * time.Millisecond)
	for time.Now().Before(deadline) {
		if _, body := get(t, h1Client(), url, ""); body != "c" {
			t.Fatalf("the watcher applied its read of B over C, which the SIGHUP had applied and the file holds: the service answers %q", body)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
