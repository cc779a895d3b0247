package linewriter

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// reopenCounter is a destination that counts its Reopen calls.
type reopenCounter struct {
	bytes.Buffer
	reopens atomic.Int64
}

func (r *reopenCounter) Reopen() { r.reopens.Add(1) }

func await(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s never happened", what)
		}
		time.Sleep(time.Millisecond) // a polling pace
	}
}

// A Reopener destination is checked by the Writer's goroutine on its own,
// with nothing written, and at once when Reopen asks.
func TestWriterLetsItsDestinationReopen(t *testing.T) {
	ticking := &reopenCounter{}
	w := newWriter(ticking, 100, time.Millisecond, 0)
	await(t, "checks without writes", func() bool { return ticking.reopens.Load() >= 3 })
	w.Close(context.Background())

	asked := &reopenCounter{}
	w = newWriter(asked, 100, time.Hour, 0)
	defer w.Close(context.Background())
	w.Reopen()
	await(t, "the check Reopen asked for", func() bool { return asked.reopens.Load() == 1 })

	// A destination that is no Reopener is left alone, and Reopen never
	// waits for anything.
	plain := New(&bytes.Buffer{}, 100)
	for range 3 {
		plain.Reopen()
	}
	plain.Close(context.Background())
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// openWatched opens a File at a fresh path, closed at the test's end, that
// records its warnings; rotated is where the test moves it.
func openWatched(t *testing.T) (l *File, path, rotated string, warnings *[]error) {
	t.Helper()
	dir := t.TempDir()
	path, rotated = filepath.Join(dir, "access.log"), filepath.Join(dir, "access.log.1")
	warnings = new([]error)
	l, err := OpenFile(path, func(err error) { *warnings = append(*warnings, err) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, path, rotated, warnings
}

// moveAway renames path to rotated and puts a directory where the file
// was: a reopen of path fails.
func moveAway(t *testing.T, path, rotated string) {
	t.Helper()
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
}

// A File reopens its path once the path names another file or none; when
// it cannot, it keeps writing to the file it has, warns once, and reopens
// once it can.
func TestFileFollowsItsPath(t *testing.T) {
	l, path, rotated, warnings := openWatched(t)
	l.Write([]byte("a\n"))
	l.Reopen() // the path still names the open file: nothing to do
	l.Write([]byte("b\n"))
	if got := readFile(t, path); got != "a\nb\n" {
		t.Fatalf("before any rotation: %q", got)
	}
	moveAway(t, path, rotated) // the reopen fails
	l.Reopen()
	l.Write([]byte("c\n"))
	l.Reopen()
	if len(*warnings) != 1 {
		t.Fatalf("%d warnings for one run of failed reopens: %v", len(*warnings), *warnings)
	}
	if got := readFile(t, rotated); got != "a\nb\nc\n" {
		t.Fatalf("the file open before the failed reopen got %q", got)
	}
	// The directory gone, and then the file removed: each time the path
	// is opened again, created anew.
	for _, line := range []string{"d\n", "e\n"} {
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		l.Reopen()
		l.Write([]byte(line))
		if got := readFile(t, path); got != line {
			t.Fatalf("the new file at the path got %q, want %q", got, line)
		}
	}
	if got := readFile(t, rotated); got != "a\nb\nc\n" {
		t.Fatalf("the rotated file got %q after the reopens", got)
	}
	if len(*warnings) != 1 {
		t.Fatalf("warnings after the reopens succeeded: %v", *warnings)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	os.Remove(path)
	l.Reopen() // closed: nothing is opened again
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a closed File opened its path again: %v", err)
	}
}

// A run of failed reopens ends when the path names the open file again
// (the file moved back), not only when a reopen succeeds: a later failure
// is a new run and is warned about. It was not: the warning of the first
// run silenced every later one.
func TestFileWarnsAgainAfterThePathCameBack(t *testing.T) {
	l, path, rotated, warnings := openWatched(t)
	moveAway(t, path, rotated) // the reopen fails
	l.Reopen()
	if len(*warnings) != 1 {
		t.Fatalf("%d warnings for a failed reopen: %v", len(*warnings), *warnings)
	}
	// Moved back: the path names the open file, nothing to reopen.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(rotated, path); err != nil {
		t.Fatal(err)
	}
	l.Reopen()
	l.Write([]byte("a\n"))
	if got := readFile(t, path); got != "a\n" {
		t.Fatalf("the file moved back got %q", got)
	}
	moveAway(t, path, rotated)
	l.Reopen()
	if len(*warnings) != 2 {
		t.Fatalf("%d warnings after a second, later run of failed reopens, want 2: %v", len(*warnings), *warnings)
	}
}

// A line written after Writer.Reopen returned goes to the file the path
// names, never to the one renamed away: the asked-for check comes before
// the next write, and before the flush on Close (SIGHUP then SIGTERM).
func TestReopenComesBeforeLaterLines(t *testing.T) {
	for i := range 200 {
		dir := t.TempDir()
		path, rotated := filepath.Join(dir, "access.log"), filepath.Join(dir, "access.log.1")
		l, err := OpenFile(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		w := newWriter(l, 100, time.Hour, 0)
		if err := os.Rename(path, rotated); err != nil {
			t.Fatal(err)
		}
		w.Reopen()
		w.Write([]byte("after\n"))
		if i%2 == 0 {
			w.Write([]byte("more\n"))
		}
		w.Close(context.Background())
		l.Close()
		if got := readFile(t, rotated); got != "" {
			t.Fatalf("round %d: the renamed file got %q", i, got)
		}
		if got := readFile(t, path); !strings.HasPrefix(got, "after\n") {
			t.Fatalf("round %d: the file at the path got %q", i, got)
		}
	}
}

// heldFile is a File whose first write waits until released.
type heldFile struct {
	*File
	entered, release chan struct{}
	once             sync.Once
}

func (h *heldFile) Write(p []byte) (int, error) {
	h.once.Do(func() {
		close(h.entered)
		<-h.release
	})
	return h.File.Write(p)
}

// The lines still buffered when the Writer closes go to the file the path
// names: the flush on Close checks the path once more, as if Reopen had
// been asked. They went to the file renamed away when logrotate renamed
// it with no SIGHUP in the last second before shutdown.
func TestCloseFlushFollowsThePath(t *testing.T) {
	dir := t.TempDir()
	path, rotated := filepath.Join(dir, "access.log"), filepath.Join(dir, "access.log.1")
	f, err := OpenFile(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := &heldFile{File: f, entered: make(chan struct{}), release: make(chan struct{})}
	w := newWriter(h, 100, time.Hour, 0) // no check of its own before Close
	w.Write([]byte("before\n"))
	<-h.entered // the drain holds "before", and nothing else
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("last\n"))
	closed := make(chan error, 1)
	go func() { closed <- w.Close(context.Background()) }()
	await(t, "Close to stop taking writes", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.closed
	})
	close(h.release)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, rotated); got != "before\n" {
		t.Errorf("the file renamed away got %q, want only the line written before the rename", got)
	}
	if got, err := os.ReadFile(path); string(got) != "last\n" {
		t.Errorf("the file at the path got %q (%v), want the line flushed on Close", got, err)
	}
}

// A File whose writes fail (a full disk; /dev/full fails every write with
// ENOSPC) warns once for the run of failures, naming the file. Nothing
// was said: the lines were lost without a word in ferry's log.
func TestFileWarnsOnceWhenWritesFail(t *testing.T) {
	var warnings []error
	l, err := OpenFile("/dev/full", func(err error) { warnings = append(warnings, err) })
	if err != nil {
		t.Skipf("/dev/full: %v", err)
	}
	defer l.Close()
	for range 3 {
		if _, err := l.Write([]byte("a\n")); err == nil {
			t.Skip("/dev/full took a write")
		}
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0].Error(), "/dev/full") {
		t.Fatalf("warnings for a run of 3 failed writes: %v, want one naming the file", warnings)
	}
}
