package sidecar

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// armBy only ever moves the timer earlier, reusing one runtime timer.
func TestLazyTimerArmsOnlyEarlier(t *testing.T) {
	var mu sync.Mutex
	fires := make(chan struct{}, 8)
	var lt lazyTimer
	lt.f = func() {
		mu.Lock()
		lt.fired()
		mu.Unlock()
		fires <- struct{}{}
	}
	mu.Lock()
	lt.armBy(monoNow() + int64(20*time.Millisecond))
	first, at := lt.t, lt.at
	lt.armBy(monoNow() + int64(time.Hour))
	if lt.at != at {
		t.Fatalf("a later arm moved the timer from %d to %d", at, lt.at)
	}
	mu.Unlock()
	recv(t, fires, 5*time.Second, "the timer armed for 20ms, then asked for an hour")

	mu.Lock()
	if lt.at != 0 {
		t.Fatalf("fired timer still armed at %d", lt.at)
	}
	lt.armBy(monoNow() + int64(time.Hour))
	lt.armBy(monoNow() + int64(10*time.Millisecond))
	if lt.t != first {
		t.Fatal("arming made a new runtime timer")
	}
	mu.Unlock()
	recv(t, fires, 5*time.Second, "the timer armed for an hour, then for 10ms")
	mu.Lock()
	lt.stop()
	mu.Unlock()
}

// cancelRecorder is an exchange's cancel function that keeps its cause.
type cancelRecorder struct{ cause atomic.Pointer[error] }

func (c *cancelRecorder) cancel(err error) { c.cause.CompareAndSwap(nil, &err) }

func (c *cancelRecorder) err() error {
	if p := c.cause.Load(); p != nil {
		return *p
	}
	return nil
}

// A lane connection's idle timer serves one exchange after another: a fire
// left from an ended exchange never cancels the next one, a shorter
// body_idle moves the timer earlier, and a pause holds the cancel.
func TestIdleTimerReusedAcrossExchanges(t *testing.T) {
	it := newIdleTimer(true)
	defer it.release()
	armedAt := func() int64 {
		it.mu.Lock()
		defer it.mu.Unlock()
		return it.lt.at
	}

	var a, b, c, d, e cancelRecorder
	it.begin(20*time.Millisecond, e.cancel)
	it.stop()
	waitFor(t, "the timer to fire with no exchange and disarm", 5*time.Second, func() bool { return armedAt() == 0 })
	if e.err() != nil {
		t.Fatalf("an ended exchange was cancelled: %v", e.err())
	}

	it.begin(20*time.Millisecond, a.cancel)
	it.stop()
	it.begin(time.Hour, b.cancel) // the timer stays due in 20ms
	waitFor(t, "the timer to fire and re-arm for the exchange of an hour", 5*time.Second, func() bool {
		return armedAt() > monoNow()+int64(30*time.Minute)
	})
	if a.err() != nil || b.err() != nil {
		t.Fatalf("cancelled: ended exchange %v, running exchange %v; want neither", a.err(), b.err())
	}
	it.stop()

	it.begin(20*time.Millisecond, c.cancel)
	waitFor(t, "the idle exchange to be cancelled", 5*time.Second, func() bool { return c.err() != nil })
	if !errors.Is(c.err(), errBodyIdle) || b.err() != nil {
		t.Fatalf("cancelled with %v (earlier exchange: %v), want errBodyIdle", c.err(), b.err())
	}
	it.stop()

	it.begin(20*time.Millisecond, d.cancel)
	it.pause()
	first := armedAt()
	waitFor(t, "the timer to fire during the pause", 5*time.Second, func() bool {
		at := armedAt()
		return at != 0 && at != first
	})
	if d.err() != nil {
		t.Fatalf("paused exchange cancelled: %v", d.err())
	}
	it.resume()
	waitFor(t, "the resumed idle exchange to be cancelled", 5*time.Second, func() bool { return d.err() != nil })
}

