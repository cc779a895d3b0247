// Command ferrybench measures ferry side by side with the proxies users
// would pick instead — a stdlib httputil.ReverseProxy, an L4 splice relay,
// nginx and HAProxy — in one run on one machine, and writes a Markdown
// table and PNG plots.
//
//	ferrybench run --ferry BIN [--quick] [flags]   the whole benchmark
//	ferrybench stdproxy-otel --listen ADDR --upstream ADDR --otlp URL
//
// The origin, the stdlib proxy and the L4 relay run from benchnode, a
// binary without the harness's dependencies (found beside this one, or
// --node).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: ferrybench run|stdproxy-otel [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = cmdRun(os.Args[2:])
	case "stdproxy-otel":
		fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
		listen := fs.String("listen", "127.0.0.1:0", "listen address")
		upstream := fs.String("upstream", "", "upstream host:port")
		otlp := fs.String("otlp", "", "OTLP/HTTP base URL every span is exported to")
		_ = fs.Parse(os.Args[2:])
		err = serveStdProxyOTel(*listen, *upstream, *otlp)
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "ferrybench: %v\n", err)
		os.Exit(1)
	}
}

// config is every knob of a run.
type config struct {
	ferryBin, nodeBin, nginxBin, haproxyBin, wrkBin string
	out                                             string
	proxies                                         []string
	quick, tracing                                  bool
	phases                                          map[string]bool // of allPhases
	commandLine, invocation, ferryRev               string

	rounds         int
	dlSize, ulSize int64
	seqCount       int
	seqSize        int64
	concCount      int
	concSize       int64
	smallSize      int64
	wrkConns       []int
	wrkThreads     int
	wrkDuration    time.Duration
	wrkRounds      int
	latRate        int
	latDuration    time.Duration
	latRounds      int
	traceDuration  time.Duration
	traceRounds    int
	traceConns     int
	uploadConns    int
	idleSettle     time.Duration
	sampleEvery    time.Duration
}

// sizeFlag parses 1024, 100MiB, 1GiB, 64KiB.
type sizeFlag struct{ v *int64 }

func (s sizeFlag) String() string {
	if s.v == nil {
		return ""
	}
	return humanBytes(*s.v)
}

func (s sizeFlag) Set(v string) error {
	n, err := parseSize(v)
	if err != nil {
		return err
	}
	*s.v = n
	return nil
}

