package telemetry

import (
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	_ "google.golang.org/grpc/encoding/gzip" // the test server accepts gzip
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/ferrymesh/ferry/internal/localnet/localnettest"
)

// testExporter builds the exporter as New would for endpoint, protocol and
// the environment e, with millisecond backoff.
func testExporter(t *testing.T, endpoint, protocol string, e env) *otlpExporter {
	t.Helper()
	u, err := parseEndpoint(endpoint, protocol, true)
	if err != nil {
		t.Fatal(err)
	}
	o, err := resolveOTLP(e.get, nil)
	if err != nil {
		t.Fatal(err)
	}
	exp := newOTLPExporter(u, protocol, o)
	exp.retryFirst, exp.retryMax = time.Millisecond, 5*time.Millisecond
	t.Cleanup(func() { _ = exp.Shutdown(context.Background()) })
	return exp
}

// countSpans decodes an ExportTraceServiceRequest and counts its spans.
func countSpans(t *testing.T, body []byte) int {
	t.Helper()
	var req coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(body, &req); err != nil {
		t.Errorf("collector could not decode the request: %v", err)
		return -1
	}
	n := 0
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			n += len(ss.Spans)
		}
	}
	return n
}

// captureErrors routes the OpenTelemetry error handler to a channel for
// the test's duration.
func captureErrors(t *testing.T) <-chan error {
	t.Helper()
	ch := make(chan error, 16)
	prev := otel.GetErrorHandler()
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		select {
		case ch <- err:
		default:
		}
	}))
	t.Cleanup(func() { otel.SetErrorHandler(prev) })
	return ch
}

// partialSuccess is an ExportTraceServiceResponse rejecting n spans.
func partialSuccess(t *testing.T, n int64, msg string) []byte {
	t.Helper()
	b, err := proto.Marshal(&coltracepb.ExportTraceServiceResponse{
		PartialSuccess: &coltracepb.ExportTracePartialSuccess{RejectedSpans: n, ErrorMessage: msg}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestOTLPHTTPExportRetriesAndHeaders(t *testing.T) {
	for _, compression := range []string{CompressionNone, CompressionGzip} {
		t.Run(compression, func(t *testing.T) {
			spans := recordSpans(t)
			errs := captureErrors(t)
			var calls atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n := calls.Add(1)
				if r.Method != http.MethodPost || r.URL.Path != "/base/v1/traces" {
					t.Errorf("%s %s, want POST /base/v1/traces", r.Method, r.URL.Path)
				}
				if got := r.Header.Get("Content-Type"); got != "application/x-protobuf" {
					t.Errorf("content-type %q", got)
				}
				if got := r.Header.Get("Authorization"); got != "Bearer s3cret" {
					t.Errorf("authorization %q", got)
				}
				if got := r.Header.Get("X-Tenant"); got != "traces-only" {
					t.Errorf("x-tenant %q: the signal's headers must win", got)
				}
				var body io.Reader = r.Body
				if compression == CompressionGzip {
					if r.Header.Get("Content-Encoding") != "gzip" {
						t.Error("no content-encoding: gzip")
					}
					zr, err := gzip.NewReader(r.Body)
					if err != nil {
						t.Errorf("gzip: %v", err)
						return
					}
					body = zr
				}
				b, _ := io.ReadAll(body)
				if got := countSpans(t, b); got != len(spans) {
					t.Errorf("call %d carried %d spans, want %d", n, got, len(spans))
				}
				switch n {
				case 1:
					w.Header().Set("Retry-After", "0")
					http.Error(w, "collector starting", http.StatusServiceUnavailable)
				case 2:
					http.Error(w, "slow down", http.StatusTooManyRequests)
				default:
					w.Header().Set("Content-Type", "application/x-protobuf")
					w.Write(partialSuccess(t, 2, "too old"))
				}
			}))
			defer srv.Close()
			exp := testExporter(t, srv.URL+"/base", ProtocolHTTPProtobuf, env{
				"OTEL_EXPORTER_OTLP_HEADERS":        "Authorization=Bearer%20s3cret,x-tenant=generic",
				"OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x-tenant=traces-only",
				"OTEL_EXPORTER_OTLP_COMPRESSION":    compression,
			})
			if err := exp.ExportSpans(t.Context(), spans); err != nil {
				t.Fatalf("export: %v", err)
			}
			if n := calls.Load(); n != 3 {
				t.Errorf("%d calls, want 3 (503, 429, 200)", n)
			}
			select {
			case err := <-errs:
				if !strings.Contains(err.Error(), "2 spans rejected") || !strings.Contains(err.Error(), "too old") {
					t.Errorf("partial success reported as %v", err)
				}
			default:
				t.Error("the partial success was not reported")
			}
		})
	}
}

