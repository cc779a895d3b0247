package sidecar

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/ferrymesh/ferry/discovery"
	"github.com/ferrymesh/ferry/discovery/consultest"
	"github.com/ferrymesh/ferry/telemetry"
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
	if err := sc.Shutdown(context.Background()); err == nil {
		t.Fatal("a second Shutdown reported a clean drain; the first cut a stream")
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

// TestLaneServeAfterShutdownClosesListener: like net/http's
// Server.Serve, the lane's Serve called after Shutdown must close the
// listener it is given; otherwise the port stays bound, the kernel keeps
// accepting connections nobody serves, and the fd leaks. Sidecar.Start
// runs Serve on a goroutine, so a Shutdown right after Start hits this.
func TestLaneServeAfterShutdownClosesListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	l := newLane("outbound", http.NotFoundHandler(), &http.Server{}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := l.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := l.Serve(ln); err != http.ErrServerClosed {
		t.Fatalf("Serve after Shutdown: %v, want ErrServerClosed", err)
	}
	if listening(t, ln.Addr().String()) {
		t.Fatal("the listener given to Serve after Shutdown is still open")
	}
}

// TestGraceEndCancelsExchangeWithPipelinedRequest: when the grace
// period ends, ferry closes the caller connections still busy; the
// exchanges on them must end too (their upstream connections closed), not
// run on unseen after Shutdown returned. The lane only learns that a
// caller is gone through its watch, which does not run while a pipelined
// request is buffered, so closing the connection alone cancels nothing.
func TestGraceEndCancelsExchangeWithPipelinedRequest(t *testing.T) {
	got := make(chan struct{}, 1)
	up := startRawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		got <- struct{}{}
		io.Copy(io.Discard, br) // never answers; returns when ferry closes
	})
	sc, _ := outboundTo(t, "", up.addr())
	c, err := net.Dial("tcp", sc.Addr("outbound"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /a HTTP/1.1\r\nHost: svc\r\n\r\nGET /b HTTP/1.1\r\nHost: svc\r\n\r\n")
	recv(t, got, 5*time.Second, "the upstream to get the request")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := sc.Shutdown(ctx); err == nil {
		t.Fatal("Shutdown reported a clean drain with an exchange in flight")
	}
	waitFor(t, "the upstream connection of the cut exchange to close after Shutdown returned", 3*time.Second, func() bool { return up.open() == 0 })
}

// Once Shutdown began, ferry serves nothing more: its proxy ports refuse
// connections when Shutdown returns (right after Start too, when the
// listeners' Serve may not have begun), Start fails, and a reload, after
// Shutdown or resolving while it ran, is refused and leaves no goroutine
// behind.
func TestNothingOutlivesShutdown(t *testing.T) {
	const text = `
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: svc } ] }
services: { svc: { endpoints: [127.0.0.1:1] } }
telemetry: { access_log: "off" }
`
	newSidecar := func(t *testing.T, opts Options) *Sidecar {
		cfg, err := ParseConfig([]byte(text))
		if err != nil {
			t.Fatal(err)
		}
		sc, err := New(cfg, opts)
		if err != nil {
			t.Fatal(err)
		}
		return sc
	}
	shutdown := func(t *testing.T, sc *Sidecar) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := sc.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
	}
	other := mustParse(t, strings.Replace(text, "127.0.0.1:1]", "127.0.0.1:2]", 1))

	t.Run("ports closed", func(t *testing.T) {
		for i := range 30 {
			sc := newSidecar(t, Options{})
			if err := sc.Start(); err != nil {
				t.Fatal(err)
			}
			addr := sc.Addr("outbound")
			shutdown(t, sc)
			if listening(t, addr) {
				t.Fatalf("iteration %d: outbound %s still listens after Shutdown returned", i, addr)
			}
		}
	})
	t.Run("start after", func(t *testing.T) {
		sc := newSidecar(t, Options{})
		shutdown(t, sc)
		if err := sc.Start(); !errors.Is(err, errShutDown) {
			t.Fatalf("Start after Shutdown: %v (outbound at %q); want %v", err, sc.Addr("outbound"), errShutDown)
		}
	})
	t.Run("reload after", func(t *testing.T) {
		leaks := goleak.IgnoreCurrent()
		sc := newSidecar(t, Options{})
		if err := sc.Start(); err != nil {
			t.Fatal(err)
		}
		shutdown(t, sc)
		if err := sc.Reload(context.Background(), other); !errors.Is(err, errShutDown) {
			t.Fatalf("Reload after Shutdown: %v; want %v", err, errShutDown)
		}
		if err := goleak.Find(leaks); err != nil {
			t.Fatalf("goroutines left after Shutdown and a Reload:\n%v", err)
		}
	})
	t.Run("reload during", func(t *testing.T) {
		leaks := goleak.IgnoreCurrent()
		res := &heldResolver{later: make(chan *discovery.Service, 1)}
		sc := newSidecar(t, Options{Resolver: res})
		if err := sc.Start(); err != nil {
			t.Fatal(err)
		}
		reloaded := make(chan error, 1)
		go func() { reloaded <- sc.Reload(context.Background(), other) }()
		svc := recv(t, res.later, 5*time.Second, "the reload to build its generation")
		shutdown(t, sc)
		publishReady(svc, "127.0.0.1:2") // the reload's generation resolves now
		if err := recv(t, reloaded, 5*time.Second, "the reload to return"); !errors.Is(err, errShutDown) {
			t.Fatalf("Reload resolved while Shutdown ran: %v; want %v", err, errShutDown)
		}
		if err := goleak.Find(leaks); err != nil {
			t.Fatalf("goroutines left after Shutdown with a Reload resolving meanwhile:\n%v", err)
		}
	})
}

