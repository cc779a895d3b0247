package sidecar

import (
	"bytes"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
)

// gRPC-Web (gRPC's doc/PROTOCOL-WEB.md) is gRPC over any HTTP version,
// for browsers: Content-Type application/grpc-web or
// application/grpc-web-text (the body base64-encoded), each alone or with
// a +format or parameters. Its clients (grpc-web, connect-web,
// improbable-eng's) read how a call went in grpc-status and grpc-message:
// in the head of a trailers-only answer, or in a trailer frame at the end
// of the body (a length-prefixed message whose flag byte has bit 0x80
// set, holding HTTP/1-style header lines). A plain 502 or 503 from ferry
// reaches them as a bare HTTP error, ferry's reason lost.

// grpcWebType reports whether the Content-Type ct is gRPC-Web's, and
// whether it is the text (base64) variant, without regard to case.
func grpcWebType(ct []string) (web, text bool) {
	if len(ct) != 1 {
		return false, false
	}
	return grpcWebTypeOf(ct[0])
}

// grpcWebTypeOf is grpcWebType for one Content-Type value v.
func grpcWebTypeOf(v string) (web, text bool) {
	const base, textSuffix = "application/grpc-web", "-text"
	// Every response's type is looked at: "application/" types other than
	// gRPC's are told apart by their 13th byte before the whole compare.
	if len(v) < len(base) || v[12]|0x20 != 'g' || !strings.EqualFold(v[:len(base)], base) {
		return false, false
	}
	rest := v[len(base):]
	if len(rest) >= len(textSuffix) && strings.EqualFold(rest[:len(textSuffix)], textSuffix) {
		rest, text = rest[len(textSuffix):], true
	}
	if rest == "" || rest[0] == '+' || rest[0] == ';' {
		return true, text
	}
	return false, false
}

// grpcWebRequest returns the Content-Type of r when r is a gRPC-Web call
// (over any HTTP version), to be answered ferry's failures in gRPC-Web's
// form with it; "" for any other request.
func grpcWebRequest(r *http.Request) string {
	ct := r.Header["Content-Type"]
	if web, _ := grpcWebType(ct); web {
		return ct[0]
	}
	return ""
}

// writeGRPCWebFailure answers a gRPC-Web call with a proxy-made failure
// as a trailers-only response (PROTOCOL-WEB.md: "Trailers may be sent
// together with response headers, with no message in the body"): HTTP
// 200, the request's own gRPC-Web Content-Type ct, grpc-status (the code
// a gRPC call gets, grpcCode), grpc-message, X-Ferry-Error, and no body.
// The text variant needs no base64 then: there is no body to encode.
// Over HTTP/2 the head ends the stream alone, as writeGRPCFailure's does;
// over HTTP/1 a Content-Length of 0 ends it, and close says that the
// connection closes after it (a request body left unread).
func writeGRPCWebFailure(w http.ResponseWriter, f failure, ct string, h1, close bool) {
	h := w.Header()
	clear(h)
	reason := grpcReason(f.reason)
	h["Content-Type"] = []string{sanitizeHeaderValue(ct)}
	h["Grpc-Status"] = []string{strconv.Itoa(grpcCode(f))}
	h["Grpc-Message"] = []string{grpcPercentEncode(reason)}
	h["X-Ferry-Error"] = []string{sanitizeHeaderValue(reason)}
	if h1 {
		h["Content-Length"] = []string{"0"}
		if close {
			h["Connection"] = []string{"close"}
		}
	} else {
		h["Content-Length"] = nil
	}
	w.WriteHeader(http.StatusOK)
}

// grpcWebTrailerMax bounds what ferry keeps of a gRPC-Web trailer frame
// to read its grpc-status: header lines past it (custom trailer metadata,
// usually after grpc-status and grpc-message) are stepped over unread.
// gRPC lets clients refuse trailers over 8 KiB.
const grpcWebTrailerMax = 8 << 10

// grpcWebStatus follows a gRPC-Web response's body as it is relayed to
// the caller, without holding it, for the grpc-status of its trailer
// frame: it steps over the length-prefixed frames as grpcFrames does, and
// keeps only the payload of a trailer frame (flag bit 0x80), up to
// grpcWebTrailerMax. The text variant is base64, which ferry decodes as
// gRPC-Web clients do, four characters at a time: PROTOCOL-WEB.md lets a
// server pad at any flush, so the body is padded base64 chunks one after
// the other, each a whole number of four-character groups. Bytes that
// are no such base64 stop the following: the response is then judged by
// its head alone.
type grpcWebStatus struct {
	text   bool
	quad   [4]byte // base64 characters of an unfinished group (text)
	nq     int
	broken bool // the text was no base64 ferry can decode

	head    int    // bytes of the current frame's 5-byte prefix seen
	flag    byte   // the current frame's flag byte
	left    uint64 // payload bytes of the current frame still to come
	trailer []byte // the current trailer frame's payload, up to grpcWebTrailerMax
	cut     bool   // the current trailer frame was longer than what was kept

	// Of the last whole trailer frame: frame says ferry read it, and ok
	// that it carried a grpc-status, code; lost says ferry could not
	// read it (compressed, or cut at grpcWebTrailerMax before any
	// grpc-status line).
	frame bool
	lost  bool
	code  int
	ok    bool
}

