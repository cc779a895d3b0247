// Command ferry is the ferry service-mesh sidecar.
//
//	ferry run --config FILE   run the sidecar
//	ferry demo                download a large file through ferry, no Consul needed
//	ferry version             print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
	"time"

	"go.opentelemetry.io/otel"

	"github.com/ferrymesh/ferry/internal/initlog"
	"github.com/ferrymesh/ferry/internal/linewriter"
	"github.com/ferrymesh/ferry/internal/shutdownbounds"
	"github.com/ferrymesh/ferry/internal/startsignal"
	"github.com/ferrymesh/ferry/sidecar"
	"github.com/ferrymesh/ferry/telemetry"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit codes.
const (
	exitOK     = 0
	exitFail   = 1
	exitConfig = 2
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitConfig
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stdout, stderr)
	case "webhook":
		return cmdWebhook(args[1:], stdout, stderr)
	}
	// What dependencies logged while they were initialised: run and
	// webhook write it in their JSON log; the other commands, whose
	// output is text, as text (without the time).
	initlog.Release(initTextHandler(stderr))
	switch args[0] {
	case "check":
		return cmdCheck(args[1:], stdout, stderr)
	case "demo":
		return cmdDemo(args[1:], stdout, stderr)
	case "inject":
		return cmdInject(args[1:], os.Stdin, stdout, stderr)
	case "version", "--version", "-v":
		if len(args) > 1 {
			fmt.Fprintf(stderr, "ferry version: unexpected argument %q\n", args[1])
			return exitConfig
		}
		fmt.Fprintln(stdout, "ferry", version)
		return exitOK
	case "help", "-h", "--help":
		usage(stdout)
		return exitOK
	default:
		fmt.Fprintf(stderr, "ferry: unknown command %q\n", args[0])
		usage(stderr)
		return exitConfig
	}
}

// initTextHandler writes slog records as text, without the time: the
// form of what ferry's text commands (check, inject, version) show of
// what dependencies logged during start-up.
func initTextHandler(w io.Writer) slog.Handler {
	return slog.NewTextHandler(w, &slog.HandlerOptions{ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) == 0 && a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}})
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  ferry run --config FILE   run the sidecar (or --config-env NAME: the config YAML in an environment variable)
  ferry check --config FILE check a config as ferry run loads it, serving nothing (or --config-env NAME)
  ferry demo [--size N]     serve a large file, download it through ferry, report throughput and memory
  ferry inject [-f FILE]    add the ferry sidecar to Kubernetes manifests (stdin to stdout)
  ferry webhook --tls-cert FILE --tls-key FILE [--listen ADDR]   the mutating admission webhook
  ferry version             print the version
