package sidecar

import (
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
	const base, textSuffix = "application/grpc-web", "-text"
	v := ct[0]
	if len(v) < len(base) || !strings.EqualFold(v[:len(base)], base) {
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
