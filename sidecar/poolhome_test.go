package sidecar

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
)

// A connection goes back to the pool's list of its endpoint through the
// list it keeps (h1Conn.home), without a look-up by address. When a sweep
// dropped that list empty meanwhile, the return goes to the list the pool
// has now for the endpoint (one another connection's return made, here):
// a return to the dropped list would lose the connection (never taken
// again), one that made a list of its own would lose the other's.
func TestPoolReturnAfterSweepDroppedList(t *testing.T) {
	f, addr := idlePoolTo(t)
	ctx := context.Background()
	a, _, err := f.get(ctx, addr, true, poolIdleTimeout, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.put(addr, a, 0)
	if got, reused, err := f.get(ctx, addr, false, poolIdleTimeout, 0); err != nil || !reused || got != a {
		t.Fatalf("pooled connection not taken: reused %v, err %v", reused, err)
	}
	f.sweep() // the endpoint's list is empty: dropped
	f.mu.Lock()
	n := len(f.idle)
	f.mu.Unlock()
	if n != 0 {
		t.Fatalf("sweep kept %d empty lists", n)
	}
	b, _, err := f.get(ctx, addr, true, poolIdleTimeout, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.put(addr, b, 0)
	f.put(addr, a, 0)
	seen := map[*h1Conn]bool{}
	for range 2 {
		c, reused, err := f.get(ctx, addr, false, poolIdleTimeout, 0)
		if err != nil {
			t.Fatal(err)
		}
		if !reused {
			c.close()
			t.Fatal("a returned connection was lost")
		}
		seen[c] = true
	}
	if !seen[a] || !seen[b] {
		t.Fatal("the pool did not give back both returned connections")
	}
	a.close()
	b.close()
}

// idlePoolTo is a zero-copy client with an empty pool, and the address of
// a server that holds the connections it accepts open until the test ends.
func idlePoolTo(t *testing.T) (*fastH1, string) {
	s := startRawServer(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	f := &fastH1{dial: (&net.Dialer{}).DialContext, fallback: &http.Transport{}}
	t.Cleanup(f.CloseIdleConnections)
	return f, s.addr()
}
