// Command soak runs mixed traffic through a real ferry process for a long
// time at high concurrency and reports what ferry got wrong and how its
// goroutines, threads, file descriptors and memory moved. It is not a unit
// test: run it with scripts/soak.sh (default 10 minutes).
//
// It builds ferry (`go build ./cmd/ferry`, or takes -ferry), starts an
// origin in this process and `ferry run --config` in front of it, and runs
// -concurrency callers, each looping exchanges drawn from -mix over
// HTTP/1.1 and h2c. Every exchange is checked end to end: byte counts and
// sha256 at both ends for bodies, exact events for streams, the origin's
// own status and body for its error answers, a broken body (never a clean
// one) when the origin breaks its body. A failure made by ferry is any
// answer with X-Ferry-Error, no answer, a changed status, a body broken or
// short although the origin sent it whole, a digest mismatch or a hang past
// -request-timeout. The origin's 404/429/500 and its broken bodies are the
// origin's behaviour and are counted apart.
//
// With -reload-every, the config changes while the traffic runs: every
// interval the file is replaced whole (written beside it and renamed over
// it), every other time followed by a SIGHUP (ferry then polls the file
// every 100ms, with a settle interval of 20ms), each change altering the
// service's retry settings, so that each reload ferry applies retires the
// service's connection pools and breakers while exchanges run on them.
// Every exchange must still come through whole, and the growth bounds
// below hold as without reloads (closed pools must be let go).
//
// ferry's state is sampled every -sample from /proc/<pid> (threads, open
// file descriptors, VmRSS, CPU) and its /metrics (go_goroutines): at rest
// before traffic, during it, and after it while ferry's connections go idle.
// Output in results/soak-<timestamp>/ (or -out): samples.csv, soak.png,
// errors.txt (ferry-made failures), summary.txt, ferry.yaml, ferry.log.
//
// The exit status is 1 when ferry made any error, exited, or grew beyond
// these bounds:
//
//   - leaked descriptors: within -rest-wait (30 s) after traffic stops
//     (the callers close their connections; the origin closes idle ones
//     after 5 s, so ferry's upstream pools must empty), ferry's open file
//     descriptors other than pipes are at most -fd-slack (default 8) above
//     the count at rest before traffic, and its goroutines at most
//     -goroutine-slack (default 20) above theirs. Pipes are counted apart:
//     splice(2) borrows them from a pool the Go runtime empties only at a
//     garbage collection, which an idle ferry runs every 2 minutes; at most
//     2 per caller (one pipe per splice in flight) may remain;
//   - growth under steady load: the mean descriptor count over the last
//     quarter of the traffic exceeds that of the second quarter (the first
//     is warm-up) by at most max(32, 10%), and the peak RSS of the last
//     quarter exceeds the peak of the second quarter by at most -rss-slack
//     (default 32 MiB);
//   - with -reload-every: ferry rejected none of the changes, and the last
//     one is in force within 10 s of the traffic's end.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type config struct {
	duration       time.Duration
	concurrency    int
	mix            mix
	mixText        string
	maxBody        int64
	h2cShare       float64
	reqTimeout     time.Duration
	sampleEvery    time.Duration
	restWait       time.Duration
	out            string
	ferryBin       string
	fdSlack        int
	goroutineSlack int
	rssSlack       int64
	reloadEvery    time.Duration
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func parseFlags(args []string) (*config, error) {
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	c := &config{}
	fs.DurationVar(&c.duration, "duration", 10*time.Minute, "how long traffic runs")
	fs.IntVar(&c.concurrency, "concurrency", 256, "callers looping exchanges at once")
	fs.StringVar(&c.mixText, "mix", defaultMix, "kind=weight,... of "+strings.Join(allKinds, ", "))
	maxBody := fs.String("max-body", "8MiB", "largest download or upload body (bytes, or with KiB/MiB/GiB)")
	fs.Float64Var(&c.h2cShare, "h2c", 0.5, "share of exchanges over h2c (the rest over HTTP/1.1), 0..1")
	fs.DurationVar(&c.reqTimeout, "request-timeout", 2*time.Minute, "an exchange that takes longer is a hang, and ferry's failure")
	fs.DurationVar(&c.sampleEvery, "sample", time.Second, "how often ferry's state is sampled")
	fs.DurationVar(&c.restWait, "rest-wait", 30*time.Second, "how long after traffic ferry's descriptors and goroutines may take to come back")
	fs.StringVar(&c.out, "out", "", "output directory (default results/soak-<timestamp> in the repository)")
	fs.StringVar(&c.ferryBin, "ferry", "", "ferry binary to soak (default: go build ./cmd/ferry)")
	fs.IntVar(&c.fdSlack, "fd-slack", 8, "open descriptors allowed above the count at rest, after traffic")
	fs.IntVar(&c.goroutineSlack, "goroutine-slack", 20, "goroutines allowed above the count at rest, after traffic")
	rssSlack := fs.Int("rss-slack", 32, "MiB the last quarter's peak RSS may exceed the second quarter's")
	fs.DurationVar(&c.reloadEvery, "reload-every", 0, "while traffic runs, change ferry's config this often (every other time also with a SIGHUP), each change retiring the service's connection pools; 0: never")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	var err error
	if c.mix, err = parseMix(c.mixText); err != nil {
		return nil, err
	}
	if c.maxBody, err = parseSize(*maxBody); err != nil {
		return nil, fmt.Errorf("-max-body: %w", err)
	}
	switch {
	case c.duration <= 0:
		return nil, fmt.Errorf("-duration: %v: want a positive duration", c.duration)
	case c.concurrency < 1:
		return nil, fmt.Errorf("-concurrency: %d: want at least 1", c.concurrency)
	case c.maxBody < 1<<10:
		return nil, fmt.Errorf("-max-body: %d: want at least 1KiB", c.maxBody)
	case c.h2cShare < 0 || c.h2cShare > 1:
		return nil, fmt.Errorf("-h2c: %v: want 0..1", c.h2cShare)
	case c.reqTimeout <= 0:
		return nil, fmt.Errorf("-request-timeout: %v: want a positive duration", c.reqTimeout)
	case c.sampleEvery < 10*time.Millisecond:
		return nil, fmt.Errorf("-sample: %v: want at least 10ms", c.sampleEvery)
	case c.reloadEvery < 0 || c.reloadEvery > 0 && c.reloadEvery < 250*time.Millisecond:
		return nil, fmt.Errorf("-reload-every: %v: want 0 (never) or at least 250ms", c.reloadEvery)
	case c.restWait < 0 || c.fdSlack < 0 || c.goroutineSlack < 0 || *rssSlack < 0:
		return nil, fmt.Errorf("-rest-wait, -fd-slack, -goroutine-slack and -rss-slack must not be negative")
	}
	c.rssSlack = int64(*rssSlack) << 20
	return c, nil
}

