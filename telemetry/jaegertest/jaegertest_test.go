package jaegertest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStartAndQueryEmpty(t *testing.T) {
	j := Start(t)
	traces, err := j.Traces(t.Context(), "nobody")
	if err != nil {
		t.Fatalf("query: %v", err)
	}
	if len(traces) != 0 {
		t.Fatalf("%d traces for an unknown service", len(traces))
	}
}

func TestBinaryFromEnvMustBeExecutable(t *testing.T) {
	t.Setenv("FERRY_JAEGER_BIN", t.TempDir()+"/missing-jaeger")
	_, err := findBinary()
	if err == nil || !strings.HasPrefix(err.Error(), "FERRY_JAEGER_BIN: ") {
		t.Fatalf("error %v, want one naming FERRY_JAEGER_BIN", err)
	}
}

func TestRepoRootIsFerryNotTheToolsModule(t *testing.T) {
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "scripts", "tool.sh")); err != nil {
		t.Fatalf("repo root %s has no scripts/tool.sh: %v", root, err)
	}
}
