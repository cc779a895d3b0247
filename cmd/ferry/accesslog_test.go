package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/internal/pollfile"
)

// logrotate renames the access log file and sends SIGHUP: ferry writes the
// next lines to a new file at the path, and the renamed one keeps the
// lines from before. (ferry also notices the rename on its own within
// about a second; the SIGHUP asks for the check at once.)
func TestSIGHUPAfterRotationReopensAccessLog(t *testing.T) {
	dir := t.TempDir()
	path, rotated := filepath.Join(dir, "access.log"), filepath.Join(dir, "access.log.1")
	origin := startOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	cfg := fmt.Sprintf("admin: { listen: 127.0.0.1:0 }\ninbound: { listen: 127.0.0.1:0, app: %s }\ntelemetry: { access_log: %q }\n", origin, path)
	p := startFerryProc(t, []string{"run", "--config-env", "FERRY_TEST_CFG"}, []string{"FERRY_TEST_CFG=" + cfg}, "inbound")
	call := func(method string) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+p.addrs["inbound"]+"/", nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v; log:\n%s", method, err, p.log())
		}
		res.Body.Close()
	}
	await := func(path, what string, ok func(string) bool) string {
		t.Helper()
		got, err := pollfile.Await(path, 15*time.Second, ok)
		if err != nil {
			t.Fatalf("%s never came: %v; log:\n%s", what, err, p.log())
		}
		return got
	}
	has := func(method string) func(string) bool {
		return func(s string) bool { return strings.Contains(s, `"method":"`+method+`"`) }
	}
	call("OLD")
	await(path, "the line before the rotation", has("OLD"))
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	p.signal(syscall.SIGHUP)
	await(path, "a new file", func(string) bool { return true })
	call("NEW")
	if got := await(path, "the line after the rotation", has("NEW")); has("OLD")(got) {
		t.Errorf("the new file has the line from before:\n%s", got)
	}
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(20 * time.Second); code != exitOK {
		t.Fatalf("exit code %d; log:\n%s", code, p.log())
	}
	if got, _ := os.ReadFile(rotated); !has("OLD")(string(got)) || has("NEW")(string(got)) {
		t.Errorf("the rotated file should hold only the line from before:\n%s", got)
	}
}

// An access log on a standard output whose reader went away (a log
// shipper that crashed, `ferry run | tool` with tool gone) loses its
// lines, counted in ferry_access_log_dropped_total; ferry serves on. The
// first line written to the broken pipe killed ferry with SIGPIPE (Go's
// default for a write to a broken pipe on descriptor 1 or 2), and every
// exchange through it with it.
func TestBrokenStdoutPipeDoesNotKillFerry(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	origin := startOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	cfg := fmt.Sprintf("admin: { listen: 127.0.0.1:0 }\ninbound: { listen: 127.0.0.1:0, app: %s }\ntelemetry: { access_log: stdout }\n", origin)
	p := startFerryProcWith(t, func(c *exec.Cmd) { c.Stdout = w },
		[]string{"run", "--config-env", "FERRY_TEST_CFG"}, []string{"FERRY_TEST_CFG=" + cfg}, "inbound", "admin")
	w.Close() // ferry holds the write end
	r.Close() // and no one reads: the pipe is broken
	call := func(url string) (string, error) {
		res, err := http.Get(url)
		if err != nil {
			return "", err
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		return string(b), err
	}
	if _, err := call("http://" + p.addrs["inbound"] + "/"); err != nil {
		t.Fatalf("a request through ferry: %v; log:\n%s", err, p.log())
	}
	// The line's write has failed once it is counted; ferry is alive
	// when its admin listener says so after that.
	deadline := time.Now().Add(15 * time.Second)
	for {
		body, err := call("http://" + p.addrs["admin"] + "/metrics")
		if err != nil {
			select {
			case <-p.done:
				t.Fatalf("ferry exited (%v) after an access log line to a broken stdout; log:\n%s", p.err, p.log())
			default:
			}
		}
		if strings.Contains(body, "\nferry_access_log_dropped_total 1\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the line to a broken stdout never counted as dropped (%v); log:\n%s", err, p.log())
		}
		time.Sleep(10 * time.Millisecond) // a polling pace
	}
	if _, err := call("http://" + p.addrs["inbound"] + "/"); err != nil {
		t.Fatalf("a request after the line was lost: %v; log:\n%s", err, p.log())
	}
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(20 * time.Second); code != exitOK {
		t.Fatalf("exit code %d; log:\n%s", code, p.log())
	}
}