// heldResolver hands out services: the first ready at once, later ones
// (a reload's) on later, for the test to publish.
type heldResolver struct {
	mu    sync.Mutex
	n     int
	later chan *discovery.Service
}

func (r *heldResolver) Service(name string) (*discovery.Service, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	svc := discovery.NewService(name, "test")
	if r.n == 1 {
		publishReady(svc, "127.0.0.1:1")
	} else {
		r.later <- svc
	}
	return svc, nil
}

// publishReady publishes a ready snapshot of one endpoint.
func publishReady(svc *discovery.Service, addr string) {
	now := time.Now()
	svc.Publish(&discovery.Snapshot{Endpoints: []discovery.Endpoint{{Addr: addr, Weight: 1}}, Ready: true, Updated: now, Checked: now})
}

// TestGraceEndIsNotTheCallerCanceling: an exchange ferry cuts when the
// drain's grace period ends is logged and counted as that, never as the
// caller going away (499, client_canceled): one cut before its response
// began is a 503 grace_ended, one cut mid-body keeps the status sent and
// the grace_ended reason. Callers of the lane (HTTP/1.1) and of net/http
// (h2c) alike.
func TestGraceEndIsNotTheCallerCanceling(t *testing.T) {
	cases := []struct {
		name, path string
		client     *http.Client
		wantStatus int
	}{
		{"h1 before the response", "/silent", h1Client(), http.StatusServiceUnavailable},
		{"h1 mid-body", "/stream", h1Client(), http.StatusOK},
		{"h2c before the response", "/silent", h2cClient(), http.StatusServiceUnavailable},
		{"h2c mid-body", "/stream", h2cClient(), http.StatusOK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			started := make(chan struct{}, 1)
			release := make(chan struct{})
			defer close(release)
			up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/stream" {
					w.Header().Set("Content-Length", "10")
					w.Write([]byte("hello"))
					w.(http.Flusher).Flush()
				}
				started <- struct{}{}
				<-release
			}))
			sc, _, logs := tracedFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: svc } ] }
services: { svc: { endpoints: [%s] } }
`, up))
			done := make(chan struct{})
			var seen string // what the caller got
			go func() {
				defer close(done)
				res, err := tc.client.Get("http://" + sc.Addr("outbound") + tc.path)
				if err != nil {
					seen = "error " + err.Error()
					return
				}
				_, err = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				seen = fmt.Sprintf("%d, body error %v", res.StatusCode, err)
			}()
			recv(t, started, 5*time.Second, "the upstream to get the request")
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			if err := sc.Shutdown(ctx); err == nil {
				t.Fatal("shutdown reported a clean drain although an exchange outlived the grace period")
			}
			recv(t, done, 5*time.Second, "the caller to see its exchange end")
			// The caller sees what was logged: a whole 503 answer, or the
			// status sent and a broken body.
			if want := fmt.Sprintf("%d, body error <nil>", tc.wantStatus); tc.wantStatus == http.StatusServiceUnavailable && seen != want {
				t.Errorf("the caller got %s; want %s", seen, want)
			} else if tc.wantStatus == http.StatusOK && (!strings.HasPrefix(seen, "200, ") || strings.HasSuffix(seen, "<nil>")) {
				t.Errorf("the caller got %s; want 200 and a broken body", seen)
			}
			var line map[string]any
			waitFor(t, "the cut exchange's access log line", 5*time.Second, func() bool {
				for _, l := range strings.Split(logs.String(), "\n") {
					if json.Unmarshal([]byte(l), &line) == nil && line["msg"] == "request" {
						return true
					}
				}
				return false
			})
			if line["status"] != float64(tc.wantStatus) || line["reason"] != telemetry.ReasonGraceEnded {
				t.Errorf("access log has status %v reason %v; want %d %s:\n%s", line["status"], line["reason"], tc.wantStatus, telemetry.ReasonGraceEnded, logs.String())
			}
			rec := httptest.NewRecorder()
			sc.tel.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
			if want := `reason="` + telemetry.ReasonGraceEnded + `"`; !strings.Contains(rec.Body.String(), want) || strings.Contains(rec.Body.String(), `reason="client_canceled"`) {
				t.Errorf("ferry_requests_total has no %s series, or one for client_canceled:\n%s", want, grepLines(rec.Body.String(), "ferry_requests_total"))
			}
		})
	}
}

// An exchange cut at the drain's end is reported before Shutdown returns:
// its access log line (and span) are written before ferry closes its own
// telemetry, not lost in the race with it. Several exchanges, each waiting
// on a silent upstream, make the race likely to show.
func TestDrainEndReportsCutExchanges(t *testing.T) {
	const n = 8
	started := make(chan struct{}, n)
	release := make(chan struct{})
	defer close(release)
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-release
	}))
	logPath := filepath.Join(t.TempDir(), "access.log")
	sc := startFerry(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: svc } ] }
services: { svc: { endpoints: [%s] } }
telemetry: { access_log: %s }
`, up, logPath))
	for range n {
		go func() {
			if res, err := h1Client().Get("http://" + sc.Addr("outbound") + "/"); err == nil {
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
			}
		}()
	}
	for i := range n {
		recv(t, started, 5*time.Second, fmt.Sprintf("request %d to reach the upstream", i+1))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := sc.Shutdown(ctx); err == nil {
		t.Fatal("shutdown reported a clean drain although exchanges outlived the grace period")
	}
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(string(b), `"reason":"`+telemetry.ReasonGraceEnded+`"`); got != n {
		t.Fatalf("%d of %d cut exchanges in the access log when Shutdown returned:\n%s", got, n, b)
	}
}