`)
}

// configFlags adds --config and --config-env to the flag set of a
// subcommand that loads a config (run, check).
func configFlags(fs *flag.FlagSet) (path, env *string) {
	path = fs.String("config", "", "config file (YAML)")
	env = fs.String("config-env", "", "name of an environment variable holding the config YAML (instead of --config)")
	return path, env
}

// noArgs reports whether fs, the flags of a subcommand that loads a config,
// left no argument, and names the first one on stderr when not.
func noArgs(fs *flag.FlagSet, stderr io.Writer) bool {
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "ferry %s: unexpected argument %q (the config goes after --config)\n", fs.Name(), fs.Arg(0))
		return false
	}
	return true
}

// oneConfig reports whether exactly one of --config and --config-env was
// given, and says so on stderr when not.
func oneConfig(fs *flag.FlagSet, path, env string, stderr io.Writer) bool {
	if (path == "") == (env == "") {
		fmt.Fprintf(stderr, "ferry %s: give exactly one of --config FILE or --config-env NAME\n", fs.Name())
		return false
	}
	return true
}

// configFromEnv loads the config YAML held in the environment variable
// name (--config-env).
func configFromEnv(name string) (*sidecar.Config, error) {
	text, ok := os.LookupEnv(name)
	if !ok {
		return nil, fmt.Errorf("config: environment variable %s is not set", name)
	}
	cfg, err := sidecar.ParseConfig([]byte(text))
	if err != nil {
		return nil, fmt.Errorf("config from $%s:\n%w", name, err)
	}
	return cfg, nil
}

// flagSet is the flag set of a subcommand, whose usage starts with
// synopsis; it reports to stderr.
func flagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: "+synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses a subcommand's flags and reports whether it goes on,
// and if not, with which exit code. Asking for help (-h, -help, --help) is
// no error: the usage goes to stdout, exit 0. A bad flag is named on
// stderr before the usage, exit 2.
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) (code int, ok bool) {
	// The flag package calls Usage on help and on errors alike, on the
	// flag set's output: the usage is printed here instead, where it
	// belongs.
	usage := fs.Usage
	fs.Usage = func() {}
	// A flag given twice is an error rather than the last one silently
	// winning, unless it is meant to repeat (inject's -f).
	restore := map[*flag.Flag]flag.Value{}
	fs.VisitAll(func(f *flag.Flag) {
		if _, ok := f.Value.(interface{ repeatable() }); !ok {
			restore[f] = f.Value
			f.Value = &onceValue{Value: f.Value}
		}
	})
	err := fs.Parse(args)
	for f, v := range restore {
		f.Value = v
	}
	fs.Usage = usage
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(stdout)
		fs.Usage()
		return exitOK, false
	case err != nil:
		fs.Usage() // after the flag package's message
		return exitConfig, false
	}
	return exitOK, true
}

// onceValue is a flag's value that refuses a second Set.
type onceValue struct {
	flag.Value
	set bool
}

func (v *onceValue) Set(s string) error {
	if v.set {
		return errors.New("given more than once")
	}
	v.set = true
	return v.Value.Set(s)
}

// IsBoolFlag keeps a boolean flag usable without a value.
func (v *onceValue) IsBoolFlag() bool {
	b, ok := v.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// minConfigPoll is the shortest --config-poll above 0.
const minConfigPoll = 100 * time.Millisecond

// minConfigSettle is the shortest --config-settle.
const minConfigSettle = 10 * time.Millisecond

func cmdRun(args []string, stdout, stderr io.Writer) int {
	// SIGTERM, SIGINT and SIGHUP are caught from the process's start
	// (startsignal); what came since waits in sigs and hup. Run in-process
	// (tests), they are caught from here.
	sigs, hup, early := startsignal.Take()
	if !early {
		sigs, hup = make(chan os.Signal, 2), make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
		signal.Notify(hup, syscall.SIGHUP)
	}
	defer signal.Stop(sigs)
	defer signal.Stop(hup)
	// What dependencies logged while they were initialised goes first in
	// the JSON log, at the --log-level; should ferry exit before it knows
	// the level (a flag error), at info.
	defer initlog.Release(slog.NewJSONHandler(stderr, nil))
	// A write to a standard output or error whose reader went away (the
	// access log on stdout, ferry's log on stderr, read by a log shipper
	// that crashed) would kill ferry with SIGPIPE, Go's default for
	// descriptors 1 and 2, and every exchange through it. Ignored, the
	// write fails with EPIPE instead: the line is dropped and counted.
	signal.Ignore(syscall.SIGPIPE)
	fs := flagSet("run", "ferry run --config FILE | --config-env NAME [flags]", stderr)
	path, configEnv := configFlags(fs)
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	poll := fs.Duration("config-poll", 2*time.Second, "how often to check --config for changes and reload, at least 100ms (0: only on SIGHUP)")
	settle := fs.Duration("config-settle", sidecar.DefaultConfigSettle, "a changed --config applies only once two reads this far apart give the same bytes (not while it is being written), at least 10ms")
	if code, ok := parseFlags(fs, args, stdout); !ok {
		return code
	}
	if !noArgs(fs, stderr) {
		return exitConfig
	}
	if *poll < 0 {
		fmt.Fprintf(stderr, "ferry run: --config-poll: must not be negative, got %v (0 checks only on SIGHUP)\n", *poll)
		return exitConfig
	}
	if *poll > 0 && *poll < minConfigPoll {
		// "1ns" (a typo for 1s) would re-read the file in a busy loop.
		fmt.Fprintf(stderr, "ferry run: --config-poll: %v is below the minimum of %v (0 checks only on SIGHUP)\n", *poll, minConfigPoll)
		return exitConfig
	}
	if *settle < minConfigSettle {
		// 0 would apply a file read half-written.
		fmt.Fprintf(stderr, "ferry run: --config-settle: %v is below the minimum of %v (a change applies once two reads this far apart match)\n", *settle, minConfigSettle)
		return exitConfig
	}
	if !oneConfig(fs, *path, *configEnv, stderr) {
		return exitConfig
	}
	level, ok := parseLogLevel("run", *logLevel, stderr)
	if !ok {
		return exitConfig
	}
	initlog.Release(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	var cfg *sidecar.Config
	var loaded []byte // the config file's bytes, for the change watcher
	var err error
	if *path != "" {
		// A file written just before start-up is read once it settles
		// (two reads settle apart give the same bytes). The read itself
		// may wait without end: a FIFO (or /dev/stdin) until a writer
		// comes, a file another process holds a write lease on until the
		// lease breaks. A signal to stop ends either wait: the read goes
		// on in its own goroutine, abandoned.
		startLog := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
		stopped := make(chan struct{})
		wait := func(d time.Duration) bool {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-t.C:
				return true
			case <-stopped:
				return false
			}
		}
		type read struct {
			data []byte
			err  error
		}
		done := make(chan read, 1)
		go func() {
			data, err := sidecar.ReadConfigFile(*path, *settle, startLog, wait)
			done <- read{data, err}
		}()
		select {
		case r := <-done:
			loaded, err = r.data, r.err
		case sig := <-sigs:
			close(stopped)
			startLog.Info("signal received during start-up; exiting without serving", "signal", sig.String())
			return exitOK
		}
		if err == nil {
			if cfg, err = sidecar.ParseConfig(loaded); err != nil {
				err = fmt.Errorf("config %s:\n%w", *path, err)
			}
		}
	} else {
		cfg, err = configFromEnv(*configEnv)
	}
	if err != nil {
		fmt.Fprintf(stderr, "ferry: %v\n", err)
		return exitConfig
	}
	// Log lines go through a bounded buffer: a stderr nobody drains must
	// not block the requests that log (a proxy failure logs a line).
	logOut := linewriter.New(stderr, 1<<20)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownbounds.LogClose)
		defer cancel()
		_ = logOut.Close(ctx)
	}()
	log := slog.New(slog.NewJSONHandler(logOut, &slog.HandlerOptions{Level: level}))
	// A SIGTERM or SIGINT before ferry serves is a request to stop that
	// nothing needs to drain for: ferry exits 0 without listening or
	// registering. (A config error has been reported with exit 2 first.)
	startUpSignal := func() bool {
		select {
		case sig := <-sigs:
			log.Info("signal received during start-up; exiting without serving", "signal", sig.String())
			return true
		default:
			return false
		}
	}
	if startUpSignal() {
		return exitOK
	}
	gc := tuneGC()
	log.Debug("garbage collector", "adaptive_gogc", gc.adapt, "memory_limit_set", gc.memoryLimit)
	defer trimWhenIdle(trimInterval, readHeap, func() {
		free := readHeap().free
		// Two collections: what sits in a sync.Pool (buffers of idle
		// connections, parked) survives one.
		runtime.GC()
		debug.FreeOSMemory()
		log.Debug("idle: free heap memory returned to the system", "bytes", free)
	})()
	// Exporter errors (collector down) as rate-limited log lines, not a
	// line per batch.
	otel.SetErrorHandler(telemetry.ErrorHandler(log, time.Minute))
	sc, err := sidecar.New(cfg, sidecar.Options{Log: log, ConfigSettle: *settle})
	if err != nil {
		fmt.Fprintf(logOut, "ferry: %v\n", err) // after the lines logged before it
		return exitConfig
	}
	if startUpSignal() {
		sc.Shutdown(context.Background()) // never served: releases what New built
		return exitOK
	}
	// The first SIGTERM or SIGINT drains (one from here until Run starts
	// makes Run stop before serving); a second one ends the drain at once,
	// closing what is still in flight.
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	ran := make(chan struct{})
	defer close(ran)
	go func() {
		for n := 0; ; n++ {
			select {
			case <-ran:
				return
			case sig := <-sigs:
				if n == 0 {
					log.Info("signal received; draining", "signal", sig.String())
					stop()
				} else {
					log.Warn("second signal received; ending the drain now and closing the exchanges still in flight", "signal", sig.String())
					sc.EndDrain()
				}
			}
		}
	}()
	// A config file that is a pipe (a FIFO, bash's <(...)) was read to its
	// writer's end at start: read again it is empty, or waits for another
	// writer. It is neither watched nor re-read on SIGHUP.
	pipe := false
	if *path != "" {
		if fi, err := os.Stat(*path); err == nil && !fi.Mode().IsRegular() {
			pipe = true
			log.Info("the config comes from a pipe, read once: it is not watched, nor re-read on SIGHUP (restart ferry to change it)", "file", *path)
		}
	}
	// SIGHUP or a changed file: apply the new config, or log why not and
	// keep the one in force. SIGHUP also has an access log file that
	// logrotate moved opened again. SIGHUP is always caught (one during
	// start-up is acted on here): its default action would kill ferry
	// without a drain.
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				sc.ReopenAccessLog()
				if *path == "" {
					// logrotate sends SIGHUP on every rotation: that is
					// routine, not a warning.
					log.Info("SIGHUP: an access log file that moved is reopened; the config comes from an environment variable, which a running ferry cannot re-read (restart ferry to change it)", "env", *configEnv)
				} else if pipe {
					log.Info("SIGHUP: an access log file that moved is reopened; the config comes from a pipe, read once at start, which a running ferry cannot re-read (restart ferry to change it)", "file", *path)
				} else if err := sc.ReloadFile(ctx, *path); errors.Is(err, sidecar.ErrReloadAbandoned) {
					// The drain began while it waited: no verdict on the file.
					log.Info("reload on SIGHUP not applied: ferry is stopping", "file", *path, "reason", err.Error())
				} else if err != nil {
					log.Error("reload on SIGHUP rejected; keeping the config in force", "file", *path, "error", err.Error())
				}
			}
		}
	}()
	if *path != "" && !pipe && *poll > 0 {
		go sc.WatchConfigFile(ctx, *path, *poll, loaded)
	}
	if err := sc.Run(ctx); err != nil {
		log.Error("ferry stopped", "error", err.Error())
		var ce sidecar.ConfigErrors
		if errors.As(err, &ce) {
			return exitConfig
		}
		return exitFail
	}
	return exitOK
}

// parseLogLevel reads a --log-level: debug, info, warn or error, in any
// case (slog's spelling, whose offsets such as "warn+2" it also takes);
// anything else is refused on stderr naming the flag.
func parseLogLevel(cmd, text string, stderr io.Writer) (slog.Level, bool) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(text)); err != nil {
		fmt.Fprintf(stderr, "ferry %s: --log-level %q: want debug, info, warn or error\n", cmd, text)
		return 0, false
	}
	return level, true
}
