package sidecar

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
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
	a, _, err := f.get(ctx, addr, true, poolIdleTimeout, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.put(addr, a, 0)
	if got, reused, err := f.get(ctx, addr, false, poolIdleTimeout, 0, 0); err != nil || !reused || got != a {
		t.Fatalf("pooled connection not taken: reused %v, err %v", reused, err)
	}
	f.sweep() // the endpoint's list is empty: dropped
	f.mu.Lock()
	n := len(f.idle)
	f.mu.Unlock()
	if n != 0 {
		t.Fatalf("sweep kept %d empty lists", n)
	}
	b, _, err := f.get(ctx, addr, true, poolIdleTimeout, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.put(addr, b, 0)
	f.put(addr, a, 0)
	seen := map[*h1Conn]bool{}
	for range 2 {
		c, reused, err := f.get(ctx, addr, false, poolIdleTimeout, 0, 0)
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

// A connection idle in the pool for poolParkAfter gives its buffers back
// at the next sweep, and takes a pair again when the pool hands it out:
// the next request on it is answered as before, on the same connection.
func TestPoolParksIdleBuffers(t *testing.T) {
	var conns atomic.Int64
	origin := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "answer to "+r.URL.Path)
	}))
	origin.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	origin.Start()
	t.Cleanup(origin.Close)
	f := &fastH1{dial: (&net.Dialer{}).DialContext, fallback: &http.Transport{}}
	t.Cleanup(f.CloseIdleConnections)
	addr := origin.Listener.Addr().String()
	get := func(path string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		res, err := f.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil || string(b) != "answer to "+path {
			t.Fatalf("GET %s: %q, %v", path, b, err)
		}
	}
	get("/one")
	f.mu.Lock()
	l := f.idle[addr]
	if l == nil || len(l.conns) != 1 {
		f.mu.Unlock()
		t.Fatal("the connection did not go back to the pool")
	}
	c := l.conns[0]
	c.since -= int64(poolParkAfter) // idle that long already
	f.mu.Unlock()
	f.sweep()
	f.mu.Lock()
	parked := c.br == nil && c.bw == nil && (c.raw == nil || c.raw.pend == nil)
	f.mu.Unlock()
	if !parked {
		t.Fatal("a connection idle for poolParkAfter kept its buffers (or its deferred bytes') through a sweep")
	}
	get("/two")
	if n := conns.Load(); n != 1 {
		t.Fatalf("the origin saw %d connections, want the parked one reused", n)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if c.br == nil || c.bw == nil || f.idle[addr].conns[0] != c {
		t.Fatal("the reused connection is not back in the pool with buffers")
	}
}
