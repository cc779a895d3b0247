package telemetry

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/internal/syncbuf"
)

func TestErrorHandlerRateLimits(t *testing.T) {
	buf := &syncbuf.Buffer{}
	h := ErrorHandler(slog.New(slog.NewJSONHandler(buf, nil)), time.Minute).(*rateLimitedErrors)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	h.now = func() time.Time { return now }

	h.Handle(errors.New("export failed 1"))
	h.Handle(errors.New("export failed 2"))
	now = now.Add(30 * time.Second)
	h.Handle(errors.New("export failed 3"))
	h.Handle(nil)
	now = now.Add(31 * time.Second)
	h.Handle(errors.New("export failed 4"))

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2: %s", len(lines), buf.String())
	}
	if !strings.Contains(lines[0], `"error":"export failed 1"`) || !strings.Contains(lines[0], `"suppressed":0`) {
		t.Errorf("first line %s", lines[0])
	}
	if !strings.Contains(lines[1], `"error":"export failed 4"`) || !strings.Contains(lines[1], `"suppressed":2`) ||
		!strings.Contains(lines[1], `"level":"WARN"`) {
		t.Errorf("second line %s", lines[1])
	}
}
