package main

import (
	"encoding/csv"
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// sample is ferry's state at one moment, with the traffic tallies then.
type sample struct {
	t                                 float64 // seconds since sampling started
	phase                             string  // rest-before, traffic, rest-after
	requests, ferryErrors, originMade int64
	procSample
}

// sampler records ferry's state every interval until stopped.
type sampler struct {
	f     *ferryProc
	tr    *traffic
	start time.Time
	quit  chan struct{}
	done  chan struct{}

	mu      sync.Mutex
	phase   string
	samples []sample
	err     error // the first sampling failure
}

func startSampler(f *ferryProc, tr *traffic, every time.Duration) *sampler {
	s := &sampler{f: f, tr: tr, start: time.Now(), quit: make(chan struct{}), done: make(chan struct{}), phase: "rest-before"}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			s.take()
			select {
			case <-s.quit:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

func (s *sampler) take() {
	ps, err := s.f.sample()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if s.err == nil && !s.f.exited() {
			s.err = err
		}
		return
	}
	s.samples = append(s.samples, sample{
		t: time.Since(s.start).Seconds(), phase: s.phase,
		requests: s.tr.requests.Load(), ferryErrors: s.tr.ferryErrors.Load(), originMade: s.tr.originMade.Load(),
		procSample: ps,
	})
}

func (s *sampler) stop() {
	close(s.quit)
	<-s.done
}

func (s *sampler) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.samples)
}

func (s *sampler) last() sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.samples) == 0 {
		return sample{procSample: procSample{goroutines: -1}}
	}
	return s.samples[len(s.samples)-1]
}