func TestOTLPHTTPExportFailures(t *testing.T) {
	spans := recordSpans(t)
	t.Run("not retryable", func(t *testing.T) {
		var calls atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			calls.Add(1)
			http.Error(w, "bad payload", http.StatusBadRequest)
		}))
		defer srv.Close()
		err := testExporter(t, srv.URL, ProtocolHTTPProtobuf, env{}).ExportSpans(t.Context(), spans)
		if err == nil || !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), "bad payload") {
			t.Errorf("error %v, want the 400 and its body", err)
		}
		if n := calls.Load(); n != 1 {
			t.Errorf("%d calls, want 1", n)
		}
	})
	t.Run("retryable until the timeout", func(t *testing.T) {
		var calls atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			calls.Add(1)
			http.Error(w, "down", http.StatusBadGateway)
		}))
		defer srv.Close()
		exp := testExporter(t, srv.URL, ProtocolHTTPProtobuf, env{"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "2000"})
		start := time.Now()
		err := exp.ExportSpans(t.Context(), spans)
		// The last attempt either got its 502 or was cut by the deadline.
		if err == nil || !strings.Contains(err.Error(), "502") && !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("error %v, want the last 502 or the deadline", err)
		}
		if n := calls.Load(); n < 2 {
			t.Errorf("%d calls, want retries", n)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("export took %v with a 2s timeout", d)
		}
	})
	t.Run("retry-after beyond the timeout", func(t *testing.T) {
		var calls atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			calls.Add(1)
			w.Header().Set("Retry-After", "3600")
			w.WriteHeader(http.StatusServiceUnavailable)
		}))
		defer srv.Close()
		start := time.Now()
		err := testExporter(t, srv.URL, ProtocolHTTPProtobuf, env{}).ExportSpans(t.Context(), spans)
		if err == nil || !strings.Contains(err.Error(), "no time left") {
			t.Errorf("error %v, want a give-up without waiting", err)
		}
		if n := calls.Load(); n != 1 {
			t.Errorf("%d calls, want 1", n)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("export waited %v", d)
		}
	})
	t.Run("connection refused", func(t *testing.T) {
		addr := localnettest.RefusedAddr(t)
		exp := testExporter(t, "http://"+addr, ProtocolHTTPProtobuf, env{"OTEL_EXPORTER_OTLP_TIMEOUT": "2000"})
		if err := exp.ExportSpans(t.Context(), spans); err == nil || !strings.Contains(err.Error(), "refused") {
			t.Errorf("error %v, want connection refused", err)
		}
	})
}

func TestOTLPHTTPExportTLS(t *testing.T) {
	spans := recordSpans(t)
	var got atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got.Add(int32(countSpans(t, b)))
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake
	srv.StartTLS()
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	// Without the collector's CA the handshake fails, and is not retried.
	err := testExporter(t, srv.URL, ProtocolHTTPProtobuf, env{}).ExportSpans(t.Context(), spans)
	var certErr *tls.CertificateVerificationError
	if !errors.As(err, &certErr) {
		t.Errorf("export to an unknown CA: %v, want a certificate error at once", err)
	}
	exp := testExporter(t, srv.URL, ProtocolHTTPProtobuf, env{"OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE": ca})
	if err := exp.ExportSpans(t.Context(), spans); err != nil {
		t.Fatal(err)
	}
	if got.Load() != int32(len(spans)) {
		t.Errorf("collector got %d spans, want %d", got.Load(), len(spans))
	}
}

