package tooltest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEnvOverrideMustBeExecutable(t *testing.T) {
	t.Setenv("FERRY_NOSUCHTOOL_BIN", filepath.Join(t.TempDir(), "missing"))
	_, err := find("nosuchtool")
	if err == nil || !strings.HasPrefix(err.Error(), "FERRY_NOSUCHTOOL_BIN=") {
		t.Fatalf("error %v, want one naming FERRY_NOSUCHTOOL_BIN", err)
	}
}

func TestUnknownToolFailsThroughToolScript(t *testing.T) {
	_, err := find("nosuchtool")
	if err == nil || !strings.Contains(err.Error(), "tools/nosuchtool/TOOL") {
		t.Fatalf("error %v, want tool.sh's complaint about tools/nosuchtool/TOOL", err)
	}
}

func TestRepoRootIsFerryNotAToolsModule(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "scripts", "tool.sh")); err != nil {
		t.Fatalf("repo root %s has no scripts/tool.sh: %v", root, err)
	}
}
