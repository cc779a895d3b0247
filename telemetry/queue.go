package telemetry

import (
	"context"
	"sync/atomic"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// spanQueue counts finished spans on their way to the collector so that a
// full queue is visible as a metric instead of a silent loss.
//
// It sits in front of the SDK batch span processor (which owns the real,
// bounded queue and the export loop) and wraps its exporter. pending counts
// spans handed to the batch processor and not yet returned by an export
// call, so it is never below the batch processor's queue length: admitting a
// span only while pending < limit means the batch processor never drops one
// itself, and every drop is the gate's, counted here. OnEnd never blocks.
type spanQueue struct {
	next  sdktrace.SpanProcessor
	limit int64

	pending      atomic.Int64
	dropped      atomic.Int64
	exported     atomic.Int64
	exportFailed atomic.Int64
}

// newSpanQueue builds the batch processor over exp and the gate in front.
func newSpanQueue(exp sdktrace.SpanExporter, s settings) *spanQueue {
	q := &spanQueue{limit: int64(s.queueSize)}
	q.next = sdktrace.NewBatchSpanProcessor(&countingExporter{next: exp, q: q},
		sdktrace.WithMaxQueueSize(s.queueSize),
		sdktrace.WithMaxExportBatchSize(s.batchSize),
		sdktrace.WithBatchTimeout(s.batchTimeout),
		sdktrace.WithExportTimeout(s.exportTimeout),
	)
	return q
}

func (q *spanQueue) OnStart(ctx context.Context, s sdktrace.ReadWriteSpan) { q.next.OnStart(ctx, s) }

func (q *spanQueue) OnEnd(s sdktrace.ReadOnlySpan) {
	if !s.SpanContext().IsSampled() {
		return
	}
	if q.pending.Add(1) > q.limit {
		q.pending.Add(-1)
		q.dropped.Add(1)
		return
	}
	q.next.OnEnd(s)
}

func (q *spanQueue) Shutdown(ctx context.Context) error   { return q.next.Shutdown(ctx) }
func (q *spanQueue) ForceFlush(ctx context.Context) error { return q.next.ForceFlush(ctx) }

// Pending is the number of finished spans waiting for (or in) an export.
func (q *spanQueue) Pending() int64 { return q.pending.Load() }

// Dropped is the number of finished sampled spans dropped on a full queue.
func (q *spanQueue) Dropped() int64 { return q.dropped.Load() }

// countingExporter releases queue slots as exports finish and counts results.
type countingExporter struct {
	next sdktrace.SpanExporter
	q    *spanQueue
}

func (e *countingExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	n := int64(len(spans))
	defer e.q.pending.Add(-n)
	err := e.next.ExportSpans(ctx, spans)
	if err != nil {
		e.q.exportFailed.Add(n)
	} else {
		e.q.exported.Add(n)
	}
	return err
}

func (e *countingExporter) Shutdown(ctx context.Context) error { return e.next.Shutdown(ctx) }

var (
	_ sdktrace.SpanProcessor = (*spanQueue)(nil)
	_ sdktrace.SpanExporter  = (*countingExporter)(nil)
)
