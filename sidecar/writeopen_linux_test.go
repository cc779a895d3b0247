package sidecar

import (
	"errors"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A process that holds a write lease on the config file (a file server
// sharing the directory: Samba's kernel oplocks, knfsd's delegations) lets
// a reader in once it released the lease, which the kernel asks it to do
// (SIGIO) as the reader opens the file: os.ReadFile waits for that, and so
// must readWriters. A non-blocking open of such a file fails at once,
// EWOULDBLOCK, while the lease is being broken: the watcher logged the
// file unreadable, and a SIGHUP's settle read failed, for a file any
// reader can read a moment later. Here the test is the lease holder, and
// releases the lease when the kernel asks.
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

// A FIFO at the config path is read as os.ReadFile reads it: once a writer
// opened it, up to the writer's close. readWriters opened the file
// O_NONBLOCK, which read a FIFO with no writer yet as empty at once: the
// watcher took an empty file for the config, and a writer's open of the
// FIFO then waited for ever for a reader (the clean-clone CI's -race step
// hung 18 minutes in TestReloadGaugeNotBackOnAReadBeforeTheFailedSIGHUP).
func TestReadWritersWaitsForAFIFOsWriter(t *testing.T) {
	path, fifo := fifoConfigPath(t)
	const content = "outbound: {}\n"
	type result struct {
		data    []byte
		writing bool
		err     error
	}
	done := make(chan result, 1)
	go func() {
		data, writing, err := readWriters(path)
		done <- result{data, writing, err}
	}()
	wr := openFIFOWriter(t, fifo, 10*time.Second, "readWriters")
	defer wr.Close()
	select {
	case r := <-done:
		t.Fatalf("readWriters of a FIFO returned %q, %v as its writer came, before it wrote", r.data, r.err)
	default:
	}
	if _, err := wr.WriteString(content); err != nil {
		t.Fatal(err)
	}
	wr.Close()
	r := recv(t, done, 20*time.Second, "readWriters of the FIFO, its writer gone")
	if r.err != nil || string(r.data) != content || r.writing {
		t.Fatalf("readWriters of a FIFO: %q, writing %v, %v; want %q, false, <nil>", r.data, r.writing, r.err, content)
	}
}

// A process that opens the config file for writing while ferry reads it
// under its read lease waits in its open until the read ends (so that
// the read is of one content), and gets in then: not the system's
// lease-break-time later, when the kernel would take the lease away from
// a holder that did not let it go.
func TestReadWritersLetsAWriterInAsTheReadEnds(t *testing.T) {
	const content = "outbound: {}\n"
	breakTime := 45 * time.Second
	if b, err := os.ReadFile("/proc/sys/fs/lease-break-time"); err == nil {
		if s, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			breakTime = time.Duration(s) * time.Second
		}
	}
	if breakTime < 20*time.Second {
		t.Skipf("lease-break-time is %v here: a writer let in at once cannot be told from one let in by the kernel", breakTime)
	}
	path := filepath.Join(t.TempDir(), "ferry.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}

	type opened struct {
		f   *os.File
		err error
	}
	writer := make(chan opened, 1)
	var held atomic.Bool
	hook := func(f *os.File) {
		if f.Name() != path {
			return // a read of another test's file
		}
		held.Store(true)
		go func() {
			wr, err := os.OpenFile(path, os.O_WRONLY, 0)
			writer <- opened{wr, err}
		}()
		// The writer's open breaks the lease: the kernel marks it to be
		// released (F_GETLEASE then says F_UNLCK) and waits for that.
		deadline := time.Now().Add(20 * time.Second)
		for {
			select {
			case o := <-writer:
				writer <- o
				t.Errorf("a writer opened the file while readWriters held its read lease (%v)", o.err)
				return
			default:
			}
			var lease int
			var err error
			rc, cerr := f.SyscallConn()
			if cerr == nil {
				cerr = rc.Control(func(fd uintptr) { lease, err = unix.FcntlInt(fd, unix.F_GETLEASE, 0) })
			}
			if err == nil {
				err = cerr
			}
			if err != nil {
				t.Errorf("F_GETLEASE: %v", err)
				return
			}
			if lease == unix.F_UNLCK {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("the writer's open did not break readWriters' lease in 20s (lease %d)", lease)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
	testHookLeaseHeld.Store(&hook)
	defer testHookLeaseHeld.Store(nil)

	data, writing, err := readWriters(path)
	if !held.Load() {
		t.Skip("no read lease on the file here: nothing to test")
	}
	if err != nil || string(data) != content || writing {
		t.Errorf("readWriters: %q, writing %v, %v; want %q, false, <nil>", data, writing, err, content)
	}
	wait := breakTime / 2
	select {
	case o := <-writer:
		if o.err != nil {
			t.Fatalf("the writer's open: %v", o.err)
		}
		o.f.Close()
	case <-time.After(wait):
		t.Fatalf("the writer still waiting in its open %v after the read ended (lease-break-time %v): the read lease was not let go", wait, breakTime)
	}
}