// settle waits until n samples were taken.
func (s *sampler) settle(n int) error {
	deadline := time.Now().Add(time.Minute)
	for s.count() < n {
		if time.Now().After(deadline) {
			return fmt.Errorf("sampling ferry: %v", s.err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// mark starts the next phase and returns when, in sampler seconds.
func (s *sampler) mark() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.phase == "rest-before" {
		s.phase = "traffic"
	} else {
		s.phase = "rest-after"
	}
	return time.Since(s.start).Seconds()
}

// waitRest waits until ferry's descriptors and goroutines are back within
// the slack of the counts at rest before traffic, or cfg.restWait passed,
// and returns the last sample.
func (s *sampler) waitRest(rest0 sample, cfg *config) sample {
	deadline := time.Now().Add(cfg.restWait)
	n := s.count()
	for {
		time.Sleep(cfg.sampleEvery / 2)
		if s.count() <= n {
			continue // at least one sample after traffic
		}
		l := s.last()
		if (l.nonPipe() <= rest0.nonPipe()+cfg.fdSlack && l.goroutines <= rest0.goroutines+cfg.goroutineSlack) || time.Now().After(deadline) || s.f.exited() {
			return l
		}
	}
}

// nonPipe is the descriptor count without pipes.
func (s sample) nonPipe() int { return s.fds - s.pipes }

// results is everything the soak saw.
type results struct {
	pid                      int
	origin                   string
	rest0, rest1             sample
	trafficStart, trafficEnd float64
	samples                  []sample
	sampleErr                error
	ferryDied                bool
	exitErr                  error
	ferryLog                 string
	traffic                  *traffic
	reloads                  reloadCount

	fdQ2, fdQ4     float64 // mean open descriptors, 2nd and last quarter of traffic
	rssQ2, rssQ4   int64   // peak RSS, same quarters
	peak           sample  // maxima over the traffic
	quartersJudged bool
	bounds         []string // each bound with its figures and pass/fail
	verdicts       []string // the failures
}

func (r *results) judge(cfg *config) {
	tr := r.traffic
	fail := func(format string, a ...any) { r.verdicts = append(r.verdicts, fmt.Sprintf(format, a...)) }
	if n := tr.ferryErrors.Load(); n > 0 {
		fail("ferry made %d errors (errors.txt)", n)
	}
	if r.ferryDied {
		fail("ferry exited during the soak: %v", r.exitErr)
	} else if r.exitErr != nil {
		fail("ferry did not exit cleanly on SIGTERM: %v", r.exitErr)
	}
	if r.sampleErr != nil {
		fail("sampling ferry failed: %v", r.sampleErr)
	}
	if strings.Contains(r.ferryLog, "panic") {
		fail("ferry's log mentions a panic (ferry.log)")
	}
	if rc := r.reloads; rc.written > 0 {
		switch {
		case rc.err != nil:
			fail("-reload-every: %v", rc.err)
		case rc.rejected > 0:
			fail("ferry rejected %d of the config changes (ferry.log)", rc.rejected)
		case !rc.lastInForce:
			fail("ferry did not apply the last config change (generation %d) within 10 s of the traffic's end", rc.written)
		}
	}

	for _, s := range r.samples {
		if s.phase != "traffic" {
			continue
		}
		r.peak.goroutines = max(r.peak.goroutines, s.goroutines)
		r.peak.threads = max(r.peak.threads, s.threads)
		r.peak.fds = max(r.peak.fds, s.fds)
		r.peak.rss = max(r.peak.rss, s.rss)
	}

	check := func(ok bool, format string, a ...any) {
		line := fmt.Sprintf(format, a...)
		if ok {
			r.bounds = append(r.bounds, "ok    "+line)
		} else {
			r.bounds = append(r.bounds, "FAIL  "+line)
			fail("%s", line)
		}
	}
	check(r.rest1.nonPipe() <= r.rest0.nonPipe()+cfg.fdSlack, "descriptors other than pipes at rest: %d before traffic, %d after (bound +%d; %d TCP CLOSE-WAIT after)",
		r.rest0.nonPipe(), r.rest1.nonPipe(), cfg.fdSlack, r.rest1.closeWait)
	check(r.rest1.pipes <= 2*cfg.concurrency, "pipe descriptors at rest: %d (splice pool, closed by the runtime at GC; bound 2 per caller = %d)", r.rest1.pipes, 2*cfg.concurrency)
	if r.rest0.goroutines >= 0 && r.rest1.goroutines >= 0 {
		check(r.rest1.goroutines <= r.rest0.goroutines+cfg.goroutineSlack, "goroutines at rest: %d before traffic, %d after (bound +%d)", r.rest0.goroutines, r.rest1.goroutines, cfg.goroutineSlack)
	} else {
		check(false, "goroutines at rest: /metrics unreadable (%d before, %d after)", r.rest0.goroutines, r.rest1.goroutines)
	}

	d := r.trafficEnd - r.trafficStart
	var q2, q4 []sample
	for _, s := range r.samples {
		switch {
		case s.phase != "traffic":
		case s.t >= r.trafficStart+d/4 && s.t < r.trafficStart+d/2:
			q2 = append(q2, s)
		case s.t >= r.trafficStart+3*d/4:
			q4 = append(q4, s)
		}
	}
	if len(q2) < 2 || len(q4) < 2 {
		r.bounds = append(r.bounds, fmt.Sprintf("skip  growth under load: too few samples in the quarters (%d, %d); run longer or sample more often", len(q2), len(q4)))
		return
	}
	r.quartersJudged = true
	mean := func(ss []sample) float64 {
		t := 0
		for _, s := range ss {
			t += s.fds
		}
		return float64(t) / float64(len(ss))
	}
	peak := func(ss []sample) int64 {
		var m int64
		for _, s := range ss {
			m = max(m, s.rss)
		}
		return m
	}
	r.fdQ2, r.fdQ4 = mean(q2), mean(q4)
	r.rssQ2, r.rssQ4 = peak(q2), peak(q4)
	fdBound := max(32, 0.1*r.fdQ2)
	check(r.fdQ4 <= r.fdQ2+fdBound, "open descriptors under load: mean %.1f in the second quarter, %.1f in the last (bound +%.0f)", r.fdQ2, r.fdQ4, fdBound)
	check(r.rssQ4 <= r.rssQ2+cfg.rssSlack, "RSS under load: peak %s in the second quarter, %s in the last (bound +%s)", mibs(r.rssQ2), mibs(r.rssQ4), mibs(cfg.rssSlack))
}

func mibs(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func (r *results) summary(cfg *config) string {
	var b strings.Builder
	tr := r.traffic
	d := r.trafficEnd - r.trafficStart
	fmt.Fprintf(&b, "ferry soak, %s\n", time.Now().Format(time.RFC3339))
	fmt.Fprintf(&b, "traffic: %.0fs (asked %v), %d callers, mix %s, bodies up to %d bytes, h2c share %.2f\n", d, cfg.duration, cfg.concurrency, cfg.mixText, cfg.maxBody, cfg.h2cShare)
	fmt.Fprintf(&b, "exchanges: %d (%.0f/s); ferry-made errors: %d; origin-made answers (its 404/429/500 and broken bodies, relayed as sent): %d\n",
		tr.requests.Load(), float64(tr.requests.Load())/max(d, 1e-9), tr.ferryErrors.Load(), tr.originMade.Load())
	fmt.Fprintf(&b, "\n%-13s %10s %10s %12s %13s %12s %12s\n", "kind", "exchanges", "ok", "origin-made", "ferry errors", "MiB down", "MiB up")
	var down, up int64
	for _, k := range allKinds {
		ks := tr.byKind[k]
		if ks.requests.Load() == 0 {
			continue
		}
		down += ks.bytesDown.Load()
		up += ks.bytesUp.Load()
		fmt.Fprintf(&b, "%-13s %10d %10d %12d %13d %12.1f %12.1f\n", k, ks.requests.Load(), ks.ok.Load(), ks.originMade.Load(), ks.ferryErrors.Load(),
			float64(ks.bytesDown.Load())/(1<<20), float64(ks.bytesUp.Load())/(1<<20))
	}
	if rc := r.reloads; rc.written > 0 {
		fmt.Fprintf(&b, "config changes: %d written (every %v, %d of them with a SIGHUP); ferry applied %d reloads, rejected %d\n", rc.written, cfg.reloadEvery, rc.sighups, rc.applied, rc.rejected)
	}
	fmt.Fprintf(&b, "verified bytes: %.2f GiB down, %.2f GiB up (%.0f MiB/s)\n", float64(down)/(1<<30), float64(up)/(1<<30), float64(down+up)/(1<<20)/max(d, 1e-9))
	cpu := 0.0
	if n := len(r.samples); n > 0 {
		cpu = r.samples[n-1].cpu - r.rest0.cpu
	}
	fmt.Fprintf(&b, "\nferry (pid %d):      %10s %8s %6s %10s\n", r.pid, "goroutines", "threads", "fds", "RSS")
	row := func(name string, s sample) {
		fmt.Fprintf(&b, "  %-19s %10d %8d %6d %10s\n", name, s.goroutines, s.threads, s.fds, mibs(s.rss))
	}
	row("at rest, before", r.rest0)
	row("peak under traffic", r.peak)
	row("at rest, after", r.rest1)
	for _, x := range []struct {
		name string
		s    sample
	}{{"before", r.rest0}, {"after", r.rest1}} {
		fmt.Fprintf(&b, "  descriptors at rest %s: %d TCP established, %d TCP CLOSE-WAIT, %d listening, %d other sockets, %d pipes, %d other\n",
			x.name, x.s.established, x.s.closeWait, x.s.listening, x.s.otherSockets, x.s.pipes, x.s.others)
	}
	if r.quartersJudged {
		fmt.Fprintf(&b, "  second quarter: mean fds %.1f, peak RSS %s; last quarter: mean fds %.1f, peak RSS %s\n", r.fdQ2, mibs(r.rssQ2), r.fdQ4, mibs(r.rssQ4))
	}
	fmt.Fprintf(&b, "  CPU: %.1f s over the soak (%.2f cores under traffic)\n", cpu, cpu/max(d, 1e-9))
	fmt.Fprintf(&b, "\nbounds:\n")
	for _, l := range r.bounds {
		fmt.Fprintf(&b, "  %s\n", l)
	}
	if len(r.verdicts) == 0 {
		fmt.Fprintf(&b, "\nPASS: ferry made no error and grew within bounds\n")
	} else {
		fmt.Fprintf(&b, "\nFAIL:\n")
		for _, v := range r.verdicts {
			fmt.Fprintf(&b, "  - %s\n", v)
		}
	}
	return b.String()
}

// write stores samples.csv, errors.txt, summary.txt and soak.png.
func (r *results) write(cfg *config, summary string) error {
	if err := os.WriteFile(filepath.Join(cfg.out, "summary.txt"), []byte(summary), 0o644); err != nil {
		return err
	}
	tr := r.traffic
	tr.mu.Lock()
	errs := strings.Join(tr.errors, "\n")
	tr.mu.Unlock()
	if errs != "" {
		errs += "\n"
	}
	if n := tr.ferryErrors.Load(); n > maxErrorLines {
		errs += fmt.Sprintf("... and %d more\n", n-maxErrorLines)
	}
	if err := os.WriteFile(filepath.Join(cfg.out, "errors.txt"), []byte(errs), 0o644); err != nil {
		return err
	}
	if err := r.writeCSV(filepath.Join(cfg.out, "samples.csv")); err != nil {
		return err
	}
	return r.writePNG(filepath.Join(cfg.out, "soak.png"), cfg)
}

func (r *results) writeCSV(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	w.Write([]string{"elapsed_s", "phase", "exchanges", "ferry_errors", "origin_made", "goroutines", "threads", "fds",
		"tcp_established", "tcp_close_wait", "tcp_listen", "other_sockets", "pipes", "other_fds", "rss_bytes", "cpu_s"})
	for _, s := range r.samples {
		w.Write([]string{
			strconv.FormatFloat(s.t, 'f', 3, 64), s.phase,
			strconv.FormatInt(s.requests, 10), strconv.FormatInt(s.ferryErrors, 10), strconv.FormatInt(s.originMade, 10),
			strconv.Itoa(s.goroutines), strconv.Itoa(s.threads), strconv.Itoa(s.fds),
			strconv.Itoa(s.established), strconv.Itoa(s.closeWait), strconv.Itoa(s.listening), strconv.Itoa(s.otherSockets),
			strconv.Itoa(s.pipes), strconv.Itoa(s.others),
			strconv.FormatInt(s.rss, 10), strconv.FormatFloat(s.cpu, 'f', 2, 64),
		})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (r *results) writePNG(path string, cfg *config) error {
	var xs, rate, gor, thr, fds, rss, cpu, ferrs []float64
	for i, s := range r.samples {
		xs = append(xs, s.t)
		gor = append(gor, float64(max(s.goroutines, 0)))
		thr = append(thr, float64(s.threads))
		fds = append(fds, float64(s.fds))
		rss = append(rss, float64(s.rss)/(1<<20))
		ferrs = append(ferrs, float64(s.ferryErrors))
		if i == 0 {
			rate = append(rate, 0)
			cpu = append(cpu, 0)
			continue
		}
		p := r.samples[i-1]
		dt := max(s.t-p.t, 1e-9)
		rate = append(rate, float64(s.requests-p.requests)/dt)
		cpu = append(cpu, (s.cpu-p.cpu)/dt*100)
	}
	title := fmt.Sprintf("ferry soak: %d exchanges, %d made by ferry failed", r.traffic.requests.Load(), r.traffic.ferryErrors.Load())
	detail := fmt.Sprintf("%d callers, %.0fs of traffic between the dashed lines, bodies up to %s, h2c share %.2f. x: seconds since sampling started",
		cfg.concurrency, r.trafficEnd-r.trafficStart, mibs(cfg.maxBody), cfg.h2cShare)
	panels := []panel{
		{title: "exchanges per second", xs: xs, ys: rate, color: color.RGBA{30, 100, 200, 255}},
		{title: "ferry-made errors (cumulative)", xs: xs, ys: ferrs, color: color.RGBA{200, 30, 30, 255}},
		{title: "goroutines", xs: xs, ys: gor, color: color.RGBA{20, 140, 60, 255}},
		{title: "OS threads", xs: xs, ys: thr, color: color.RGBA{120, 60, 160, 255}},
		{title: "open file descriptors", xs: xs, ys: fds, color: color.RGBA{200, 120, 20, 255}},
		{title: "RSS (MiB)", xs: xs, ys: rss, color: color.RGBA{160, 40, 100, 255}},
		{title: "CPU (% of one core)", xs: xs, ys: cpu, color: color.RGBA{60, 60, 60, 255}},
	}
	return writePlot(path, title, detail, panels, []float64{r.trafficStart, r.trafficEnd})
}
