//go:build !windows

package consultest

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// Pause returns with the agent stopped: a request sent right after it is
// never answered. Sending SIGSTOP alone left the agent answering for up to
// 30 ms on a loaded machine, long enough to answer this request.
func TestPauseReturnsWithTheAgentStopped(t *testing.T) {
	a := Start(t)
	client := &http.Client{Timeout: 200 * time.Millisecond, Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	resumed := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{}}
	defer resumed.CloseIdleConnections()
	leader := func(c *http.Client) error {
		_, err := get(context.Background(), c, "http://"+a.HTTPAddr+"/v1/status/leader", "")
		return err
	}
	for range 10 {
		if err := leader(client); err != nil { // a kept-alive connection for the next request
			t.Fatalf("before Pause: %v", err)
		}
		a.Pause()
		err := leader(client)
		if err == nil {
			t.Fatal("the agent answered a request sent after Pause returned")
		}
		var ne interface{ Timeout() bool }
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("a request to the paused agent: %v, want a timeout", err)
		}
		a.Resume()
		deadline := time.Now().Add(10 * time.Second)
		for leader(resumed) != nil {
			if time.Now().After(deadline) {
				t.Fatal("the agent does not answer after Resume")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// isStopped follows a process through SIGSTOP and SIGCONT, on Linux thread
// by thread and elsewhere through ps; a process gone is an error.
func TestIsStopped(t *testing.T) {
	check := map[string]func(int) (bool, error){"isStopped": isStopped}
	if runtime.GOOS == "linux" {
		check["psStopped"] = psStopped // the way other systems take, checked here too
	}
	for name, stopped := range check {
		t.Run(name, func(t *testing.T) {
			if name == "psStopped" {
				if _, err := exec.LookPath("ps"); err != nil {
					t.Skip("no ps")
				}
			}
			cmd := exec.Command("sleep", "60")
			if err := cmd.Start(); err != nil {
				t.Skipf("sleep: %v", err)
			}
			p := cmd.Process
			waitState := func(want bool) {
				t.Helper()
				deadline := time.Now().Add(5 * time.Second)
				for {
					got, err := stopped(p.Pid)
					if err != nil {
						t.Fatal(err)
					}
					if got == want {
						return
					}
					if time.Now().After(deadline) {
						t.Fatalf("stopped = %v after 5s, want %v", got, want)
					}
					time.Sleep(time.Millisecond)
				}
			}
			waitState(false)
			_ = p.Signal(syscall.SIGSTOP)
			waitState(true)
			_ = p.Signal(syscall.SIGCONT)
			waitState(false)
			_ = p.Kill()
			_ = cmd.Wait()
			if got, err := stopped(p.Pid); err == nil {
				t.Fatalf("a process that exited: %v, nil; want an error", got)
			}
		})
	}
}

// threadsStopped wants every thread stopped, and skips one that ends while
// it reads them.
func TestThreadsStopped(t *testing.T) {
	for _, tc := range []struct {
		name    string
		threads map[string]string // tid -> stat line; "" : a thread that ended
		want    bool
		err     bool
	}{
		{"all stopped", map[string]string{"7": "7 (consul) T 1", "8": "8 (consul) T 1"}, true, false},
		{"one running", map[string]string{"7": "7 (consul) T 1", "8": "8 (consul) R 1"}, false, false},
		{"one asleep", map[string]string{"7": "7 (consul) S 1", "8": "8 (consul) T 1"}, false, false},
		{"a name with ') R'", map[string]string{"7": "7 (a) R (b) T 1"}, true, false},
		{"a thread that ended", map[string]string{"7": "7 (consul) T 1", "8": ""}, true, false},
		{"exited", map[string]string{"7": "7 (consul) Z 1"}, false, true},
		{"garbled", map[string]string{"7": "7 consul T 1"}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			proc := t.TempDir()
			for tid, stat := range tc.threads {
				dir := filepath.Join(proc, "7", "task", tid)
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if stat == "" {
					continue // listed, its stat gone
				}
				if err := os.WriteFile(filepath.Join(dir, "stat"), []byte(stat+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := threadsStopped(proc, 7)
			if got != tc.want || (err != nil) != tc.err {
				t.Fatalf("threadsStopped = %v, %v; want %v, error %v", got, err, tc.want, tc.err)
			}
		})
	}
	if _, err := threadsStopped(t.TempDir(), 7); err == nil {
		t.Fatal("no such process: no error")
	}
}
