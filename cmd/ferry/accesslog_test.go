package main

import (
	"fmt"
	"net/http"
	"os"
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
