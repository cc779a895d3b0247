package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// wrkRun is one wrk run through one proxy.
type wrkRun struct {
	RPS         float64
	P50, P99    time.Duration
	Requests    int64
	Errors      int64 // non-2xx/3xx plus socket errors
	Non2xx      int64
	SocketErrs  string // connect/read/write/timeout, as wrk printed them
	CPUPerReqUs float64
	// UserPerReqUs and SysPerReqUs split CPUPerReqUs into the proxy's own
	// work (utime) and the kernel's (stime).
	UserPerReqUs, SysPerReqUs float64
}

var (
	reRPS      = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	reReqs     = regexp.MustCompile(`(\d+) requests in`)
	rePct      = regexp.MustCompile(`(?m)^\s+(50|75|90|99)%\s+([0-9.]+)(us|ms|s|m)\s*$`)
	reNon2xx   = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	reSockErrs = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

func parseWrkDuration(v, unit string) (time.Duration, error) {
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return 0, err
	}
	mult := map[string]float64{"us": 1e3, "ms": 1e6, "s": 1e9, "m": 60e9}[unit]
	return time.Duration(f * mult), nil
}

func parseWrk(out string) (wrkRun, error) {
	var w wrkRun
	m := reRPS.FindStringSubmatch(out)
	if m == nil {
		return w, fmt.Errorf("wrk output has no Requests/sec line:\n%s", out)
	}
	w.RPS, _ = strconv.ParseFloat(m[1], 64)
	if m := reReqs.FindStringSubmatch(out); m != nil {
		w.Requests, _ = strconv.ParseInt(m[1], 10, 64)
	}
	for _, m := range rePct.FindAllStringSubmatch(out, -1) {
		d, err := parseWrkDuration(m[2], m[3])
		if err != nil {
			return w, fmt.Errorf("wrk percentile %q: %w", m[0], err)
		}
		switch m[1] {
		case "50":
			w.P50 = d
		case "99":
			w.P99 = d
		}
	}
	if w.P50 == 0 || w.P99 == 0 {
		return w, fmt.Errorf("wrk output has no latency distribution (--latency):\n%s", out)
	}
	if m := reNon2xx.FindStringSubmatch(out); m != nil {
		n, _ := strconv.ParseInt(m[1], 10, 64)
		w.Errors += n
		w.Non2xx = n
	}
	if m := reSockErrs.FindStringSubmatch(out); m != nil {
		w.SocketErrs = strings.TrimPrefix(m[0], "Socket errors: ")
		for _, s := range m[1:] {
			n, _ := strconv.ParseInt(s, 10, 64)
			w.Errors += n
		}
	}
	return w, nil
}

// runWrk drives p with wrk and charges the proxy's CPU to the requests;
// extra goes on wrk's command line before the URL (a script: -s file).
func runWrk(ctx context.Context, cfg *config, p *proc, conns int, d time.Duration, extra ...string) (wrkRun, error) {
	url := fmt.Sprintf("http://%s/?size=%d", p.addr, cfg.smallSize)
	args := []string{"-t", strconv.Itoa(cfg.wrkThreads), "-c", strconv.Itoa(conns), "-d", fmt.Sprintf("%ds", int(d.Seconds())), "--latency", "--timeout", "10s"}
	args = append(append(args, extra...), url)
	cmd := exec.CommandContext(ctx, cfg.wrkBin, args...)
	u0, s0 := p.cpuSplit()
	out, err := cmd.CombinedOutput()
	u1, s1 := p.cpuSplit()
	cpu := (u1 - u0) + (s1 - s0)
	if err != nil {
		return wrkRun{}, fmt.Errorf("wrk %s: %w: %s", strings.Join(args, " "), err, out)
	}
	w, err := parseWrk(string(out))
	if err != nil {
		return w, fmt.Errorf("%s: %w", p.name, err)
	}
	if w.Requests > 0 {
		w.CPUPerReqUs = cpu / float64(w.Requests) * 1e6
		w.UserPerReqUs = (u1 - u0) / float64(w.Requests) * 1e6
		w.SysPerReqUs = (s1 - s0) / float64(w.Requests) * 1e6
	}
	return w, nil
}

func measureSmall(ctx context.Context, cfg *config, f *fleet, r *results) error {
	for round := 0; round < cfg.wrkRounds; round++ {
		for _, conns := range cfg.wrkConns {
			for _, name := range rotate(f.order, round) {
				w, err := runWrk(ctx, cfg, f.proxies[name], conns, cfg.wrkDuration)
				if err != nil {
					if r.fail(ctx, fmt.Sprintf("wrk c=%d", conns), name, err) != nil {
						return ctx.Err()
					}
					continue
				}
				key := wrkKey{name, conns}
				r.Small[key] = append(r.Small[key], w)
				logf("wrk round %d c=%-3d %-10s %8.0f req/s  p50 %-9s p99 %-9s %.1f CPU-µs/req  non-2xx %d  socket errors: %s",
					round+1, conns, name, w.RPS, w.P50, w.P99, w.CPUPerReqUs, w.Non2xx, orNone(w.SocketErrs))
			}
		}
	}
	return nil
}

