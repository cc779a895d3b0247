package sidecar

import (
	"net/http"
	"strconv"
	"sync/atomic"
)

// A gRPC response whose upstream breaks, or that ferry cuts (body_idle,
// the overall timeout), after its head went out can end as a gRPC call
// does, with grpc-status and grpc-message in trailers, when what the
// caller got so far is whole messages: the caller then has every message
// it read and is told, in gRPC's terms, why no more come. A reset stream
// told it only "stream terminated by RST_STREAM". A break inside a
// message still resets the stream: a partial message followed by a status
// must never read as a complete call.
//
// grpcFrames follows the relay through the length-prefixed messages
// (gRPC over HTTP/2, "Length-Prefixed-Message": a compressed flag byte, a
// 4-byte big-endian length, that many bytes) without copying: per relayed
// chunk, it steps over the messages the chunk holds. Only a gRPC call
// answered in gRPC (grpcResponse) has one; any other response relays
// without it.
type grpcFrames struct {
	head int    // bytes of the current message's 5-byte prefix relayed; 0: at a message boundary
	left uint64 // bytes of the current message still to relay once its prefix is whole
	// state says whether the relay waits for the upstream at a message
	// boundary, which the cut of writes to the caller (cutOnCancel) then
	// spares: the upstream's read ends with the exchange, and the stream
	// can end with a status instead of a reset.
	state atomic.Int32
}

const (
	framesBusy    = iota // writing to the caller, or waiting inside a message
	framesWaiting        // waiting for the upstream at a message boundary
	framesSpared         // the exchange ended while framesWaiting: the caller's stream was left whole
	framesCut            // the exchange ended otherwise: writes to the caller were cut
)

// advance steps over p, relayed to the caller whole.
func (g *grpcFrames) advance(p []byte) {
	for len(p) > 0 {
		if g.head < 5 {
			if g.head > 0 {
				g.left = g.left<<8 | uint64(p[0])
			}
			g.head++
			p = p[1:]
			if g.head == 5 && g.left == 0 {
				g.head = 0 // an empty message
			}
			continue
		}
		if uint64(len(p)) < g.left {
			g.left -= uint64(len(p))
			return
		}
		p = p[g.left:]
		g.head, g.left = 0, 0
	}
}

// whole reports whether the caller got whole messages only; true for nil.
func (g *grpcFrames) whole() bool { return g == nil || g.head == 0 }

// wait says that the relay now waits for the upstream.
func (g *grpcFrames) wait() {
	if g.head == 0 {
		g.state.CompareAndSwap(framesBusy, framesWaiting)
	}
}

// waited says that the upstream's read returned bytes to write, and
// reports false when the exchange ended meanwhile and spared the caller's
// stream: they must not go out, as no cut would end a write of them.
func (g *grpcFrames) waited() bool {
	return g.state.CompareAndSwap(framesWaiting, framesBusy) || g.state.Load() != framesSpared
}

// spare is the cut of writes asking whether to leave the caller's stream
// alone: true when the relay waits for the upstream at a message
// boundary, and will not write again; else the cut is recorded, to be
// made. False for nil.
func (g *grpcFrames) spare() bool {
	if g == nil {
		return false
	}
	if g.state.CompareAndSwap(framesWaiting, framesSpared) {
		return true
	}
	g.state.Store(framesCut)
	return false
}

// cut reports that writes to the caller were cut (see spare). Only the
// cut's own record tells: the cut's stop says it ran also when it was
// stopped just before it could.
func (g *grpcFrames) cut() bool { return g.state.Load() == framesCut }

// grpcResponse reports whether res is answered in gRPC: its Content-Type
// is application/grpc, alone or followed by a +format or parameters (as
// grpcCall has it for a request).
func grpcResponse(res *http.Response) bool { return grpcType(res.Header["Content-Type"]) }

// endGRPCStream ends a gRPC response whose body broke after whole
// messages with f as trailers: grpc-status (the code ferry's status f
// would get as a failure of its own, see grpcCode), grpc-message and
// X-Ferry-Error, as writeGRPCFailure has them. net/http's HTTP/2 server
// sends them when the handler returns.
func endGRPCStream(w http.ResponseWriter, f failure) {
	h := w.Header()
	reason := grpcReason(f.reason)
	h[http.TrailerPrefix+"Grpc-Status"] = []string{strconv.Itoa(grpcCode(f))}
	h[http.TrailerPrefix+"Grpc-Message"] = []string{grpcPercentEncode(reason)}
	h[http.TrailerPrefix+"X-Ferry-Error"] = []string{sanitizeHeaderValue(reason)}
}
