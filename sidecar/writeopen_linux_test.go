package sidecar

import (
	"errors"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A process that holds a write lease on the config file (a file server
// sharing the directory: Samba's kernel oplocks, knfsd's delegations) lets
// a reader in once it released the lease, which the kernel asks it to do
// (SIGIO) as the reader opens the file: os.ReadFile, which the config
// reads used, waits for that. readWriters opens the file O_NONBLOCK (so
// that a FIFO is not waited on), and a non-blocking open of a leased file
// fails at once, EWOULDBLOCK, while the lease is being broken: the
// watcher logged the file unreadable, and a SIGHUP's settle read failed,
// for a file any reader can read a moment later. Here the test is the
// lease holder, and releases the lease when the kernel asks.
func TestReadWritersWaitsForAWriteLeaseHolder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ferry.yaml")
	const content = "outbound: {}\n"
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	holder, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	if _, err := unix.FcntlInt(holder.Fd(), unix.F_SETLEASE, unix.F_WRLCK); err != nil {
		t.Skipf("no write lease on %s here (%v): nothing to test", path, err)
	}
	breaks := make(chan os.Signal, 1)
	signal.Notify(breaks, syscall.SIGIO)
	defer signal.Stop(breaks)

	type result struct {
		data []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		data, _, err := readWriters(path)
		done <- result{data, err}
	}()
	released := false
	deadline := time.After(20 * time.Second)
	for {
		select {
		case <-breaks:
			if !released {
				released = true
				if _, err := unix.FcntlInt(holder.Fd(), unix.F_SETLEASE, unix.F_UNLCK); err != nil {
					t.Fatalf("releasing the lease: %v", err)
				}
			}
			continue
		case r := <-done:
			if r.err != nil {
				t.Fatalf("readWriters of a file whose write lease is being broken: %v (os.ReadFile waits for the holder; lease released by then: %v, is EWOULDBLOCK: %v)", r.err, released, errors.Is(r.err, syscall.EWOULDBLOCK))
			}
			if string(r.data) != content {
				t.Fatalf("readWriters read %q, want %q", r.data, content)
			}
			if !released {
				t.Fatalf("readWriters read the file without the lease being released")
			}
			return
		case <-deadline:
			t.Fatalf("readWriters still waiting 20s after it began (lease released: %v)", released)
		}
	}
}
