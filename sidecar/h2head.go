package sidecar

import (
	"crypto/tls"
	"net"
	"net/http"
)

// An h2c caller's request head over limits.max_header_bytes costs that
// stream alone: ferry answers it 431 (header_too_large), counted and
// logged as any request.
//
// net/http's HTTP/2 server advertises the limit it is given
// (http.Server.MaxHeaderBytes plus 320 bytes, as SETTINGS_MAX_HEADER_LIST_SIZE)
// and holds a caller's header block to it while it decodes it: a block
// that passes it in its last frame gets its own 431, but one whose frames
// go on after the limit was passed (any CONTINUATION frame then, or a
// fragment twice the size still allowed) ends the whole connection,
// GOAWAY PROTOCOL_ERROR, every stream on it failing; a single field longer
// than the limit ends it too (COMPRESSION_ERROR). With 16 KiB frames that
// is any head more than a frame over the limit. Those refusals are also
// net/http's own, written before any handler runs, so ferry neither
// counted nor logged them.
//
// So ferry gives net/http's HTTP/2 server h2HeadRoom more than the limit
// (an HTTP/2 connection's base server is the one its TLSNextProto function
// is handed: widenH2Heads passes one of its own), and the proxy's handler
// holds the head to limits.max_header_bytes itself (h2HeadOver). A head
// more than h2HeadRoom over the limit still ends its connection as
// before: HPACK's state is the connection's, and net/http will not decode
// that much only to drop it. HTTP/1.x heads are untouched: net/http's
// server holds those to limits.max_header_bytes as before.

// h2HeadRoom is how far past limits.max_header_bytes an h2c caller's head
// is read, to be answered 431 on its stream.
const h2HeadRoom = 1 << 20

// h2FieldOverhead is what HTTP/2 counts for each header field beside its
// name and value (RFC 9113 §6.5.2), and h2LimitSlack what net/http's
// HTTP/2 server adds to http.Server.MaxHeaderBytes (ten fields' overhead).
const (
	h2FieldOverhead = 32
	h2LimitSlack    = 10 * h2FieldOverhead
)

// h2HeadOver reports the size of r's header list as HTTP/2 counts it (its
// four request pseudo-header fields and its fields, each with 32 bytes of
// overhead; a Cookie net/http's server joined counts as one field) and
// whether it is over limit, limits.max_header_bytes, by the measure
// net/http's HTTP/2 server applied to it (the limit plus 320 bytes).
func h2HeadOver(r *http.Request, limit int) (int, bool) {
	n := len(":method") + len(r.Method) + len(":scheme") + len("http") +
		len(":authority") + len(r.Host) + len(":path") + len(r.RequestURI) + 4*h2FieldOverhead
	for k, vs := range r.Header {
		for _, v := range vs {
			n += len(k) + len(v) + h2FieldOverhead
		}
	}
	return n, n > limit+h2LimitSlack
}

// h2TrailersOver reports the size of an HTTP/2 caller's request trailers
// as HTTP/2 counts them (each field with 32 bytes of overhead), and
// whether it is over limit by the measure h2HeadOver applies: a trailer
// block is a header block, which net/http's HTTP/2 server reads with the
// same h2HeadRoom to spare.
func h2TrailersOver(trailer http.Header, limit int) (int, bool) {
	n := 0
	for k, vs := range trailer {
		for _, v := range vs {
			n += len(k) + len(v) + h2FieldOverhead
		}
	}
	return n, n > limit+h2LimitSlack
}

// nextProtoUnencryptedHTTP2 is the TLSNextProto key under which
// net/http's server keeps the function that serves an h2c connection.
const nextProtoUnencryptedHTTP2 = "unencrypted_http2"

// widenH2Heads makes srv serve its h2c connections with a head limit
// h2HeadRoom over its own (see above). Call it once srv's hooks are set:
// the HTTP/2 connections' base server takes them as they are then.
func widenH2Heads(srv *http.Server) {
	// Serve sets up srv's HTTP/2 (its TLSNextProto) before it accepts;
	// on a listener whose Accept fails it returns at once.
	srv.Serve(noAccept{})
	serve := srv.TLSNextProto[nextProtoUnencryptedHTTP2]
	if serve == nil {
		return // no h2c on srv: nothing to widen
	}
	limit := srv.MaxHeaderBytes
	if limit <= 0 {
		limit = http.DefaultMaxHeaderBytes
	}
	// What net/http's HTTP/2 server reads of its base server.
	base := &http.Server{
		Handler:           srv.Handler,
		Protocols:         srv.Protocols,
		ReadTimeout:       srv.ReadTimeout,
		ReadHeaderTimeout: srv.ReadHeaderTimeout,
		WriteTimeout:      srv.WriteTimeout,
		IdleTimeout:       srv.IdleTimeout,
		MaxHeaderBytes:    limit + h2HeadRoom,
		HTTP2:             srv.HTTP2,
		ConnState:         srv.ConnState,
		ErrorLog:          srv.ErrorLog,
	}
	srv.TLSNextProto[nextProtoUnencryptedHTTP2] = func(_ *http.Server, c *tls.Conn, h http.Handler) {
		serve(base, c, h)
	}
}

// noAccept is a listener that accepts nothing.
type noAccept struct{}

func (noAccept) Accept() (net.Conn, error) { return nil, net.ErrClosed }
func (noAccept) Close() error              { return nil }
func (noAccept) Addr() net.Addr            { return &net.TCPAddr{} }
