package telemetry

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
)

// DefaultOTLPTimeout bounds one export, retries included, when
// OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT does not say otherwise.
const DefaultOTLPTimeout = 10 * time.Second

// Compression values accepted in OTEL_EXPORTER_OTLP_(TRACES_)COMPRESSION.
const (
	CompressionGzip = "gzip"
	CompressionNone = "none"
)

// otlpSettings are the exporter settings that only the environment gives:
// the OTEL_EXPORTER_OTLP_* variables of the OTLP exporter specification,
// each signal-specific (TRACES_) variable before the generic one.
type otlpSettings struct {
	headers     http.Header
	timeout     time.Duration
	compression string      // CompressionGzip or CompressionNone
	tls         *tls.Config // nil: the system roots, no client certificate
}

// resolveOTLP reads the exporter environment through getenv; readFile
// reads the certificate files (os.ReadFile when nil). Errors name the
// variable. The endpoint's scheme, not OTEL_EXPORTER_OTLP_INSECURE, decides
// between plaintext and TLS (ferry's endpoints always carry a scheme, and
// the specification applies INSECURE only to endpoints without one); the
// variable is still checked to be a boolean.
func resolveOTLP(getenv func(string) string, readFile func(string) ([]byte, error)) (otlpSettings, error) {
	if readFile == nil {
		readFile = os.ReadFile
	}
	env := func(name string) (key, val string) {
		for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_" + name, "OTEL_EXPORTER_OTLP_" + name} {
			if v := strings.TrimSpace(getenv(k)); v != "" {
				return k, v
			}
		}
		return "", ""
	}
	o := otlpSettings{headers: http.Header{}, timeout: DefaultOTLPTimeout, compression: CompressionNone}

	// Headers: the generic ones, then the signal's on top.
	for _, k := range []string{"OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"} {
		h, err := parseOTLPHeaders(getenv(k))
		if err != nil {
			return o, fmt.Errorf("%s: %w", k, err)
		}
		for name, v := range h {
			o.headers[name] = v
		}
	}

	if k, v := env("TIMEOUT"); v != "" {
		ms, err := strconv.Atoi(v)
		if err != nil || ms <= 0 {
			return o, fmt.Errorf("%s: %q is not a positive number of milliseconds", k, v)
		}
		o.timeout = time.Duration(ms) * time.Millisecond
	}

	if k, v := env("COMPRESSION"); v != "" {
		switch v {
		case CompressionGzip, CompressionNone:
			o.compression = v
		default:
			return o, fmt.Errorf("%s: unknown %q (want %q or %q)", k, v, CompressionGzip, CompressionNone)
		}
	}

	if k, v := env("INSECURE"); v != "" {
		if _, err := parseEnvBool(v); err != nil {
			return o, fmt.Errorf("%s: %w", k, err)
		}
	}

	var tc tls.Config
	if k, v := env("CERTIFICATE"); v != "" {
		pem, err := readFile(v)
		if err != nil {
			return o, fmt.Errorf("%s: %w", k, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return o, fmt.Errorf("%s: no PEM certificate in %s", k, v)
		}
		tc.RootCAs = pool
	}
	certKey, cert := env("CLIENT_CERTIFICATE")
	keyKey, key := env("CLIENT_KEY")
	switch {
	case cert != "" && key != "":
		certPEM, err := readFile(cert)
		if err != nil {
			return o, fmt.Errorf("%s: %w", certKey, err)
		}
		keyPEM, err := readFile(key)
		if err != nil {
			return o, fmt.Errorf("%s: %w", keyKey, err)
		}
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return o, fmt.Errorf("%s and %s: %w", certKey, keyKey, err)
		}
		tc.Certificates = []tls.Certificate{pair}
	case cert != "":
		return o, fmt.Errorf("%s is set but OTEL_EXPORTER_OTLP_(TRACES_)CLIENT_KEY is not", certKey)
	case key != "":
		return o, fmt.Errorf("%s is set but OTEL_EXPORTER_OTLP_(TRACES_)CLIENT_CERTIFICATE is not", keyKey)
	}
	if tc.RootCAs != nil || tc.Certificates != nil {
		o.tls = &tc
	}
	return o, nil
}

// parseOTLPHeaders parses the OTEL_EXPORTER_OTLP_HEADERS format:
// comma-separated name=value pairs, values percent-encoded.
func parseOTLPHeaders(v string) (http.Header, error) {
	h := http.Header{}
	for _, pair := range strings.Split(v, ",") {
		if strings.TrimSpace(pair) == "" {
			continue
		}
		name, val, ok := strings.Cut(pair, "=")
		name = strings.TrimSpace(name)
		if !ok || !httpguts.ValidHeaderFieldName(name) {
			return nil, fmt.Errorf("%q is not name=value with a valid header name", pair)
		}
		dec, err := url.PathUnescape(val)
		if err != nil {
			return nil, fmt.Errorf("value of %q: %w", name, err)
		}
		dec = strings.TrimSpace(dec)
		if !httpguts.ValidHeaderFieldValue(dec) {
			// The value is not shown: it is often a token.
			return nil, fmt.Errorf("the value of %q decodes to characters a header cannot carry", name)
		}
		h.Add(name, dec)
	}
	return h, nil
}
