package sidecar

import (
	"os"
	"strings"
	"testing"
)

// The configuration shown in the README is a valid config.
func TestReadmeConfigParses(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(b), "### Configuration\n\n```yaml\n")
	if !ok {
		t.Fatal("README has no configuration block")
	}
	text, _, _ := strings.Cut(after, "```")
	cfg, err := ParseConfig([]byte(text))
	if err != nil {
		t.Fatalf("README config: %v", err)
	}
	if cfg.Services["api"] == nil || !cfg.Services["api"].usesConsul() || cfg.Register == nil || cfg.Register.Name != "web" {
		t.Fatalf("README config decoded as %+v", cfg)
	}
}
