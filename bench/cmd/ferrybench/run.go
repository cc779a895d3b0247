package main

import (
	"context"
	"debug/buildinfo"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// wrkKey names one proxy at one connection count.
type wrkKey struct {
	Proxy string
	Conns int
}

func (k wrkKey) MarshalText() ([]byte, error) {
	return fmt.Appendf(nil, "%s@c%d", k.Proxy, k.Conns), nil
}

// results is everything one run measured.
type results struct {
	Start, End         time.Time
	LoadStart, LoadEnd string
	Versions           map[string]string
	Order              []string
	IdleStart, IdleEnd map[string]int64
	Bulk               map[string][]bulkRound
	Seq                map[string]seqResult
	Conc               map[string]concResult
	Small              map[wrkKey][]wrkRun
	Uploads            map[string][]wrkRun
	Chunked            map[string][]wrkRun
	Lat                map[string][]latRound
	LatDirect          map[string][]latRound      // the direct attack just before each of a proxy's
	LatPooled          map[string][]time.Duration `json:"-"`
	Trace              map[string][]wrkRun
	OTLPRequests       int64
	OTLPBytes          int64
	// Failures are the measurements a proxy failed (a broken download,
	// failed requests), by proxy; the run goes on without them.
	Failures map[string][]string
}

// fail records that name failed a measurement of phase and logs it; it
// returns ctx's error when the run is being cancelled.
func (r *results) fail(ctx context.Context, phase, name string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	msg := fmt.Sprintf("%s: %v", phase, err)
	if len(msg) > 600 {
		msg = msg[:600] + "…"
	}
	r.Failures[name] = append(r.Failures[name], msg)
	logf("FAILED %s %s", name, msg)
	return nil
}

func logf(format string, args ...any) {
	fmt.Printf("%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func versions(cfg *config) map[string]string {
	v := map[string]string{"harness": runtime.Version()}
	if bi, err := buildinfo.ReadFile(cfg.ferryBin); err == nil {
		v["ferry"] = strings.TrimSpace(cfg.ferryRev + " built with " + bi.GoVersion)
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				v["ferry"] += " " + s.Value
			}
		}
	}
	first := func(bin string, args ...string) string {
		out, _ := exec.Command(bin, args...).CombinedOutput()
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		return line
	}
	if contains(cfg.proxies, pNginx) {
		v["nginx"] = first(cfg.nginxBin, "-v")
	}
	if contains(cfg.proxies, pHAProxy) {
		v["haproxy"] = first(cfg.haproxyBin, "-v")
	}
	v["wrk"] = first(cfg.wrkBin, "-v")
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		v["kernel"] = strings.TrimSpace(string(b))
	}
	v["cpus"] = fmt.Sprint(runtime.NumCPU())
	return v
}

func runBench(ctx context.Context, cfg *config) error {
	r := &results{
		Start: time.Now(), LoadStart: loadavg(), Versions: versions(cfg),
		IdleStart: map[string]int64{}, IdleEnd: map[string]int64{},
		Bulk: map[string][]bulkRound{}, Seq: map[string]seqResult{}, Conc: map[string]concResult{},
		Small: map[wrkKey][]wrkRun{}, Lat: map[string][]latRound{}, LatDirect: map[string][]latRound{}, LatPooled: map[string][]time.Duration{},
		Trace: map[string][]wrkRun{}, Uploads: map[string][]wrkRun{}, Chunked: map[string][]wrkRun{}, Failures: map[string][]string{},
	}
	dir, err := os.MkdirTemp("", "ferrybench-")
	if err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	// nginx's workers run as nobody and write their temp files below.
	if err := os.Chmod(dir, 0o755); err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	ok := false
	defer func() {
		if ok {
			os.RemoveAll(dir)
		} else {
			logf("kept %s (configs and logs of the failed run)", dir)
		}
	}()
	logf("starting origin and proxies in %s", dir)
	f, err := startFleet(ctx, cfg, dir)
	if err != nil {
		return err
	}
	defer f.stop()
	r.Order = f.order
	for _, n := range f.order {
		logf("%-14s %s", n, f.proxies[n].addr)
	}

	wait(ctx, cfg.idleSettle)
	for _, n := range f.order {
		r.IdleStart[n], _ = f.proxies[n].memStatus()
	}
	for _, n := range []string{pTraced, pStdOTel} {
		if p := f.proxies[n]; p != nil {
			r.IdleStart[n], _ = p.memStatus()
		}
	}
	phases := []struct {
		key, name string
		run       func(context.Context, *config, *fleet, *results) error
	}{
		{phSeq, "sequential downloads (RSS growth)", measureSequential},
		{phBulk, "bulk download/upload (CPU per GiB)", measureBulk},
		{phConc, "concurrent downloads (peak RSS)", measureConcurrent},
		{phSmall, "small requests (wrk)", measureSmall},
		{phUploads, "small uploads (wrk, POST)", measureUploads},
		{phChunked, "small chunked uploads (wrk, POST)", measureChunked},
		{phLatency, "added latency at a constant rate (vegeta)", measureLatency},
		{phTracing, "tracing on vs off (wrk)", measureTracing},
	}
	for _, ph := range phases {
		if !cfg.phases[ph.key] || (ph.key == phTracing && !cfg.tracing) {
			continue
		}
		logf("== %s", ph.name)
		if err := ph.run(ctx, cfg, f, r); err != nil {
			return fmt.Errorf("%s: %w", ph.name, err)
		}
		for _, p := range f.all {
			if p.exited() {
				return fmt.Errorf("%s: %s exited (%v); log:\n%s", ph.name, p.name, p.err, p.tail())
			}
		}
	}
	wait(ctx, cfg.idleSettle)
	for _, n := range f.order {
		r.IdleEnd[n], _ = f.proxies[n].memStatus()
	}
	r.End, r.LoadEnd = time.Now(), loadavg()
	f.stop()
	saveLogs(f, filepath.Join(cfg.out, "logs"))

	if err := writeReport(cfg, r); err != nil {
		return err
	}
	if err := writePlots(cfg, r); err != nil {
		return err
	}
	raw, _ := json.MarshalIndent(r, "", "  ")
	if err := os.WriteFile(filepath.Join(cfg.out, "raw.json"), raw, 0o644); err != nil {
		return fmt.Errorf("write raw.json: %w", err)
	}
	logf("wrote %s", cfg.out)
	ok = true
	return nil
}

func wait(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// saveLogs copies every process's output (and nginx's error log) next to
// the results, where a failed request can be traced.
func saveLogs(f *fleet, dst string) {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return
	}
	copyFile := func(src, name string) {
		if b, err := os.ReadFile(src); err == nil {
			_ = os.WriteFile(filepath.Join(dst, name), b, 0o644)
		}
	}
	for _, p := range f.all {
		copyFile(p.log, strings.ReplaceAll(p.name, "+", "-")+".log")
	}
	copyFile(filepath.Join(f.dir, "nginx", "error.log"), "nginx-error.log")
}