// The response header wait of a pooled upstream connection: an overdue
// header ends the read with a timeout; a header in time leaves no deadline
// behind, however late the timer fires.
func TestHeaderWatch(t *testing.T) {
	tc, peer := tcpPair(t)
	c := &h1Conn{tc: tc}
	defer c.close()
	read := func() error {
		done := make(chan error, 1)
		go func() {
			var b [1]byte
			_, err := io.ReadFull(c.tc, b[:])
			done <- err
		}()
		return recv(t, done, 5*time.Second, "the read to end")
	}

	c.awaitHeader(30 * time.Millisecond)
	if err := read(); !isTimeoutErr(err) {
		t.Fatalf("overdue header: read ended with %v, want a timeout", err)
	}
	c.headerIn()
	peer.Write([]byte("x"))
	if err := read(); err != nil {
		t.Fatalf("after the overdue wait ended: %v", err)
	}

	c.awaitHeader(20 * time.Millisecond)
	c.headerIn()
	waitFor(t, "the timer to fire", 5*time.Second, func() bool {
		c.hmu.Lock()
		defer c.hmu.Unlock()
		return c.ht.at == 0
	})
	peer.Write([]byte("y"))
	if err := read(); err != nil {
		t.Fatalf("header in time, timer fired later: read %v", err)
	}
}

// The longest durations a config can give body_idle and response_header
// (up to the largest time.Duration) wait that long: a deadline on the
// monotonic clock saturates instead of overflowing into the past, which
// cut every exchange, or every header wait, at the timer's first look.
func TestLongestTimersWait(t *testing.T) {
	longest := time.Duration(1<<63 - 1)
	var cut atomic.Value
	it := startIdleTimer(longest, func(err error) { cut.Store(err) })
	defer it.stop()
	it.touch()
	it.fire() // as the timer would, however early
	if err := cut.Load(); err != nil {
		t.Fatalf("body_idle %v cut the exchange at once: %v", longest, err)
	}

	tc, _ := tcpPair(t)
	c := &h1Conn{tc: tc}
	defer c.close()
	c.awaitHeader(longest)
	c.headerTimer() // as the timer would
	c.hmu.Lock()
	expired := c.hexpired
	c.hmu.Unlock()
	if expired {
		t.Fatalf("response_header %v: the header wait was cut at once", longest)
	}
	c.headerIn()
}

// relay takes the bytes of its first read for no new activity of the
// body when they were in the source's buffer before the idle timer last
// recorded some (seen: they came with the response's head, before
// resume): the timer keeps its last reading, and relay no clock read.
// Every other read that brings bytes is activity.
func TestRelayTouchesIdleForBytesRead(t *testing.T) {
	for _, seen := range []bool{true, false} {
		it := newIdleTimer(false)
		var rec cancelRecorder
		it.begin(time.Hour, rec.cancel)
		const long = 1 // a reading long past on monoNow's clock
		it.last.Store(long)
		var atSecond, atThird int64
		reads := 0
		src := readerFunc(func(p []byte) (int, error) {
			reads++
			switch reads {
			case 1:
				return copy(p, "first"), nil
			case 2:
				atSecond = it.last.Load()
				return copy(p, "second"), nil
			}
			atThird = it.last.Load()
			return 0, io.EOF
		})
		w := httptest.NewRecorder()
		res := relay(w, http.NewResponseController(w), src, nil, it, make([]byte, 64), 0, nil, nil, seen)
		it.stop()
		if res.readErr != nil || res.writeErr != nil || w.Body.String() != "firstsecond" {
			t.Fatalf("seen %v: relayed %q (%+v)", seen, w.Body.String(), res)
		}
		if (atSecond == long) != seen {
			t.Errorf("seen %v: after the first read the timer's last activity is %d (long past: %d)", seen, atSecond, long)
		}
		if atThird == long || atThird < atSecond {
			t.Errorf("seen %v: after the second read the timer's last activity is %d, before it %d", seen, atThird, atSecond)
		}
	}
}

// readerFunc is an io.Reader made of a function.
type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }
