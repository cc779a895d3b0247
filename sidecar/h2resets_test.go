package sidecar

import (
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// cancelCaller is an h2c caller of a ferry whose upstream answers /ok,
// holds /held until ferry cancels it, and answers /stream with a first
// message, flushed, and nothing more until ferry cancels it. held gets one
// value as each /held request reaches the upstream, began the ID of each
// stream whose answer's first DATA frame came without END_STREAM, ended
// the ID of each stream ferry ended (END_STREAM or RST_STREAM), closed how
// the connection's reading ended.
type cancelCaller struct {
	*h2Caller
	sc        *Sidecar
	held      chan struct{}
	cancelled atomic.Int64 // /held and /stream requests the upstream saw cancelled
	began     chan uint32
	ended     chan uint32
	closed    chan error
	next      uint32
}

func newCancelCaller(t *testing.T) *cancelCaller {
	c := &cancelCaller{held: make(chan struct{}, 1024), began: make(chan uint32, 1024), ended: make(chan uint32, 1024), closed: make(chan error, 1), next: 1}
	addr := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/held":
			c.held <- struct{}{}
			<-r.Context().Done()
			c.cancelled.Add(1)
			return
		case "/stream":
			io.WriteString(w, "first message")
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			c.cancelled.Add(1)
			return
		}
		io.WriteString(w, "ok")
	}))
	c.sc, _ = outboundTo(t, "", addr)
	c.h2Caller = dialH2(t, c.sc.Addr("outbound"))
	go func() {
		_, err := c.answerControl(func(f http2.Frame) {
			switch f := f.(type) {
			case *http2.MetaHeadersFrame:
				if f.StreamEnded() {
					c.ended <- f.StreamID
				}
			case *http2.DataFrame:
				if f.StreamEnded() {
					c.ended <- f.StreamID
				} else if len(f.Data()) > 0 {
					select {
					case c.began <- f.StreamID:
					default: // only /stream's are awaited
					}
				}
			case *http2.RSTStreamFrame:
				c.ended <- f.StreamID
			}
		})
		c.closed <- err
	}()
	return c
}

// send opens a stream for each path and returns their IDs.
func (c *cancelCaller) send(t *testing.T, paths ...string) []uint32 {
	t.Helper()
	ids, err := c.trySend(paths...)
	if err != nil {
		t.Fatalf("sending %d requests: %v", len(paths), err)
	}
	return ids
}

// trySend is send, returning the error of a write instead of failing the
// test.
func (c *cancelCaller) trySend(paths ...string) ([]uint32, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	ids := make([]uint32, len(paths))
	for i, p := range paths {
		ids[i] = c.next
		c.next += 2
		if err := c.request(ids[i], http.MethodGet, p, true); err != nil {
			return nil, err
		}
	}
	return ids, c.flush()
}

// heldOrClosed waits for n requests held at the upstream, and reports
// false if the connection closed first.
func (c *cancelCaller) heldOrClosed(n int) bool {
	for range n {
		select {
		case <-c.held:
		case err := <-c.closed:
			c.closed <- err // for the caller's look
			return false
		}
	}
	return true
}

// await waits for a value on ch, failing the test if the connection
// closes first.
func await[T any](t *testing.T, c *cancelCaller, ch <-chan T, what string) {
	t.Helper()
	select {
	case <-ch:
	case err := <-c.closed:
		t.Fatalf("ferry closed the connection after %d streams, waiting for %s: %v", c.next/2, what, err)
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// reset resets the streams ids.
func (c *cancelCaller) reset(t *testing.T, ids ...uint32) {
	t.Helper()
	if err := c.tryReset(ids...); err != nil {
		t.Fatalf("resetting %d streams: %v", len(ids), err)
	}
}

// tryReset is reset, returning the error of a write instead of failing
// the test.
func (c *cancelCaller) tryReset(ids ...uint32) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	for _, id := range ids {
		if err := c.fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
			return err
		}
	}
	return c.flush()
}

// stillServed checks, once every exchange of the connection ended, that
// ferry kept the connection open: a request on it is answered, and no
// connection was closed for premature resets.
func (c *cancelCaller) stillServed(t *testing.T, cancelled int64) {
	t.Helper()
	waitFor(t, "the upstream to see every held request cancelled", 10*time.Second, func() bool { return c.cancelled.Load() == cancelled })
	waitFor(t, "every exchange to end", 10*time.Second, func() bool {
		return scrape(t, c.sc, `ferry_requests_in_flight{listener="outbound"}`) == "0"
	})
	id := c.send(t, "/ok")[0]
	deadline := time.After(5 * time.Second)
	for got := uint32(0); got != id; {
		// A stream reset earlier may show ending after it was reset (its
		// RST_STREAM from ferry): IDs below id are such.
		select {
		case got = <-c.ended:
			if got > id {
				t.Fatalf("stream %d ended, want %d", got, id)
			}
		case err := <-c.closed:
			t.Fatalf("ferry closed the connection: %v", err)
		case <-deadline:
			t.Fatal("no answer on the connection after the cancellations")
		}
	}
	if n := scrape(t, c.sc, `ferry_connections_closed_total{listener="outbound",reason="premature_resets"}`); n != "" && n != "0" {
		t.Errorf("ferry_connections_closed_total{reason=premature_resets} = %q, want none", n)
	}
}

// A caller that cancels many of its requests, but fewer than half, keeps
// its connection however many it sends: here 1500 streams in batches of
// five, two of each reset by the caller as soon as the upstream has them
// (within a second of their start, so premature), three answered.
func TestH2CCancellingCallerKeepsItsConnection(t *testing.T) {
	const batches = 300
	c := newCancelCaller(t)
	for range batches {
		ids := c.send(t, "/held", "/held", "/ok", "/ok", "/ok")
		for range 2 {
			await(t, c, c.held, "a held request at the upstream")
		}
		c.reset(t, ids[:2]...)
		for range 3 {
			await(t, c, c.ended, "an answer")
		}
	}
	c.stillServed(t, 2*batches)
}

