// Package initlog holds what ferry's dependencies log while their packages
// are initialised, until cmd/ferry has its own logger to write it with.
//
// A dependency may log from a package-level variable or an init function,
// through slog's default logger, long before main: the OpenTelemetry
// packages read the OTEL_*_LIMIT variables so, and one with a bad value
// ("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT=x") was written to stderr in the
// standard log package's plain-text format ("2026/12/01 04:21:48 WARN
// invalid limit environment variable ... key=OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT
// value=x"), before and unlike every line `ferry run` logs in JSON.
//
// Go initialises the packages of a program in the order of their import
// paths, each once its own imports are: this one, which needs only a few
// standard packages, comes before the go.opentelemetry.io ones, and its
// init makes slog's default logger (and with it the log package's) keep
// the records instead. Release writes them with ferry's handler and puts
// the defaults back as they were.
//
// Like internal/startsignal it acts only in a process started as a ferry
// subcommand (a first argument that does not begin with "-"): a test
// binary keeps the defaults untouched.
package initlog

import (
	"context"
	"io"
	"log"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
)

// maxKept bounds the records kept; beyond it they are counted.
const maxKept = 64

var (
	mu       sync.Mutex
	keeping  bool // the defaults keep records, until Release
	kept     []keptRecord
	dropped  int
	prev     *slog.Logger // slog's default before init
	prevOut  io.Writer    // the log package's output and flags before init
	prevFlag int
)

func init() {
	if len(os.Args) < 2 || strings.HasPrefix(os.Args[1], "-") {
		return
	}
	prev, prevOut, prevFlag = slog.Default(), log.Writer(), log.Flags()
	keeping = true
	slog.SetDefault(slog.New(keeper{}))
}

// keeper is the handler slog's default logger has until Release. A
// logger derived from it (With, WithGroup) notes what it added, for the
// handler its records are written with.
type keeper struct{ derived []derivation }

// derivation is one With (attrs) or WithGroup (group) of a derived logger.
type derivation struct {
	attrs []slog.Attr
	group string
}

// keptRecord is a record kept, with the derivations of its logger.
type keptRecord struct {
	r       slog.Record
	derived []derivation
}

// derive is h as the derivations ds make it.
func derive(h slog.Handler, ds []derivation) slog.Handler {
	for _, d := range ds {
		if d.group != "" {
			h = h.WithGroup(d.group)
		} else {
			h = h.WithAttrs(d.attrs)
		}
	}
	return h
}

func (keeper) Enabled(context.Context, slog.Level) bool { return true }

func (k keeper) Handle(ctx context.Context, r slog.Record) error {
	mu.Lock()
	if !keeping {
		// A record that raced Release goes to the default restored.
		mu.Unlock()
		return derive(prev.Handler(), k.derived).Handle(ctx, r)
	}
	defer mu.Unlock()
	if len(kept) < maxKept {
		kept = append(kept, keptRecord{r.Clone(), k.derived})
	} else {
		dropped++
	}
	return nil
}

func (k keeper) WithAttrs(as []slog.Attr) slog.Handler {
	if len(as) == 0 {
		return k
	}
	return keeper{append(slices.Clip(k.derived), derivation{attrs: slices.Clone(as)})}
}

func (k keeper) WithGroup(name string) slog.Handler {
	if name == "" {
		return k
	}
	return keeper{append(slices.Clip(k.derived), derivation{group: name})}
}

// Release writes the records kept since the process began to h (each at
// its own level and time, h deciding which it keeps), with the number of
// those not kept if any were, and restores slog's and the log package's
// defaults. It is a no-op after the first call and in a process where
// nothing was kept.
func Release(h slog.Handler) {
	mu.Lock()
	if !keeping {
		mu.Unlock()
		return
	}
	keeping = false
	recs, n := kept, dropped
	kept, dropped = nil, 0
	slog.SetDefault(prev)
	log.SetOutput(prevOut)
	log.SetFlags(prevFlag)
	mu.Unlock()
	ctx := context.Background()
	for _, k := range recs {
		if hh := derive(h, k.derived); hh.Enabled(ctx, k.r.Level) {
			_ = hh.Handle(ctx, k.r)
		}
	}
	if n > 0 {
		r := slog.NewRecord(recs[len(recs)-1].r.Time, slog.LevelWarn, "more lines logged during start-up were not kept", 0)
		r.AddAttrs(slog.Int("lines", n))
		_ = h.Handle(ctx, r)
	}
}
