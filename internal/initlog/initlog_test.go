package initlog

import (
	"bytes"
	"encoding/json"
	"log"
	"log/slog"
	"testing"
)

// keepNow makes slog's default logger keep records, as init does in a
// process started as a ferry subcommand (never in a test binary).
func keepNow(t *testing.T) {
	t.Helper()
	mu.Lock()
	prev, prevOut, prevFlag = slog.Default(), log.Writer(), log.Flags()
	keeping, kept, dropped = true, nil, 0
	mu.Unlock()
	slog.SetDefault(slog.New(keeper{}))
	t.Cleanup(func() { Release(slog.DiscardHandler) })
}

// A logger a dependency derives from the default during initialisation
// (With, WithGroup) keeps its attributes and groups: Release writes its
// records as that logger would have, not as bare slog.Warn calls.
func TestReleaseKeepsDerivedLoggersAttributes(t *testing.T) {
	keepNow(t)
	slog.Default().With("component", "otel").WithGroup("limits").Warn("invalid limit environment variable", "key", "OTEL_X", "value", "x")
	slog.Default().WithGroup("").Info("plain", "n", 1)
	var buf bytes.Buffer
	Release(slog.NewJSONHandler(&buf, nil))
	var lines []map[string]any
	for _, l := range bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n")) {
		var m map[string]any
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2:\n%s", len(lines), buf.Bytes())
	}
	g, _ := lines[0]["limits"].(map[string]any)
	if lines[0]["component"] != "otel" || g["key"] != "OTEL_X" || g["value"] != "x" || lines[0]["key"] != nil {
		t.Errorf("derived logger's line %v, want component otel and limits {key, value}", lines[0])
	}
	if lines[1]["msg"] != "plain" || lines[1]["n"] != float64(1) {
		t.Errorf("second line %v", lines[1])
	}
}

// Release writes each kept record at the level its handler takes.
func TestReleaseAtTheHandlersLevel(t *testing.T) {
	keepNow(t)
	slog.Debug("debug line")
	slog.With("a", 1).Warn("warn line")
	var buf bytes.Buffer
	Release(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if bytes.Contains(buf.Bytes(), []byte("debug line")) || !bytes.Contains(buf.Bytes(), []byte(`"msg":"warn line","a":1`)) {
		t.Errorf("released %q, want the warning alone, with its attribute", buf.Bytes())
	}
}
