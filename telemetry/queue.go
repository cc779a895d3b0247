package telemetry

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// spanQueue is ferry's batch span processor: finished spans wait in a
// bounded queue and one goroutine exports them in batches, so a request
// never waits for the collector. A span that finds the queue full is
// dropped and counted, so a full queue is visible as a metric instead of a
// silent loss.
//
// OnEnd appends under a mutex and wakes the exporting goroutine only when a
// batch is full; the goroutine otherwise wakes every batchTimeout. (The SDK's
// batch processor sends every span over a channel, waking its goroutine
// once per span.) pending counts spans queued or in an export call, and is
// what the bound applies to.
type spanQueue struct {
	exp           sdktrace.SpanExporter
	limit         int64
	batchSize     int
	batchTimeout  time.Duration
	exportTimeout time.Duration

	mu    sync.Mutex
	spans []sdktrace.ReadOnlySpan // queued, oldest first
	spare []sdktrace.ReadOnlySpan // the other buffer: OnEnd appends to one while the other is exported

	wake     chan struct{}      // a batch is full (capacity 1)
	flushes  chan chan struct{} // ForceFlush: export what is queued, then close the channel
	stopping chan struct{}      // closed by Shutdown: export what is queued and exit
	done     chan struct{}      // closed when the exporting goroutine has exited
	stopped  atomic.Bool        // set by Shutdown: OnEnd discards
	closing  sync.Once

	// base is the parent of every export's context; Shutdown cancels it
	// when its own context ends, so no export outlives Shutdown.
	base       context.Context
	cancelBase context.CancelFunc

	pending      atomic.Int64
	dropped      atomic.Int64
	exported     atomic.Int64
	exportFailed atomic.Int64
}

// newSpanQueue builds the queue in front of exp and starts its exporting
// goroutine.
func newSpanQueue(exp sdktrace.SpanExporter, s settings) *spanQueue {
	q := &spanQueue{
		exp:           exp,
		limit:         int64(s.queueSize),
		batchSize:     max(1, min(s.batchSize, s.queueSize)),
		batchTimeout:  s.batchTimeout,
		exportTimeout: s.exportTimeout,
		wake:          make(chan struct{}, 1),
		flushes:       make(chan chan struct{}),
		stopping:      make(chan struct{}),
		done:          make(chan struct{}),
	}
	q.base, q.cancelBase = context.WithCancel(context.Background())
	go q.run()
	return q
}

// OnStart does nothing: spans are queued when they end.
func (q *spanQueue) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

// OnEnd queues a sampled span, or drops it when the queue is full. It never
// blocks on the collector.
func (q *spanQueue) OnEnd(s sdktrace.ReadOnlySpan) {
	if !s.SpanContext().IsSampled() || q.stopped.Load() {
		return
	}
	if q.pending.Add(1) > q.limit {
		q.pending.Add(-1)
		q.dropped.Add(1)
		return
	}
	q.mu.Lock()
	q.spans = append(q.spans, s)
	full := len(q.spans) == q.batchSize
	q.mu.Unlock()
	if full {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
}

// run is the exporting goroutine.
func (q *spanQueue) run() {
	defer close(q.done)
	t := time.NewTimer(q.batchTimeout)
	defer t.Stop()
	for {
		select {
		case <-q.wake:
		case <-t.C:
		case ch := <-q.flushes:
			q.exportQueued()
			close(ch)
		case <-q.stopping:
			q.finalExport()
			return
		}
		q.exportQueued()
		t.Reset(q.batchTimeout)
	}
}

// exportQueued exports what is queued now, in batches of at most
// batchSize, while OnEnd queues into the other buffer.
func (q *spanQueue) exportQueued() {
	q.mu.Lock()
	all := q.spans
	q.spans, q.spare = q.spare[:0], nil
	q.mu.Unlock()
	for batch := all; len(batch) > 0; {
		k := min(len(batch), q.batchSize)
		q.export(batch[:k])
		batch = batch[k:]
	}
	clear(all) // let the spans go
	q.mu.Lock()
	q.spare = all[:0]
	q.mu.Unlock()
}

// finalExport is Shutdown's flush: one attempt per batch, and once one
// fails the rest are counted as failed without trying, so a dead collector
// costs Shutdown one attempt, not a full export timeout per batch.
func (q *spanQueue) finalExport() {
	q.mu.Lock()
	all := q.spans
	q.spans = nil
	q.mu.Unlock()
	ctx := context.WithValue(q.base, noRetry{}, true)
	for batch := all; len(batch) > 0; {
		k := min(len(batch), q.batchSize)
		if err := q.exportCtx(ctx, batch[:k]); err != nil {
			n := int64(len(batch) - k)
			q.pending.Add(-n)
			q.exportFailed.Add(n)
			break
		}
		batch = batch[k:]
	}
	clear(all)
}

// noRetry marks an export context whose exporter should not retry.
type noRetry struct{}

// retriesEnd marks an export context whose exporter should stop retrying
// once its value, a channel, is closed: Shutdown closes it, so an export
// that is retrying then fails at once and the final flush makes its one
// attempt per batch, instead of the export waiting out its timeout (10 s
// by default) while Shutdown's time runs.
type retriesEnd struct{}

// export sends one batch and counts the result. Errors go to the
// OpenTelemetry error handler, as the SDK's processor does.
func (q *spanQueue) export(batch []sdktrace.ReadOnlySpan) {
	_ = q.exportCtx(context.WithValue(q.base, retriesEnd{}, (<-chan struct{})(q.stopping)), batch)
}

func (q *spanQueue) exportCtx(ctx context.Context, batch []sdktrace.ReadOnlySpan) error {
	ctx, cancel := context.WithTimeout(ctx, q.exportTimeout)
	defer cancel()
	n := int64(len(batch))
	err := q.exp.ExportSpans(ctx, batch)
	q.pending.Add(-n)
	if err != nil {
		q.exportFailed.Add(n)
		otel.Handle(err)
		return err
	}
	q.exported.Add(n)
	return nil
}

// ForceFlush exports everything queued now, waiting at most until ctx ends.
func (q *spanQueue) ForceFlush(ctx context.Context) error {
	if q.stopped.Load() {
		return nil
	}
	ch := make(chan struct{})
	select {
	case q.flushes <- ch:
	case <-q.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Shutdown exports what is queued (within ctx), stops the goroutine and
// shuts the exporter down. Spans ended afterwards are discarded. When ctx
// ends first, the exports still running are cancelled, and the goroutine
// has exited when Shutdown returns.
func (q *spanQueue) Shutdown(ctx context.Context) error {
	var err error
	q.closing.Do(func() {
		q.stopped.Store(true)
		stop := context.AfterFunc(ctx, q.cancelBase)
		defer stop()
		close(q.stopping)
		<-q.done
		err = errors.Join(ctx.Err(), q.exp.Shutdown(ctx))
		q.cancelBase()
	})
	return err
}

// Pending is the number of finished spans waiting for (or in) an export.
func (q *spanQueue) Pending() int64 { return q.pending.Load() }

// Dropped is the number of finished sampled spans dropped on a full queue.
func (q *spanQueue) Dropped() int64 { return q.dropped.Load() }

var _ sdktrace.SpanProcessor = (*spanQueue)(nil)
