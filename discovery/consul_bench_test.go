package discovery

import (
	"sync/atomic"
	"testing"
)

// BenchmarkConsulSnapshotRead is the proxy's per-request read of a Consul
// service while its watch keeps publishing: one atomic load, no allocation.
func BenchmarkConsulSnapshotRead(b *testing.B) {
	b.ReportAllocs()
	svc := NewService("api", "consul")
	svc.Publish(&Snapshot{Ready: true, Endpoints: endpointsOf(nil)})
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := uint64(1); !stop.Load(); i++ {
			svc.Publish(&Snapshot{Ready: true, Index: i})
		}
	}()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if !svc.Snapshot().Ready {
				b.Error("not ready")
			}
		}
	})
	b.StopTimer()
	stop.Store(true)
	<-done
}
