package sidecar

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// connOrigin is an HTTP/1.1 and h2c origin that counts its open
// connections.
func connOrigin(t *testing.T, h http.Handler) (string, func() int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	open := map[net.Conn]bool{}
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: p, ConnState: func(c net.Conn, s http.ConnState) {
		mu.Lock()
		defer mu.Unlock()
		switch s {
		case http.StateNew:
			open[c] = true
		case http.StateClosed, http.StateHijacked:
			delete(open, c)
		}
	}}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(open)
	}
}

// An exchange in flight across a reload that retired its service's
// connection pools finishes on them; its upstream connection is then
// closed, not kept idle in a pool nothing will use again.
func TestReloadRetiredPoolsCloseLateConnections(t *testing.T) {
	for _, tc := range []struct {
		name   string
		client func() *http.Client
	}{
		{"http1 upload", h1Client},
		{"h2c", h2cClient},
	} {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			started := make(chan struct{}, 1)
			up, open := connOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				if r.URL.Path == "/slow" {
					started <- struct{}{}
					<-release
				}
				io.WriteString(w, "done")
			}))
			sc := startFerry(t, reloadConfig(up, ""))
			url := "http://" + sc.Addr("outbound")
			c := tc.client()
			defer c.CloseIdleConnections()
			done := make(chan error, 1)
			go func() {
				res, err := c.Post(url+"/slow", "text/plain", strings.NewReader("hello"))
				if err == nil {
					var b []byte
					b, err = io.ReadAll(res.Body)
					res.Body.Close()
					if err == nil && string(b) != "done" {
						err = io.ErrUnexpectedEOF
					}
				}
				done <- err
			}()
			recv(t, started, 5*time.Second, "the exchange to reach the origin")
			// New resilience settings: the service gets new pools, the
			// old ones are retired.
			if err := sc.Reload(context.Background(), mustParse(t, reloadConfig(up, "defaults: { max_in_flight: 77 }"))); err != nil {
				t.Fatal(err)
			}
			close(release)
			if err := recv(t, done, 5*time.Second, "the exchange across the reload"); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the retired pool's connection to the origin to close", 5*time.Second, func() bool { return open() == 0 })
		})
	}
}
