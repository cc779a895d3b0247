package telemetry

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"google.golang.org/protobuf/encoding/protowire"
)

// userAgent identifies ferry's exporter to collectors.
const userAgent = "ferry-otlp-exporter"

// newRequest builds one export POST of body with the user's headers under
// the protocol's own.
func (e *otlpExporter) newRequest(ctx context.Context, body []byte) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("otlp export to %s: %w", e.endpoint, err)
	}
	for k, vs := range e.headers {
		req.Header[k] = vs
	}
	req.Header.Set("User-Agent", userAgent)
	return req, nil
}

// do sends req. A transport error (refused, reset, timed out connection) is
// retryable unless the export's own context ended.
func (e *otlpExporter) do(ctx context.Context, req *http.Request) (*http.Response, []byte, error) {
	resp, err := e.client.Do(req)
	if err != nil {
		err = fmt.Errorf("otlp export to %s: %w", e.endpoint, err)
		var certErr *tls.CertificateVerificationError
		if ctx.Err() != nil || errors.As(err, &certErr) {
			return nil, nil, err // a bad certificate stays bad
		}
		return nil, nil, &retryableError{err: err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil && resp.StatusCode/100 != 2 {
		// The status decides; a body cut short only loses detail.
		err = nil
	}
	if err != nil {
		err = fmt.Errorf("otlp export to %s: reading the response: %w", e.endpoint, err)
		if ctx.Err() != nil {
			return nil, nil, err
		}
		return nil, nil, &retryableError{err: err}
	}
	return resp, data, nil
}

// sendHTTP is one OTLP/HTTP export: POST application/x-protobuf. 2xx is
// success; 429, 502, 503 and 504 are retried (after Retry-After when
// given); any other status fails the export.
func (e *otlpExporter) sendHTTP(ctx context.Context, body []byte) error {
	req, err := e.newRequest(ctx, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	if e.gzip {
		req.Header.Set("Content-Encoding", "gzip")
	}
	resp, data, err := e.do(ctx, req)
	if err != nil {
		return err
	}
	isProto := strings.HasPrefix(resp.Header.Get("Content-Type"), "application/x-protobuf")
	if resp.StatusCode/100 == 2 {
		if isProto {
			reportPartialSuccess(data)
		}
		return nil
	}
	detail := strings.TrimSpace(string(data))
	if isProto {
		_, detail, _ = parseRPCStatus(data)
	}
	if len(detail) > 256 {
		detail = detail[:256] + "..."
	}
	err = fmt.Errorf("otlp export to %s: %s: %q", e.endpoint, resp.Status, detail)
	switch resp.StatusCode {
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return &retryableError{err: err, after: retryAfter(resp.Header.Get("Retry-After"), time.Now())}
	}
	return err
}

// gRPC status codes ferry tells apart.
const (
	grpcOK                = 0
	grpcCanceled          = 1
	grpcUnknown           = 2
	grpcDeadlineExceeded  = 4
	grpcResourceExhausted = 8
	grpcAborted           = 10
	grpcOutOfRange        = 11
	grpcInternal          = 13
	grpcUnavailable       = 14
	grpcDataLoss          = 15
)

// sendGRPC is one OTLP/gRPC export: the unary TraceService/Export call.
// The codes the OTLP specification calls retryable are retried:
// CANCELLED, DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE, UNAVAILABLE,
// DATA_LOSS, and RESOURCE_EXHAUSTED when the server says when to come back
// (google.rpc.RetryInfo).
func (e *otlpExporter) sendGRPC(ctx context.Context, body []byte) error {
	req, err := e.newRequest(ctx, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	if e.gzip {
		req.Header.Set("Grpc-Encoding", "gzip")
	}
	if d, ok := ctx.Deadline(); ok {
		req.Header.Set("Grpc-Timeout", grpcTimeout(time.Until(d)))
	}
	resp, data, err := e.do(ctx, req)
	if err != nil {
		return err
	}
	code, msg, details := grpcStatus(resp)
	if code == grpcOK {
		if len(data) < grpcPrefixLen {
			return nil
		}
		msg := data[grpcPrefixLen:]
		if data[0] == 1 { // compressed with the request's encoding
			if resp.Header.Get("Grpc-Encoding") != "gzip" {
				return nil
			}
			zr, err := gzip.NewReader(bytes.NewReader(msg))
			if err != nil {
				return nil
			}
			if msg, err = io.ReadAll(io.LimitReader(zr, maxResponseBytes)); err != nil {
				return nil
			}
		}
		reportPartialSuccess(msg)
		return nil
	}
	err = fmt.Errorf("otlp export to %s: grpc status %d (%s): %q", e.endpoint, code, grpcCodeName(code), msg)
	var after time.Duration
	if details != nil {
		after = retryInfoDelay(details)
	}
	switch code {
	case grpcCanceled, grpcDeadlineExceeded, grpcAborted, grpcOutOfRange, grpcUnavailable, grpcDataLoss:
		return &retryableError{err: err, after: after}
	case grpcResourceExhausted:
		if after > 0 {
			return &retryableError{err: err, after: after}
		}
	}
	return err
}

// grpcStatus reads a call's status from its trailers, or from the headers
// of a trailers-only response, or from the HTTP status when the reply is
// not gRPC at all (gRPC's HTTP-to-status mapping).
func grpcStatus(resp *http.Response) (code int, msg string, details []byte) {
	h := resp.Trailer
	if h.Get("Grpc-Status") == "" {
		h = resp.Header
	}
	v := h.Get("Grpc-Status")
	if v == "" || resp.StatusCode != http.StatusOK {
		switch resp.StatusCode {
		case http.StatusOK:
			return grpcInternal, "no grpc-status in the response", nil
		case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return grpcUnavailable, resp.Status, nil
		default:
			return grpcUnknown, resp.Status, nil
		}
	}
	code, err := strconv.Atoi(v)
	if err != nil {
		return grpcUnknown, "malformed grpc-status " + strconv.Quote(v), nil
	}
	msg, err = url.PathUnescape(h.Get("Grpc-Message"))
	if err != nil {
		msg = h.Get("Grpc-Message")
	}
	if d := h.Get("Grpc-Status-Details-Bin"); d != "" {
		details, _ = base64.RawStdEncoding.DecodeString(strings.TrimRight(d, "="))
	}
	return code, msg, details
}

// grpcTimeout renders d as a grpc-timeout header value (at most 8 digits).
func grpcTimeout(d time.Duration) string {
	ms := max(d.Milliseconds(), 1)
	if ms <= 99_999_999 {
		return strconv.FormatInt(ms, 10) + "m"
	}
	return strconv.FormatInt(min(int64(d/time.Second), 99_999_999), 10) + "S"
}

func grpcCodeName(code int) string {
	if code >= 0 && code < len(grpcCodeNames) {
		return grpcCodeNames[code]
	}
	return "code " + strconv.Itoa(code)
}

// retryAfter parses a Retry-After header: seconds or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s <= 0 {
			return 0
		}
		return time.Duration(min(s, int64(24*time.Hour/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// reportPartialSuccess hands a collector's partial success (an
// ExportTraceServiceResponse whose partial_success rejected spans or
// carries a warning) to the OpenTelemetry error handler.
func reportPartialSuccess(resp []byte) {
	ps := protoField(resp, 1, protowire.BytesType)
	if ps == nil {
		return
	}
	var rejected uint64
	if v := protoField(ps, 1, protowire.VarintType); v != nil {
		rejected, _ = protowire.ConsumeVarint(v)
	}
	msg := string(protoField(ps, 2, protowire.BytesType))
	if rejected != 0 || msg != "" {
		otel.Handle(fmt.Errorf("otlp partial success: %d spans rejected: %q", int64(rejected), msg))
	}
}

// parseRPCStatus reads a google.rpc.Status: code, message, details (Any).
func parseRPCStatus(b []byte) (code int64, msg string, details [][]byte) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return
			}
			code, n = int64(v), m
		case num == 2 && typ == protowire.BytesType:
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return
			}
			msg, n = string(v), m
		case num == 3 && typ == protowire.BytesType:
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return
			}
			details, n = append(details, v), m
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return
		}
		b = b[n:]
	}
	return
}

