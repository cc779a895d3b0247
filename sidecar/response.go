package sidecar

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"strings"
	"sync/atomic"
)

// parseResponse reads, from what br already holds, an upstream response
// head of the plainest kind and returns the response with its body, or
// nil, reading nothing, for anything else, which http.ReadResponse then
// reads as before: "HTTP/1.1 NNN reason", CRLF line ends, header names of
// token characters, values of visible ASCII, space and tab, exactly one
// Content-Length of plain digits and no Transfer-Encoding, or the other
// way round one Transfer-Encoding saying chunked, no Trailer field, a
// status with a body (not 1xx, 204 or 304) and a request that is not
// HEAD. That is nearly every answer to a small request; it spares the
// textproto reader, its allocations and the transfer decoding that a
// Content-Length body does not need. A chunked body's chunks go through
// net/http's own decoder (httputil.NewChunkedReader), its trailers are
// read as net/http's body reader reads them (chunkedBody).
// FuzzResponseHead holds it to reading every head it accepts, and its
// body and trailers, as net/http does.
func parseResponse(br *bufio.Reader, out *http.Request) (*plainResponse, rawFields) {
	if out.Method == http.MethodHead {
		return nil, rawFields{}
	}
	buf, _ := br.Peek(br.Buffered())
	end := indexCRLFCRLF(buf)
	if end < 0 {
		return nil, rawFields{} // not all here yet
	}
	le, _ := out.Context().Value(laneCancelKey{}).(*laneExchange)
	var spare *plainResponse
	if le != nil && !le.resTaken {
		spare = &le.res
	}
	pr, f := parseResponseHead(buf[:end+4], spare)
	if pr == nil {
		return nil, rawFields{}
	}
	if spare != nil {
		le.resTaken = true
	}
	br.Discard(end + 4)
	res := &pr.res
	res.Request = out
	switch {
	case res.TransferEncoding != nil:
		res.Body = &chunkedBody{br: br, cr: httputil.NewChunkedReader(br), res: res}
		chunkedRead.Add(1)
	case res.ContentLength == 0:
		res.Body = http.NoBody
	default:
		pr.body = lengthBody{r: br, left: res.ContentLength}
		res.Body = &pr.body
	}
	return pr, f
}

// parseLength parses a Content-Length value: one or more digits (strconv's
// signed forms, "+2" and "-0", are not a length) of a value that fits an
// int64, as strconv.ParseUint(v, 10, 63) reads them, in a loop a fifth
// of its cost.
func parseLength(v string) (int64, bool) {
	if v == "" {
		return 0, false
	}
	var n int64
	for i := 0; i < len(v); i++ {
		d := int64(v[i]) - '0'
		if d < 0 || d > 9 || n > (math.MaxInt64-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// plainResponse is what a response parseResponse reads needs, in one
// allocation: the response, its body, and the zero-copy client's body
// around that (spliceBody, see fastH1.RoundTrip).
type plainResponse struct {
	res  http.Response
	body lengthBody
	sb   spliceBody
}

// rawFields are the header lines of a plain upstream response that can go
// to an HTTP/1.1 caller as they came (see connWriter.writeFields): checked
// by scanFields, with no hop-by-hop field among them, and not of an event
// stream or a gRPC-Web answer (whose Content-Type the proxy looks at).
// Such a response has no Header map until one is asked for (header):
// building it, and writing it back out field by field, was a good part of
// ferry's work per small request.
type rawFields struct {
	lines  string // the header lines and the empty line, each ending in CRLF; "" when none
	date   bool   // a Date field is among them
	length int64  // the Content-Length
}

// header parses the lines into a Header map.
func (f *rawFields) header() http.Header { return allFields(f.lines) }

// allFields is parseFields keeping every field of lines scanFields passed.
func allFields(lines string) http.Header {
	return parseFields(lines, nil, nil, func(string, string) (bool, bool) { return true, true })
}

// parseResponseHead parses a whole response head (ending in an empty line)
// of the kind parseResponse serves, or returns nil. A head whose fields can
// go on as they came comes with them as rawFields and without a Header
// map; any other, with its map.
//
// The response is spare's when spare is not nil: a lane exchange's first
// response lives in the exchange (laneExchange.res), allocated with it.
func parseResponseHead(head []byte, spare *plainResponse) (*plainResponse, rawFields) {
	// One string holds the head; the status and every header value are
	// parts of it, and the values share one array.
	text := string(head)
	line, rest, ok := cutLine(text)
	status, isH11 := strings.CutPrefix(line, "HTTP/1.1 ")
	if !ok || !isH11 || len(status) < 3 || (len(status) > 3 && status[3] != ' ') {
		return nil, rawFields{}
	}
	code := 0
	for i := 0; i < 3; i++ {
		c := status[i]
		if c < '0' || c > '9' {
			return nil, rawFields{}
		}
		code = code*10 + int(c-'0')
	}
	if code < 200 || code == http.StatusNoContent || code == http.StatusNotModified {
		return nil, rawFields{}
	}
	for i := 3; i < len(status); i++ {
		if c := status[i]; (c < ' ' && c != '\t') || c >= 0x7f {
			return nil, rawFields{}
		}
	}
	pr := spare
	if pr == nil {
		pr = new(plainResponse)
	}
	chunked := false
	*pr = plainResponse{res: http.Response{Status: status, StatusCode: code, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, ContentLength: -1}}
	res := &pr.res
	var f rawFields
	asCame := true
	ok = scanFields(rest, func(key, v string) bool {
		switch key {
		case "Content-Length":
			if res.ContentLength >= 0 || v == "" {
				return false
			}
			n, ok := parseLength(v)
			if !ok {
				return false
			}
			res.ContentLength = n
		case "Transfer-Encoding":
			// One field, exactly chunked, as net/http's reader takes it.
			if chunked || !strings.EqualFold(strings.Trim(v, " \t"), "chunked") {
				return false
			}
			chunked = true
		case "Trailer":
			return false
		case "Connection":
			if hasToken([]string{v}, "close") {
				res.Close = true
			}
		case "Date":
			f.date = true
		case "Content-Type":
			if isEventStreamType(v) {
				asCame = false // flushed as it goes: respond needs its header
			}
			if web, _ := grpcWebTypeOf(v); web {
				// Its grpc-status judges it (grpcWebStatus), which the
				// proxy finds by its Content-Type in the header.
				asCame = false
			}
		}
		if isHopHeader(key) {
			asCame = false
		}
		return true
	})
	if !ok || (res.ContentLength < 0) != chunked {
		// No framing, or both (which net/http's reader and headFixConn
		// judge).
		return nil, rawFields{}
	}
	if chunked {
		res.TransferEncoding = chunkedOnly
		asCame = false // Transfer-Encoding is hop-by-hop
	}
	if asCame {
		f.lines, f.length = rest, res.ContentLength
		return pr, f
	}
	res.Header = allFields(rest)
	if chunked {
		delete(res.Header, "Transfer-Encoding") // as net/http's reader
	}
	if res.Close {
		// As net/http: the close is the response's Close, not a header.
		// The fields it names go with it: once it is gone, nothing
		// knows them for hop-by-hop.
		removeHopHeaders(res.Header, false)
	}
	return pr, rawFields{}
}

// lengthBody is a response body of a known length read from br: io.EOF
// after exactly that many bytes, io.ErrUnexpectedEOF when the connection
// ends first, as net/http's body reader.
type lengthBody struct {
	r    *bufio.Reader
	left int64
}

func (b *lengthBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	switch {
	case b.left == 0:
		return n, io.EOF
	case err == io.EOF:
		return n, io.ErrUnexpectedEOF
	}
	return n, err
}

// Close does nothing: the connection's owner (spliceBody) decides whether
// it can be reused, from whether the body was read to its end.
func (b *lengthBody) Close() error { return nil }

// chunkedRead counts chunked response bodies parseResponse read.
var chunkedRead atomic.Int64

// chunkedOnly is the TransferEncoding of a chunked response or lane
// request, shared by all of them: read-only (ferry only ever replaces
// their slice).
var chunkedOnly = []string{"chunked"}

// chunkedBody is a chunked response body read from br: its chunks through
// net/http's decoder, then its trailer section, whose fields go into the
// response's Trailer (merged, as net/http's body reader has them, whether
// announced or not). Its errors stay: a body that broke reads broken.
type chunkedBody struct {
	br  *bufio.Reader
	cr  io.Reader
	res *http.Response
	err error
}

func (b *chunkedBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.cr.Read(p)
	if err == io.EOF {
		var hdr textproto.MIMEHeader
		if hdr, err = readTrailerSection(b.br, "an upstream's", 0); err == nil {
			mergeTrailer(&b.res.Trailer, hdr)
			err = io.EOF
		}
	}
	b.err = err
	return n, err
}

// readTrailerSection reads the trailer section after a chunked body's last
// chunk (whose: the sender's, for errors): an empty line (no fields,
// nil), or fields ended by one, no more of them than the reader's buffer
// holds, nor than max bytes when max > 0 (net/http refuses a
// "suspiciously long trailer" the same way, at its reader's size).
func readTrailerSection(br *bufio.Reader, whose string, max int) (textproto.MIMEHeader, error) {
	buf, err := br.Peek(2)
	switch {
	case len(buf) == 2 && buf[0] == '\r' && buf[1] == '\n':
		br.Discard(2)
		return nil, nil
	case len(buf) < 2:
		return nil, io.ErrUnexpectedEOF
	case err != nil:
		return nil, err
	}
	if !upcomingEmptyLine(br, max) {
		return nil, fmt.Errorf("ferry: %s trailer section too long or cut short", whose)
	}
	hdr, err := textproto.NewReader(br).ReadMIMEHeader()
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return hdr, err
}

// mergeTrailer merges the fields of a trailer section into *dst, as
// net/http's body reader does, whether they were announced or not. A
// section that held no fields but did not end at once (a bare LF, which
// net/http's reader takes for the empty line) still leaves an empty map,
// as net/http's does.
func mergeTrailer(dst *http.Header, hdr textproto.MIMEHeader) {
	if hdr == nil {
		return
	}
	if *dst == nil {
		*dst = http.Header(hdr)
		return
	}
	for k, vv := range hdr {
		(*dst)[k] = vv
	}
}

// upcomingEmptyLine reports whether br holds, or comes to hold before its
// buffer is full (or it holds max bytes, when max > 0), a CRLF CRLF (the
// trailer section's end), looked for one byte further at a time as it
// comes, as net/http's body reader does.
func upcomingEmptyLine(br *bufio.Reader, max int) bool {
	for n := 4; max <= 0 || n <= max; n++ {
		buf, err := br.Peek(n)
		if bytes.HasSuffix(buf, []byte("\r\n\r\n")) {
			return true
		}
		if err != nil {
			return false
		}
	}
	return false
}

// Close does nothing, as lengthBody's.
func (b *chunkedBody) Close() error { return nil }
