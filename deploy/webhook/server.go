package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

// CertLoader serves a certificate from files and reloads it when either
// file changes (cert-manager renews in place, kubelet swaps a Secret
// volume's files), checked on each TLS handshake by reading both files:
// a renewal of the same size written within one tick of the file system's
// clock has the same size and modification time, and a comparison of
// those missed it. A renewal that does not load keeps the previous
// certificate.
type CertLoader struct {
	certFile, keyFile string
	log               *slog.Logger

	mu        sync.Mutex
	cert      *tls.Certificate
	certPEM   []byte // what cert was loaded from
	keyPEM    []byte
	lastError string // the last load error logged, so a bad pair is logged once
}

// NewCertLoader loads the pair once; an error names the files.
func NewCertLoader(certFile, keyFile string, log *slog.Logger) (*CertLoader, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &CertLoader{certFile: certFile, keyFile: keyFile, log: log}
	if _, err := l.GetCertificate(nil); err != nil {
		return nil, err
	}
	return l, nil
}

// GetCertificate is a tls.Config.GetCertificate.
func (l *CertLoader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(l.certFile)
	var keyPEM []byte
	if err == nil {
		keyPEM, err = os.ReadFile(l.keyFile)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err == nil && l.cert != nil && bytes.Equal(certPEM, l.certPEM) && bytes.Equal(keyPEM, l.keyPEM) {
		return l.cert, nil
	}
	if err == nil {
		var c tls.Certificate
		if c, err = tls.X509KeyPair(certPEM, keyPEM); err == nil {
			if l.cert != nil {
				l.log.Info("TLS certificate reloaded", "cert", l.certFile)
			}
			l.cert, l.certPEM, l.keyPEM, l.lastError = &c, certPEM, keyPEM, ""
			return l.cert, nil
		}
	}
	err = fmt.Errorf("TLS key pair %s, %s: %w", l.certFile, l.keyFile, err)
	if l.cert == nil {
		return nil, err
	}
	if msg := err.Error(); msg != l.lastError {
		l.lastError = msg
		l.log.Warn("keeping the previous TLS certificate", "error", msg)
	}
	return l.cert, nil
}

// NewServer returns an HTTPS server for h with timeouts fit for admission
// reviews (the API server gives a webhook at most 30s).
func NewServer(h http.Handler, certs *CertLoader, log *slog.Logger) *http.Server {
	errLog := log
	if errLog == nil {
		errLog = slog.New(slog.DiscardHandler)
	}
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       90 * time.Second,
		MaxHeaderBytes:    64 << 10,
		TLSConfig: &tls.Config{
			MinVersion:     tls.VersionTLS12,
			GetCertificate: certs.GetCertificate,
		},
		ErrorLog: slog.NewLogLogger(errLog.Handler(), slog.LevelWarn),
	}
}

// Serve runs srv over TLS on ln until ctx ends, keeps serving for delay
// more, then shuts it down, letting in-flight reviews finish for up to
// grace. The delay covers the moment between a webhook pod's SIGTERM and
// the API server's noticing that its endpoint left the Service: a webhook
// that stopped at once would fail the reviews still sent to it, and under
// failurePolicy Ignore those pods would start without ferry.
func Serve(ctx context.Context, srv *http.Server, ln net.Listener, delay, grace time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	select {
	case err := <-errc:
		return fmt.Errorf("webhook server: %w", err)
	case <-ctx.Done():
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case err := <-errc:
			t.Stop()
			return fmt.Errorf("webhook server: %w", err)
		case <-t.C:
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	if err != nil {
		return fmt.Errorf("webhook shutdown: %w", err)
	}
	return nil
}