// shutdown.grace starts once shutdown.delay is over: during the delay
// ferry still serves new requests, then in-flight ones get the whole grace
// to finish (the injector counts the two one after the other against the
// pod's termination grace period).
func TestRunGraceFollowsDelay(t *testing.T) {
	// The answer comes 0.5s after a grace counted from the drain's start
	// would have ended, and 1.5s before the true one does: room for a
	// loaded machine (with 1s + 1s it once missed its 0.5s under -race).
	const delay, grace, answerAfter = 2 * time.Second, time.Second, 1500 * time.Millisecond
	drainAt := make(chan time.Time, 1)
	started := make(chan struct{}, 1)
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		// Answer answerAfter into the drain: past the grace counted from
		// the drain's start, within delay + grace.
		time.Sleep(time.Until((<-drainAt).Add(answerAfter)))
		io.WriteString(w, "done")
	}))
	_, got, stop, done := drainingWithExchange(t, up, started, delay.String(), grace.String())
	drainAt <- time.Now()
	stop() // SIGTERM
	if s := recv(t, got, 10*time.Second, "the answer"); s != "200 done <nil>" {
		t.Fatalf("the exchange in flight got %q, want it whole: the grace must start after the delay", s)
	}
	if err := recv(t, done, 10*time.Second, "Run to return"); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// drainingWithExchange runs a ferry in front of up whose shutdown takes
// delay, then grace, and returns once a GET through it reached up
// (started): got gets that GET's answer, stop is the SIGTERM, done gets
// what Run returned.
func drainingWithExchange(t *testing.T, up string, started <-chan struct{}, delay, grace string) (sc *Sidecar, got <-chan string, stop func(), done <-chan error) {
	t.Helper()
	sc, err := New(mustParse(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: svc } ] }
