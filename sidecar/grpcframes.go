package sidecar

import (
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
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
	// can end with a status instead of a reset. It also says whether the
	// relay is writing bytes that end at a message boundary, a write the
	// cut lets finish (see spare).
	state atomic.Int32
	// written is closed when a write the cut waits for (framesFinishing)
	// is over; the cut makes it before it waits.
	written atomic.Pointer[chan struct{}]
}

const (
	framesBusy      = iota // waiting inside a message, or writing what does not end at a message boundary
	framesWaiting          // at a message boundary: waiting for the upstream, or about to
	framesSpared           // the exchange ended while framesWaiting (or framesFinishing, and that write went out): the caller's stream was left whole
	framesCut              // the exchange ended otherwise: writes to the caller were cut
	framesWriting          // writing to the caller bytes that end at a message boundary
	framesFinishing        // the exchange ended while framesWriting: the cut waits for that write
)

// grpcWriteGrace is how long the cut of writes to the caller waits for a
// write in progress that ends at a message boundary (framesFinishing)
// before it cuts it. Such a write usually went out already: the caller,
// the message in hand, may well be what ended the exchange (its next
// message passed limits.max_request_body_bytes) while the relay is still
// on its way back from the write. Cut then, the stream would be reset
// (INTERNAL) instead of ending with ferry's status after whole messages.
// A write the caller does not take (it stopped reading) is cut this much
// later than at once.
const grpcWriteGrace = time.Second

// step is where the messages stand once p, from where they stand now, is
// relayed: the head and left advance would leave.
func (g *grpcFrames) step(p []byte) (head int, left uint64) {
	head, left = g.head, g.left
	for len(p) > 0 {
		if head < 5 {
			if head > 0 {
				left = left<<8 | uint64(p[0])
			}
			head++
			p = p[1:]
			if head == 5 && left == 0 {
				head = 0 // an empty message
			}
			continue
		}
		if uint64(len(p)) < left {
			return head, left - uint64(len(p))
		}
		p = p[left:]
		head, left = 0, 0
	}
	return head, left
}

// advance steps over p, relayed to the caller whole.
func (g *grpcFrames) advance(p []byte) { g.head, g.left = g.step(p) }

// whole reports whether the caller got whole messages only; true for nil.
func (g *grpcFrames) whole() bool { return g == nil || g.head == 0 }

// wait says that the relay now waits for the upstream.
func (g *grpcFrames) wait() {
	if g.head == 0 {
		g.state.CompareAndSwap(framesBusy, framesWaiting)
	}
}

// begin says that the relay is about to write bytes to the caller, which
// end at a message boundary when endsWhole, and reports false when the
// exchange ended meanwhile and spared the caller's stream: they must not
// go out, as no cut would end a write of them.
func (g *grpcFrames) begin(endsWhole bool) bool {
	to := int32(framesBusy)
	if endsWhole {
		to = framesWriting
	}
	for {
		switch s := g.state.Load(); s {
		case framesWaiting, framesBusy:
			if g.state.CompareAndSwap(s, to) {
				return true
			}
		case framesSpared:
			return false
		default: // cut: the write fails
			return true
		}
	}
}

// wrote says that the write begin announced is over, ok when all of it
// went out. Once a write left the caller whole messages, the relay counts
// as waiting for the upstream until it begins the next (it writes nothing
// meanwhile). A cut waiting for the write (framesFinishing) spares the
// caller's stream when it went out whole, and cuts it otherwise.
func (g *grpcFrames) wrote(endsWhole, ok bool) {
	if !endsWhole {
		return
	}
	next := int32(framesBusy)
	if ok {
		next = framesWaiting
	}
	if g.state.CompareAndSwap(framesWriting, next) {
		return
	}
	to := int32(framesCut)
	if ok {
		to = framesSpared
	}
	if g.state.CompareAndSwap(framesFinishing, to) {
		close(*g.written.Load())
	}
}

// spare is the cut of writes asking whether to leave the caller's stream
// alone: true when the relay waits for the upstream at a message
// boundary, and will not write again; else the cut is recorded, to be
// made. A write in progress that ends at a message boundary is waited
// for, up to grpcWriteGrace: once it went out whole, the stream is
// spared as well. False for nil.
func (g *grpcFrames) spare() bool {
	if g == nil {
		return false
	}
	for {
		switch g.state.Load() {
		case framesWaiting:
			if g.state.CompareAndSwap(framesWaiting, framesSpared) {
				return true
			}
		case framesWriting:
			written := make(chan struct{})
			g.written.Store(&written)
			if g.state.CompareAndSwap(framesWriting, framesFinishing) {
				t := time.NewTimer(grpcWriteGrace)
				select {
				case <-written:
				case <-t.C:
				}
				t.Stop()
				if g.state.CompareAndSwap(framesFinishing, framesCut) {
					return false // the write did not end in time
				}
				return g.state.Load() == framesSpared
			}
		case framesBusy:
			if g.state.CompareAndSwap(framesBusy, framesCut) {
				return false
			}
		default: // the cut runs once; no other state comes before it
			return g.state.Load() == framesSpared
		}
	}
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
