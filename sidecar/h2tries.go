package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http/httptrace"
	"sync/atomic"
)

// h2MaxTries bounds the tries net/http makes of one request to an h2c
// upstream: its HTTP/2 client's own bound, a first try and 6 more.
const h2MaxTries = 7

// errH2Tries ends an h2c request net/http would send yet again.
var errH2Tries = fmt.Errorf("gave up after %d tries: the upstream refused or reset the request's stream each time (REFUSED_STREAM, PROTOCOL_ERROR, or a GOAWAY before it), which net/http's HTTP/2 client sends again", h2MaxTries)

// h2Tries counts the tries net/http makes of one request to an h2c
// upstream, and ends the request once h2MaxTries were made.
//
// net/http's HTTP/2 client sends a request again on a new stream after the
// upstream refused it (REFUSED_STREAM, a GOAWAY below it) or reset it with
// PROTOCOL_ERROR, up to 6 times and 1 s to 16 s apart, on the connection
// it has. After a PROTOCOL_ERROR reset it no longer uses that connection
// for new streams, so it finds none and hands the request back to the
// Transport, which dials a new connection and starts it over, counting
// from the first try again, with no backoff: an upstream that resets every
// stream that way got the same request on a new connection as fast as it
// answered, for as long as the caller waited (each try has its own
// response_header). Each try begins with GotConn; another is about to
// begin when net/http asks for a connection (GetConn) or for the body
// again (GetBody), which is where a spent request ends, before the try
// goes out.
type h2Tries struct {
	n      atomic.Int32
	cancel context.CancelCauseFunc
}

// trace is the ClientTrace that counts and ends the tries.
func (t *h2Tries) trace() *httptrace.ClientTrace {
	return &httptrace.ClientTrace{
		GetConn: func(string) {
			if t.n.Load() >= h2MaxTries {
				t.cancel(errH2Tries)
			}
		},
		GotConn: func(httptrace.GotConnInfo) {
			if t.n.Add(1) > h2MaxTries {
				t.cancel(errH2Tries)
			}
		},
	}
}

// getBody wraps a request's GetBody: a spent request's body is not given
// again.
func (t *h2Tries) getBody(gb func() (io.ReadCloser, error)) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) {
		if t.n.Load() >= h2MaxTries {
			t.cancel(errH2Tries)
			return nil, errH2Tries
		}
		return gb()
	}
}

// isH2Tries reports whether an attempt whose context is ctx ended because
// its h2c request was tried h2MaxTries times.
func isH2Tries(ctx context.Context, err error) bool {
	return errors.Is(err, errH2Tries) || errors.Is(context.Cause(ctx), errH2Tries)
}