services: { svc: { endpoints: [%s] } }
shutdown: { delay: %s, grace: %s }
telemetry: { access_log: "off" }
`, up, delay, grace)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- sc.Run(ctx) }()
	waitFor(t, "ready", 5*time.Second, sc.Ready)
	got = getInBackground("http://" + sc.Addr("outbound") + "/")
	recv(t, started, 5*time.Second, "the request to reach the upstream")
	return sc, got, stop, ran
}

// getInBackground GETs url on a goroutine of its own and sends what came
// back: "status body read-error", or the request's error.
func getInBackground(url string) <-chan string {
	answer := make(chan string, 1)
	go func() {
		res, err := h1Client().Get(url)
		if err != nil {
			answer <- err.Error()
			return
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		answer <- fmt.Sprintf("%d %s %v", res.StatusCode, b, err)
	}()
	return answer
}

// listening, which the shutdown tests rely on, sees this process's own
// listener, on IPv4 and IPv6, and stops seeing it once it is closed.
func TestListeningSeesOwnListener(t *testing.T) {
	for _, a := range []string{"127.0.0.1:0", "[::1]:0"} {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			t.Logf("%s: %v (skipped)", a, err)
			continue
		}
		addr := ln.Addr().String()
		if !listening(t, addr) {
			t.Errorf("%s: an open listener is not seen", addr)
		}
		ln.Close()
		if listening(t, addr) {
			t.Errorf("%s: a closed listener is still seen", addr)
		}
	}
}

// TestLaneCloseServesNoHeadCompletedAfter: the drain's end (Close) lets
// the exchanges it cut answer, but a request whose head was still arriving
// when Close looked had no exchange to cut: once its head is whole it must
// not run as if the grace period went on (reaching the upstream after
// ferry gave up on it), but as one cut by the grace period's end.
func TestLaneCloseServesNoHeadCompletedAfter(t *testing.T) {
	causes := make(chan error, 2)
	srv := &http.Server{}
	l := newLane("outbound", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		causes <- context.Cause(r.Context())
		if r.Context().Err() != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}), srv, slog.New(slog.DiscardHandler))
	c := dialServer(t, l)
	br := bufio.NewReader(c)
	ask := func(head string) *http.Response {
		t.Helper()
		if _, err := io.WriteString(c, head); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res
	}
	ask("GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
	recv(t, causes, 5*time.Second, "the first request")
	conn := func() (lc *laneConn) {
		l.mu.Lock()
		defer l.mu.Unlock()
		for c := range l.conns {
			lc = c
		}
		return lc
	}
	// Between requests the connection is idle; once the next head's first
	// bytes came, busy: Close must not close it then.
	waitFor(t, "the connection to wait for its next request", 5*time.Second, func() bool { return conn().state.Load() != connBusy })
	if _, err := io.WriteString(c, "GET /b HTTP/1.1\r\n"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the next head to begin", 5*time.Second, func() bool { return conn().state.Load() == connBusy })
	closed := make(chan error, 1)
	go func() { closed <- l.Close() }()
	recv(t, srv.BaseContext(nil).Done(), 5*time.Second, "Close to cut the exchanges")
	res := ask("Host: x\r\n\r\n")
	if cause := recv(t, causes, 5*time.Second, "the request"); cause != errGraceEnded || res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a head completed after Close ran with cause %v and got %d; want %v, 503", cause, res.StatusCode, errGraceEnded)
	}
	recv(t, closed, 5*time.Second, "Close to return")
}

// A connection that finished its exchange just before Close looked (busy
// then) and waits for its next request after is closed by Close's wait,
// as Shutdown's loop closes idle connections: it was left open until the
// whole answer wait had passed.
func TestLaneCloseClosesConnectionsGoneIdle(t *testing.T) {
	at, release := make(chan struct{}), make(chan struct{})
	testHookKept = func() {
		at <- struct{}{}
		<-release
	}
	t.Cleanup(func() { testHookKept = nil })
	srv := &http.Server{IdleTimeout: time.Hour}
	l := newLane("outbound", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), srv, slog.New(slog.DiscardHandler))
	l.answerWait = time.Minute
	c := dialServer(t, l)
	io.WriteString(c, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
	recv(t, at, 5*time.Second, "the exchange to end with its connection kept")
	closed := make(chan error, 1)
	go func() { closed <- l.Close() }()
	recv(t, srv.BaseContext(nil).Done(), 5*time.Second, "Close to have looked at the connections and cut the exchanges")
	close(release)
	recv(t, closed, 10*time.Second, "Close to return well before its answer wait (a minute)")
}

// A shutdown.grace as long as a duration goes (the config takes up to
// 2562047h47m16.854775807s) lets the exchanges in flight finish: Run
// bounded the drain by delay + grace, a sum that overflowed into a
// negative timeout, so a SIGTERM cut every exchange in flight at once.
func TestRunLongestGraceLetsExchangesFinish(t *testing.T) {
	answer := make(chan struct{})
	started := make(chan struct{}, 1)
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-answer
		io.WriteString(w, "done")
	}))
	sc, got, stop, done := drainingWithExchange(t, up, started, "10ms", "2562047h47m16.854775807s")
	stop() // SIGTERM
	waitFor(t, "not ready (draining)", 5*time.Second, func() bool { return !sc.Ready() })
	select {
	case s := <-got:
		t.Fatalf("the exchange in flight ended before its upstream answered: %q", s)
	case <-time.After(300 * time.Millisecond):
	}
	close(answer)
	if s := recv(t, got, 10*time.Second, "the answer"); s != "200 done <nil>" {
		t.Fatalf("the exchange in flight got %q, want it whole", s)
	}
	if err := recv(t, done, 10*time.Second, "Run to return"); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// A drain ended at once (a second SIGTERM: EndDrain) with no exchange in
// flight is a clean one: Run returns nil (ferry exits 0) and the
// keep-alive connections left between requests are closed. They were
// taken for exchanges cut, the lane's idle ones still tracked for the
// moment their goroutines took to go and net/http's h2c ones open for
// their GOAWAY, and ferry warned that the grace ended with exchanges
// still open and exited 1.
func TestEndedDrainWithOnlyIdleConnectionsIsClean(t *testing.T) {
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	}))
	cases := []struct {
		name string
		// request makes one exchange on a connection kept open after it,
		// and returns a function that says whether ferry closed it.
		request func(t *testing.T, addr string) (closed func() bool)
	}{
		{"h1 served by the lane", func(t *testing.T, addr string) func() bool {
			return rawKeptAlive(t, addr, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
		}},
		{"h1 handed to net/http", func(t *testing.T, addr string) func() bool {
			return rawKeptAlive(t, addr, "POST / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n")
		}},
		{"h2c", func(t *testing.T, addr string) func() bool {
			tr := h2cClient().Transport.(*http.Transport)
			t.Cleanup(tr.CloseIdleConnections)
			res, err := (&http.Client{Transport: tr}).Get("http://" + addr + "/")
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			return nil
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sc, err := New(mustParse(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: svc } ] }
services: { svc: { endpoints: [%s] } }
shutdown: { delay: 1m, grace: 1m }
telemetry: { access_log: "off" }
`, up)), Options{})
			if err != nil {
				t.Fatal(err)
			}
			ctx, stop := context.WithCancel(context.Background())
			defer stop()
			done := make(chan error, 1)
			go func() { done <- sc.Run(ctx) }()
			waitFor(t, "ready", 5*time.Second, sc.Ready)
			closed := tc.request(t, sc.Addr("outbound"))
			stop() // SIGTERM
			waitFor(t, "the drain to begin", 5*time.Second, func() bool { return !sc.Ready() })
			sc.EndDrain() // the second SIGTERM, during shutdown.delay
			if err := recv(t, done, 10*time.Second, "Run to return"); err != nil {
				t.Fatalf("Run: %v; want nil, nothing was in flight", err)
			}
			if closed != nil && !closed() {
				t.Fatal("the idle keep-alive connection is still open after Run returned")
			}
		})
	}
}

// rawKeptAlive sends req on a new connection to addr, reads its answer,
// which must be a 200 that keeps the connection, and returns a function
// that says whether the connection was closed since (within 5s).
func rawKeptAlive(t *testing.T, addr, req string) (closed func() bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || res.Close {
		t.Fatalf("the exchange got %d (close %v); want 200 on a kept connection", res.StatusCode, res.Close)
	}
	return func() bool {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := br.ReadByte()
		return err != nil && !isTimeoutErr(err)
	}
}

