package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ferrymesh/ferry/internal/payload"

	"github.com/ferrymesh/ferry/internal/localnet"
)

// cmdDemo shows ferry's main job with nothing but the binary: a built-in
// origin serves a large file, a ferry process (this binary, `ferry run`,
// static discovery) sits in front of it, and the file is downloaded through
// ferry and then directly, with a progress bar. It reports both throughputs,
// checks the sha256 of what arrived, and reads ferry's peak memory from the
// kernel.
func cmdDemo(args []string, stdout, stderr io.Writer) int {
	fs := flagSet("demo", "ferry demo [--size N]", stderr)
	sizeFlag := fs.String("size", "1GiB", "file size (bytes, or with KiB/MiB/GiB)")
	if code, ok := parseFlags(fs, args, stdout); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "ferry demo: unexpected argument %q\n", fs.Arg(0))
		return exitConfig
	}
	size, err := parseSize(*sizeFlag)
	if err != nil {
		fmt.Fprintf(stderr, "ferry demo: --size: %v\n", err)
		return exitConfig
	}
	// A SIGINT (Ctrl-C) or SIGTERM ends the download: the demo then
	// stops its ferry and removes its files, as at the end of a run,
	// rather than die and leave them (the ferry alone on its ports when
	// the signal reached the demo only). A second one while it does
	// (its ferry may take up to 10s to go) kills its ferry at once.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hurry, returned := make(chan struct{}), make(chan struct{})
	defer close(returned)
	go func() {
		select {
		case <-sigs:
			cancel()
		case <-returned:
			return
		}
		select {
		case <-sigs:
			close(hurry)
		case <-returned:
		}
	}()
	if err := demo(ctx, hurry, size, stdout, stderr); err != nil {
		if ctx.Err() != nil {
			select {
			case <-hurry:
				fmt.Fprintln(stderr, "ferry demo: stopped by a second signal; its ferry was killed and its files removed")
			default:
				fmt.Fprintln(stderr, "ferry demo: stopped by a signal; its ferry was stopped and its files removed")
			}
			return exitFail
		}
		fmt.Fprintf(stderr, "ferry demo: %v\n", err)
		return exitFail
	}
	return exitOK
}

// demo runs the demo until ctx ends; once hurry is closed too, it kills
// its ferry rather than wait for it to exit.
func demo(ctx context.Context, hurry <-chan struct{}, size int64, stdout, stderr io.Writer) error {
	origin, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: payload.Handler(size)}
	go srv.Serve(origin)
	defer srv.Close()

	ports, err := localnet.FreePorts(2)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "ferry-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfgPath := filepath.Join(dir, "ferry.yaml")
	cfg := fmt.Sprintf(`# written by ferry demo
admin:    { listen: 127.0.0.1:%d }
outbound:
  listen: 127.0.0.1:%d
  routes:
    - { host: files, service: files }
services:
  files: { endpoints: [%s] }
shutdown: { grace: 5s }
`, ports[0], ports[1], origin.Addr())
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	logPath := filepath.Join(dir, "ferry.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(self, "run", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return err
	}
	// exited is closed once ferry has exited, waitErr its Wait's result.
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-hurry:
			cmd.Process.Kill()
			<-exited
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}()
	admin := fmt.Sprintf("http://127.0.0.1:%d/ready", ports[0])
	if err := waitReady(ctx, admin, exited, &waitErr, 10*time.Second); err != nil {
		log, _ := os.ReadFile(logPath)
		return fmt.Errorf("ferry did not become ready: %v\n%s", err, log)
	}
	fmt.Fprintf(stdout, "ferry demo: origin %s, ferry pid %d (outbound 127.0.0.1:%d -> service files)\n", origin.Addr(), cmd.Process.Pid, ports[1])
	fmt.Fprintf(stdout, "downloading %s through ferry and directly\n", human(size))

	want, err := digest(ctx, size)
	if err != nil {
		return err
	}
	cpu0 := procCPU(cmd.Process.Pid)
	via, err := download(ctx, fmt.Sprintf("http://127.0.0.1:%d/file", ports[1]), "files", size, "via ferry", stderr)
	if err != nil {
		return err
	}
	ferryCPU := procCPU(cmd.Process.Pid) - cpu0
	direct, err := download(ctx, fmt.Sprintf("http://%s/file", origin.Addr()), "", size, "direct   ", stderr)
	if err != nil {
		return err
	}
	for _, d := range []dl{via, direct} {
		if d.n != size || d.digest != want {
			return fmt.Errorf("%s: got %d bytes sha256 %s, want %d bytes sha256 %s", d.label, d.n, d.digest, size, want)
		}
	}
	peak, rss := procMemory(cmd.Process.Pid)
	fmt.Fprintf(stdout, "\n%-10s %12s %10s\n", "", "throughput", "time")
	fmt.Fprintf(stdout, "%-10s %9.0f MiB/s %9.2fs\n", "via ferry", via.rate(), via.took.Seconds())
	fmt.Fprintf(stdout, "%-10s %9.0f MiB/s %9.2fs\n", "direct", direct.rate(), direct.took.Seconds())
	fmt.Fprintf(stdout, "\nsha256 %s matches at both ends (%d bytes)\n", want, size)
	fmt.Fprintf(stdout, "ferry peak memory (VmHWM): %s, now (VmRSS): %s, for a %s body\n", peak, rss, human(size))
	if ferryCPU >= 0 && size > 0 {
		fmt.Fprintf(stdout, "ferry CPU for the download: %.2fs (%.2f s/GiB)\n", ferryCPU, ferryCPU/(float64(size)/(1<<30)))
	}
	return nil
}