func TestOTLPExportShutdownEndsInFlightExport(t *testing.T) {
	for _, protocol := range []string{ProtocolHTTPProtobuf, ProtocolGRPC} {
		t.Run(protocol, func(t *testing.T) {
			arrived := make(chan struct{}, 1)
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body) // then HTTP/1 notices the client going away
				select {
				case arrived <- struct{}{}:
				default:
				}
				<-r.Context().Done() // a collector that never answers
			}))
			srv.EnableHTTP2 = true
			srv.Config.Protocols = new(http.Protocols)
			srv.Config.Protocols.SetHTTP1(true)
			srv.Config.Protocols.SetUnencryptedHTTP2(true)
			srv.Start()
			defer srv.Close()
			exp := testExporter(t, srv.URL, protocol, env{})
			done := make(chan error, 1)
			go func() { done <- exp.ExportSpans(context.Background(), recordSpans(t)) }()
			select {
			case <-arrived:
			case <-time.After(10 * time.Second):
				t.Fatal("the export never reached the collector")
			}
			if err := exp.Shutdown(t.Context()); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				if err == nil {
					t.Error("the cut export reported success")
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Shutdown did not end the in-flight export")
			}
			if err := exp.ExportSpans(t.Context(), recordSpans(t)); !errors.Is(err, errExporterShutdown) {
				t.Errorf("export after shutdown: %v", err)
			}
		})
	}
}

// traceService is a real gRPC OTLP receiver whose answers a test scripts.
type traceService struct {
	coltracepb.UnimplementedTraceServiceServer
	t       *testing.T
	mu      sync.Mutex
	spans   int
	calls   int
	answers []error // per call; nil or past the end: success
	md      metadata.MD
}

func (s *traceService) Export(ctx context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	s.md, _ = metadata.FromIncomingContext(ctx)
	if i := s.calls - 1; i < len(s.answers) && s.answers[i] != nil {
		return nil, s.answers[i]
	}
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			s.spans += len(ss.Spans)
		}
	}
	return &coltracepb.ExportTraceServiceResponse{
		PartialSuccess: &coltracepb.ExportTracePartialSuccess{RejectedSpans: 1, ErrorMessage: "one too many"}}, nil
}

// startTraceService serves svc over plaintext HTTP/2 (h2c) on loopback.
func startTraceService(t *testing.T, svc *traceService) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(srv, svc)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return "http://" + l.Addr().String()
}

func retryInfo(t *testing.T, d time.Duration) error {
	t.Helper()
	st, err := status.New(codes.ResourceExhausted, "over quota").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(d)})
	if err != nil {
		t.Fatal(err)
	}
	return st.Err()
}

