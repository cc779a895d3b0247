package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
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

// fileSteps stands in for the timer between the config watcher's reads of
// the file: each wait is handed to the test, which ends it when it has
// done what it wants done before the next read. While the watcher waits
// it is done with the read before: what it applied is in force.
type fileSteps struct{ waits chan fileStep }

type fileStep struct {
	d    time.Duration // what the watcher asked to wait
	next chan struct{} // closed by the test: the wait is over
}

func stepFileReads(sc *Sidecar) *fileSteps {
	fs := &fileSteps{waits: make(chan fileStep)}
	sc.fileWait = func(ctx context.Context, d time.Duration) bool {
		st := fileStep{d: d, next: make(chan struct{})}
		select {
		case fs.waits <- st:
		case <-ctx.Done():
			return false
		}
		select {
		case <-st.next:
			return true
		case <-ctx.Done():
			return false
		}
	}
	return fs
}

// wait returns the watcher's next wait, once it has done with the read
// before.
func (fs *fileSteps) wait(t *testing.T) fileStep {
	t.Helper()
	return recv(t, fs.waits, 10*time.Second, "the config watcher's next wait")
}

// reloadFileStepped runs sc.ReloadFile(path), as on SIGHUP, with its
// waits for the file to settle stepped: before the end of its i-th wait
// (from 0) it calls during(i), when not nil. It returns ReloadFile's error.
func reloadFileStepped(t *testing.T, sc *Sidecar, steps *fileSteps, path string, during func(i int)) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- sc.ReloadFile(context.Background(), path) }()
	for i := 0; ; i++ {
		select {
		case err := <-done:
			return err
		case step := <-steps.waits:
			if step.d != sc.settle {
				t.Errorf("ReloadFile waits %s, want the settle interval %s", step.d, sc.settle)
			}
			if during != nil {
				during(i)
			}
			close(step.next)
		case <-time.After(10 * time.Second):
			t.Fatalf("ReloadFile neither returned nor waited within 10s (after %d waits)", i)
		}
	}
}

// settleConfig routes /a/ to service a and, with all set, every other path
// to service b. Cut before its last route, it is still a valid config,
// with a route table missing that route.
func settleConfig(a, b string, all bool) string {
	text := fmt.Sprintf(`admin: { listen: 127.0.0.1:0 }
telemetry: { access_log: "off" }
services:
  a: { endpoints: [%s] }
  b: { endpoints: [%s] }
outbound:
  listen: 127.0.0.1:0
  routes:
    - { path_prefix: /a/, service: a }
`, a, b)
	if all {
		text += "    - { service: b }\n"
	}
	return text
}