type dl struct {
	label  string
	n      int64
	digest string
	took   time.Duration
}

func (d dl) rate() float64 { return float64(d.n) / (1 << 20) / d.took.Seconds() }

func download(ctx context.Context, url, host string, size int64, label string, progress io.Writer) (dl, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return dl{}, err
	}
	if host != "" {
		req.Host = host
	}
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableCompression: true}}
	start := time.Now()
	res, err := client.Do(req)
	if err != nil {
		return dl{}, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
		return dl{}, fmt.Errorf("%s: %s: %s", label, res.Status, strings.TrimSpace(string(b)))
	}
	sink := payload.NewSink()
	bar := &progressBar{w: progress, label: label, total: size, start: start}
	_, err = io.CopyBuffer(io.MultiWriter(sink, bar), res.Body, make([]byte, 64<<10))
	bar.finish()
	if err != nil {
		return dl{}, fmt.Errorf("%s: %w", label, err)
	}
	return dl{label: strings.TrimSpace(label), n: sink.N(), digest: sink.Digest(), took: time.Since(start)}, nil
}

// progressBar draws one line on w, at most ten times a second.
type progressBar struct {
	w        io.Writer
	label    string
	total, n int64
	start    time.Time
	last     time.Time
}

func (p *progressBar) Write(b []byte) (int, error) {
	p.n += int64(len(b))
	if now := time.Now(); now.Sub(p.last) >= 100*time.Millisecond {
		p.last = now
		p.draw()
	}
	return len(b), nil
}

func (p *progressBar) draw() {
	const width = 30
	frac := 1.0
	if p.total > 0 {
		frac = float64(p.n) / float64(p.total)
	}
	filled := int(frac * width)
	rate := float64(p.n) / (1 << 20) / max(time.Since(p.start).Seconds(), 1e-9)
	fmt.Fprintf(p.w, "\r%s [%s%s] %5.1f%% %8s %7.0f MiB/s", p.label, strings.Repeat("=", filled), strings.Repeat(" ", width-filled), frac*100, human(p.n), rate)
}

func (p *progressBar) finish() {
	p.draw()
	fmt.Fprintln(p.w)
}

// digest is payload.Digest(size), given up when ctx ends: for the default
// 1 GiB it takes about a second, and far longer for a large --size.
func digest(ctx context.Context, size int64) (string, error) {
	h := sha256.New()
	r, buf := payload.NewReader(size), make([]byte, 1<<20)
	for {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		n, err := r.Read(buf)
		h.Write(buf[:n])
		if err == io.EOF {
			return hex.EncodeToString(h.Sum(nil)), nil
		}
	}
}

// waitReady polls url until it answers 200, ferry exits (exited closed,
// *waitErr its Wait's result), ctx ends or timeout passes.
func waitReady(ctx context.Context, url string, exited <-chan struct{}, waitErr *error, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second}
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("ferry exited: %v", *waitErr)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if res, err := client.Do(req); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	return errors.New("timed out")
}

// procCPU is a process's user+system CPU seconds so far, or -1.
func procCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	// Fields after the command name (which may hold spaces) start at ")".
	_, rest, ok := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		return -1
	}
	utime, err1 := strconv.ParseFloat(f[11], 64)
	stime, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	const ticks = 100 // USER_HZ on Linux
	return (utime + stime) / ticks
}

// procMemory reads a process's peak and current resident memory.
func procMemory(pid int) (peak, rss string) {
	peak, rss = "unavailable", "unavailable"
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "VmHWM":
			peak = human(kb << 10)
		case "VmRSS":
			rss = human(kb << 10)
		}
	}
	return
}

// parseSize reads --size: a number of bytes, or one followed by KiB, MiB,
// GiB (or B). Errors quote the flag as given.
func parseSize(flag string) (int64, error) {
	s, mult := flag, int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.m
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("invalid size %q (want a number of bytes, or one with KiB, MiB or GiB)", flag)
	}
	if n > math.MaxInt64/mult {
		return 0, fmt.Errorf("size %q is too large", flag)
	}
	return n * mult, nil
}

func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