// retryInfoDelay finds a google.rpc.RetryInfo among the details of a
// grpc-status-details-bin status and returns its retry_delay.
func retryInfoDelay(status []byte) time.Duration {
	_, _, details := parseRPCStatus(status)
	for _, any := range details {
		if string(protoField(any, 1, protowire.BytesType)) != "type.googleapis.com/google.rpc.RetryInfo" {
			continue
		}
		dur := protoField(protoField(any, 2, protowire.BytesType), 1, protowire.BytesType)
		var secs, nanos uint64
		if v := protoField(dur, 1, protowire.VarintType); v != nil {
			secs, _ = protowire.ConsumeVarint(v)
		}
		if v := protoField(dur, 2, protowire.VarintType); v != nil {
			nanos, _ = protowire.ConsumeVarint(v)
		}
		d := time.Duration(int64(secs))*time.Second + time.Duration(int64(nanos))
		if d < 0 || int64(secs) > int64(24*time.Hour/time.Second) {
			return 0
		}
		return max(d, time.Millisecond) // present: the server wants a retry
	}
	return 0
}

// protoField returns the last occurrence of field num with wire type typ in
// message b: the bytes of a length-delimited field, or the encoded varint;
// nil when absent or malformed.
func protoField(b []byte, num protowire.Number, typ protowire.Type) []byte {
	var out []byte
	for len(b) > 0 {
		n, t, k := protowire.ConsumeTag(b)
		if k < 0 {
			return nil
		}
		b = b[k:]
		m := protowire.ConsumeFieldValue(n, t, b)
		if m < 0 {
			return nil
		}
		if n == num && t == typ {
			if t == protowire.BytesType {
				out, _ = protowire.ConsumeBytes(b[:m])
				if out == nil {
					out = []byte{}
				}
			} else {
				out = b[:m]
			}
		}
		b = b[m:]
	}
	return out
}
