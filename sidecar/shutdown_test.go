package sidecar

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/discovery/consultest"
)

// drainSetup starts an origin whose responses stay open until released and
// a ferry in front of it.
func drainSetup(t *testing.T, extra string) (sc *Sidecar, url string, started chan struct{}, release chan struct{}) {
	started = make(chan struct{}, 8)
	release = make(chan struct{})
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "10")
		w.Write([]byte("hello"))
		w.(http.Flusher).Flush()
		started <- struct{}{}
		<-release
		w.Write([]byte("world"))
	}))
	sc, url = outboundTo(t, extra, up)
	return sc, url, started, release
}

func TestShutdownDrainsInFlightThenStops(t *testing.T) {
	sc, url, started, release := drainSetup(t, "shutdown: { grace: 30s }")
	res, err := h1Client().Get(url + "/x")
	if err != nil {
		t.Fatal(err)
	}
	recv(t, started, 5*time.Second, "stream to start")

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		done <- sc.Shutdown(ctx)
	}()
	admin := "http://" + sc.Addr("admin") + "/ready"
	waitFor(t, "/ready to answer 503 while draining", 5*time.Second, func() bool {
		r, err := http.Get(admin)
		if err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == http.StatusServiceUnavailable
	})
	waitFor(t, "outbound to stop accepting", 5*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", sc.Addr("outbound"), time.Second)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	select {
	case err := <-done:
		t.Fatalf("shutdown returned (%v) with a stream in flight", err)
	default:
	}
	close(release)
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || string(b) != "helloworld" {
		t.Fatalf("in-flight stream got %q, %v; want it to finish whole", b, err)
	}
	if err := recv(t, done, 10*time.Second, "shutdown to finish"); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}

func TestShutdownGraceEndsStragglers(t *testing.T) {
	sc, url, started, release := drainSetup(t, "")
	defer close(release)
	res, err := h1Client().Get(url + "/x")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	recv(t, started, 5*time.Second, "stream to start")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := sc.Shutdown(ctx); err == nil {
		t.Fatal("shutdown reported a clean drain although a stream outlived the grace period")
	}
	if _, err := io.ReadAll(res.Body); err == nil {
		t.Fatal("the cut stream ended cleanly; want a broken response")
	}
}

// On shutdown a registered ferry turns not ready and leaves Consul before
// it stops serving: while a stream is still in flight, the instance is
// already gone from Consul.
func TestShutdownDeregistersBeforeDraining(t *testing.T) {
	agent := consultest.Start(t)
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	app := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "2")
		w.Write([]byte("a"))
		w.(http.Flusher).Flush()
		started <- struct{}{}
		<-release
		w.Write([]byte("b"))
	}))
	sc := startFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
inbound: { listen: 127.0.0.1:0, app: %s }
consul: { address: %s }
register: { name: web, id: web-1, port: 18080 }
`, app, agent.HTTPAddr))
	registered := func() bool {
		s, err := agent.Client().Agent().Services()
		return err == nil && s["web-1"] != nil
	}
	waitFor(t, "registration", 10*time.Second, registered)
	res, err := h1Client().Get("http://" + sc.Addr("inbound") + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	recv(t, started, 5*time.Second, "stream to start")
	done := make(chan error, 1)
	go func() { done <- sc.Shutdown(context.Background()) }()
	waitFor(t, "deregistration while the stream is in flight", 10*time.Second, func() bool { return !registered() })
	select {
	case <-done:
		t.Fatal("shutdown finished before the in-flight stream")
	default:
	}
	close(release)
	if b, err := io.ReadAll(res.Body); err != nil || string(b) != "ab" {
		t.Fatalf("stream got %q %v", b, err)
	}
	recv(t, done, 10*time.Second, "shutdown")
}
