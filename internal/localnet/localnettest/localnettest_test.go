package localnettest

import (
	"errors"
	"net"
	"testing"
	"time"
)

// A connect to the address is refused, and the port cannot be taken while
// the test runs: a listener on the same address fails with EADDRINUSE.
func TestRefusedAddr(t *testing.T) {
	addr := RefusedAddr(t)
	for range 3 {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err == nil {
			c.Close()
			t.Fatalf("dial %s succeeded, want refused", addr)
		}
		if !errors.Is(err, errConnRefused) {
			t.Fatalf("dial %s: %v, want connection refused", addr, err)
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		ln.Close()
		t.Fatalf("listen on %s succeeded while the port is held", addr)
	}
	if !errors.Is(err, errAddrInUse) {
		t.Fatalf("listen on %s: %v, want address in use", addr, err)
	}
	if other := RefusedAddr(t); other == addr {
		t.Fatalf("two refused addresses coincide: %s", addr)
	}
}
