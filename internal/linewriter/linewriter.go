// Package linewriter keeps a log destination that stops taking bytes (a
// pipe nobody drains, a stalled log driver, a full disk that blocks) from
// blocking the code that logs: ferry writes an access log line per request
// and must never wait on it. A log file (File) follows its path when
// logrotate moves it away: the Writer's goroutine reopens it.
package linewriter

import (
	"bytes"
	"context"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// Writer buffers what is written to it, up to a bound, and writes it to its
// destination from a goroutine of its own. A Write never waits for the
// destination: what does not fit in the buffer is dropped whole and counted,
// as are the lines the destination refuses (a write error).
// Each Write should be one log line (slog's handlers write one per record).
type Writer struct {
	dst io.Writer
	max int

	mu      sync.Mutex
	buf     []byte
	closed  bool
	dropped atomic.Int64

	kick chan struct{} // the buffer went from empty to not; closed by Close
	full chan struct{} // the buffer passed half its bound while the drain gathers
	poke chan struct{} // Reopen asked for a check now
	done chan struct{} // the drain returned

	every  time.Duration // between the checks of a Reopener destination
	gather time.Duration // how long a batch gathers lines before its write (NewGathering)
	// fullSent: full was sent for the lines in buf; under mu.
	fullSent bool

	torn bool // the last write failed part-way through a line; the drain's goroutine only
}

// A Reopener is a destination that may have to be opened again, as a log
// file that logrotate renamed or removed. The Writer's goroutine calls
// Reopen between its writes about once a second (CheckEvery) and when
// Writer.Reopen asks: it reopens the destination when it needs it, and must
// not fail the Writer when it cannot.
type Reopener interface {
	Reopen()
}

// CheckEvery is how often the Writer's goroutine lets a Reopener
// destination check itself.
const CheckEvery = time.Second

// New starts a Writer to dst buffering at most max bytes. Its goroutine
// writes as soon as there is something to write: a line reaches dst at
// once when dst keeps up.
func New(dst io.Writer, max int) *Writer {
	return newWriter(dst, max, CheckEvery, 0)
}

// NewGathering starts a Writer as New does, whose goroutine lets the lines
// of a batch gather for up to wait after the first before it writes them,
// or until they fill half of max, or until Close: one write (one system
// call, one wake of whatever reads dst) per wait at most, instead of about
// one per line when lines come a little apart, as an access log's do
// under load. A line reaches dst at most wait after it was written.
func NewGathering(dst io.Writer, max int, wait time.Duration) *Writer {
	return newWriter(dst, max, CheckEvery, wait)
}

func newWriter(dst io.Writer, max int, every, gather time.Duration) *Writer {
	w := &Writer{
		dst: dst, max: max, every: every, gather: gather,
		kick: make(chan struct{}, 1), full: make(chan struct{}, 1),
		poke: make(chan struct{}, 1), done: make(chan struct{}),
	}
	go w.drain()
	return w
}

// Reopen asks the Writer's goroutine to let its destination, when it is a
// Reopener, check itself now (on SIGHUP) rather than at the next tick. It
// never waits.
func (w *Writer) Reopen() {
	select {
	case w.poke <- struct{}{}:
	default:
	}
}

// Write keeps p for the destination, or drops it (counting it) when the
// buffer cannot take it whole or the Writer is closed. It never fails.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	if w.closed || len(w.buf)+len(p) > w.max {
		w.mu.Unlock()
		w.dropped.Add(1)
		return len(p), nil
	}
	first := len(w.buf) == 0
	w.buf = append(w.buf, p...)
	if first {
		// One wake per batch: lines written while the drain writes wait
		// for its next round. Sent under the lock, which Close holds to
		// close kick: never to a closed channel. It never waits.
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
	if w.gather > 0 && !w.fullSent && len(w.buf) >= w.max/2 {
		// A gathering batch is written now rather than let the bound drop
		// lines. Once per batch: the drain takes the buffer and clears
		// fullSent under the lock.
		w.fullSent = true
		select {
		case w.full <- struct{}{}:
		default:
		}
	}
	w.mu.Unlock()
	return len(p), nil
}