func parseSize(v string) (int64, error) {
	mult := int64(1)
	t := strings.TrimSpace(v)
	for _, u := range []struct {
		suf string
		m   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(t, u.suf) {
			mult, t = u.m, strings.TrimSuffix(t, u.suf)
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(t), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("invalid size %q: want bytes or a number with KiB, MiB or GiB", v)
	}
	return n * mult, nil
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

func cmdRun(args []string) error {
	c := &config{}
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.StringVar(&c.ferryBin, "ferry", "", "ferry binary to measure (required)")
	fs.StringVar(&c.nodeBin, "node", "", "benchnode binary: origin, stdlib proxy, L4 relay (default: benchnode beside ferrybench)")
	fs.StringVar(&c.nginxBin, "nginx", "nginx", "nginx binary")
	fs.StringVar(&c.haproxyBin, "haproxy", "haproxy", "haproxy binary")
	fs.StringVar(&c.wrkBin, "wrk", "wrk", "wrk binary")
	fs.StringVar(&c.out, "out", "", "results directory (default results/<timestamp>)")
	proxies := fs.String("proxies", strings.Join(allProxies, ","), "proxies to measure, comma-separated, from "+strings.Join(allProxies, ","))
	fs.StringVar(&c.ferryRev, "ferry-rev", "", "revision of the ferry binary, shown in the report (bench/run.sh passes git's)")
	fs.StringVar(&c.invocation, "invocation", "", "the command that started this run (bench/run.sh passes its own), shown in the report")
	fs.BoolVar(&c.quick, "quick", false, "smaller sizes and shorter runs (flags given explicitly still win)")
	fs.BoolVar(&c.tracing, "tracing", true, "measure ferry with tracing on (needs ferry in --proxies)")
	phases := fs.String("phases", strings.Join(allPhases, ","), "measurements to run, comma-separated, from "+strings.Join(allPhases, ",")+" (tracing also needs --tracing)")
	fs.IntVar(&c.rounds, "rounds", 5, "interleaved rounds of the bulk download/upload measurement")
	c.dlSize, c.ulSize = 1<<30, 1<<30
	fs.Var(sizeFlag{&c.dlSize}, "download-size", "bulk download size per round")
	fs.Var(sizeFlag{&c.ulSize}, "upload-size", "bulk upload size per round")
	fs.IntVar(&c.seqCount, "seq-count", 20, "sequential downloads for the RSS growth measurement")
	c.seqSize = 100 << 20
	fs.Var(sizeFlag{&c.seqSize}, "seq-size", "size of each sequential download")
	fs.IntVar(&c.concCount, "conc-count", 64, "concurrent downloads for the peak RSS measurement")
	c.concSize = 256 << 20
	fs.Var(sizeFlag{&c.concSize}, "conc-size", "size of each concurrent download")
	c.smallSize = 1 << 10
	fs.Var(sizeFlag{&c.smallSize}, "small-size", "body size of the small-request and latency measurements")
	conns := fs.String("wrk-conns", "32,256", "wrk connection counts, comma-separated")
	fs.IntVar(&c.wrkThreads, "wrk-threads", 2, "wrk threads")
	fs.DurationVar(&c.wrkDuration, "wrk-duration", 10*time.Second, "duration of one wrk run")
	fs.IntVar(&c.wrkRounds, "wrk-rounds", 3, "interleaved rounds of wrk runs")
	fs.IntVar(&c.latRate, "lat-rate", 2000, "constant request rate of the latency measurement (req/s)")
	fs.DurationVar(&c.latDuration, "lat-duration", 6*time.Second, "duration of one constant-rate attack")
	fs.IntVar(&c.latRounds, "lat-rounds", 5, "interleaved rounds of the latency measurement")
	fs.DurationVar(&c.traceDuration, "trace-duration", 10*time.Second, "duration of one wrk run of the tracing on/off comparison")
	fs.IntVar(&c.traceRounds, "trace-rounds", 3, "interleaved rounds of the tracing on/off comparison")
	fs.IntVar(&c.traceConns, "trace-conns", 32, "wrk connections of the tracing on/off comparison")
	fs.IntVar(&c.uploadConns, "upload-conns", 32, "wrk connections of the small-upload measurement (POSTs of --small-size bodies; as many runs and rounds as the small requests)")
	fs.DurationVar(&c.idleSettle, "idle-settle", 3*time.Second, "wait before reading idle RSS")
	fs.DurationVar(&c.sampleEvery, "sample-every", 50*time.Millisecond, "RSS sampling interval")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if c.quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		quick := map[string]string{
			"rounds": "2", "download-size": "256MiB", "upload-size": "256MiB",
			"seq-size": "32MiB", "conc-size": "16MiB",
			"wrk-duration": "3s", "wrk-rounds": "1",
			"lat-duration": "3s", "lat-rounds": "2",
			"trace-duration": "3s", "trace-rounds": "1", "idle-settle": "2s",
		}
		for k, v := range quick {
			if !set[k] {
				if err := fs.Set(k, v); err != nil {
					return fmt.Errorf("--quick %s=%s: %w", k, v, err)
				}
			}
		}
	}
	c.commandLine = shellJoin(append([]string{"ferrybench", "run"}, withoutFlag(args, "invocation")...))
	if c.ferryBin == "" {
		return fmt.Errorf("--ferry: the ferry binary is required")
	}
	for _, p := range strings.Split(*proxies, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		known := false
		for _, k := range allProxies {
			known = known || k == p
		}
		if !known {
			return fmt.Errorf("--proxies: unknown proxy %q (want %s)", p, strings.Join(allProxies, ","))
		}
		c.proxies = append(c.proxies, p)
	}
	if len(c.proxies) == 0 {
		return fmt.Errorf("--proxies: empty")
	}
	c.phases = map[string]bool{}
	for _, ph := range strings.Split(*phases, ",") {
		ph = strings.TrimSpace(ph)
		if ph == "" {
			continue
		}
		if !slices.Contains(allPhases, ph) {
			return fmt.Errorf("--phases: unknown phase %q (want %s)", ph, strings.Join(allPhases, ","))
		}
		c.phases[ph] = true
	}
	if len(c.phases) == 0 {
		return fmt.Errorf("--phases: empty")
	}
	c.tracing = c.tracing && contains(c.proxies, pFerry) && c.phases[phTracing]
	for _, s := range strings.Split(*conns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < c.wrkThreads {
			return fmt.Errorf("--wrk-conns: %q is not a count >= --wrk-threads", s)
		}
		c.wrkConns = append(c.wrkConns, n)
	}
	if c.uploadConns < c.wrkThreads {
		return fmt.Errorf("--upload-conns: %d is not a count >= --wrk-threads", c.uploadConns)
	}
	if c.rounds < 1 || c.wrkRounds < 1 || c.latRounds < 1 || c.traceRounds < 1 || c.seqCount < 2 || c.concCount < 1 {
		return fmt.Errorf("--rounds, --wrk-rounds, --lat-rounds, --trace-rounds, --conc-count must be >= 1 and --seq-count >= 2")
	}
	if c.nodeBin == "" {
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("--node: %w", err)
		}
		c.nodeBin = filepath.Join(filepath.Dir(self), "benchnode")
	}
	for name, bin := range map[string]*string{"ferry": &c.ferryBin, "node": &c.nodeBin, "nginx": &c.nginxBin, "haproxy": &c.haproxyBin, "wrk": &c.wrkBin} {
		if name == "nginx" && !contains(c.proxies, pNginx) || name == "haproxy" && !contains(c.proxies, pHAProxy) {
			continue
		}
		p, err := exec.LookPath(*bin)
		if err != nil {
			return fmt.Errorf("--%s: %w (bench/run.sh installs nginx, haproxy and wrk)", name, err)
		}
		*bin, _ = filepath.Abs(p)
	}
	if c.out == "" {
		c.out = filepath.Join("results", time.Now().Format("20060102-150405"))
	}
	if err := os.MkdirAll(c.out, 0o755); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return runBench(ctx, c)
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// withoutFlag drops -name/--name and its value from args.
func withoutFlag(args []string, name string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		a := strings.TrimLeft(args[i], "-")
		if a == name {
			i++
			continue
		}
		if strings.HasPrefix(a, name+"=") {
			continue
		}
		out = append(out, args[i])
	}
	return out
}

// shellJoin quotes the words that need it for a shell.
func shellJoin(words []string) string {
	out := make([]string, len(words))
	for i, w := range words {
		if w == "" || strings.ContainsAny(w, " \t'\"$`\\*?[]{}();&|<>!#~") {
			w = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
		}
		out[i] = w
	}
	return strings.Join(out, " ")
}