func TestOTLPGRPCExport(t *testing.T) {
	spans := recordSpans(t)
	for _, c := range []struct {
		name        string
		compression string
		answers     []error
		wantCalls   int
		wantErr     string // "" for success
	}{
		{"ok", CompressionNone, nil, 1, ""},
		{"gzip", CompressionGzip, nil, 1, ""},
		{"unavailable then ok", CompressionNone, []error{status.Error(codes.Unavailable, "starting"), status.Error(codes.Aborted, "try again")}, 3, ""},
		{"resource exhausted with retry info", CompressionGzip, []error{retryInfo(t, 5*time.Millisecond)}, 2, ""},
		{"resource exhausted without retry info", CompressionNone, []error{status.Error(codes.ResourceExhausted, "over quota")}, 1, "RESOURCE_EXHAUSTED"},
		{"invalid argument", CompressionNone, []error{status.Error(codes.InvalidArgument, "bad span: 100% wrong")}, 1, `"bad span: 100% wrong"`},
		{"unimplemented", CompressionNone, []error{status.Error(codes.Unimplemented, "no traces here")}, 1, "UNIMPLEMENTED"},
	} {
		t.Run(c.name, func(t *testing.T) {
			errs := captureErrors(t)
			svc := &traceService{t: t, answers: c.answers}
			addr := startTraceService(t, svc)
			exp := testExporter(t, addr+"/ignored/path", ProtocolGRPC, env{
				"OTEL_EXPORTER_OTLP_HEADERS":     "authorization=Bearer%20s3cret",
				"OTEL_EXPORTER_OTLP_COMPRESSION": c.compression,
			})
			err := exp.ExportSpans(t.Context(), spans)
			svc.mu.Lock()
			defer svc.mu.Unlock()
			if c.wantErr == "" {
				if err != nil {
					t.Fatalf("export: %v", err)
				}
				if svc.spans != len(spans) {
					t.Errorf("receiver got %d spans, want %d", svc.spans, len(spans))
				}
				select {
				case err := <-errs:
					if !strings.Contains(err.Error(), "1 spans rejected") {
						t.Errorf("partial success reported as %v", err)
					}
				default:
					t.Error("the partial success was not reported")
				}
			} else if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("error %v, want %q", err, c.wantErr)
			}
			if svc.calls != c.wantCalls {
				t.Errorf("%d calls, want %d", svc.calls, c.wantCalls)
			}
			if got := svc.md.Get("authorization"); len(got) != 1 || got[0] != "Bearer s3cret" {
				t.Errorf("authorization metadata %q", got)
			}
			if got := svc.md.Get("grpc-timeout"); len(got) != 0 {
				t.Errorf("grpc-timeout leaked into metadata: %q", got)
			}
		})
	}
}

// The gRPC exporter over TLS, against a minimal gRPC responder: h2 by ALPN,
// a trailers-only error first, then success with trailers.
func TestOTLPGRPCExportTLS(t *testing.T) {
	spans := recordSpans(t)
	var calls atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		if r.ProtoMajor != 2 || r.URL.Path != exportPath || r.Header.Get("Content-Type") != "application/grpc" || r.Header.Get("Te") != "trailers" {
			t.Errorf("call %s %s %q te=%q", r.Proto, r.URL.Path, r.Header.Get("Content-Type"), r.Header.Get("Te"))
		}
		b, _ := io.ReadAll(r.Body)
		if len(b) < 5 || b[0] != 0 || countSpans(t, b[5:]) != len(spans) {
			t.Errorf("malformed gRPC message (%d bytes)", len(b))
		}
		w.Header().Set("Content-Type", "application/grpc")
		if n == 1 {
			w.Header().Set("Grpc-Status", "14")
			w.Header().Set("Grpc-Message", "warming%20up")
			return
		}
		w.Header().Set("Trailer", "Grpc-Status")
		w.Write([]byte{0, 0, 0, 0, 0})
		w.Header().Set("Grpc-Status", "0")
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	exp := testExporter(t, srv.URL, ProtocolGRPC, env{"OTEL_EXPORTER_OTLP_CERTIFICATE": ca})
	if err := exp.ExportSpans(t.Context(), spans); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("%d calls, want 2", n)
	}
}

// New sends to the configured collector through the batch queue and
// counts what it exported.
func TestOTLPExporterThroughTelemetry(t *testing.T) {
	svc := &traceService{t: t}
	addr := startTraceService(t, svc)
	tel, err := New(t.Context(), Config{Endpoint: addr, Protocol: ProtocolGRPC, AccessLog: "off"}, WithEnv(env{}.get))
	if err != nil {
		t.Fatal(err)
	}
	endSpans(t, tel, 3)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := tel.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	svc.mu.Lock()
	defer svc.mu.Unlock()
	if svc.spans != 6 || tel.queue.exported.Load() != 6 {
		t.Errorf("receiver got %d spans, ferry counted %d exported; want 6", svc.spans, tel.queue.exported.Load())
	}
}