// Dropped counts the writes dropped so far: those the buffer could not
// take, and the lines a failed write of the destination lost.
func (w *Writer) Dropped() int64 { return w.dropped.Load() }

func (w *Writer) drain() {
	defer close(w.done)
	var out []byte
	// Only a Reopener destination gets checks: nil channels never fire.
	var tick <-chan time.Time
	var poke <-chan struct{}
	r, _ := w.dst.(Reopener)
	if r != nil {
		t := time.NewTicker(w.every)
		defer t.Stop()
		tick, poke = t.C, w.poke
	}
	var gathered *time.Timer
	if w.gather > 0 {
		gathered = time.NewTimer(w.gather)
		gathered.Stop()
		defer gathered.Stop()
	}
drain:
	for {
		select {
		case _, open := <-w.kick:
			if !open {
				break drain
			}
			if gathered != nil {
				w.gatherLines(gathered)
			}
			w.mu.Lock()
			out, w.buf = w.buf, out[:0]
			closing := w.closed
			w.fullSent = false
			select {
			case <-w.full: // sent for the lines just taken
			default:
			}
			w.mu.Unlock()
			if len(out) > 0 {
				check(r, poke, closing)
				w.put(out)
			}
		case <-tick:
			r.Reopen()
		case <-poke:
			r.Reopen()
		}
	}
	w.mu.Lock()
	out = w.buf
	w.mu.Unlock()
	if len(out) > 0 {
		check(r, poke, true)
		w.put(out)
	}
}

// gatherLines waits until the batch the last kick announced has gathered
// for w.gather, or fills half the buffer (full), or the Writer is closed
// (kick closed: Close flushes at once).
func (w *Writer) gatherLines(t *time.Timer) {
	t.Reset(w.gather)
	select {
	case <-t.C:
		return
	case <-w.full:
	case <-w.kick:
		// Closed: no kick is sent while the buffer holds lines.
	}
	t.Stop()
}

// newline ends a line a failed write left torn.
var newline = []byte{'\n'}

// put writes a batch of whole lines to the destination. The lines a
// failed write did not get out whole (a full disk: ENOSPC) are dropped
// and counted as a full buffer's are. A line cut part-way is ended with a
// newline before the next batch, once the destination takes bytes again:
// the next line must not read as the rest of the cut one.
func (w *Writer) put(out []byte) {
	if w.torn {
		if _, err := w.dst.Write(newline); err != nil {
			w.dropped.Add(int64(bytes.Count(out, newline)))
			return
		}
		w.torn = false
	}
	n, err := w.dst.Write(out)
	if err == nil {
		return
	}
	n = max(0, min(n, len(out)))
	w.dropped.Add(int64(bytes.Count(out[n:], newline)))
	w.torn = n > 0 && out[n-1] != '\n'
}

// check lets the destination check itself before a write when Reopen
// asked for it, or when the Writer is closing: lines written after Reopen
// returned must not go to the file renamed away (select picks at random
// among ready cases, and the final flush on Close would not look at poke
// at all), and neither must the last lines, flushed on Close, when
// logrotate moved the file since the last tick with no SIGHUP. That is
// one stat more at shutdown; lines written by earlier rounds since that
// tick went to the file renamed away, as in any second (a stat per write
// is what the tick avoids).
func check(r Reopener, poke <-chan struct{}, closing bool) {
	if r == nil {
		return
	}
	select {
	case <-poke:
		r.Reopen()
		return
	default:
	}
	if closing {
		r.Reopen()
	}
}

// Close stops taking writes and waits, until ctx ends, for what is buffered
// to reach the destination. It does not close the destination.
func (w *Writer) Close(ctx context.Context) error {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.kick)
	}
	w.mu.Unlock()
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
