package sidecar

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/internal/syncbuf"
)

// A watched config file that can no longer be read (its ConfigMap volume
// gone, a removed file, a permission change) is logged, naming the file
// and the error, once; the config in force keeps serving, and the file is
// watched on. The watcher skipped such a poll without a word, so an
// operator saw no sign that changes were no longer being picked up.
func TestWatchConfigFileLogsUnreadableFile(t *testing.T) {
	a := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "a") }))
	b := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "b") }))
	logs := new(syncbuf.Buffer)
	initial := []byte(reloadConfig(a, ""))
	sc := startSidecar(t, mustParse(t, string(initial)), Options{Log: slog.New(slog.NewTextHandler(logs, nil))})
	url := "http://" + sc.Addr("outbound") + "/"
	path := filepath.Join(t.TempDir(), "ferry.yaml")
	if err := os.WriteFile(path, initial, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go sc.WatchConfigFile(ctx, path, 10*time.Millisecond, initial)

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the watcher to log the unreadable file", 5*time.Second, func() bool {
		return strings.Contains(logs.String(), "no such file or directory")
	})
	if _, body := get(t, h1Client(), url, ""); body != "a" {
		t.Fatalf("with the config file gone: %q, want the config in force (a)", body)
	}
	if err := os.WriteFile(path, []byte(reloadConfig(b, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the watcher to apply the file written again", 5*time.Second, func() bool {
		_, body := get(t, h1Client(), url, "")
		return body == "b"
	})
	out := logs.String()
	if n := strings.Count(out, "no such file or directory"); n != 1 {
		t.Fatalf("the unreadable file logged %d times, want once:\n%s", n, out)
	}
	if !strings.Contains(out, "file="+path) {
		t.Fatalf("the log does not name the file %s:\n%s", path, out)
	}
}