// A config file rewritten in place (truncated, then written, as
// `cat new.yaml > ferry.yaml` or an editor saving over it does) can be
// read half-written. A change applies only once two reads of the file, a
// settle interval apart, give the same bytes: the empty file and the
// valid but partial prefix that the watcher reads along the way are
// never applied, nor counted as rejected; the whole file applies once,
// when it stops changing. The watcher applied whatever parsed: the
// empty file was rejected (an alert), then the prefix, whose route table
// lacked the route for /, routed / nowhere until the next poll.
func TestWatchConfigFileWaitsForAFileBeingWritten(t *testing.T) {
	a := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "a") }))
	b := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "b") }))
	logs := new(syncbuf.Buffer)
	initial := []byte(reloadConfig(a, "")) // every path to a
	sc := startSidecar(t, mustParse(t, string(initial)), Options{Log: slog.New(slog.NewTextHandler(logs, nil))})
	url := "http://" + sc.Addr("outbound") + "/"
	path := filepath.Join(t.TempDir(), "ferry.yaml")
	if err := os.WriteFile(path, initial, 0o600); err != nil {
		t.Fatal(err)
	}
	steps := stepFileReads(sc)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go sc.WatchConfigFile(ctx, path, time.Hour, initial)

	// Between two reads, the routing table must be the one in force or
	// the whole new one, and nothing may have been counted rejected.
	check := func(when string, want ...string) {
		t.Helper()
		if _, body := get(t, h1Client(), url, ""); !slices.Contains(want, body) {
			t.Errorf("%s: / answered %q, want one of %q (a partial config was applied)", when, body, want)
		}
		if m := metricsText(sc); strings.Contains(m, `ferry_config_reloads_total{result="rejected"}`) {
			t.Errorf("%s: a reload was rejected: %s", when, grepLines(m, `ferry_config_reloads_total{result="rejected"}`))
		}
	}
	step := steps.wait(t)
	// The writer truncates the file, and the watcher reads it empty.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	close(step.next)
	step = steps.wait(t)
	check("with the file truncated", "a")
	// It writes the valid prefix, and the watcher reads that.
	whole := settleConfig(a, b, true)
	prefix := settleConfig(a, b, false)
	if _, err := f.WriteString(prefix); err != nil {
		t.Fatal(err)
	}
	close(step.next)
	step = steps.wait(t)
	check("with the file half-written", "a")
	// It writes the rest.
	if _, err := f.WriteString(whole[len(prefix):]); err != nil {
		t.Fatal(err)
	}
	f.Close()
	close(step.next)
	// The whole file applies within a few reads.
	for i := 0; ; i++ {
		step = steps.wait(t)
		check(fmt.Sprintf("%d reads after the file was written", i+1), "a", "b")
		if _, body := get(t, h1Client(), url, ""); body == "b" {
			break
		}
		if i == 3 {
			t.Fatalf("the whole file not applied after %d reads; log:\n%s", i+1, logs.String())
		}
		close(step.next)
	}
	if _, body := get(t, h1Client(), url+"a/x", ""); body != "a" {
		t.Errorf("/a/x answered %q, want a (the whole file's first route)", body)
	}
	if m := metricsText(sc); !strings.Contains(m, "\n"+`ferry_config_reloads_total{result="applied"} 1`+"\n") {
		t.Errorf("want exactly one reload applied: %s", grepLines(m, "ferry_config_reloads_total{"))
	}
	if n := strings.Count(logs.String(), "config file still being written"); n != 1 {
		t.Errorf("the change held back while the file was written logged %d times, want once", n)
	}
	if t.Failed() {
		t.Logf("log:\n%s", logs.String())
	}
}

