package telemetry

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
)

// ErrorHandler returns an OpenTelemetry error handler that logs export and
// SDK errors through l at WARN, at most once per every, with the number of
// errors suppressed in between. The OpenTelemetry default prints every
// error as plain text on stderr, which interleaves with the JSON access log
// and repeats every batch while a collector is down. Install it once in
// main:
//
//	otel.SetErrorHandler(telemetry.ErrorHandler(logger, time.Minute))
func ErrorHandler(l *slog.Logger, every time.Duration) otel.ErrorHandler {
	return &rateLimitedErrors{log: l, every: every, now: time.Now}
}

type rateLimitedErrors struct {
	log   *slog.Logger
	every time.Duration
	now   func() time.Time

	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (h *rateLimitedErrors) Handle(err error) {
	if err == nil {
		return
	}
	h.mu.Lock()
	now := h.now()
	if !h.last.IsZero() && now.Sub(h.last) < h.every {
		h.suppressed++
		h.mu.Unlock()
		return
	}
	suppressed := h.suppressed
	h.last, h.suppressed = now, 0
	h.mu.Unlock()
	h.log.LogAttrs(context.Background(), slog.LevelWarn, "telemetry error",
		slog.String("error", err.Error()), slog.Int("suppressed", suppressed))
}