// A drain that ends (a second SIGTERM, EndDrain) just after an exchange's
// answer went out whole, while the lane is still ending that exchange
// (its span, metrics and access log line, its connection's bookkeeping),
// cuts nothing: Run returns nil (ferry exits 0), after that exchange was
// reported. Before, the lane counted the exchange in flight until its
// connection went back to waiting for a request, and Run returned "drain:
// grace period ended with exchanges in flight" (exit 1) though the caller
// had its whole answer. The lane is held at that point by
// testHookAnswered until the drain's end waits for it
// (testHookDrainWaits) or Run returns, so no timing decides the outcome.
// An exchange whose answer had not gone out whole still makes Run fail
// (TestSecondSignalCutsInFlightAndAnswers503 and the drain tests above).
func TestEndedDrainJustAfterAnAnswerIsClean(t *testing.T) {
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/chunked" {
			w.Write([]byte("o"))
			w.(http.Flusher).Flush()
		}
		io.WriteString(w, "ok")
	}))
	for _, path := range []string{"/length", "/chunked"} {
		t.Run(path, func(t *testing.T) {
			sc, err := New(mustParse(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: svc } ] }
services: { svc: { endpoints: [%s] } }
shutdown: { delay: 1m, grace: 1m }
telemetry: { access_log: "off" }
`, up)), Options{})
			if err != nil {
				t.Fatal(err)
			}
			answered := make(chan struct{})
			drainWaits := make(chan struct{})
			runReturned := make(chan struct{})
			var once, waitOnce sync.Once
			testHookAnswered = func() {
				once.Do(func() {
					close(answered)
					select {
					case <-drainWaits:
					case <-runReturned:
					}
				})
			}
			testHookDrainWaits = func() { waitOnce.Do(func() { close(drainWaits) }) }
			t.Cleanup(func() { testHookAnswered, testHookDrainWaits = nil, nil })
			ctx, stop := context.WithCancel(context.Background())
			defer stop()
			done := make(chan error, 1)
			go func() {
				err := sc.Run(ctx)
				close(runReturned)
				done <- err
			}()
			waitFor(t, "ready", 5*time.Second, sc.Ready)
			c, err := net.Dial("tcp", sc.Addr("outbound"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: svc\r\n\r\n")
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			res, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(res.Body)
			if err != nil || (string(b) != "ok" && string(b) != "ook") {
				t.Fatalf("answer %q, %v", b, err)
			}
			recv(t, answered, 5*time.Second, "the lane to report the answer whole")
			stop() // SIGTERM
			waitFor(t, "the drain to begin", 5*time.Second, func() bool { return !sc.Ready() })
			sc.EndDrain() // the second SIGTERM, the exchange still ending
			if err := recv(t, done, 10*time.Second, "Run to return"); err != nil {
				t.Fatalf("Run: %v; want nil, the caller had its whole answer", err)
			}
			if n := sc.tel.Metrics().InFlight(); n != 0 {
				t.Errorf("%d exchanges not yet reported when Run returned", n)
			}
		})
	}
}

// The same on a connection the lane handed to net/http's server (a
// chunked upload, Expect: 100-continue, HTTP/1.0): a drain that ends
// (EndDrain) once the exchange's Content-Length answer went out whole,
// flushed, while the handler is still ending it (its span, metrics and
// access log line) and net/http has not yet reported the connection idle,
// cuts nothing: Run returns nil, after that exchange was reported. Before,
// the lane counted the handler call and the connection net/http had not
// reported idle as an exchange in flight, and Run returned "drain: grace
// period ended with exchanges in flight" (exit 1). testHookAnswered holds
// the exchange there until the drain's end waits for it
// (testHookDrainWaits) or Run returns.
//
// An answer the caller does not have whole yet still counts: a chunked
// answer, whose last chunk net/http writes only after the handler
// returns, and an h2c one, whose END_STREAM goes out then too. Held just
// after their last body bytes (testHookResponded) until the drain's end
// cuts them, they make Run fail.
func TestEndedDrainJustAfterAHandedOverAnswerIsClean(t *testing.T) {
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		switch r.URL.Path {
		case "/chunked":
			w.Write([]byte("o"))
			w.(http.Flusher).Flush()
		case "/nocontent":
			w.WriteHeader(http.StatusNoContent)
			return
		case "/empty":
			w.Header().Set("Content-Length", "0")
			return
		}
		io.WriteString(w, "ok")
	}))
	start := func(t *testing.T) (sc *Sidecar, stop func(), done chan error, runReturned chan struct{}) {
		return startDraining(t, up, Options{})
	}
	// send writes req on a new connection and reads the answer (past any
	// 100 Continue) to its end.
	send := func(addr, req string) (string, error) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return "", err
		}
		defer c.Close()
		io.WriteString(c, req)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		method, _, _ := strings.Cut(req, " ")
		for {
			res, err := http.ReadResponse(br, &http.Request{Method: method})
			if err != nil {
				return "", err
			}
			if res.StatusCode == http.StatusContinue {
				continue
			}
			b, err := io.ReadAll(res.Body)
			return string(b), err
		}
	}
	whole := []struct{ name, req, want string }{
		// (An announced trailer: the lane hands the connection over.)
		{"chunked upload", "POST /length HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n2\r\nhi\r\n0\r\n\r\n", "ok"},
		{"expect", "POST http://svc/length HTTP/1.1\r\nHost: svc\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nhi", "ok"},
		// (No Host: the lane hands such an HTTP/1.0 request over.)
		{"http10", "GET /length HTTP/1.0\r\n\r\n", "ok"},
		// Answers with no body: whole once their head went out.
		{"http10 204", "GET /nocontent HTTP/1.0\r\n\r\n", ""},
		{"http10 HEAD", "HEAD /length HTTP/1.0\r\n\r\n", ""},
		{"chunked upload, Content-Length 0", "POST /empty HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n2\r\nhi\r\n0\r\n\r\n", ""},
	}
	for _, tc := range whole {
		t.Run(tc.name, func(t *testing.T) {
			answered := make(chan struct{})
			drainWaits := make(chan struct{})
			var once, waitOnce sync.Once
			var runReturned chan struct{}
			testHookAnswered = func() {
				once.Do(func() {
					close(answered)
					select {
					case <-drainWaits:
					case <-runReturned:
					}
				})
			}
			testHookDrainWaits = func() { waitOnce.Do(func() { close(drainWaits) }) }
			t.Cleanup(func() { testHookAnswered, testHookDrainWaits = nil, nil })
			handed := laneHanded.Load()
			sc, stop, done, ret := start(t)
			runReturned = ret
			if b, err := send(sc.Addr("outbound"), tc.req); b != tc.want || err != nil {
				t.Fatalf("answer %q, %v", b, err)
			}
			if laneHanded.Load() == handed {
				t.Fatal("the request was not handed to net/http")
			}
			recv(t, answered, 5*time.Second, "the answer to be reported whole")
			drainEndsClean(t, sc, stop, done)
		})
	}
	cut := []struct {
		name string
		// call makes the exchange and returns how its answer ended.
		call func(addr string) error
		// broken: the caller sees its answer end cut (an h2c caller has
		// the whole body but for END_STREAM, which net/http sends once
		// the cut exchange's handler returns)
		broken bool
	}{
		{"chunked answer", func(addr string) error {
			_, err := send(addr, "POST /chunked HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n")
			return err
		}, true},
		{"h2c", func(addr string) error {
			tr := h2cClient().Transport.(*http.Transport)
			defer tr.CloseIdleConnections()
			res, err := (&http.Client{Transport: tr}).Get("http://" + addr + "/length")
			if err != nil {
				return err
			}
			defer res.Body.Close()
			_, err = io.ReadAll(res.Body)
			return err
		}, false},
	}
	for _, tc := range cut {
		t.Run(tc.name, func(t *testing.T) {
			responded := make(chan struct{})
			var once sync.Once
			var runReturned chan struct{}
			testHookResponded = func(ctx context.Context) {
				once.Do(func() { close(responded) })
				// Until Run returned, the drain's end having cut the
				// exchange: released at ctx's end, the exchange could
				// disarm the cut before its goroutine made it, and end
				// whole.
				select {
				case <-runReturned:
				case <-time.After(10 * time.Second):
				}
			}
			t.Cleanup(func() { testHookResponded = nil })
			sc, stop, done, ret := start(t)
			runReturned = ret
			called := make(chan error, 1)
			go func() { called <- tc.call(sc.Addr("outbound")) }()
			recv(t, responded, 5*time.Second, "the answer's body to be relayed")
			endDrain(t, sc, stop)
			if err := recv(t, done, 10*time.Second, "Run to return"); err == nil {
				t.Fatal("Run: nil; want an error, the caller's answer was cut before it was whole")
			}
			if err := recv(t, called, 10*time.Second, "the caller's answer to end"); tc.broken && err == nil {
				t.Error("the caller's answer ended whole; want it cut")
			}
		})
	}
}

// The same on a connection ferry took over from net/http for a spliced
// upload (1 MiB or more that the lane handed over, answered on the
// connection by ferry's own writer): a drain that ends (EndDrain) once the
// exchange's Content-Length answer went out whole, flushed, while the
// exchange is still ending (its span, metrics and access log line), cuts
// nothing: Run returns nil, after that exchange was reported. Before, the
// taken-over connection counted as a tunnel until the exchange returned,
// and the drain's end closed it as one cut: Run returned "drain: grace
// period ended with exchanges in flight" (exit 1). testHookResponded holds
// the exchange there (its answer is whole once respond returned) until the
// drain's end waits for it (testHookDrainWaits) or Run returns.
//
// A taken-over answer not whole when the drain ends still counts: a
// chunked one held after its last body bytes (its last chunk goes out
// after), and a Content-Length one cut mid-body. Run fails, and the caller
// sees its answer break.
func TestEndedDrainJustAfterATakenOverAnswerIsClean(t *testing.T) {
	release := make(chan struct{}) // the mid-body answer's rest
	midBody := make(chan struct{}, 1)
	up := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		switch r.URL.Path {
		case "/chunked":
			w.Write([]byte("o"))
			w.(http.Flusher).Flush()
		case "/mid":
			w.Header().Set("Content-Length", "10")
			w.Write([]byte("hello"))
			w.(http.Flusher).Flush()
			midBody <- struct{}{}
			<-release
			w.Write([]byte("world"))
			return
		}
		io.WriteString(w, "ok")
	}))
	start := func(t *testing.T, opts Options) (sc *Sidecar, stop func(), done chan error, runReturned chan struct{}) {
		return startDraining(t, up, opts)
	}
	// upload sends a 1 MiB upload with Expect: 100-continue to path and
	// reads the answer (past the 100 Continue) to its end.
	upload := func(addr, path string) (string, error) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		// (An absolute-form target: the lane hands it to net/http,
		// whose connection ferry takes.)
		fmt.Fprintf(c, "POST http://svc%s HTTP/1.1\r\nHost: svc\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", path, uploadSpliceMin)
		br := bufio.NewReader(c)
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			return "", err
		}
		if res.StatusCode != http.StatusContinue {
			return "", fmt.Errorf("answer %d before the body; want 100 Continue", res.StatusCode)
		}
		if _, err := c.Write(make([]byte, uploadSpliceMin)); err != nil {
			return "", err
		}
		if res, err = http.ReadResponse(br, nil); err != nil {
			return "", err
		}
		b, err := io.ReadAll(res.Body)
		return string(b), err
	}
	t.Run("whole", func(t *testing.T) {
		responded := make(chan struct{})
		drainWaits := make(chan struct{})
		var once, waitOnce sync.Once
		var runReturned chan struct{}
		testHookResponded = func(context.Context) {
			once.Do(func() {
				close(responded)
				select {
				case <-drainWaits:
				case <-runReturned:
				}
			})
		}
		testHookDrainWaits = func() { waitOnce.Do(func() { close(drainWaits) }) }
		t.Cleanup(func() { testHookResponded, testHookDrainWaits = nil, nil })
		spliced := splicedUp.Load()
		sc, stop, done, ret := start(t, Options{})
		runReturned = ret
		if b, err := upload(sc.Addr("outbound"), "/length"); b != "ok" || err != nil {
			t.Fatalf("answer %q, %v", b, err)
		}
		// (The move counts its bytes once its last splice returned,
		// which may be after the upstream answered.)
		waitFor(t, "the upload to be taken over (bytes spliced)", 5*time.Second, func() bool { return splicedUp.Load() != spliced })
		recv(t, responded, 5*time.Second, "the answer to be relayed")
		drainEndsClean(t, sc, stop, done)
	})
	// Held later, while the exchange is being reported (its server span
	// ending): the drain's end still waits for that report before Run
	// returns. Before, the taken-over connection left the tunnel set when
	// forward returned, before its report: a drain's end then found
	// nothing open and did not wait for it.
	t.Run("reported", func(t *testing.T) {
		h := holdServerSpanReport(t)
		reporting := h.reporting
		testHookDrainWaits = h.release
		t.Cleanup(func() { testHookDrainWaits = nil })
		sc, stop, done, ret := start(t, Options{Telemetry: h.tel})
		h.runReturned = ret
		if b, err := upload(sc.Addr("outbound"), "/length"); b != "ok" || err != nil {
			t.Fatalf("answer %q, %v", b, err)
		}
		recv(t, reporting, 5*time.Second, "the exchange to be reported")
		drainEndsClean(t, sc, stop, done)
	})
	t.Run("chunked answer", func(t *testing.T) {
		responded := make(chan struct{})
		var once sync.Once
		var sc *Sidecar
		testHookResponded = func(context.Context) {
			once.Do(func() {
				close(responded)
				// Until the drain's end closed the tunnels (10s at most).
				end := time.Now().Add(10 * time.Second)
				for !tunnelsClosed(sc) && time.Now().Before(end) {
					time.Sleep(5 * time.Millisecond)
				}
			})
		}
		t.Cleanup(func() { testHookResponded = nil })
		sc, stop, done, _ := start(t, Options{})
		called := make(chan error, 1)
		go func() {
			_, err := upload(sc.Addr("outbound"), "/chunked")
			called <- err
		}()
		recv(t, responded, 10*time.Second, "the answer's body to be relayed")
		endDrain(t, sc, stop)
		if err := recv(t, done, 10*time.Second, "Run to return"); err == nil {
			t.Fatal("Run: nil; want an error, the caller's answer was cut before it was whole")
		}
		if err := recv(t, called, 10*time.Second, "the caller's answer to end"); err == nil {
			t.Error("the caller's answer ended whole; want it cut")
		}
		waitFor(t, "the cut exchange to end", 10*time.Second, func() bool { return sc.tel.Metrics().InFlight() == 0 })
	})
	t.Run("mid-body", func(t *testing.T) {
		sc, stop, done, _ := start(t, Options{})
		called := make(chan error, 1)
		go func() {
			_, err := upload(sc.Addr("outbound"), "/mid")
			called <- err
		}()
		recv(t, midBody, 10*time.Second, "the answer's first bytes")
		endDrain(t, sc, stop)
		if err := recv(t, done, 10*time.Second, "Run to return"); err == nil {
			t.Fatal("Run: nil; want an error, the caller's answer was cut mid-body")
		}
		if n := sc.tel.Metrics().InFlight(); n != 0 {
			t.Errorf("%d exchanges not yet reported when Run returned", n)
		} else if m := metricsText(sc); !strings.Contains(m, `reason="`+telemetry.ReasonGraceEnded+`"`) {
			t.Errorf("the cut exchange is not reported as %s:\n%s", telemetry.ReasonGraceEnded, grepLines(m, "ferry_requests_total"))
		}
		if err := recv(t, called, 10*time.Second, "the caller's answer to end"); err == nil {
			t.Error("the caller's answer ended whole; want it cut")
		}
		close(release)
		waitFor(t, "the cut exchange to end", 10*time.Second, func() bool { return sc.tel.Metrics().InFlight() == 0 })
	})
}

// tunnelsClosed reports whether the drain's end closed sc's tunnels.
func tunnelsClosed(sc *Sidecar) bool {
	sc.tunnels.mu.Lock()
	defer sc.tunnels.mu.Unlock()
	return sc.tunnels.closed
}

// holdingProcessor is a span processor that calls onEnd as each span ends.
type holdingProcessor struct{ onEnd func(sdktrace.ReadOnlySpan) }

func (p *holdingProcessor) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (p *holdingProcessor) OnEnd(s sdktrace.ReadOnlySpan)                   { p.onEnd(s) }
func (p *holdingProcessor) Shutdown(context.Context) error                  { return nil }
func (p *holdingProcessor) ForceFlush(context.Context) error                { return nil }

// startDraining runs a ferry whose outbound listener leads to up, with a
// drain long enough (delay and grace of a minute) that only its end, by
// endDrain, ends it. stop is the first SIGTERM; done gets Run's error once
// runReturned is closed.
func startDraining(t *testing.T, up string, opts Options) (sc *Sidecar, stop func(), done chan error, runReturned chan struct{}) {
	t.Helper()
	sc, err := New(mustParse(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: svc } ] }
services: { svc: { endpoints: [%s] } }
shutdown: { delay: 1m, grace: 1m }
telemetry: { access_log: "off" }
`, up)), opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	t.Cleanup(stop)
	done, runReturned = make(chan error, 1), make(chan struct{})
	go func() {
		err := sc.Run(ctx)
		close(runReturned)
		done <- err
	}()
	waitFor(t, "ready", 5*time.Second, sc.Ready)
	return sc, stop, done, runReturned
}