// Kubernetes updates a ConfigMap volume by pointing its ..data symlink at
// a new directory, so the file reads whole, old or new, at any moment:
// the new config applies one settle interval after the poll that sees it,
// with no word of a file being written.
func TestWatchConfigFileConfigMapSwapAppliesAfterOneSettle(t *testing.T) {
	a := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "a") }))
	b := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "b") }))
	logs := new(syncbuf.Buffer)
	initial := []byte(reloadConfig(a, ""))
	const settle = 250 * time.Millisecond
	sc := startSidecar(t, mustParse(t, string(initial)), Options{Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), ConfigSettle: settle})
	url := "http://" + sc.Addr("outbound") + "/"
	vol := t.TempDir()
	version := func(name, text string) {
		t.Helper()
		if err := os.Mkdir(filepath.Join(vol, name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(vol, name, "ferry.yaml"), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		// As kubelet does: a new symlink renamed over ..data.
		if err := os.Symlink(name, filepath.Join(vol, "..data_tmp")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(vol, "..data_tmp"), filepath.Join(vol, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	version("..v1", string(initial))
	if err := os.Symlink("..data/ferry.yaml", filepath.Join(vol, "ferry.yaml")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(vol, "ferry.yaml")
	steps := stepFileReads(sc)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go sc.WatchConfigFile(ctx, path, time.Hour, initial)

	step := steps.wait(t)
	version("..v2", reloadConfig(b, ""))
	close(step.next) // the poll that sees the new version
	step = steps.wait(t)
	if step.d != settle {
		t.Fatalf("after the poll that saw the new version, the watcher waits %s, want the settle interval (%s)", step.d, settle)
	}
	if _, body := get(t, h1Client(), url, ""); body != "a" {
		t.Fatalf("the new version applied on its first read (%q), before it settled", body)
	}
	close(step.next) // the settle read
	step = steps.wait(t)
	if _, body := get(t, h1Client(), url, ""); body != "b" {
		t.Fatalf("one settle interval after the poll that saw it, / answered %q, want b (the new version); log:\n%s", body, logs.String())
	}
	if step.d != time.Hour {
		t.Errorf("with the new version applied, the watcher waits %s, want the poll interval", step.d)
	}
	if out := logs.String(); strings.Contains(out, "still being written") || !strings.Contains(out, "config file changed; applying it once it reads the same") {
		t.Errorf("a swapped ConfigMap logged as still being written, or its change not logged at debug:\n%s", out)
	}
}

// A file that is left empty (its ConfigMap key emptied, a writer that
// died after truncating it) is never applied: once it has settled it is
// rejected, naming the problem, and the config in force keeps serving. It
// is not tried again while it stays empty.
func TestWatchConfigFileEmptyFileRejected(t *testing.T) {
	a := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "a") }))
	logs := new(syncbuf.Buffer)
	initial := []byte(reloadConfig(a, ""))
	sc := startSidecar(t, mustParse(t, string(initial)), Options{Log: slog.New(slog.NewTextHandler(logs, nil))})
	url := "http://" + sc.Addr("outbound") + "/"
	path := filepath.Join(t.TempDir(), "ferry.yaml")
	if err := os.WriteFile(path, initial, 0o600); err != nil {
		t.Fatal(err)
	}
	steps := stepFileReads(sc)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go sc.WatchConfigFile(ctx, path, time.Hour, initial)

	step := steps.wait(t)
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	for range 4 { // the read that sees it, the one that settles it, two more
		close(step.next)
		step = steps.wait(t)
	}
	out := logs.String()
	if n := strings.Count(out, "config change rejected"); n != 1 || !strings.Contains(out, "empty config (0 bytes): at least one of outbound or inbound is required") || !strings.Contains(out, "file="+path) {
		t.Errorf("the empty file rejected %d times (want once), or not naming the problem and the file:\n%s", n, out)
	}
	if m := metricsText(sc); !strings.Contains(m, "\n"+`ferry_config_reloads_total{result="rejected"} 1`+"\n") || !strings.Contains(m, "\nferry_config_last_reload_successful 0\n") {
		t.Errorf("want one rejected reload and ferry_config_last_reload_successful 0:\n%s", grepLines(m, "ferry_config_"))
	}
	if _, body := get(t, h1Client(), url, ""); body != "a" {
		t.Errorf("with the config file empty, / answered %q, want a (the config in force)", body)
	}

	// SIGHUP on the empty file: the same.
	err := reloadFileStepped(t, sc, steps, path, nil)
	if err == nil || !strings.Contains(err.Error(), "empty config (0 bytes)") {
		t.Errorf("SIGHUP on the empty file: %v, want it refused as empty", err)
	}
	if _, body := get(t, h1Client(), url, ""); body != "a" {
		t.Errorf("after SIGHUP on the empty file, / answered %q, want a", body)
	}
}

// SIGHUP (ReloadFile) keeps to the same rule as the watcher: a file read
// half-written is read again, the settle interval apart, until it reads
// the same twice, and only that applies. One that never stops changing is
// refused, saying so, after configSettleReads changed reads, and the
// config in force stays.
func TestReloadFileWaitsForAFileBeingWritten(t *testing.T) {
	a := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "a") }))
	b := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "b") }))
	logs := new(syncbuf.Buffer)
	sc := startSidecar(t, mustParse(t, reloadConfig(a, "")), Options{Log: slog.New(slog.NewTextHandler(logs, nil))})
	url := "http://" + sc.Addr("outbound") + "/"
	path := filepath.Join(t.TempDir(), "ferry.yaml")
	whole, prefix := settleConfig(a, b, true), settleConfig(a, b, false)
	if err := os.WriteFile(path, []byte(prefix), 0o600); err != nil {
		t.Fatal(err)
	}
	waits := 0
	err := reloadFileStepped(t, sc, stepFileReads(sc), path, func(i int) {
		waits++
		if _, body := get(t, h1Client(), url, ""); body != "a" {
			t.Errorf("during SIGHUP's wait %d: / answered %q, want a (the config in force)", i, body)
		}
		if i == 0 {
			// The writer finishes after SIGHUP's first read.
			if err := os.WriteFile(path, []byte(whole), 0o600); err != nil {
				t.Error(err)
			}
		}
	})
	if err != nil {
		t.Fatalf("SIGHUP on a file finished while it waited: %v", err)
	}
	if waits != 2 {
		t.Errorf("SIGHUP waited %d times, want 2 (the file changed once, then read the same)", waits)
	}
	if _, body := get(t, h1Client(), url, ""); body != "b" {
		t.Fatalf("after SIGHUP: / answered %q, want b (the whole file)", body)
	}
	if m := metricsText(sc); !strings.Contains(m, "\n"+`ferry_config_reloads_total{result="applied"} 1`+"\n") || strings.Contains(m, `result="rejected"`) {
		t.Errorf("want exactly one reload, applied: %s", grepLines(m, "ferry_config_reloads_total{"))
	}

	// A file that keeps changing.
	err = reloadFileStepped(t, sc, stepFileReads(sc), path, func(i int) {
		os.WriteFile(path, []byte(reloadConfig(a, fmt.Sprintf("# version %d\n", i))), 0o600)
	})
	if !errors.Is(err, errStillChanging) || !strings.Contains(err.Error(), "the file is still being written: it changed on each of 20 reads") || !strings.Contains(err.Error(), path) {
		t.Fatalf("SIGHUP on a file that keeps changing: %v", err)
	}
	if _, body := get(t, h1Client(), url, ""); body != "b" {
		t.Fatalf("after SIGHUP on a file that keeps changing: / answered %q, want b (the config in force)", body)
	}
	if m := metricsText(sc); !strings.Contains(m, "\n"+`ferry_config_reloads_total{result="rejected"} 1`+"\n") {
		t.Errorf("want the refused SIGHUP counted as rejected: %s", grepLines(m, "ferry_config_reloads_total{"))
	}
	if out := logs.String(); strings.Count(out, "config file still being written") != 2 || strings.Contains(out, "keeps changing") {
		t.Errorf("want one info line per SIGHUP that found the file being written, and no warning besides the error SIGHUP returns:\n%s", out)
	}
}