// A caller that cancels its streaming calls once their answer began, as a
// gRPC client does with a server-streaming call it needs the first
// message of, resets no stream prematurely, however soon it cancels: 600
// streams in batches of 100, each reset as soon as its first message
// came, leave the connection open.
func TestH2CCancelledStreamingAnswersAreNotPremature(t *testing.T) {
	const batches, batch = 6, 100
	c := newCancelCaller(t)
	for range batches {
		paths := make([]string, batch)
		for i := range paths {
			paths[i] = "/stream"
		}
		ids := c.send(t, paths...)
		for range ids {
			await(t, c, c.began, "a streaming answer's first message")
		}
		c.reset(t, ids...)
	}
	c.stillServed(t, batches*batch)
}

// A stream the caller resets more than a second after it began is not a
// premature reset: 750 requests, all reset after the upstream held them
// for over a second (three rounds of the connection's 250 streams), leave
// the connection open.
func TestH2CLateResetsAreNotPremature(t *testing.T) {
	const rounds = 3
	c := newCancelCaller(t)
	for range rounds {
		paths := make([]string, h2Streams)
		for i := range paths {
			paths[i] = "/held"
		}
		ids := c.send(t, paths...)
		for range ids {
			await(t, c, c.held, "a held request at the upstream")
		}
		// Every request began at ferry before the upstream had it: after
		// this, each is more than prematureResetWithin old.
		time.Sleep(prematureResetWithin + 100*time.Millisecond)
		c.reset(t, ids...)
	}
	c.stillServed(t, rounds*h2Streams)
}

// A caller whose connection ends with streams in flight reset none of them:
// ferry closed nothing in defence. Here 250 answered requests and one the
// caller resets as it began, then 250 held at the upstream when the
// caller's connection closes (its process ended, say): 501 streams, 251
// of them ended within a second by the caller, yet no connection is
// counted closed for premature resets (the counter and the warning go
// together).
func TestH2CConnectionEndingIsNoPrematureReset(t *testing.T) {
	c := newCancelCaller(t)
	for range h2Streams {
		c.send(t, "/ok")
		await(t, c, c.ended, "an answer")
	}
	ids := c.send(t, "/held")
	await(t, c, c.held, "the request to reset at the upstream")
	c.reset(t, ids...)
	waitFor(t, "the upstream to see the reset request cancelled", 10*time.Second, func() bool { return c.cancelled.Load() == 1 })
	paths := make([]string, h2Streams)
	for i := range paths {
		paths[i] = "/held"
	}
	c.send(t, paths...)
	for range paths {
		await(t, c, c.held, "a held request at the upstream")
	}
	c.c.Close()
	waitFor(t, "the upstream to see every held request cancelled", 10*time.Second, func() bool { return c.cancelled.Load() == 1+h2Streams })
	waitFor(t, "every exchange to end", 10*time.Second, func() bool {
		return scrape(t, c.sc, `ferry_requests_in_flight{listener="outbound"}`) == "0"
	})
	if n := scrape(t, c.sc, `ferry_connections_closed_total{listener="outbound",reason="premature_resets"}`); n != "" && n != "0" {
		t.Errorf("ferry_connections_closed_total{reason=premature_resets} = %q, want none", n)
	}
}

// A caller that resets most of its streams as they begin has its
// connection closed once it carried prematureResetStreams, also when it
// does so slowly enough that net/http's own defence (ENHANCE_YOUR_CALM,
// for handlers piling up before they start) never comes into play, as a
// flood's may on a busy machine: here batches of five, three reset as soon
// as the upstream holds them (premature), two answered (60% premature).
func TestH2CMostlyPrematureCallerIsClosed(t *testing.T) {
	c := newCancelCaller(t)
	const maxBatches = 2 * prematureResetStreams / 5
	closed := func() bool {
		return scrape(t, c.sc, `ferry_connections_closed_total{listener="outbound",reason="premature_resets"}`) == "1"
	}
	batches := 0
	for ; batches < maxBatches && !closed(); batches++ {
		// The last batch's count may close the connection just after the
		// look above (see below): the batch then ends the loop.
		ids, err := c.trySend("/held", "/held", "/held", "/ok", "/ok")
		if err != nil || !c.heldOrClosed(3) || c.tryReset(ids[:3]...) != nil {
			break
		}
		// Each batch's exchanges end before the next batch is sent: the
		// connection can only be closed between batches.
		waitFor(t, "the batch's held requests cancelled at the upstream", 10*time.Second, func() bool {
			return c.cancelled.Load() == int64(3*(batches+1))
		})
		waitFor(t, "the batch's exchanges to end", 10*time.Second, func() bool {
			return scrape(t, c.sc, `ferry_requests_in_flight{listener="outbound"}`) == "0"
		})
	}
	// The in-flight gauge falls as an exchange is reported, just before
	// its end is counted for the connection: the last batch's count may
	// close it a moment after.
	waitFor(t, "the connection closed for its premature resets", 10*time.Second, closed)
	select {
	case <-c.closed:
	case <-time.After(10 * time.Second):
		t.Fatal("ferry counted the connection closed, but the caller can still read it")
	}
	streams := 5 * batches
	if streams < prematureResetStreams || streams > prematureResetStreams+10 {
		t.Errorf("closed after %d streams; want from %d to %d (the batch that reached %d, or the next)", streams, prematureResetStreams, prematureResetStreams+10, prematureResetStreams)
	}
}
