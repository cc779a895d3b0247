package telemetry

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// otlpExporter is ferry's OTLP trace exporter: it encodes a batch of spans
// as one ExportTraceServiceRequest (otlpencode.go) and sends it over
// OTLP/HTTP (POST application/x-protobuf) or OTLP/gRPC (the unary
// TraceService/Export call over HTTP/2: h2c for http:// endpoints, TLS for
// https://). Retryable failures are retried with bounded, jittered
// exponential backoff (or the server's Retry-After / RetryInfo delay) until
// the export's deadline: the caller's context, bounded by the OTLP timeout.
type otlpExporter struct {
	url      string // full request URL
	grpc     bool
	gzip     bool
	headers  http.Header // user headers (OTEL_EXPORTER_OTLP_HEADERS)
	timeout  time.Duration
	client   *http.Client
	endpoint string // for error messages

	// Backoff between attempts: first wait, cap. Tests shorten them.
	retryFirst, retryMax time.Duration

	// One encoder and gzip buffer, kept across exports: the queue exports
	// one batch at a time, and a pool would lose the grown buffers at
	// every GC. mu serialises exports that arrive together anyway.
	mu  sync.Mutex
	enc otlpEncoder
	gz  *gzipBuffer

	stopped  context.Context // cancelled by Shutdown: in-flight exports end
	shutdown context.CancelFunc
}

// gRPC's message prefix: a compressed flag and a big-endian length.
const grpcPrefixLen = 5

// exportPath is the gRPC method of OTLP trace export.
const exportPath = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

// maxResponseBytes bounds how much of a collector's reply is read.
const maxResponseBytes = 64 << 10

// errExporterShutdown is returned by exports after Shutdown.
var errExporterShutdown = errors.New("otlp exporter is shut down")

// newOTLPExporter builds the exporter for endpoint (the full URL for
// http/protobuf; scheme and host for grpc) and protocol.
func newOTLPExporter(endpoint *url.URL, protocol string, o otlpSettings) *otlpExporter {
	e := &otlpExporter{
		grpc:       protocol == ProtocolGRPC,
		gzip:       o.compression == CompressionGzip,
		headers:    o.headers,
		timeout:    o.timeout,
		endpoint:   endpoint.String(),
		retryFirst: 500 * time.Millisecond,
		retryMax:   5 * time.Second,
	}
	e.stopped, e.shutdown = context.WithCancel(context.Background())
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       o.tls.Clone(),
		TLSHandshakeTimeout:   10 * time.Second,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
	}
	if e.grpc {
		// gRPC is HTTP/2 only: prior knowledge over plaintext, ALPN h2
		// over TLS. The URL path is the method; the endpoint's is ignored.
		tr.Proxy = nil // an HTTP proxy would not carry h2c prior knowledge
		tr.Protocols = new(http.Protocols)
		if endpoint.Scheme == "http" {
			tr.Protocols.SetUnencryptedHTTP2(true)
		} else {
			tr.Protocols.SetHTTP2(true)
		}
		e.url = (&url.URL{Scheme: endpoint.Scheme, Host: endpoint.Host, Path: exportPath}).String()
	} else {
		tr.ForceAttemptHTTP2 = true
		e.url = endpoint.String()
	}
	e.client = &http.Client{Transport: tr, CheckRedirect: sameHostRedirects}
	return e
}

// sameHostRedirects follows a collector's redirects within its host only.
// The export headers (an API key, often) would go along: Go's client drops
// only Authorization and cookies when a redirect leaves the host. A
// redirect elsewhere ends the export with the redirect as its answer.
func sameHostRedirects(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	if req.URL.Host != via[0].URL.Host || req.URL.Scheme != via[0].URL.Scheme {
		return http.ErrUseLastResponse
	}
	return nil
}

