package jaegertest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// modulePath identifies ferry's repository root (tools/jaeger has its own
// go.mod, which must not be mistaken for it).
const modulePath = "github.com/ferrymesh/ferry"

// Binary returns the path of the Jaeger v2 binary: $FERRY_JAEGER_BIN, else
// <repo root>/bin/jaeger, else whatever `scripts/tool.sh jaeger` builds.
// When none works it skips the test, or fails it when $CI is set.
func Binary(t testing.TB) string {
	t.Helper()
	path, err := findBinary()
	if err == nil {
		return path
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("jaegertest: jaeger binary unavailable (CI is set): %v", err)
	}
	t.Skipf("jaegertest: jaeger binary unavailable, skipping (set FERRY_JAEGER_BIN or run scripts/tool.sh jaeger): %v", err)
	return ""
}

func findBinary() (string, error) {
	if p := os.Getenv("FERRY_JAEGER_BIN"); p != "" {
		if err := executable(p); err != nil {
			return "", fmt.Errorf("FERRY_JAEGER_BIN: %w", err)
		}
		return p, nil
	}
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	if p := filepath.Join(root, "bin", "jaeger"); executable(p) == nil {
		return p, nil
	}
	var stderr bytes.Buffer
	cmd := exec.Command(filepath.Join(root, "scripts", "tool.sh"), "jaeger")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("scripts/tool.sh jaeger: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	p := strings.TrimSpace(string(out))
	if err := executable(p); err != nil {
		return "", fmt.Errorf("scripts/tool.sh jaeger printed %q: %w", p, err)
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

// repoRoot walks up from the working directory to ferry's go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(bytes.TrimSpace(b), []byte("module "+modulePath+"\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("ferry repository root (go.mod of " + modulePath + ") not found above the working directory")
		}
		dir = parent
	}
}