func TestResolveOTLP(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "x.pem")
	os.WriteFile(notPEM, []byte("not a certificate"), 0o600)
	for _, c := range []struct {
		env     env
		check   func(otlpSettings) bool
		wantErr string
	}{
		{env{}, func(o otlpSettings) bool {
			return o.timeout == DefaultOTLPTimeout && o.compression == CompressionNone && len(o.headers) == 0 && o.tls == nil
		}, ""},
		{env{"OTEL_EXPORTER_OTLP_TIMEOUT": "1500", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "250"},
			func(o otlpSettings) bool { return o.timeout == 250*time.Millisecond }, ""},
		{env{"OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"}, func(o otlpSettings) bool { return o.compression == CompressionGzip }, ""},
		{env{"OTEL_EXPORTER_OTLP_COMPRESSION": "gzip", "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "none"},
			func(o otlpSettings) bool { return o.compression == CompressionNone }, ""},
		{env{"OTEL_EXPORTER_OTLP_HEADERS": " a=1 , b = two%2Cwords ,", "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "a=2"},
			func(o otlpSettings) bool { return o.headers.Get("A") == "2" && o.headers.Get("B") == "two,words" }, ""},
		{env{"OTEL_EXPORTER_OTLP_INSECURE": "true"}, func(otlpSettings) bool { return true }, ""},
		{env{"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "soon"}, nil, `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: "soon"`},
		{env{"OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"}, nil, `OTEL_EXPORTER_OTLP_COMPRESSION: unknown "zstd"`},
		{env{"OTEL_EXPORTER_OTLP_HEADERS": "novalue"}, nil, "OTEL_EXPORTER_OTLP_HEADERS:"},
		{env{"OTEL_EXPORTER_OTLP_TRACES_HEADERS": "bad name=1"}, nil, "OTEL_EXPORTER_OTLP_TRACES_HEADERS:"},
		{env{"OTEL_EXPORTER_OTLP_INSECURE": "maybe"}, nil, "OTEL_EXPORTER_OTLP_INSECURE: not a boolean"},
		{env{"OTEL_EXPORTER_OTLP_CERTIFICATE": filepath.Join(dir, "missing.pem")}, nil, "OTEL_EXPORTER_OTLP_CERTIFICATE:"},
		{env{"OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE": notPEM}, nil, "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE: no PEM certificate"},
		{env{"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": notPEM}, nil, "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE is set but"},
		{env{"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": notPEM, "OTEL_EXPORTER_OTLP_CLIENT_KEY": notPEM}, nil,
			"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY:"},
	} {
		o, err := resolveOTLP(c.env.get, nil)
		switch {
		case c.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%v: error %v, want %q", c.env, err, c.wantErr)
			}
		case err != nil:
			t.Errorf("%v: %v", c.env, err)
		case !c.check(o):
			t.Errorf("%v: settings %+v", c.env, o)
		}
	}
	// New names the variable too, and only when tracing is on.
	bad := env{"OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"}
	if _, err := New(t.Context(), Config{Endpoint: "http://127.0.0.1:4317", AccessLog: "off"}, WithEnv(bad.get)); err == nil {
		t.Error("New accepted a bad OTEL_EXPORTER_OTLP_COMPRESSION")
	}
	tel, err := New(t.Context(), Config{AccessLog: "off"}, WithEnv(bad.get))
	if err != nil {
		t.Errorf("tracing off, yet New failed on the exporter environment: %v", err)
	} else {
		tel.Shutdown(t.Context())
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"": 0, "0": 0, "-3": 0, "7": 7 * time.Second, "soon": 0,
		now.Add(90 * time.Second).Format(http.TimeFormat): 90 * time.Second,
		now.Add(-time.Hour).Format(http.TimeFormat):       0,
	} {
		if got := retryAfter(v, now); got != want {
			t.Errorf("Retry-After %q: %v, want %v", v, got, want)
		}
	}
}

var _ sdktrace.SpanExporter = (*otlpExporter)(nil)

// The exporter's URL for each protocol.
func TestOTLPExporterURL(t *testing.T) {
	for _, c := range []struct{ endpoint, protocol, want string }{
		{"http://collector:4318", ProtocolHTTPProtobuf, "http://collector:4318/v1/traces"},
		{"https://collector/otlp/", ProtocolHTTPProtobuf, "https://collector/otlp/v1/traces"},
		{"http://collector:4317/any", ProtocolGRPC, "http://collector:4317" + exportPath},
	} {
		u, err := url.Parse(c.endpoint)
		if err != nil {
			t.Fatal(err)
		}
		u, _ = parseEndpoint(u.String(), c.protocol, true)
		exp := newOTLPExporter(u, c.protocol, otlpSettings{timeout: time.Second})
		if exp.url != c.want {
			t.Errorf("%s over %s: %s, want %s", c.endpoint, c.protocol, exp.url, c.want)
		}
		exp.Shutdown(context.Background())
	}
}

// writeClientCert writes a fresh self-signed client certificate and its key
// as PEM files, and returns their paths and the certificate.
func writeClientCert(t *testing.T) (certFile, keyFile string, cert *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ferry-test-client"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if cert, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, cert
}

// A collector that requires a client certificate gets the one named by
// OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE and _CLIENT_KEY.
func TestOTLPExportClientCertificate(t *testing.T) {
	spans := recordSpans(t)
	certFile, keyFile, clientCert := writeClientCert(t)
	var got atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) == 0 || !r.TLS.PeerCertificates[0].Equal(clientCert) {
			t.Error("the collector saw no client certificate, or another one")
		}
		b, _ := io.ReadAll(r.Body)
		got.Add(int32(countSpans(t, b)))
	}))
	pool := x509.NewCertPool()
	pool.AddCert(clientCert)
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshake without a certificate
	srv.StartTLS()
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	without := testExporter(t, srv.URL, ProtocolHTTPProtobuf, env{"OTEL_EXPORTER_OTLP_CERTIFICATE": ca, "OTEL_EXPORTER_OTLP_TIMEOUT": "300"})
	if err := without.ExportSpans(t.Context(), spans); err == nil {
		t.Error("export without a client certificate succeeded")
	}
	with := testExporter(t, srv.URL, ProtocolHTTPProtobuf, env{
		"OTEL_EXPORTER_OTLP_CERTIFICATE":               ca,
		"OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE": certFile,
		"OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY":         keyFile,
	})
	if err := with.ExportSpans(t.Context(), spans); err != nil {
		t.Fatal(err)
	}
	if got.Load() != int32(len(spans)) {
		t.Errorf("collector got %d spans, want %d", got.Load(), len(spans))
	}
}