// endDrain is the first SIGTERM, then the second, the exchange held.
func endDrain(t *testing.T, sc *Sidecar, stop func()) {
	t.Helper()
	stop()
	waitFor(t, "the drain to begin", 5*time.Second, func() bool { return !sc.Ready() })
	sc.EndDrain()
}

// drainEndsClean ends the drain (endDrain) and expects Run to return nil,
// every exchange reported: the caller had its whole answer.
func drainEndsClean(t *testing.T, sc *Sidecar, stop func(), done chan error) {
	t.Helper()
	endDrain(t, sc, stop)
	if err := recv(t, done, 10*time.Second, "Run to return"); err != nil {
		t.Fatalf("Run: %v; want nil, the caller had its whole answer", err)
	}
	if n := sc.tel.Metrics().InFlight(); n != 0 {
		t.Errorf("%d exchanges not yet reported when Run returned", n)
	}
}

// A tunnel that ended on its own (its upstream said all and closed) while
// its report is still being written when the drain ends: the drain waits
// for that report before telemetry closes, and nothing was cut. The tunnel
// left the drain's set as it ended, before its report: a drain's end then
// found nothing open and did not wait.
func TestEndedDrainWaitsForAnEndedTunnelsReport(t *testing.T) {
	o := rawTunnelOrigin(t, func(c *net.TCPConn, br *bufio.Reader) {
		io.WriteString(c, "bye\n")
	})
	h := holdServerSpanReport(t)
	reporting := h.reporting
	var sc *Sidecar
	testHookDrainWaits = func() {
		// The tunnel set's wait, not the lane's (which has nothing of the
		// tunnel's): release the report there.
		if tunnelsOpen(sc) > 0 {
			h.release()
		}
	}
	t.Cleanup(func() { testHookDrainWaits = nil })
	sc, stop, done, ret := startDraining(t, o.addr(), Options{Telemetry: h.tel})
	h.runReturned = ret
	c, br := openRawTunnel(t, sc.Addr("outbound"))
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if l, err := br.ReadString('\n'); l != "bye\n" {
		t.Fatalf("read %q, %v", l, err)
	}
	io.Copy(io.Discard, br) // the upstream's end, passed on as a half-close
	c.Close()               // the caller's: the tunnel is over
	recv(t, reporting, 5*time.Second, "the tunnel to be reported")
	drainEndsClean(t, sc, stop, done)
}

