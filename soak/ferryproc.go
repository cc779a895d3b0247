package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ferrymesh/ferry/internal/localnet"
)

// ferryProc is the ferry under soak: a real process, `ferry run --config`.
type ferryProc struct {
	cmd      *exec.Cmd
	done     chan struct{}
	exitErr  error
	admin    string // host:port
	outbound string // host:port
	logPath  string
	metrics  *http.Client
	cfgPath  string
	ports    []int // admin, outbound
	origin   string
}

// repoRoot is the directory holding ferry's go.mod, from the working
// directory up.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.Contains(b, []byte("module github.com/ferrymesh/ferry\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run the soak inside ferry's repository (no go.mod of github.com/ferrymesh/ferry above the working directory)")
		}
		dir = parent
	}
}

// buildFerry runs `go build ./cmd/ferry` into dir and returns the binary.
func buildFerry(root, dir string) (string, error) {
	bin := filepath.Join(dir, "ferry")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/ferry")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/ferry: %v\n%s", err, out)
	}
	return bin, nil
}

// ferryConfig leads every outbound request to the origin. Breakers and
// outlier ejection are off: the soak's origin answers 500 and breaks
// bodies on purpose, and a breaker opened by those would turn later
// exchanges into ferry-made 503s by design, which is not what the soak
// measures. Everything else is ferry's defaults; gen, the config's
// generation (-reload-every), alternates retry.max_retries between 2 (the
// default) and 1, a change of the service's settings that makes a reload
// retire its connection pools and breakers.
func ferryConfig(adminPort, outPort int, originAddr string, gen int) string {
	return fmt.Sprintf(`# written by the ferry soak, generation %d
admin: { listen: 127.0.0.1:%d }
outbound:
  listen: 127.0.0.1:%d
  routes: [ { service: origin } ]
services:
  origin: { endpoints: [%s] }
defaults:
  breaker: { consecutive_failures: 0 }
  outlier: { consecutive_5xx: 0 }
  retry: { max_retries: %d }
telemetry: { access_log: "off" }
shutdown: { grace: 10s }
`, gen, adminPort, outPort, originAddr, 2-gen%2)
}

