//go:build unix

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// ferry check does not wait on an access log that is a named pipe with no
// reader yet (ferry run would, until the log's reader opens it): opening
// it for writing blocked the check for as long as nobody read the pipe.
func TestCheckAccessLogFIFODoesNotBlock(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "access.pipe")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("no named pipes here: %v", err)
	}
	cfg := writeIn(t, dir, "ferry.yaml", "outbound: { routes: [ { service: s } ] }\nservices: { s: { endpoints: [10.0.0.1:80] } }\ntelemetry: { access_log: '"+fifo+"' }\n")
	done := make(chan int, 1)
	var out, errb bytes.Buffer
	go func() { done <- run([]string{"check", "--config", cfg}, &out, &errb) }()
	select {
	case code := <-done:
		if code != exitOK {
			t.Fatalf("exit %d, stderr %q; want 0", code, errb.String())
		}
	case <-time.After(10 * time.Second):
		// Let the blocked open go: a reader opens the pipe.
		if f, err := os.OpenFile(fifo, os.O_RDONLY, 0); err == nil {
			defer f.Close()
		}
		<-done
		t.Fatal("ferry check still waiting 10s on an access log pipe nobody reads")
	}
}