// tunnelsOpen is how many connections the drain's tunnel set tracks.
func tunnelsOpen(sc *Sidecar) int {
	sc.tunnels.mu.Lock()
	defer sc.tunnels.mu.Unlock()
	return len(sc.tunnels.conns)
}

// reportHold is a ferry's telemetry whose first server span's end (the
// exchange's report) waits, once reporting is closed, until release or
// runReturned.
type reportHold struct {
	tel         *telemetry.Telemetry
	reporting   chan struct{}
	drainWaits  chan struct{}
	waitOnce    sync.Once
	runReturned chan struct{} // set once Run started, before any request
}

func holdServerSpanReport(t *testing.T) *reportHold {
	t.Helper()
	h := &reportHold{reporting: make(chan struct{}), drainWaits: make(chan struct{})}
	var once sync.Once
	proc := &holdingProcessor{onEnd: func(s sdktrace.ReadOnlySpan) {
		if s.SpanKind() != trace.SpanKindServer {
			return
		}
		once.Do(func() {
			close(h.reporting)
			select {
			case <-h.drainWaits:
			case <-h.runReturned:
			}
		})
	}}
	tel, err := telemetry.New(context.Background(), telemetry.Config{ServiceName: "ferry-test", AccessLog: "off"},
		telemetry.WithEnv(func(string) string { return "" }), telemetry.WithSpanProcessor(proc))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tel.Shutdown(context.Background()) })
	h.tel = tel
	return h
}

// release lets the held report go on.
func (h *reportHold) release() { h.waitOnce.Do(func() { close(h.drainWaits) }) }