// startFerry starts ferry; with watch, its watcher polls the config every
// 100ms and takes a change once two reads 20ms apart agree (-reload-every
// replaces the file whole, so it never reads half-written), instead of
// every 2s and 500ms apart by default: a change every second would
// otherwise often be found changed again before it settled, and refused
// as still being written, by design.
func startFerry(bin, dir, originAddr string, watch bool) (*ferryProc, error) {
	ports, err := localnet.FreePorts(2)
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "ferry.yaml")
	if err := os.WriteFile(cfgPath, []byte(ferryConfig(ports[0], ports[1], originAddr, 0)), 0o644); err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "ferry.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	args := []string{"run", "--config", cfgPath, "--log-level", "warn"}
	if watch {
		args = append(args, "--config-poll", "100ms", "--config-settle", "20ms")
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	f := &ferryProc{
		cmd: cmd, done: make(chan struct{}), logPath: logPath,
		cfgPath: cfgPath, ports: ports, origin: originAddr,
		admin:    fmt.Sprintf("127.0.0.1:%d", ports[0]),
		outbound: fmt.Sprintf("127.0.0.1:%d", ports[1]),
		metrics:  &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 1}},
	}
	go func() {
		f.exitErr = cmd.Wait()
		logf.Close()
		close(f.done)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if f.exited() {
			return nil, fmt.Errorf("ferry exited during start-up: %v\n%s", f.exitErr, f.logTail())
		}
		res, err := f.metrics.Get("http://" + f.admin + "/ready")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return f, nil
			}
		}
		if time.Now().After(deadline) {
			f.kill()
			return nil, fmt.Errorf("ferry not ready after 30s (last: %v)\n%s", err, f.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (f *ferryProc) pid() int { return f.cmd.Process.Pid }

// reload puts generation gen of the config in place, whole (written beside
// it and renamed over it, as a ConfigMap or an editor does), for ferry's
// watcher to find, and with hup also sends ferry a SIGHUP.
func (f *ferryProc) reload(gen int, hup bool) error {
	tmp := f.cfgPath + ".new"
	if err := os.WriteFile(tmp, []byte(ferryConfig(f.ports[0], f.ports[1], f.origin, gen)), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, f.cfgPath); err != nil {
		return err
	}
	if hup {
		return f.cmd.Process.Signal(syscall.SIGHUP)
	}
	return nil
}

// inForce reports whether generation gen of the config is the one ferry
// serves, by its /config.
func (f *ferryProc) inForce(gen int) bool {
	res, err := f.metrics.Get("http://" + f.admin + "/config")
	if err != nil {
		return false
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	return strings.Contains(string(b), fmt.Sprintf("max_retries: %d\n", 2-gen%2))
}

// reloads reads ferry_config_reloads_total from ferry's /metrics: the
// reloads applied and those rejected.
func (f *ferryProc) reloads() (applied, rejected int64, err error) {
	res, err := f.metrics.Get("http://" + f.admin + "/metrics")
	if err != nil {
		return 0, 0, err
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(res.Body, 8<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		if !ok || !strings.HasPrefix(name, "ferry_config_reloads_total{") {
			continue
		}
		n, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
		switch {
		case strings.Contains(name, `result="applied"`):
			applied = int64(n)
		case strings.Contains(name, `result="rejected"`):
			rejected = int64(n)
		}
	}
	return applied, rejected, sc.Err()
}

func (f *ferryProc) exited() bool {
	select {
	case <-f.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits for ferry's drain; it returns ferry's exit
// error (nil for status 0).
func (f *ferryProc) stop(wait time.Duration) error {
	if f.exited() {
		return fmt.Errorf("ferry had already exited: %v", f.exitErr)
	}
	f.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-f.done:
		return f.exitErr
	case <-time.After(wait):
		f.kill()
		return fmt.Errorf("ferry still running %v after SIGTERM; killed", wait)
	}
}

func (f *ferryProc) kill() {
	f.cmd.Process.Kill()
	<-f.done
}

func (f *ferryProc) logTail() string {
	b, _ := os.ReadFile(f.logPath)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// procSample is ferry's process state at one moment.
type procSample struct {
	goroutines int     // go_goroutines from /metrics; -1 if unreadable
	threads    int     // /proc/<pid>/status Threads
	fds        int     // entries of /proc/<pid>/fd
	rss        int64   // /proc/<pid>/status VmRSS, bytes
	cpu        float64 // user+system seconds, /proc/<pid>/stat
	fdKinds
}

// fdKinds breaks ferry's descriptors down: TCP sockets by state (from
// /proc/<pid>/net/tcp{,6}), pipes (splice(2) borrows them from a pool the
// Go runtime empties at garbage collection) and the rest.
type fdKinds struct {
	established, closeWait, listening, otherSockets, pipes, others int
}

func (f *ferryProc) sample() (procSample, error) {
	pid := f.pid()
	s := procSample{goroutines: -1}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, fmt.Errorf("ferry's /proc status: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		v = strings.TrimSpace(v)
		switch k {
		case "Threads":
			s.threads, _ = strconv.Atoi(v)
		case "VmRSS":
			kb, _ := strconv.ParseInt(strings.TrimSuffix(v, " kB"), 10, 64)
			s.rss = kb << 10
		}
	}
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return s, fmt.Errorf("ferry's /proc fd: %w", err)
	}
	s.fds = len(ents)
	s.fdKinds = classifyFDs(pid, ents)
	if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// Fields after the command name (which may hold spaces): utime
		// and stime are the 14th and 15th fields overall.
		if i := bytes.LastIndexByte(stat, ')'); i > 0 {
			fs := strings.Fields(string(stat[i+1:]))
			if len(fs) > 12 {
				ut, _ := strconv.ParseFloat(fs[11], 64)
				st, _ := strconv.ParseFloat(fs[12], 64)
				s.cpu = (ut + st) / 100 // USER_HZ
			}
		}
	}
	s.goroutines = f.goroutines()
	return s, nil
}

// goroutines reads go_goroutines from ferry's /metrics.
func (f *ferryProc) goroutines() int {
	res, err := f.metrics.Get("http://" + f.admin + "/metrics")
	if err != nil {
		return -1
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(res.Body, 8<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "go_goroutines "); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return int(n)
			}
		}
	}
	return -1
}

// TCP states in /proc/net/tcp.
const (
	tcpEstablished = "01"
	tcpCloseWait   = "08"
	tcpListen      = "0A"
)

func classifyFDs(pid int, ents []os.DirEntry) fdKinds {
	states := map[string]string{} // socket inode -> state
	for _, f := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, f))
		if err != nil {
			continue
		}
		for i, line := range strings.Split(string(b), "\n") {
			fs := strings.Fields(line)
			if i == 0 || len(fs) < 10 {
				continue
			}
			states[fs[9]] = fs[3]
		}
	}
	var k fdKinds
	for _, e := range ents {
		target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
		if err != nil {
			continue
		}
		switch {
		case strings.HasPrefix(target, "socket:["):
			switch states[strings.TrimSuffix(strings.TrimPrefix(target, "socket:["), "]")] {
			case tcpEstablished:
				k.established++
			case tcpCloseWait:
				k.closeWait++
			case tcpListen:
				k.listening++
			default:
				k.otherSockets++
			}
		case strings.HasPrefix(target, "pipe:["):
			k.pipes++
		default:
			k.others++
		}
	}
	return k
}