// A change still being written is logged once as held back, and once more
// as a warning if the file keeps changing for configSettleReads reads; a
// file written back to the content in force applies nothing.
func TestWatchConfigFileLogsAChangeHeldBackOnce(t *testing.T) {
	a := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "a") }))
	logs := new(syncbuf.Buffer)
	initial := []byte(reloadConfig(a, ""))
	sc := startSidecar(t, mustParse(t, string(initial)), Options{Log: slog.New(slog.NewTextHandler(logs, nil))})
	path := filepath.Join(t.TempDir(), "ferry.yaml")
	if err := os.WriteFile(path, initial, 0o600); err != nil {
		t.Fatal(err)
	}
	steps := stepFileReads(sc)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go sc.WatchConfigFile(ctx, path, time.Hour, initial)

	step := steps.wait(t)
	for i := range 2 * configSettleReads {
		os.WriteFile(path, []byte(reloadConfig(a, fmt.Sprintf("# version %d\n", i))), 0o600)
		close(step.next)
		step = steps.wait(t)
		if step.d != sc.settle {
			t.Fatalf("after read %d of a changing file, the watcher waits %s, want the settle interval %s", i, step.d, sc.settle)
		}
	}
	os.WriteFile(path, initial, 0o600)
	close(step.next)
	step = steps.wait(t)
	if step.d != time.Hour {
		t.Errorf("with the file back to the content in force, the watcher waits %s, want the poll interval", step.d)
	}
	out := logs.String()
	for _, c := range []struct {
		msg, level string
	}{
		{"config file still being written", "INFO"},
		{"config file keeps changing", "WARN"},
		{"config file written back to the content last tried; nothing to apply", "INFO"},
	} {
		if n := strings.Count(out, "level="+c.level+` msg="`+c.msg); n != 1 {
			t.Errorf("%s %q logged %d times, want once", c.level, c.msg, n)
		}
	}
	if m := metricsText(sc); strings.Contains(m, "ferry_config_reloads_total{") {
		t.Errorf("a reload was tried: %s", grepLines(m, "ferry_config_reloads_total{"))
	}
	if t.Failed() {
		t.Logf("log:\n%s", out)
	}
}

