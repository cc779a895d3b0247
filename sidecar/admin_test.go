package sidecar

import (
	"bytes"
	"net"
	"net/http"
	"testing"
	"time"
)

// A client of the admin listener that asks for an answer larger than the
// socket buffers (a large /metrics) and never reads it is let go after
// adminWriteTimeout: the handler's write fails and its goroutine, and
// what it holds, are freed, over HTTP/1.1 and h2c. The admin server had no
// write timeout: the handler waited in its write until shutdown.
func TestAdminLetsGoOfAClientThatNeverReads(t *testing.T) {
	restore := adminWriteTimeout // after the test's ferry stopped (a cleanup registered before it)
	t.Cleanup(func() { adminWriteTimeout = restore })
	adminWriteTimeout = 300 * time.Millisecond
	sc, _ := outboundTo(t, "", "127.0.0.1:1")
	chunk := bytes.Repeat([]byte("# a large metrics page\n"), 1<<14)
	for _, tc := range []struct {
		name   string
		client *http.Client
	}{
		{"HTTP/1.1", h1Client()},
		{"h2c", h2cClient()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ended := make(chan error, 1)
			// The admin server as Start builds it, serving a handler that
			// writes without end.
			srv := sc.newServer("admin", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				for {
					if _, err := w.Write(chunk); err != nil {
						ended <- err
						return
					}
				}
			}))
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go srv.Serve(ln)
			t.Cleanup(func() { srv.Close() })
			resp, err := tc.client.Get("http://" + ln.Addr().String() + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close() // never read
			start := time.Now()
			select {
			case err := <-ended:
				t.Logf("the handler's write failed after %s: %v", time.Since(start).Round(time.Millisecond), err)
			case <-time.After(10 * time.Second):
				t.Fatalf("the handler still writes to a client that never reads, 10s on (write timeout %s)", adminWriteTimeout)
			}
		})
	}
}
