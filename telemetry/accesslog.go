package telemetry

import (
	"encoding/hex"
	"io"
	"math"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/ferrymesh/ferry/internal/linewriter"
	"go.opentelemetry.io/otel/trace"
)

// Access log keys: one JSON object per request, written when it ends.
//
//	{"time":"...","level":"INFO","msg":"request","listener":"outbound",
//	 "method":"GET","route":"files","service":"files","endpoint":"10.0.0.7:8080",
//	 "status":200,"duration_ms":12.5,"bytes_in":0,"bytes_out":5120,
//	 "attempts":1,"reason":"","trace_id":"4bf9...","span_id":"00f0..."}
//
// trace_id and span_id are the server span's (empty when the request is not
// traced). Failures the proxy made are logged at WARN. A gRPC call's line
// ends with grpc_status: the gRPC status code its caller got
// (status stays the HTTP status, 200 for a call the upstream answered);
// other requests' lines have no grpc_status.
//
// A line is what log/slog's JSON handler writes for the record (the same
// keys in the same order, the same escaping, numbers and time), built
// without it: the handler's caller lookup, attribute values, escaping loop
// and json.Marshal of the duration took about 24 thousand instructions per
// request, more than relaying a small request does
// (TestAccessLineIsSlogs holds the two to the same bytes). One difference
// no clock gives: for a year outside 0-9999 slog writes an error before
// the time, which made the line invalid JSON; ferry writes the time.
const accessLogMsg = "request"

// accessLog writes access log lines to w: through a linewriter.Writer,
// which takes concurrent writes, or under mu.
type accessLog struct {
	w      io.Writer
	mu     sync.Mutex
	locked bool
}

func newAccessLog(w io.Writer) *accessLog {
	_, safe := w.(*linewriter.Writer)
	return &accessLog{w: w, locked: !safe}
}

func (l *accessLog) write(line []byte) {
	if l.locked {
		l.mu.Lock()
		defer l.mu.Unlock()
	}
	l.w.Write(line) // a linewriter.Writer counts what it drops
}

// accessLines holds line buffers; one longer than maxAccessLine (a very
// long route or reason) is not kept.
var accessLines = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

const maxAccessLine = 16 << 10

// logRequest writes q's line: it ended with o after elapsed, at now, its
// server span's context sc.
func (t *Telemetry) logRequest(q *Request, o Outcome, elapsed time.Duration, now time.Time, sc trace.SpanContext) {
	if t.log == nil {
		return
	}
	bp := accessLines.Get().(*[]byte)
	b := appendAccessLine((*bp)[:0], q, o, elapsed, now, sc)
	t.log.write(b)
	if cap(b) <= maxAccessLine {
		*bp = b
		accessLines.Put(bp)
	}
}

func appendAccessLine(b []byte, q *Request, o Outcome, elapsed time.Duration, now time.Time, sc trace.SpanContext) []byte {
	b = append(b, `{"time":"`...)
	b = now.AppendFormat(b, time.RFC3339Nano)
	if o.Reason != "" {
		b = append(b, `","level":"WARN","msg":"request","listener":"`...)
	} else {
		b = append(b, `","level":"INFO","msg":"request","listener":"`...)
	}
	b = appendJSONString(b, string(q.listener))
	b = append(b, `","method":"`...)
	b = appendJSONString(b, q.method)
	b = append(b, `","route":"`...)
	b = appendJSONString(b, q.route)
	b = append(b, `","service":"`...)
	b = appendJSONString(b, q.service)
	b = append(b, `","endpoint":"`...)
	b = appendJSONString(b, q.endpoint)
	b = append(b, `","status":`...)
	b = strconv.AppendInt(b, int64(o.Status), 10)
	b = append(b, `,"duration_ms":`...)
	b = appendJSONFloat(b, float64(elapsed.Microseconds())/1000)
	b = append(b, `,"bytes_in":`...)
	b = strconv.AppendInt(b, o.BytesIn, 10)
	b = append(b, `,"bytes_out":`...)
	b = strconv.AppendInt(b, o.BytesOut, 10)
	b = append(b, `,"attempts":`...)
	b = strconv.AppendInt(b, int64(q.attempts), 10)
	b = append(b, `,"reason":"`...)
	b = appendJSONString(b, o.Reason)
	b = append(b, `","trace_id":"`...)
	if sc.IsValid() {
		tid, sid := sc.TraceID(), sc.SpanID()
		b = hex.AppendEncode(b, tid[:])
		b = append(b, `","span_id":"`...)
		b = hex.AppendEncode(b, sid[:])
	} else {
		b = append(b, `","span_id":"`...)
	}
	b = append(b, '"')
	if o.GRPC {
		b = append(b, `,"grpc_status":`...)
		b = strconv.AppendInt(b, int64(o.GRPCStatus), 10)
	}
	return append(b, "}\n"...)
}

// appendJSONFloat writes f as encoding/json does (and so slog's JSON
// handler): plain decimals, exponents only outside [1e-6, 1e21).
func appendJSONFloat(b []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// e-09 as e-9
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

// appendJSONString writes s escaped as slog's JSON handler escapes a
// string: '"', '\\' and control bytes (\n, \r, \t by name, others as
// \u00XX), an invalid UTF-8 byte as \ufffd, U+2028 and U+2029 as escapes;
// everything else as it is, DEL, '<', '>' and '&' included.
func appendJSONString(b []byte, s string) []byte {
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= ' ' && c < utf8.RuneSelf && c != '"' && c != '\\' {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, `\n`...)
			case '\r':
				b = append(b, `\r`...)
			case '\t':
				b = append(b, `\t`...)
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	return append(b, s[start:]...)
}