// observe follows p, bytes of the body relayed to the caller.
func (g *grpcWebStatus) observe(p []byte) {
	if !g.text {
		g.frames(p)
		return
	}
	if g.broken {
		return
	}
	var out [768]byte
	n := 0
	for _, c := range p {
		if c == '\r' || c == '\n' {
			continue
		}
		g.quad[g.nq] = c
		if g.nq++; g.nq < 4 {
			continue
		}
		g.nq = 0
		m, err := base64.StdEncoding.Decode(out[n:], g.quad[:])
		if err != nil {
			g.broken, g.ok = true, false
			return
		}
		if n += m; n > len(out)-3 {
			g.frames(out[:n])
			n = 0
		}
	}
	g.frames(out[:n])
}

// frames steps over p, decoded body bytes, keeping a trailer frame's
// payload and reading it once it is whole.
func (g *grpcWebStatus) frames(p []byte) {
	for len(p) > 0 {
		if g.head < 5 {
			if g.head == 0 {
				g.flag, g.left = p[0], 0
			} else {
				g.left = g.left<<8 | uint64(p[0])
			}
			g.head++
			p = p[1:]
			if g.head == 5 {
				g.trailer, g.cut = g.trailer[:0], false
				if g.left == 0 {
					g.frameEnd()
				}
			}
			continue
		}
		n := uint64(len(p))
		if n > g.left {
			n = g.left
		}
		if g.flag&0x80 != 0 {
			keep := p[:n]
			if room := grpcWebTrailerMax - len(g.trailer); len(keep) > room {
				keep, g.cut = keep[:room], true
			}
			g.trailer = append(g.trailer, keep...)
		}
		g.left -= n
		p = p[n:]
		if g.left == 0 {
			g.frameEnd()
		}
	}
}

// frameEnd reads a whole trailer frame's grpc-status, and begins the
// next frame. A compressed trailer frame (flag 0x81) is not read.
func (g *grpcWebStatus) frameEnd() {
	g.head = 0
	if g.flag&0x80 == 0 {
		return
	}
	g.frame, g.lost, g.code, g.ok = false, true, 0, false
	if g.flag&0x01 != 0 {
		return
	}
	lines := g.trailer
	var vals []string
	for len(lines) > 0 {
		line, rest, found := bytes.Cut(lines, []byte{'\n'})
		lines = rest
		if !found && g.cut {
			break // cut short where ferry stopped keeping
		}
		name, value, ok := bytes.Cut(bytes.TrimSuffix(line, []byte{'\r'}), []byte{':'})
		if ok && strings.EqualFold(string(bytes.TrimSpace(name)), "grpc-status") {
			vals = append(vals, string(bytes.Trim(value, " \t")))
		}
	}
	g.code, g.ok = parseGRPCStatus(vals)
	// A frame cut short with no grpc-status in what ferry kept may have
	// had one past that.
	g.frame = g.ok || !g.cut
	g.lost = !g.frame
}

// status returns the gRPC status a gRPC-Web client makes of res, a
// gRPC-Web answer (a 200) whose body g followed to its end: the
// grpc-status of its trailer frame, or, when no trailer frame came, of
// its head (a trailers-only answer); UNKNOWN when the one that came
// carries none (gRPC's code for a call that ended without a status,
// which grpc-web and connect-web clients report). ok is false when ferry
// could not read it: the -text body was no base64 it can decode, or the
// trailer frame was compressed, or cut at grpcWebTrailerMax before a
// grpc-status line; the head's grpc-status is taken then, if it has one.
func (g *grpcWebStatus) status(res *http.Response) (code int, ok bool) {
	head, inHead := parseGRPCStatus(res.Header["Grpc-Status"])
	switch {
	case g.broken || g.lost:
		return head, inHead
	case g.frame && g.ok:
		return g.code, true
	case !g.frame && inHead:
		return head, true
	}
	return grpcUnknown, true
}

// health returns the HTTP status the breaker and outlier ejection judge a
// whole gRPC-Web response res by, as grpcHealthStatus does a gRPC one, or
// 0 to judge it by its own: that of its status (see status), for a 200.
// An answer that ended without a status is UNKNOWN, a 500.
func (g *grpcWebStatus) health(res *http.Response) int {
	if res.StatusCode != http.StatusOK {
		return 0
	}
	code, ok := g.status(res)
	if !ok {
		return 0
	}
	return grpcHealthOfCode(code)
}

// grpcWebHeadStatus is grpcHeadStatus for a gRPC-Web call's answer, left
// unread (discarded for a retry): false for a gRPC-Web 200, whose status
// may come in its body; else the status its client makes of the HTTP
// one.
func grpcWebHeadStatus(res *http.Response) (int, bool) {
	if web, _ := grpcWebType(res.Header["Content-Type"]); web && res.StatusCode == http.StatusOK {
		return 0, false
	}
	return grpcCodeOfHTTP(res.StatusCode), true
}
