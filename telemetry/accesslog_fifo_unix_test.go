//go:build unix

package telemetry

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// An access log destination that stops taking lines (here a FIFO whose
// reader never reads; a stderr pipe nobody drains is the same) never
// blocks requests: lines that do not fit ferry's buffer are dropped and
// counted in ferry_access_log_dropped_total.
func TestAccessLogNeverBlocksRequests(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.fifo")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	r, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close() // open, never read: the pipe fills at 64 KiB
	tel, err := New(context.Background(), Config{AccessLog: path}, WithEnv(env{}.get))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 20000 { // a few MiB of lines
			_, req := tel.StartRequest(incoming("GET", "http://a/some/path", nil), Outbound)
			req.End(Outcome{Status: 200})
		}
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("requests blocked on an access log nobody reads")
	}
	body, _ := scrape(t, tel.MetricsHandler(), "")
	if !strings.Contains(body, "ferry_access_log_dropped_total ") || strings.Contains(body, "ferry_access_log_dropped_total 0\n") {
		t.Fatalf("no dropped lines counted:\n%s", grepFerry(body))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	tel.Shutdown(ctx) // bounded though the FIFO stays full
}