// postScript is wrk's Lua script for POSTs of size-byte bodies.
func postScript(size int64) string {
	return fmt.Sprintf("wrk.method = \"POST\"\nwrk.body = string.rep(\"x\", %d)\nwrk.headers[\"Content-Type\"] = \"application/json\"\n", size)
}

// chunkedScript is wrk's Lua script for POSTs of size-byte bodies sent
// chunked (one chunk and the last, with the head in one write), as a
// client sends a body it cannot measure in advance.
func chunkedScript(size int64) string {
	return fmt.Sprintf(`local body = string.rep("x", %d)
local raw = "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" .. string.format("%%x", #body) .. "\r\n" .. body .. "\r\n0\r\n\r\n"
request = function() return raw end
`, size)
}

// measureUploads drives every proxy with POSTs of small bodies (a JSON
// API's calls), which the origin answers with the byte count it read.
func measureUploads(ctx context.Context, cfg *config, f *fleet, r *results) error {
	return measurePosts(ctx, cfg, f.order, f, postScript(cfg.smallSize), "upload", r.Uploads, r)
}

// measureChunked does the same with the bodies sent chunked, through the
// proxies that take chunked bodies (not the floors, which frame by
// Content-Length alone).
func measureChunked(ctx context.Context, cfg *config, f *fleet, r *results) error {
	var names []string
	for _, n := range f.order {
		if n != pFloor && n != pEpoll {
			names = append(names, n)
		}
	}
	return measurePosts(ctx, cfg, names, f, chunkedScript(cfg.smallSize), "chunked upload", r.Chunked, r)
}

// measurePosts runs wrk with script against each of names, round after
// round, at --upload-conns connections, into into.
func measurePosts(ctx context.Context, cfg *config, names []string, f *fleet, script, what string, into map[string][]wrkRun, r *results) error {
	file, err := os.CreateTemp("", "ferrybench-post-*.lua")
	if err != nil {
		return err
	}
	defer os.Remove(file.Name())
	_, err = file.WriteString(script)
	if cerr := file.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	for round := 0; round < cfg.wrkRounds; round++ {
		for _, name := range rotate(names, round) {
			w, err := runWrk(ctx, cfg, f.proxies[name], cfg.uploadConns, cfg.wrkDuration, "-s", file.Name())
			if err != nil {
				if r.fail(ctx, fmt.Sprintf("%s wrk c=%d", what, cfg.uploadConns), name, err) != nil {
					return ctx.Err()
				}
				continue
			}
			into[name] = append(into[name], w)
			logf("%s round %d c=%-3d %-10s %8.0f req/s  p50 %-9s p99 %-9s %.1f CPU-µs/req  non-2xx %d  socket errors: %s",
				what, round+1, cfg.uploadConns, name, w.RPS, w.P50, w.P99, w.CPUPerReqUs, w.Non2xx, orNone(w.SocketErrs))
		}
	}
	return nil
}

func measureTracing(ctx context.Context, cfg *config, f *fleet, r *results) error {
	req0, bytes0 := f.otlp.requests.Load(), f.otlp.bytes.Load()
	names := []string{pFerry, pTraced}
	if f.proxies[pStdOTel] != nil {
		names = append(names, pStd, pStdOTel)
	}
	for round := 0; round < cfg.traceRounds; round++ {
		for _, name := range rotate(names, round) {
			w, err := runWrk(ctx, cfg, f.proxies[name], cfg.traceConns, cfg.traceDuration)
			if err != nil {
				if r.fail(ctx, "tracing", name, err) != nil {
					return ctx.Err()
				}
				continue
			}
			r.Trace[name] = append(r.Trace[name], w)
			logf("tracing round %d %-15s %8.0f req/s  p50 %-9s p99 %-9s %.1f CPU-µs/req  non-2xx %d  socket errors: %s",
				round+1, name, w.RPS, w.P50, w.P99, w.CPUPerReqUs, w.Non2xx, orNone(w.SocketErrs))
		}
	}
	// The batch processor exports at least every 5 s: count the tail too,
	// waiting until no export came for longer than that (12 s at most).
	last, lastAt := f.otlp.requests.Load(), time.Now()
	for deadline := time.Now().Add(12 * time.Second); time.Now().Before(deadline) && time.Since(lastAt) < 5500*time.Millisecond; {
		time.Sleep(100 * time.Millisecond)
		if n := f.otlp.requests.Load(); n != last {
			last, lastAt = n, time.Now()
		}
	}
	r.OTLPRequests, r.OTLPBytes = f.otlp.requests.Load()-req0, f.otlp.bytes.Load()-bytes0
	logf("tracing: the OTLP sink received %d export requests, %s", r.OTLPRequests, mib(r.OTLPBytes))
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
