package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime/stime in /proc/<pid>/stat
// (100 on every Linux architecture Go supports).
const clockTicks = 100

// proc is one proxy (or origin) under test: a child process and the
// processes it forked (nginx's workers).
type proc struct {
	name string
	addr string // where clients connect
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func startProc(ctx context.Context, name, addr, logPath string, argv []string, env []string) (*proc, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("%s: log file: %w", name, err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout = lf
	cmd.Stderr = lf
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("%s: start %s: %w", name, argv[0], err)
	}
	p := &proc{name: name, addr: addr, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	return p, nil
}

// stop ends the process group: SIGTERM, then SIGKILL after a grace.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// waitHTTP polls url until it answers 200, the process exits or the
// deadline passes.
func (p *proc) waitHTTP(url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	c := &http.Client{Timeout: time.Second}
	var last error
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("%s exited before it was ready (%v); log:\n%s", p.name, p.err, p.tail())
		}
		res, err := c.Get(url)
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %s", res.Status)
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready at %s after %s: %v; log:\n%s", p.name, url, timeout, last, p.tail())
}

// pids is the process and every descendant of it.
func (p *proc) pids() []int {
	root := p.cmd.Process.Pid
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp, ok := readPPid(pid); ok {
			children[pp] = append(children[pp], pid)
		}
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

func readStatFields(pid int) ([]string, bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return nil, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, false
	}
	return strings.Fields(string(b[i+1:])), true
}

func readPPid(pid int) (int, bool) {
	f, ok := readStatFields(pid)
	if !ok || len(f) < 2 {
		return 0, false
	}
	pp, err := strconv.Atoi(f[1])
	return pp, err == nil
}

// cpuSeconds is utime+stime of the process tree, in seconds.
func (p *proc) cpuSeconds() float64 {
	u, s := p.cpuSplit()
	return u + s
}

// cpuSplit is utime and stime of the process tree, in seconds: the
// proxy's own work and the kernel's on its behalf.
func (p *proc) cpuSplit() (user, sys float64) {
	var ut, st int64
	for _, pid := range p.pids() {
		f, ok := readStatFields(pid)
		if !ok || len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		ut += u
		st += s
	}
	return float64(ut) / clockTicks, float64(st) / clockTicks
}

// memStatus returns VmRSS and VmHWM of the process tree, summed, in bytes.
func (p *proc) memStatus() (rss, hwm int64) {
	for _, pid := range p.pids() {
		r, h := readVm(pid)
		rss += r
		hwm += h
	}
	return rss, hwm
}

func readVm(pid int) (rss, hwm int64) {
	f, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		var dst *int64
		switch {
		case strings.HasPrefix(line, "VmRSS:"):
			dst = &rss
		case strings.HasPrefix(line, "VmHWM:"):
			dst = &hwm
		default:
			continue
		}
		fs := strings.Fields(line)
		if len(fs) >= 2 {
			kb, _ := strconv.ParseInt(fs[1], 10, 64)
			*dst = kb << 10
		}
	}
	return rss, hwm
}

// resetPeak resets VmHWM to the current RSS for every process of the tree
// (writing 5 to /proc/<pid>/clear_refs; needs the same user or root).
func (p *proc) resetPeak() error {
	var firstErr error
	for _, pid := range p.pids() {
		err := os.WriteFile(filepath.Join("/proc", strconv.Itoa(pid), "clear_refs"), []byte("5"), 0)
		if err != nil && firstErr == nil {
			firstErr = fmt.Errorf("%s: reset peak RSS of pid %d: %w", p.name, pid, err)
		}
	}
	return firstErr
}

// memSample is one RSS reading during a phase.
type memSample struct {
	T   time.Duration `json:"t_ns"`      // since the phase started
	RSS int64         `json:"rss_bytes"` // summed over the process tree
}

// sampler reads the process tree's RSS every interval until stopped.
type sampler struct {
	stopc   chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex
	samples []memSample
	max     int64
}

func startSampler(p *proc, every time.Duration) *sampler {
	s := &sampler{stopc: make(chan struct{})}
	start := time.Now()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			rss, _ := p.memStatus()
			s.mu.Lock()
			s.samples = append(s.samples, memSample{time.Since(start), rss})
			if rss > s.max {
				s.max = rss
			}
			s.mu.Unlock()
			select {
			case <-s.stopc:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *sampler) stop() ([]memSample, int64) {
	close(s.stopc)
	s.wg.Wait()
	return s.samples, s.max
}

// freePorts picks n loopback ports below the kernel's ephemeral range
// (so no outgoing connection takes one between the check and the proxy's
// bind), each checked free by listening on it.
func freePorts(n int) ([]int, error) {
	lo, hi := 20000, 32000
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if eph, err := strconv.Atoi(f[0]); err == nil && eph > 2048 && eph < hi {
				hi = eph
				lo = min(lo, eph/2)
			}
		}
	}
	seen := map[int]bool{}
	var ports []int
	for tries := 0; len(ports) < n && tries < 1000; tries++ {
		port := lo + mrand.IntN(hi-lo)
		if seen[port] {
			continue
		}
		seen[port] = true
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		l.Close()
		ports = append(ports, port)
	}
	if len(ports) < n {
		return nil, fmt.Errorf("found only %d free loopback ports in [%d, %d)", len(ports), lo, hi)
	}
	return ports, nil
}
