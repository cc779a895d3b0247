package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
)

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func medOf[T any](xs []T, f func(T) float64) float64 {
	v := make([]float64, len(xs))
	for i, x := range xs {
		v[i] = f(x)
	}
	return median(v)
}

// errCell is the errors column of a wrk table: the failed requests of all
// rounds, marked when there are any.
func errCell(ws []wrkRun) string {
	var errs, reqs int64
	for _, w := range ws {
		errs += w.Errors
		reqs += w.Requests
	}
	if errs == 0 {
		return "0"
	}
	return fmt.Sprintf("**%d (%.2g%% of %d)**", errs, 100*float64(errs)/float64(max(reqs, 1)), reqs)
}

func ms(d float64) string { return fmt.Sprintf("%.3f", d/1e6) } // ns → ms
func mb(n float64) string { return fmt.Sprintf("%.1f", n/(1<<20)) }

// ratio formats a/b as "1.23×", or "–" when b is zero.
func ratio(a, b float64) string {
	if b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

type verdict struct {
	pass bool
	line string
}

func writeReport(cfg *config, r *results) error {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	mode := "full"
	if cfg.quick {
		mode = "quick"
	}
	p("# ferry side-by-side benchmark (%s mode)\n\n", mode)
	if cfg.invocation != "" {
		p("Command: `%s` (which ran `%s`)  \n", cfg.invocation, cfg.commandLine)
	} else {
		p("Command: `%s`  \n", cfg.commandLine)
	}
	p("Started %s, took %s. Load average (1/5/15 min) at start %s, at end %s.  \n", r.Start.Format(time.RFC3339), r.End.Sub(r.Start).Round(time.Second), r.LoadStart, r.LoadEnd)
	keys := make([]string, 0, len(r.Versions))
	for k := range r.Versions {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var vs []string
	for _, k := range keys {
		vs = append(vs, fmt.Sprintf("%s: %s", k, r.Versions[k]))
	}
	p("Versions: %s.\n\n", strings.Join(vs, "; "))
	p("Every proxy runs in its own process on its own loopback port, in front of the same origin process; the load generators (HTTP client, wrk, vegeta) run beside them on the same cores. " +
		"CPU is utime+stime of the proxy's processes from /proc/<pid>/stat (nginx: master and workers summed); RSS is VmRSS summed over the proxy's processes, peaks are VmHWM after resetting it (clear_refs) or the highest 50 ms sample, whichever is larger. " +
		"CPU times come in 10 ms ticks, so a figure per GiB is exact to 0.01 s divided by the GiB moved in one transfer. " +
		"Medians over interleaved rounds (the proxy order rotates every round); ratios are to ferry in the same run (ratio of medians).\n\n")

	ferry := pFerry
	hasFerry := contains(r.Order, ferry)

	// Bulk.
	dl, ul := humanBytes(cfg.dlSize), humanBytes(cfg.ulSize)
	p("## Bulk transfer: one %s download and one %s upload per proxy per round, %d rounds\n\n", dl, ul, cfg.rounds)
	p("| proxy | download CPU (s/GiB) | × ferry | download (MiB/s) | upload CPU (s/GiB) | × ferry | upload (MiB/s) | peak RSS during the transfers (MiB) | rounds completed |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	bm := func(n string, f func(bulkRound) float64) float64 { return medOf(r.Bulk[n], f) }
	dCPU := func(x bulkRound) float64 { return x.DownCPUPerGiB }
	uCPU := func(x bulkRound) float64 { return x.UpCPUPerGiB }
	for _, n := range r.Order {
		if len(r.Bulk[n]) == 0 {
			p("| %s | failed | | | | | | | 0 of %d |\n", n, cfg.rounds)
			continue
		}
		p("| %s | %.3f | %s | %.0f | %.3f | %s | %.0f | %s | %d of %d |\n", n,
			bm(n, dCPU), ratio(bm(n, dCPU), bm(ferry, dCPU)), bm(n, func(x bulkRound) float64 { return x.DownMiBps }),
			bm(n, uCPU), ratio(bm(n, uCPU), bm(ferry, uCPU)), bm(n, func(x bulkRound) float64 { return x.UpMiBps }),
			mb(bm(n, func(x bulkRound) float64 { return float64(x.PeakRSS) })), len(r.Bulk[n]), cfg.rounds)
	}

	// Memory.
	p("\n## Memory\n\n")
	p("Idle: %s after start-up, before any traffic; again %s after the last measurement. Growth: RSS after the last of %d sequential %s downloads (one keep-alive connection) minus RSS after the first. Peak: %d concurrent %s downloads.\n\n",
		cfg.idleSettle, cfg.idleSettle, cfg.seqCount, humanBytes(cfg.seqSize), cfg.concCount, humanBytes(cfg.concSize))
	p("| proxy | idle RSS (MiB) | RSS after download #1 (MiB) | after #%d (MiB) | growth #1→#%d (MiB) | peak RSS, %d×%s concurrent (MiB) | × ferry | concurrent CPU (s/GiB) | concurrent (MiB/s) | idle RSS after the run (MiB) |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
		cfg.seqCount, cfg.seqCount, cfg.concCount, humanBytes(cfg.concSize))
	growth := map[string]float64{}
	for _, n := range r.Order {
		seqCells := "failed | | "
		if s, ok := r.Seq[n]; ok {
			first, last := float64(s.After[0]), float64(s.After[len(s.After)-1])
			growth[n] = last - first
			seqCells = fmt.Sprintf("%s | %s | %+.2f", mb(first), mb(last), growth[n]/(1<<20))
		}
		concCells := "failed | | | "
		if c, ok := r.Conc[n]; ok {
			concCells = fmt.Sprintf("%s | %s | %.3f | %.0f", mb(float64(c.Peak)), ratio(float64(c.Peak), float64(r.Conc[ferry].Peak)), c.CPU, c.MiBps)
		}
		p("| %s | %s | %s | %s | %s |\n", n, mb(float64(r.IdleStart[n])), seqCells, concCells, mb(float64(r.IdleEnd[n])))
	}

	// Small requests.
	p("\n## Small requests: %s bodies, wrk -t%d, %s per run, %d rounds\n\n", humanBytes(cfg.smallSize), cfg.wrkThreads, cfg.wrkDuration, cfg.wrkRounds)
	p("Requests answered with an error count in wrk's req/s; a row with errors is marked.\n\n")
	p("Proxy CPU per request is split into user (the proxy's own work, utime) and kernel (stime, mostly the socket calls every proxy makes).\n\n")
	p("| proxy | connections | req/s | × ferry | p50 (ms) | p99 (ms) | proxy CPU per request (µs) | user / kernel (µs) | non-2xx + socket errors (all rounds) |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	wm := func(k wrkKey, f func(wrkRun) float64) float64 { return medOf(r.Small[k], f) }
	rps := func(w wrkRun) float64 { return w.RPS }
	p50 := func(w wrkRun) float64 { return float64(w.P50) }
	p99 := func(w wrkRun) float64 { return float64(w.P99) }
	cpr := func(w wrkRun) float64 { return w.CPUPerReqUs }
	upr := func(w wrkRun) float64 { return w.UserPerReqUs }
	spr := func(w wrkRun) float64 { return w.SysPerReqUs }
	errsOf := func(ws []wrkRun) (errs, reqs int64) {
		for _, w := range ws {
			errs += w.Errors
			reqs += w.Requests
		}
		return
	}
	for _, c := range cfg.wrkConns {
		for _, n := range r.Order {
			k := wrkKey{n, c}
			if len(r.Small[k]) == 0 {
				p("| %s | %d | failed | | | | | | |\n", n, c)
				continue
			}
			p("| %s | %d | %.0f | %s | %s | %s | %.1f | %.1f / %.1f | %s |\n", n, c, wm(k, rps), ratio(wm(k, rps), wm(wrkKey{ferry, c}, rps)),
				ms(wm(k, p50)), ms(wm(k, p99)), wm(k, cpr), wm(k, upr), wm(k, spr), errCell(r.Small[k]))
		}
	}

	// Small uploads, sent with a Content-Length and chunked.
	postsTable := func(runs map[string][]wrkRun, skip []string, title, intro string) {
		p("\n## %s, wrk -t%d -c%d, %s per run, %d rounds\n\n", title, cfg.wrkThreads, cfg.uploadConns, cfg.wrkDuration, cfg.wrkRounds)
		p("%s CPU per request as for the small requests.\n\n", intro)
		p("| proxy | req/s | × ferry | p50 (ms) | p99 (ms) | proxy CPU per request (µs) | user / kernel (µs) | non-2xx + socket errors (all rounds) |\n|---|--:|--:|--:|--:|--:|--:|--:|\n")
		m := func(n string, f func(wrkRun) float64) float64 { return medOf(runs[n], f) }
		for _, n := range r.Order {
			if slices.Contains(skip, n) {
				continue
			}
			if len(runs[n]) == 0 {
				p("| %s | failed | | | | | | |\n", n)
				continue
			}
			p("| %s | %.0f | %s | %s | %s | %.1f | %.1f / %.1f | %s |\n", n, m(n, rps), ratio(m(n, rps), m(ferry, rps)),
				ms(m(n, p50)), ms(m(n, p99)), m(n, cpr), m(n, upr), m(n, spr), errCell(runs[n]))
		}
	}
	if len(r.Uploads) > 0 {
		postsTable(r.Uploads, nil, fmt.Sprintf("Small uploads: %s POST bodies (answered with the byte count read)", humanBytes(cfg.smallSize)),
			"A body that comes with its head, as most API calls send it.")
	}
	if len(r.Chunked) > 0 {
		postsTable(r.Chunked, []string{pFloor, pEpoll}, fmt.Sprintf("Small chunked uploads: %s POST bodies sent chunked (one chunk and the last, with the head)", humanBytes(cfg.smallSize)),
			"A body of a length the client did not know in advance (a stream, `curl -T -`). The floors frame by Content-Length alone and are not measured.")
	}

	// Latency.
	p("\n## Added latency at a constant %d req/s (vegeta library, %s bodies, %s per attack, %d rounds)\n\n", cfg.latRate, humanBytes(cfg.smallSize), cfg.latDuration, cfg.latRounds)
	p("Every attack through a proxy directly follows an attack on the origin without a proxy; added = the proxy's percentile minus that direct attack's; medians over rounds (the direct row: over all its attacks). A round with more than 1%% failed requests counts as failed.\n\n")
	p("| target | p50 (ms) | p90 (ms) | p99 (ms) | added p50 (ms) | added p90 (ms) | added p99 (ms) | added p50 × ferry | rounds completed | failed requests (all rounds) |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	qi := map[float64]int{}
	for i, q := range latQuantiles {
		qi[q] = i
	}
	// added reports the median over rounds of (target − direct) and
	// whether any round had both.
	added := func(n string, q float64) (float64, bool) {
		var v []float64
		for i, lr := range r.Lat[n] {
			d := r.LatDirect[n]
			if i < len(d) && lr.Q != nil && d[i].Q != nil {
				v = append(v, float64(lr.Q[qi[q]]-d[i].Q[qi[q]]))
			}
		}
		return median(v), len(v) > 0
	}
	abs := func(n string, q float64) float64 {
		var v []float64
		for _, lr := range r.Lat[n] {
			if lr.Q != nil {
				v = append(v, float64(lr.Q[qi[q]]))
			}
		}
		return median(v)
	}
	for _, n := range append([]string{pDirect}, r.Order...) {
		errs, done := 0, 0
		for _, l := range r.Lat[n] {
			errs += l.Errors
			if l.Q != nil {
				done++
			}
		}
		label := n
		if n == pDirect {
			label = "direct (no proxy)"
		}
		if done == 0 {
			p("| %s | failed | | | | | | | 0 of %d | %d |\n", label, cfg.latRounds, errs)
			continue
		}
		if n == pDirect {
			p("| %s | %s | %s | %s | – | – | – | – | %d of %d attacks | %d |\n", label, ms(abs(n, .5)), ms(abs(n, .9)), ms(abs(n, .99)), done, len(r.Lat[n]), errs)
			continue
		}
		a50, _ := added(n, .5)
		a90, _ := added(n, .9)
		a99, _ := added(n, .99)
		f50, _ := added(ferry, .5)
		p("| %s | %s | %s | %s | %s | %s | %s | %s | %d of %d | %d |\n", label, ms(abs(n, .5)), ms(abs(n, .9)), ms(abs(n, .99)),
			ms(a50), ms(a90), ms(a99), ratio(a50, f50), done, cfg.latRounds, errs)
	}

	// Tracing.
	var traceRatio float64
	traced := cfg.tracing && len(r.Trace[pFerry]) > 0 && len(r.Trace[pTraced]) > 0
	if cfg.tracing {
		p("\n## Tracing: 100%% sampled, exported over OTLP/HTTP to a local receiver that discards, vs the same proxy without tracing (wrk -c%d, %s per run, %d rounds)\n\n", cfg.traceConns, cfg.traceDuration, cfg.traceRounds)
		p("| proxy | req/s | p50 (ms) | p99 (ms) | proxy CPU per request (µs) | idle RSS (MiB) | non-2xx + socket errors (all rounds) |\n|---|--:|--:|--:|--:|--:|--:|\n")
		for _, n := range []string{pFerry, pTraced, pStd, pStdOTel} {
			ws := r.Trace[n]
			if len(ws) == 0 {
				if n == pFerry || n == pTraced {
					p("| %s | failed | | | | | |\n", n)
				}
				continue
			}
			errs, _ := errsOf(ws)
			p("| %s | %.0f | %s | %s | %.1f | %s | %d |\n", n, medOf(ws, rps), ms(medOf(ws, p50)), ms(medOf(ws, p99)), medOf(ws, cpr), mb(float64(r.IdleStart[n])), errs)
		}
		if traced {
			traceRatio = medOf(r.Trace[pTraced], rps) / medOf(r.Trace[pFerry], rps)
			p("\nTracing on keeps %.1f%% of ferry's req/s (costs %.1f%%).", 100*traceRatio, 100*(1-traceRatio))
		}
		if len(r.Trace[pStdOTel]) > 0 && len(r.Trace[pStd]) > 0 {
			so := medOf(r.Trace[pStdOTel], rps) / medOf(r.Trace[pStd], rps)
			p(" For scale, otelhttp around the stdlib proxy keeps %.1f%% of its req/s (costs %.1f%%).", 100*so, 100*(1-so))
		}
		p(" The receiver got %d export requests (%s MiB) in this phase.\n", r.OTLPRequests, mb(float64(r.OTLPBytes)))
	}

	// Failures.
	if len(r.Failures) > 0 {
		p("\n## Failures\n\nMeasurements a proxy failed; the run went on without them (its logs are in `logs/`).\n\n")
		seen := map[string]bool{}
		for _, n := range append(append([]string{pDirect}, r.Order...), pTraced, pStdOTel) {
			fs := r.Failures[n]
			if len(fs) == 0 || seen[n] {
				continue
			}
			seen[n] = true
			shown := fs
			if len(shown) > 5 {
				shown = shown[:5]
			}
			for _, f := range shown {
				p("- %s: %s\n", n, strings.ReplaceAll(f, "\n", " "))
			}
			if len(fs) > len(shown) {
				p("- %s: … and %d more\n", n, len(fs)-len(shown))
			}
		}
	}

	// Targets.
	if hasFerry {
		p("\n## Targets (issue 8, item 3), from this run\n\n")
		if cfg.quick {
			p("Quick mode: sizes and durations are smaller than the targets assume; the full mode (`bench/run.sh`) is the one to judge by.\n\n")
		}
		var vs []verdict
		add := func(pass bool, format string, a ...any) { vs = append(vs, verdict{pass, fmt.Sprintf(format, a...)}) }
		missing := func(what string) { add(false, "%s: not measured (see Failures)", what) }
		has := func(ns ...string) bool {
			for _, n := range ns {
				if len(r.Bulk[n]) == 0 {
					return false
				}
			}
			return true
		}
		if contains(r.Order, pL4) {
			if has(ferry, pL4) {
				f, l := bm(ferry, dCPU), bm(pL4, dCPU)
				add(f <= 1.2*l, "download CPU per GiB ≤ 1.2× the L4 relay: ferry %.3f s/GiB, L4 %.3f s/GiB, ratio %s", f, l, ratio(f, l))
				f, l = bm(ferry, uCPU), bm(pL4, uCPU)
				add(f <= 1.2*l, "upload CPU per GiB ≤ 1.2× the L4 relay: ferry %.3f s/GiB, L4 %.3f s/GiB, ratio %s", f, l, ratio(f, l))
			} else {
				missing("CPU per GiB ≤ 1.2× the L4 relay")
			}
		}
		if contains(r.Order, pNginx) && slices.Contains(cfg.wrkConns, 32) {
			kf, kn := wrkKey{ferry, 32}, wrkKey{pNginx, 32}
			if len(r.Small[kf]) > 0 && len(r.Small[kn]) > 0 {
				fe, _ := errsOf(r.Small[kf])
				note := ""
				if fe > 0 {
					note = fmt.Sprintf(" (ferry answered %d requests with errors)", fe)
				}
				add(wm(kf, rps) >= wm(kn, rps) && fe == 0, "small-request req/s at c=32 ≥ nginx's: ferry %.0f, nginx %.0f, ratio %s%s", wm(kf, rps), wm(kn, rps), ratio(wm(kf, rps), wm(kn, rps)), note)
				add(wm(kf, p99) <= wm(kn, p99) && fe == 0, "small-request p99 at c=32 no worse than nginx's: ferry %s ms, nginx %s ms%s", ms(wm(kf, p99)), ms(wm(kn, p99)), note)
			} else {
				missing("small-request req/s and p99 at c=32 vs nginx")
			}
		}
		f50, okf50 := added(ferry, .5)
		if contains(r.Order, pL4) {
			if l, ok := added(pL4, .5); ok && okf50 {
				add(f50 <= 1.2*l, "added p50 at %d req/s ≤ 1.2× the L4 relay's: ferry %s ms, L4 %s ms, ratio %s", cfg.latRate, ms(f50), ms(l), ratio(f50, l))
			} else {
				missing("added p50 ≤ 1.2× the L4 relay's")
			}
		}
		if contains(r.Order, pNginx) {
			f, okf := added(ferry, .9)
			if n, ok := added(pNginx, .9); ok && okf {
				add(f <= n, "added p90 at %d req/s ≤ nginx's: ferry %s ms, nginx %s ms", cfg.latRate, ms(f), ms(n))
			} else {
				missing("added p90 ≤ nginx's")
			}
		}
		if _, ok := r.Seq[ferry]; ok {
			add(growth[ferry] <= 1<<20, "RSS growth over %d sequential %s downloads ≤ 1 MiB: %+.2f MiB", cfg.seqCount, humanBytes(cfg.seqSize), growth[ferry]/(1<<20))
		} else {
			missing("RSS growth over the sequential downloads")
		}
		if c, ok := r.Conc[ferry]; ok {
			add(c.Peak <= 40<<20, "peak RSS with %d concurrent %s downloads ≤ 40 MiB: %s MiB", cfg.concCount, humanBytes(cfg.concSize), mb(float64(c.Peak)))
		} else {
			missing("peak RSS with the concurrent downloads")
		}
		add(r.IdleStart[ferry] <= 15<<20, "idle RSS ≤ 15 MiB: %s MiB", mb(float64(r.IdleStart[ferry])))
		if traced {
			add(traceRatio >= 0.85, "tracing on costs ≤ 15%% of req/s: costs %.1f%% (%.0f → %.0f req/s)", 100*(1-traceRatio), medOf(r.Trace[pFerry], rps), medOf(r.Trace[pTraced], rps))
		} else if cfg.tracing {
			missing("tracing on costs ≤ 15% of req/s")
		}
		for _, v := range vs {
			mark := "FAIL"
			if v.pass {
				mark = "PASS"
			}
			p("- **%s** %s\n", mark, v.line)
		}
	}
	p("\nPlots: `mem_sequential.png` (RSS during the sequential downloads), `mem_concurrent.png` (RSS during the concurrent downloads), `cpu_per_gib.png` (the bulk CPU medians), `latency.png` (latency percentiles at %d req/s, all rounds pooled).\n", cfg.latRate)
	if err := os.WriteFile(filepath.Join(cfg.out, "results.md"), []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write results.md: %w", err)
	}
	fmt.Println()
	fmt.Print(b.String())
	return nil
}