// parseSize reads 123, 4KiB, 8MiB or 1GiB.
func parseSize(s string) (int64, error) {
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = v, u.m
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q: want bytes, or a whole number with KiB, MiB or GiB", s)
	}
	return n * mult, nil
}

func run(args []string) int {
	cfg, err := parseFlags(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "soak: %v\n", err)
		return 2
	}
	root, err := repoRoot()
	if err != nil {
		fmt.Fprintf(os.Stderr, "soak: %v\n", err)
		return 2
	}
	if cfg.out == "" {
		cfg.out = filepath.Join(root, "results", "soak-"+time.Now().Format("20060102-150405"))
	}
	if err := os.MkdirAll(cfg.out, 0o755); err != nil {
		fmt.Fprintf(os.Stderr, "soak: %v\n", err)
		return 2
	}
	res, err := soak(cfg, root)
	if err != nil {
		fmt.Fprintf(os.Stderr, "soak: %v\n", err)
		return 1
	}
	summary := res.summary(cfg)
	fmt.Print(summary)
	if err := res.write(cfg, summary); err != nil {
		fmt.Fprintf(os.Stderr, "soak: writing results: %v\n", err)
		return 1
	}
	fmt.Printf("results in %s\n", cfg.out)
	if len(res.verdicts) > 0 {
		return 1
	}
	return 0
}

