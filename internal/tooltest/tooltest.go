// Package tooltest finds the external programs ferry's integration tests
// run for real (consul, jaeger, helm), built by scripts/tool.sh from the Go
// module proxy and cached outside the clone.
package tooltest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

var (
	mu    sync.Mutex
	found = map[string]result{}
)

type result struct {
	path string
	err  error
}

// Binary returns the path of tool name: $FERRY_<NAME>_BIN, else
// <repo>/bin/<name>, else what `scripts/tool.sh <name>` builds (once per
// machine, then cached). When none works the test is skipped, or fails when
// $CI is set: CI must never pass by skipping the real parts.
func Binary(t testing.TB, name string) string {
	t.Helper()
	mu.Lock()
	r, ok := found[name]
	if !ok {
		r.path, r.err = find(name)
		found[name] = r
	}
	mu.Unlock()
	if r.err != nil {
		env := envName(name)
		if os.Getenv("CI") != "" {
			t.Fatalf("no %s binary (CI is set): %v", name, r.err)
		}
		t.Skipf("no %s binary, skipping (set %s or run scripts/tool.sh %s): %v", name, env, name, r.err)
	}
	return r.path
}

func envName(name string) string { return "FERRY_" + strings.ToUpper(name) + "_BIN" }

func find(name string) (string, error) {
	env := envName(name)
	if p := os.Getenv(env); p != "" {
		if err := executable(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w", env, p, err)
		}
		return p, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	if p := filepath.Join(root, "bin", name); executable(p) == nil {
		return p, nil
	}
	script := filepath.Join(root, "scripts", "tool.sh")
	var stderr bytes.Buffer
	cmd := exec.Command(script, name)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", script, name, err, bytes.TrimSpace(stderr.Bytes()))
	}
	p := strings.TrimSpace(string(out))
	if err := executable(p); err != nil {
		return "", fmt.Errorf("%s %s printed %q: %w", script, name, p, err)
	}
	return p, nil
}

func executable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", p)
	}
	return nil
}

// RepoRoot is the directory holding ferry's go.mod, found from this source
// file (the tools' own go.mod files below tools/ are not it).
func RepoRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("cannot locate tooltest's source")
	}
	dir := filepath.Dir(file)
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil &&
			bytes.Contains(b, []byte("module github.com/ferrymesh/ferry\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("ferry's go.mod not found above " + filepath.Dir(file))
		}
		dir = parent
	}
}