// ExportSpans sends spans as one request, retrying retryable failures until
// the deadline. The returned error is the last attempt's.
func (e *otlpExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	if len(spans) == 0 {
		return nil
	}
	if e.stopped.Err() != nil {
		return errExporterShutdown
	}
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	defer context.AfterFunc(e.stopped, cancel)()

	e.mu.Lock()
	defer e.mu.Unlock()
	prefix := 0
	if e.grpc {
		prefix = grpcPrefixLen
	}
	body := e.enc.encode(spans, prefix)
	if e.gzip {
		if e.gz == nil {
			e.gz = newGzipBuffer()
		}
		body = e.gz.compress(body, prefix)
	}
	if e.grpc {
		body[0] = 0
		if e.gzip {
			body[0] = 1
		}
		binary.BigEndian.PutUint32(body[1:grpcPrefixLen], uint32(len(body)-grpcPrefixLen))
	}

	var prev error // the last retried failure
	stop, _ := ctx.Value(retriesEnd{}).(<-chan struct{})
	for wait := time.Duration(0); ; {
		var err error
		if e.grpc {
			err = e.sendGRPC(ctx, body)
		} else {
			err = e.sendHTTP(ctx, body)
		}
		if err == nil {
			return nil
		}
		if prev != nil && ctx.Err() != nil {
			// The deadline cut a retry: the failure that made it says more.
			return fmt.Errorf("%w (the retry then ended: %w)", prev, ctx.Err())
		}
		prev = err
		var re *retryableError
		if !errors.As(err, &re) || ctx.Value(noRetry{}) != nil {
			return err
		}
		if closed(stop) {
			return fmt.Errorf("%w (not retried: telemetry is shutting down)", err)
		}
		wait = e.nextWait(wait)
		delay := max(re.after, wait)
		if d, ok := ctx.Deadline(); ok && time.Until(d) < delay {
			return fmt.Errorf("%w (no time left to retry within the export timeout)", err)
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (then %w)", err, ctx.Err())
		case <-stop:
			t.Stop()
			return fmt.Errorf("%w (not retried: telemetry is shutting down)", err)
		}
	}
}

// closed reports whether ch (which may be nil) is closed.
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// nextWait is the backoff after a wait of prev: the first wait, then
// doubling up to the cap, each jittered into [w/2, w].
func (e *otlpExporter) nextWait(prev time.Duration) time.Duration {
	w := e.retryFirst
	if prev > 0 {
		w = min(2*prev, e.retryMax)
	}
	return w/2 + rand.N(w/2+1)
}

// Shutdown ends in-flight exports and closes idle connections. Later
// exports fail with errExporterShutdown.
func (e *otlpExporter) Shutdown(ctx context.Context) error {
	e.shutdown()
	e.client.CloseIdleConnections()
	return ctx.Err()
}

// retryableError is a failure worth retrying: a throttled or unavailable
// collector, a broken connection. after is the delay the server asked for.
type retryableError struct {
	err   error
	after time.Duration
}

func (e *retryableError) Error() string { return e.err.Error() }
func (e *retryableError) Unwrap() error { return e.err }

// gzipBuffer is a reusable gzip writer and its output.
type gzipBuffer struct {
	w   *gzip.Writer
	out bytes.Buffer
}

func newGzipBuffer() *gzipBuffer {
	gz := &gzipBuffer{}
	gz.w, _ = gzip.NewWriterLevel(&gz.out, gzip.DefaultCompression)
	return gz
}

// compress returns b[prefix:] gzipped, after prefix bytes left for the
// caller; valid until the next call.
func (gz *gzipBuffer) compress(b []byte, prefix int) []byte {
	gz.out.Reset()
	gz.out.Write(b[:prefix])
	gz.w.Reset(&gz.out)
	_, _ = gz.w.Write(b[prefix:]) // a bytes.Buffer does not fail
	_ = gz.w.Close()
	return gz.out.Bytes()
}

var _ sdktrace.SpanExporter = (*otlpExporter)(nil)
