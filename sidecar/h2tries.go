package sidecar

import (
	"context"
	"errors"
	"io"
	"net/http/httptrace"
	"sync/atomic"
)

// errH2Refused ends an h2c request that net/http's HTTP/2 client would
// send again: the upstream did not process it.
var errH2Refused = errors.New("the upstream refused the request's stream unprocessed (RST_STREAM REFUSED_STREAM, a GOAWAY below it, or a PROTOCOL_ERROR reset)")

// h2Tries ends an h2c request's try where net/http would send it again,
// so that ferry's retries decide what follows (see Proxy.attempts).
//
// net/http's HTTP/2 client sends a request again after the upstream
// refused its stream (REFUSED_STREAM, a GOAWAY whose last stream id is
// below it) or reset it with PROTOCOL_ERROR: to the same endpoint, up to
// 6 times, the second at once and the others 1, 2, 4, 8, 16 and then 32 s
// apart (a request refused every time was answered after about a minute),
// and after a PROTOCOL_ERROR reset or a GOAWAY on a new connection whose
// Transport starts the count over with no backoff at all. Each try begins
// with GotConn; another is about to begin when net/http asks for a
// connection (GetConn) or for the body again (GetBody) after the first
// try began. There the try ends, cancelled with errH2Refused: GetBody
// gives no body, GetConn dials nothing, and a try cancelled at GotConn
// writes no HEADERS (net/http's client checks the request's context
// before it encodes them), so nothing more reaches the upstream.
type h2Tries struct {
	n      atomic.Int32
	cancel context.CancelCauseFunc
}

// trace is the ClientTrace that counts and ends the tries.
func (t *h2Tries) trace() *httptrace.ClientTrace {
	return &httptrace.ClientTrace{
		GetConn: func(string) {
			if t.n.Load() >= 1 {
				t.cancel(errH2Refused)
			}
		},
		GotConn: func(httptrace.GotConnInfo) {
			if t.n.Add(1) > 1 {
				t.cancel(errH2Refused)
			}
		},
	}
}

// getBody wraps a request's GetBody: a refused request's body is not
// given again to net/http (ferry's retry sends it, see
// requestBody.replayAttempt).
func (t *h2Tries) getBody(gb func() (io.ReadCloser, error)) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) {
		if t.n.Load() >= 1 {
			t.cancel(errH2Refused)
			return nil, errH2Refused
		}
		return gb()
	}
}

// isH2Refused reports whether an attempt whose context is ctx ended
// because the upstream refused its h2c stream unprocessed.
func isH2Refused(ctx context.Context, err error) bool {
	return errors.Is(err, errH2Refused) || errors.Is(context.Cause(ctx), errH2Refused)
}