// The config file ferry starts with is read once when it is older than the
// settle interval; one changed just before start-up may be half-written
// (a valid half would start ferry with a partial table) and is read again,
// settle apart, until two reads agree. The waits are the test's: the
// writer finishes during the first one.
func TestReadConfigFileAtStartWaitsForAFileBeingWritten(t *testing.T) {
	const settle = time.Minute
	path := filepath.Join(t.TempDir(), "ferry.yaml")
	half, whole := "outbound: { listen: 127.0.0.1:0 }\n", "outbound: { listen: 127.0.0.1:0, routes: [ { path_prefix: /, service: a } ] }\nservices: { a: { endpoints: [127.0.0.1:1] } }\n"
	log := slog.New(slog.DiscardHandler)
	refuse := func(time.Duration) bool { t.Error("waited on a file older than the settle interval"); return true }

	// An old file: read once. (Its change time cannot be set back: the
	// clock is moved on instead.)
	if err := os.WriteFile(path, []byte(whole), 0o600); err != nil {
		t.Fatal(err)
	}
	fileNow = func() time.Time { return time.Now().Add(settle + fileTimeSlack + time.Second) }
	data, err := ReadConfigFile(path, settle, log, refuse)
	fileNow = time.Now
	if err != nil || string(data) != whole {
		t.Fatalf("old file: %q, %v", data, err)
	}
	old := time.Now().Add(-2 * settle)

	// A file being written: the half read first, the whole once it settled.
	// A copy that keeps its source's modification time (cp -p, tar) is
	// written, then dated back: its change time still says now.
	for _, keepTime := range []bool{false, true} {
		if err := os.WriteFile(path, []byte(half), 0o600); err != nil {
			t.Fatal(err)
		}
		if keepTime {
			if err := os.Chtimes(path, old, old); err != nil {
				t.Fatal(err)
			}
		}
		waits := 0
		data, err = ReadConfigFile(path, settle, log, func(d time.Duration) bool {
			if d != settle {
				t.Errorf("waited %v, want the settle interval", d)
			}
			if waits++; waits == 1 {
				if err := os.WriteFile(path, []byte(whole), 0o600); err != nil {
					t.Error(err)
				}
				if keepTime {
					if err := os.Chtimes(path, old, old); err != nil {
						t.Error(err)
					}
				}
			}
			return true
		})
		if err != nil || string(data) != whole {
			t.Fatalf("file written at start-up (modification time kept: %v): %q, %v; want the whole file", keepTime, data, err)
		}
		if waits != 2 {
			t.Errorf("modification time kept: %v: waited %d times, want 2 (changed once, then read the same)", keepTime, waits)
		}
	}
	if _, err := ParseConfig(data); err != nil {
		t.Fatal(err)
	}

	// A file that keeps changing, and a wait that gives up (a signal).
	n := 0
	_, err = ReadConfigFile(path, settle, log, func(time.Duration) bool {
		n++
		os.WriteFile(path, []byte(fmt.Sprintf("%s# version %d\n", whole, n)), 0o600)
		return true
	})
	if !errors.Is(err, errStillChanging) || !strings.Contains(err.Error(), path) {
		t.Fatalf("file that keeps changing: %v", err)
	}
	if _, err := ReadConfigFile(path, settle, log, func(time.Duration) bool { return false }); !errors.Is(err, errWaitEnded) {
		t.Fatalf("wait that gave up: %v", err)
	}
}
