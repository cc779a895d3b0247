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

// A rejected reload shows in /metrics, so an alert can catch a config
// change that never applied (ferry keeps serving the config in force, and
// the log line that says why is easy to miss): ferry_config_reloads_total
// by result, and ferry_config_last_reload_successful (1 until a try of
// the file fails, 0 until one applies).
func TestReloadResultInMetrics(t *testing.T) {
	a := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "a") }))
	sc := startFerry(t, reloadConfig(a, ""))
	path := filepath.Join(t.TempDir(), "ferry.yaml")
	want := func(when string, lines ...string) {
		t.Helper()
		body := metricsText(sc)
		for _, l := range lines {
			if !strings.Contains(body, "\n"+l+"\n") {
				t.Errorf("%s: /metrics has no line %q; its ferry_config_ lines:\n%s", when, l, grepLines(body, "ferry_config_"))
			}
		}
	}
	want("at start", "ferry_config_last_reload_successful 1")

	os.WriteFile(path, []byte(reloadConfig("nohost", "")), 0o600)
	if err := sc.ReloadFile(context.Background(), path); err == nil {
		t.Fatal("a config with an invalid endpoint applied")
	}
	want("after a rejected reload", `ferry_config_reloads_total{result="rejected"} 1`, "ferry_config_last_reload_successful 0")

	os.WriteFile(path, []byte(reloadConfig(a, "# changed\n")), 0o600)
	if err := sc.ReloadFile(context.Background(), path); err != nil {
		t.Fatal(err)
	}
	want("after an applied reload", `ferry_config_reloads_total{result="applied"} 1`, `ferry_config_reloads_total{result="rejected"} 1`, "ferry_config_last_reload_successful 1")
}
