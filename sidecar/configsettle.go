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
// the settle interval mid-file leaves a half that reads the same twice; on
// Linux ferry sees that the file is still open for writing (readWriters)
// and holds it back until no process has it open to write. Elsewhere, or
// where Linux will not say (a file ferry's uid does not own), such a half
// can still be read: only replacing the file whole rules that out.
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
	data, err := settleRead(path, prev, s.settle, s.log, func(d time.Duration) bool { return s.waitFile(ctx, d) })
	switch {
	case errors.Is(err, errWaitEnded):
		return nil, ctx.Err()
	case errors.Is(err, errStillChanging):
		// The caller logs this: no warning besides.
		return nil, fmt.Errorf("%w; not applied (it applies once it stops changing: on the next SIGHUP, or the watcher's next poll)", err)
	}
	return data, err
}

// errWaitEnded: settleRead's wait gave up.
var errWaitEnded = errors.New("the wait for the config file to settle ended")

// settleRead reads path again, settle apart (wait waits, and reports
// false to give up: errWaitEnded), until a read gives the bytes of the
// read before it, prev first, while no process has the file open for
// writing, and returns those; errStillChanging once configSettleReads
// reads in a row found it changed again or open for writing.
func settleRead(path string, prev []byte, settle time.Duration, log *slog.Logger, wait func(time.Duration) bool) ([]byte, error) {
	ch := fileChange{pending: true, data: prev}
	for {
		if !wait(settle) {
			return nil, errWaitEnded
		}
		cur, writing, err := readWriters(path)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		if ch.settled(cur) && !writing {
			ch.apply(log, path)
			return cur, nil
		}
		if ch.changes+1 >= configSettleReads {
			why := "it changed"
			if ch.writing || writing {
				why = "it changed, or a process had it open for writing,"
			}
			return nil, fmt.Errorf("config %s: %w: %s on each of %d reads %s apart", path, errStillChanging, why, ch.changes+1, settle)
		}
		ch.see(cur, writing, log, path, settle)
	}
}

// fileTimeSlack covers file systems whose times are coarse (a second, two
// on FAT) or cached (NFS attributes): a file changed within the settle
// interval may carry a time up to that much older.
const fileTimeSlack = 2 * time.Second

// fileNow is the clock ReadConfigFile ages the file by (a variable for
// tests: a file's change time cannot be set back).
var fileNow = time.Now

// ReadConfigFile reads the config file ferry starts with. A file changed
// within the last settle interval (plus fileTimeSlack; the later of its
// modification and status change times) may be in the middle of being written
// (see DefaultConfigSettle), and a half that is valid YAML would start
// ferry with a partial table: it is read again, settle apart, until two
// reads give the same bytes, as a change is before it applies. A file
// older than that (the usual start), and one that is not a regular file,
// is read once. wait waits d and
// reports false to give up (a signal to stop came); the error then says
// so.
func ReadConfigFile(path string, settle time.Duration, log *slog.Logger, wait func(time.Duration) bool) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	// Stat after the read: a write that began before the read ended
	// shows in the modification time.
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if !fi.Mode().IsRegular() || fileNow().Sub(lastChange(fi)) >= settle+fileTimeSlack {
		// A FIFO or process substitution is one stream, read to its
		// writer's end; read again, it would wait for another writer.
		return data, nil
	}
	log.Debug("config file changed just before start-up; reading it once it reads the same after the settle interval", "file", path, "settle", settle.String())
	return settleRead(path, data, settle, log, wait)
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
	changes int    // reads in a row that found the content changed again, or the file open for writing
	changed bool   // a read found the content changed again, and that was logged
	writing bool   // a read found the file open for writing, and that was logged
	warned  bool   // the warning of a change held back long was logged
}

// settled reports whether cur is the content already read, settle before.
func (ch *fileChange) settled(cur []byte) bool {
	return ch.pending && bytes.Equal(cur, ch.data)
}

// see records cur, a content not yet settled (writing: a process had the
// file open for writing as it was read), and logs, once each per change,
// that the file is still being written (it changed again before it
// settled), that it is open for writing, and that it has kept changing or
// stayed open for writing for configSettleReads reads.
func (ch *fileChange) see(cur []byte, writing bool, log *slog.Logger, path string, settle time.Duration) {
	again := ch.pending && !bytes.Equal(cur, ch.data)
	if ch.pending {
		ch.changes++
	}
	ch.pending, ch.data = true, cur
	if ch.changes == 0 && !writing {
		log.Debug("config file changed; applying it once it reads the same after the settle interval", "file", path, "settle", settle.String())
	}
	if again && !ch.changed {
		ch.changed = true
		log.Info("config file still being written (it changed again since the last read); the config in force stays until it reads the same twice, the settle interval apart", "file", path, "settle", settle.String())
	}
	if writing && !ch.writing {
		ch.writing = true
		log.Info("config file changed and still open for writing by a process; the config in force stays until no process has it open to write and it reads the same twice, the settle interval apart", "file", path, "settle", settle.String())
	}
	if ch.changes >= configSettleReads && !ch.warned {
		ch.warned = true
		log.Warn("config file keeps changing or stays open for writing; the config in force stays until it reads the same twice, the settle interval apart, with no process writing it (a writer that replaces the file whole, by rename, is never read half-written)", "file", path, "changed_reads", ch.changes, "settle", settle.String())
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
