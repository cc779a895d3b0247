package sidecar

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"
)

// DefaultConfigSettle is how far apart two reads of the config file must
// give the same bytes before a change of it applies (Options.ConfigSettle).
//
// A file rewritten in place (truncated, then written: a shell redirect,
// cp, an editor or a tool saving over it) can be read empty or
// half-written, and a half that is valid YAML (fewer routes, services or
// endpoints) would route with a partial table. Such a writer's steps
// (truncate, write, write the rest) typically follow one another within
// milliseconds; 500ms leaves a wide margin for a loaded machine, and is
// small beside a ConfigMap's propagation (up to about a minute) and the
// default --config-poll (2s). A file replaced whole (a rename, Kubernetes'
// ConfigMap symlink swap) reads the same at once, and applies one settle
// interval after the poll that saw it. A writer that pauses longer than
// the settle interval mid-file can still be read half-way: only replacing
// the file whole rules that out.
const DefaultConfigSettle = 500 * time.Millisecond

// configSettleReads is how many reads in a row, a settle interval apart,
// may find the file changed again: past that ReloadFile gives up on a
// file still being written, and the watcher warns (once) that a change is
// held back.
const configSettleReads = 20

// errStillChanging refuses a config file that kept changing while
// ReloadFile waited for it to settle.
var errStillChanging = errors.New("the file is still being written")

// readSettled reads path until two reads, settle apart, give the same
// bytes, and returns those. It gives up, with errStillChanging, once
// configSettleReads reads in a row found the file changed again, and
// returns ctx's error if ctx ends first.
func (s *Sidecar) readSettled(ctx context.Context, path string) ([]byte, error) {
	prev, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	ch := fileChange{pending: true, data: prev}
	for {
		if !s.waitFile(ctx, s.settle) {
			return nil, ctx.Err()
		}
		cur, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		if ch.settled(cur) {
			ch.apply(s.log, path)
			return cur, nil
		}
		if ch.changes+1 >= configSettleReads {
			// The caller logs this: no warning besides.
			return nil, fmt.Errorf("config %s: %w: it changed on each of %d reads %s apart; not applied (it applies once it stops changing: on the next SIGHUP, or the watcher's next poll)", path, errStillChanging, ch.changes+1, s.settle)
		}
		ch.see(cur, s.log, path, s.settle)
	}
}

// waitFile waits d before the config file is read again, and reports
// false if ctx ended first.
func (s *Sidecar) waitFile(ctx context.Context, d time.Duration) bool {
	if s.fileWait != nil {
		return s.fileWait(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// fileChange follows a content of the config file that is not applied
// until it reads the same twice, settle apart.
type fileChange struct {
	pending bool   // data was read and differs from the content last tried
	data    []byte // the content last read, while pending
	changes int    // reads in a row that found the content changed again
	warned  bool   // the warning of a change held back long was logged
}

// settled reports whether cur is the content already read, settle before.
func (ch *fileChange) settled(cur []byte) bool {
	return ch.pending && bytes.Equal(cur, ch.data)
}

// see records cur, a content not yet settled, and logs, once each per
// change, that the file is still being written (it changed again before
// it settled) and that it has kept changing for configSettleReads reads.
func (ch *fileChange) see(cur []byte, log *slog.Logger, path string, settle time.Duration) {
	if ch.pending {
		ch.changes++
	}
	ch.pending, ch.data = true, cur
	switch {
	case ch.changes == 0:
		log.Debug("config file changed; applying it once it reads the same after the settle interval", "file", path, "settle", settle.String())
	case ch.changes == 1:
		log.Info("config file still being written (it changed again since the last read); the config in force stays until it reads the same twice, the settle interval apart", "file", path, "settle", settle.String())
	case ch.changes >= configSettleReads && !ch.warned:
		ch.warned = true
		log.Warn("config file keeps changing; the config in force stays until it reads the same twice, the settle interval apart (a writer that replaces the file whole, by rename, is never read half-written)", "file", path, "changed_reads", ch.changes, "settle", settle.String())
	}
}

// apply ends the change as it goes to be tried.
func (ch *fileChange) apply(log *slog.Logger, path string) {
	if ch.changes > 0 {
		log.Info("config file written; trying it", "file", path, "changed_reads", ch.changes)
	}
	*ch = fileChange{}
}

// back ends the change with nothing to try: the file holds the content
// last tried again.
func (ch *fileChange) back(log *slog.Logger, path string) {
	if ch.changes > 0 {
		log.Info("config file written back to the content last tried; nothing to apply", "file", path, "changed_reads", ch.changes)
	}
	*ch = fileChange{}
}
