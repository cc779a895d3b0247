package telemetry

import (
	"testing"
	"unsafe"
)

// TestSpanSizeClasses holds the objects allocated per traced request to
// the size classes of Go's allocator they were shrunk to: a traced
// Request (with its server span) in 768 bytes, a traced Attempt (with its
// client span) in 640. A field added to span, proxyAttrs, Request or
// Attempt that crosses one costs every traced request the next class
// (896 and 704 bytes) and the writes to fill it.
func TestSpanSizeClasses(t *testing.T) {
	if n := unsafe.Sizeof(tracedRequest{}); n > 768 {
		t.Errorf("tracedRequest is %d bytes, over the 768-byte size class", n)
	}
	if n := unsafe.Sizeof(tracedAttempt{}); n > 640 {
		t.Errorf("tracedAttempt is %d bytes, over the 640-byte size class", n)
	}
}