// The headers ferry exports with (OTEL_EXPORTER_OTLP_HEADERS, often an API
// key) go to the configured collector only: a redirect to another host is
// not followed (Go's client forwards custom headers across hosts; it strips
// only Authorization and cookies). A redirect on the same host is.
func TestOTLPHTTPExportKeepsHeadersOnItsHost(t *testing.T) {
	spans := recordSpans(t)
	captureErrors(t)
	leaked := make(chan string, 4)
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leaked <- r.Header.Get("X-Api-Key")
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer elsewhere.Close()
	var moved atomic.Int32
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/traces": // moved, first within the host
			moved.Add(1)
			http.Redirect(w, r, "/moved/v1/traces", http.StatusPermanentRedirect)
		case "/moved/v1/traces": // then to another host
			http.Redirect(w, r, elsewhere.URL+"/v1/traces", http.StatusTemporaryRedirect)
		}
	}))
	defer collector.Close()
	exp := testExporter(t, collector.URL, ProtocolHTTPProtobuf, env{"OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=s3cret"})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	err := exp.ExportSpans(ctx, spans)
	if err == nil || !strings.Contains(err.Error(), "307") {
		t.Fatalf("an export redirected to another host: %v, want the redirect as its failure", err)
	}
	if moved.Load() == 0 {
		t.Fatal("the collector was never asked")
	}
	select {
	case key := <-leaked:
		t.Fatalf("the export reached another host, with x-api-key %q", key)
	default:
	}
}
