package linewriter

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

// File is a log file that follows its path: given to New as the
// destination, it is reopened (created again if need be) by the Writer's
// goroutine once the path no longer names the file it has open, as after
// logrotate renamed or removed it. The check is one stat of the path about
// once a second (CheckEvery) and on Writer.Reopen, never one per line.
// When reopening fails, lines keep going to the file already open and one
// warning is given until a reopen succeeds or the path names the open file
// again. When writing fails (a full disk), one warning is given until a
// write succeeds; the Writer drops and counts the lines lost.
type File struct {
	path string
	warn func(error)

	mu     sync.Mutex // guards f, info and closed; never held across a write or an open
	f      *os.File
	info   os.FileInfo // of f when it was opened: its device and inode
	closed bool

	failing bool // the last check's reopen failed and was warned about; the Writer's goroutine only
	refused bool // the last write failed and was warned about; the Writer's goroutine only
}

// OpenFile opens path for appending, creating it if need be. warn receives
// the error of a failed reopen, once per run of failures (a run ends when
// a reopen succeeds or the path names the open file again), and that of a
// failed write, once per run of failed writes; nil discards them.
func OpenFile(path string, warn func(error)) (*File, error) {
	f, info, err := openAppend(path)
	if err != nil {
		return nil, err
	}
	if warn == nil {
		warn = func(error) {}
	}
	return &File{path: path, warn: warn, f: f, info: info}, nil
}

// CheckOpen reports the error OpenFile would return for path, without
// creating the file when it does not exist: a file that exists is opened
// for appending and closed (nothing is written), one that does not needs
// a directory it could be created in, by the effective uid and gid as
// open(2) judges (not the real ones; on Windows, by the process's token:
// see canCreateIn). A named pipe is opened without waiting for its reader
// (OpenFile waits): one that has none yet passes.
func CheckOpen(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|syscall.O_NONBLOCK, 0)
	if errors.Is(err, syscall.ENXIO) {
		if info, serr := os.Stat(path); serr == nil && info.Mode()&fs.ModeNamedPipe != 0 {
			return nil // a pipe whose reader is not there yet
		}
	}
	if err == nil {
		return f.Close()
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	// open(2) with O_CREAT would need the directory, and write and
	// search permission on it. A path whose directory part names a
	// file fails with ENOTDIR above, not ENOENT.
	dir := filepath.Dir(path)
	info, err := os.Stat(dir)
	switch {
	case err != nil:
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return &fs.PathError{Op: "open", Path: path, Err: err}
	case !info.IsDir():
		return &fs.PathError{Op: "open", Path: path, Err: syscall.ENOTDIR}
	}
	if err := canCreateIn(dir); err != nil {
		return &fs.PathError{Op: "open", Path: path, Err: err}
	}
	return nil
}

func openAppend(path string) (*os.File, os.FileInfo, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, err
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, info, nil
}

func (l *File) current() *os.File {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f
}

// Write writes p to the file open now. A write that fails (a full disk)
// is warned about once per run of failures: the run ends when a write
// succeeds. It is for the Writer's goroutine.
func (l *File) Write(p []byte) (int, error) {
	n, err := l.current().Write(p)
	if err != nil && !l.refused {
		l.refused = true
		l.warn(fmt.Errorf("%w; lines are dropped, and counted, until a write succeeds", err))
	} else if err == nil {
		l.refused = false
	}
	return n, err
}

// Reopen opens the path again when it no longer names the open file (it
// was renamed or removed, and maybe created anew). It is for the Writer's
// goroutine, between writes.
func (l *File) Reopen() {
	l.mu.Lock()
	info, closed := l.info, l.closed
	l.mu.Unlock()
	if closed {
		return
	}
	if now, err := os.Stat(l.path); err == nil && os.SameFile(now, info) {
		// Nothing to reopen (the file may have moved back): a run of
		// failures, if any, is over, and the next one is warned about.
		l.failing = false
		return
	}
	f, info, err := openAppend(l.path)
	if err != nil {
		if !l.failing {
			l.failing = true
			l.warn(fmt.Errorf("reopening %s after it moved: %w; still writing to the file opened before", l.path, err))
		}
		return
	}
	l.failing = false
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		f.Close()
		return
	}
	old := l.f
	l.f, l.info = f, info
	l.mu.Unlock()
	old.Close()
}

// Close closes the file open now; a later Reopen does nothing.
func (l *File) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	return l.f.Close()
}

var _ Reopener = (*File)(nil)