// soak runs the whole thing and gathers what it saw.
func soak(cfg *config, root string) (*results, error) {
	bin := cfg.ferryBin
	if bin == "" {
		fmt.Fprintln(os.Stderr, "soak: go build ./cmd/ferry")
		var err error
		if bin, err = buildFerry(root, cfg.out); err != nil {
			return nil, err
		}
	}
	o, err := startOrigin()
	if err != nil {
		return nil, err
	}
	defer o.close()
	f, err := startFerry(bin, cfg.out, o.addr(), cfg.reloadEvery > 0)
	if err != nil {
		return nil, err
	}
	defer func() {
		if !f.exited() {
			f.kill()
		}
	}()
	tr := newTraffic("http://"+f.outbound, o, cfg.mix, cfg.maxBody, cfg.h2cShare, cfg.reqTimeout, cfg.concurrency)
	res := &results{pid: f.pid(), origin: o.addr()}
	smp := startSampler(f, tr, cfg.sampleEvery)

	// At rest before traffic.
	if err := smp.settle(3); err != nil {
		smp.stop()
		return nil, err
	}
	res.rest0 = smp.last()

	// Traffic; SIGINT ends it early and still reports.
	ctx, cancel := context.WithTimeout(context.Background(), cfg.duration)
	defer cancel()
	intr := make(chan os.Signal, 1)
	signal.Notify(intr, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(intr)
	go func() {
		select {
		case <-intr:
			fmt.Fprintln(os.Stderr, "soak: interrupted; finishing the exchanges in flight")
			cancel()
		case <-ctx.Done():
		}
	}()
	fmt.Fprintf(os.Stderr, "soak: %v of traffic, %d callers, mix %s, bodies up to %d bytes, ferry pid %d, out %s\n",
		cfg.duration, cfg.concurrency, cfg.mixText, cfg.maxBody, f.pid(), cfg.out)
	res.trafficStart = smp.mark()
	go progress(ctx, tr, cfg.duration)
	reloaded := make(chan reloadCount, 1)
	go func() { reloaded <- churnConfig(ctx, f, cfg.reloadEvery) }()
	tr.run(ctx, cfg.concurrency)
	res.trafficEnd = smp.mark()
	res.reloads = <-reloaded
	if res.reloads.written > 0 {
		// The last change applies within a poll and a settle interval
		// of ferry's watcher (2.5 s by default).
		deadline := time.Now().Add(10 * time.Second)
		for !f.inForce(res.reloads.written) && time.Now().Before(deadline) && !f.exited() {
			time.Sleep(100 * time.Millisecond)
		}
		res.reloads.lastInForce = f.inForce(res.reloads.written)
		res.reloads.applied, res.reloads.rejected, res.reloads.err = f.reloads()
	}
	tr.closeIdle()

	// Back to rest: ferry's connections to callers close with ours, those
	// to the origin when the origin's idle timeout closes them.
	res.rest1 = smp.waitRest(res.rest0, cfg)
	smp.stop()
	res.samples = smp.samples
	res.sampleErr = smp.err
	res.ferryDied = f.exited()
	if !res.ferryDied {
		res.exitErr = f.stop(30 * time.Second)
	} else {
		res.exitErr = f.exitErr
	}
	res.ferryLog = f.logTail()
	res.traffic = tr
	res.judge(cfg)
	return res, nil
}

// progress prints a line every 30 seconds while traffic runs.
func progress(ctx context.Context, tr *traffic, total time.Duration) {
	start := time.Now()
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			fmt.Fprintf(os.Stderr, "soak: %v/%v: %d exchanges, %d ferry errors, %d origin-made\n",
				time.Since(start).Round(time.Second), total, tr.requests.Load(), tr.ferryErrors.Load(), tr.originMade.Load())
		}
	}
}

// reloadCount is what -reload-every did: the config changes written and,
// from ferry's /metrics after the traffic, the reloads ferry applied and
// rejected.
type reloadCount struct {
	written, sighups  int
	applied, rejected int64
	lastInForce       bool // the last change was in force after the traffic
	err               error
}

// churnConfig changes ferry's config every `every` until ctx ends (not at
// all for 0), every other change with a SIGHUP.
func churnConfig(ctx context.Context, f *ferryProc, every time.Duration) reloadCount {
	var rc reloadCount
	if every <= 0 {
		return rc
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return rc
		case <-tick.C:
		}
		hup := rc.written%2 == 1
		if err := f.reload(rc.written+1, hup); err != nil {
			rc.err = err
			return rc
		}
		rc.written++
		if hup {
			rc.sighups++
		}
	}
}
