package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os/signal"
	"syscall"
	"time"

	"github.com/ferrymesh/ferry/deploy/webhook"
	"github.com/ferrymesh/ferry/internal/initlog"
)

// cmdWebhook serves the mutating admission webhook over TLS until SIGTERM
// or SIGINT.
func cmdWebhook(args []string, stdout, stderr io.Writer) int {
	// Should it exit before its logger is built (a flag error), what
	// dependencies logged during start-up goes out as JSON at info.
	defer initlog.Release(slog.NewJSONHandler(stderr, nil))
	return runWebhook(context.Background(), args, stdout, stderr, nil)
}

// runWebhook is cmdWebhook with a context and a hook that receives the
// listen address once serving (for tests).
func runWebhook(ctx context.Context, args []string, stdout, stderr io.Writer, listening func(net.Addr)) int {
	fs := flagSet("webhook", "ferry webhook --tls-cert FILE --tls-key FILE [flags]", stderr)
	cert := fs.String("tls-cert", "", "TLS certificate file (PEM); reloaded when it changes")
	key := fs.String("tls-key", "", "TLS private key file (PEM)")
	listen := fs.String("listen", ":8443", "host:port to serve HTTPS on")
	maxBody := fs.Int64("max-body-bytes", webhook.DefaultMaxBodyBytes, "largest AdmissionReview accepted (413 above)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	delay := fs.Duration("shutdown-delay", 5*time.Second, "after SIGTERM, keep serving this long (while the Service drops this pod), then stop")
	newInjector := injectorFlags(fs)
	if code, ok := parseFlags(fs, args, stdout); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "ferry webhook: unexpected argument %q\n", fs.Arg(0))
		return exitConfig
	}
	if *delay < 0 {
		fmt.Fprintf(stderr, "ferry webhook: --shutdown-delay %s is negative\n", *delay)
		return exitConfig
	}
	if *cert == "" || *key == "" {
		fmt.Fprintln(stderr, "ferry webhook: --tls-cert and --tls-key are required (the API server only calls webhooks over TLS)")
		return exitConfig
	}
	level, ok := parseLogLevel("webhook", *logLevel, stderr)
	if !ok {
		return exitConfig
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	initlog.Release(log.Handler())
	inj, err := newInjector()
	if err != nil {
		fmt.Fprintf(stderr, "ferry webhook: %v\n", err)
		return exitConfig
	}
	certs, err := webhook.NewCertLoader(*cert, *key, log)
	if err != nil {
		fmt.Fprintf(stderr, "ferry webhook: %v\n", err)
		return exitConfig
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(stderr, "ferry webhook: %v\n", err)
		return exitFail
	}
	srv := webhook.NewServer(webhook.NewHandler(inj, webhook.Options{MaxBodyBytes: *maxBody, Log: log}), certs, log)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log.Info("ferry webhook serving", "addr", ln.Addr().String(), "path", webhook.Path)
	if listening != nil {
		listening(ln.Addr())
	}
	served := make(chan struct{})
	defer close(served)
	go func() {
		select {
		case <-ctx.Done():
			log.Info("ferry webhook stopping: serving on for the shutdown delay", "delay", delay.String())
		case <-served:
		}
	}()
	if err := webhook.Serve(ctx, srv, ln, *delay, 10*time.Second); err != nil {
		log.Error("ferry webhook stopped", "error", err.Error())
		return exitFail
	}
	log.Info("ferry webhook stopped")
	return exitOK
}
