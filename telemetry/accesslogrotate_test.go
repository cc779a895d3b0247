package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/internal/pollfile"
	"github.com/ferrymesh/ferry/internal/syncbuf"
)

// logRequests writes one access log line per method (the line's marker).
func logRequests(tel *Telemetry, methods ...string) {
	for _, m := range methods {
		_, req := tel.StartRequest(incoming(m, "http://a/", nil), Inbound)
		req.End(Outcome{Status: 200})
	}
}

// awaitFile polls, until its deadline, for the file at path to satisfy ok,
// and returns its content.
func awaitFile(t *testing.T, path, what string, ok func(string) bool) string {
	t.Helper()
	got, err := pollfile.Await(path, 15*time.Second, ok)
	if err != nil {
		t.Fatalf("%s never came: %v", what, err)
	}
	return got
}

func hasAll(lines ...string) func(string) bool {
	return func(s string) bool {
		for _, l := range lines {
			if !strings.Contains(s, `"`+l+`"`) {
				return false
			}
		}
		return true
	}
}

// An access log file that logrotate moves away (renamed, or removed) is
// reopened at its path: the lines written after that go to the new file,
// and the moved file keeps only those written before.
func TestAccessLogFileReopensAfterRotation(t *testing.T) {
	for _, how := range []string{"renamed", "removed"} {
		t.Run(how, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "access.log")
			tel, err := New(t.Context(), Config{AccessLog: path}, WithEnv(env{}.get))
			if err != nil {
				t.Fatal(err)
			}
			defer tel.Shutdown(context.Background())
			var old, fresh []string
			for i := range 3 {
				old = append(old, fmt.Sprintf("OLD%d", i))
				fresh = append(fresh, fmt.Sprintf("NEW%d", i))
			}
			logRequests(tel, old...)
			awaitFile(t, path, "the lines before the rotation", hasAll(old...))
			rotated := filepath.Join(dir, "access.log.1")
			if how == "renamed" {
				err = os.Rename(path, rotated)
			} else {
				err = os.Remove(path)
			}
			if err != nil {
				t.Fatal(err)
			}
			// ferry creates the file again once it notices.
			awaitFile(t, path, "a new file at the path", func(string) bool { return true })
			logRequests(tel, fresh...)
			got := awaitFile(t, path, "the lines after the rotation", hasAll(fresh...))
			if strings.Contains(got, `"OLD`) {
				t.Errorf("the new file has lines from before the rotation:\n%s", got)
			}
			if err := tel.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}
			if how == "renamed" {
				b, err := os.ReadFile(rotated)
				if err != nil {
					t.Fatal(err)
				}
				if !hasAll(old...)(string(b)) || strings.Contains(string(b), `"NEW`) {
					t.Errorf("the rotated file should hold exactly the lines before the rotation:\n%s", b)
				}
			}
		})
	}
}

// When the path cannot be opened again (here a directory took its place),
// lines keep going to the file open before, and ferry's log gets one
// warning.
func TestAccessLogFileReopenFailureKeepsTheOldFile(t *testing.T) {
	dir := t.TempDir()
	path, rotated := filepath.Join(dir, "access.log"), filepath.Join(dir, "access.log.1")
	var warnings syncbuf.Buffer
	tel, err := New(t.Context(), Config{AccessLog: path}, WithEnv(env{}.get),
		WithLog(slog.New(slog.NewJSONHandler(&warnings, nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	logRequests(tel, "OLD")
	awaitFile(t, path, "the line before the rotation", hasAll("OLD"))
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
	tel.ReopenAccessLog()
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(warnings.String(), `"level":"WARN"`) {
		if time.Now().After(deadline) {
			t.Fatal("no warning about the failed reopen")
		}
		time.Sleep(10 * time.Millisecond) // a polling pace
	}
	logRequests(tel, "NEW")
	awaitFile(t, rotated, "the line after the failed reopen", hasAll("OLD", "NEW"))
	tel.ReopenAccessLog()
	if err := tel.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(warnings.String(), "\n"); n != 1 {
		t.Fatalf("%d warnings, want 1:\n%s", n, warnings.String())
	}
}
