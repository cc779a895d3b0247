package sidecar

import (
	"context"
	"encoding/json"
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

	"github.com/ferrymesh/ferry/discovery"
	"github.com/ferrymesh/ferry/internal/syncbuf"
)

func reloadConfig(target string, extra string) string {
	return fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound:
  listen: 127.0.0.1:0
  routes: [ { service: svc } ]
services:
  svc: { endpoints: [%s] }
telemetry: { access_log: "off" }
%s`, target, extra)
}

func mustParse(t *testing.T, text string) *Config {
	t.Helper()
	cfg, err := ParseConfig([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// A reload moves new requests to the new endpoints while a stream that
// started before it runs to its end on the old one.
func TestReloadKeepsInFlightStreams(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	a := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stream" {
			w.Header().Set("Content-Length", "6")
			w.Write([]byte("old"))
			w.(http.Flusher).Flush()
			started <- struct{}{}
			<-release
			w.Write([]byte("end"))
			return
		}
		io.WriteString(w, "a")
	}))
	b := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "b") }))
	sc := startFerry(t, reloadConfig(a, ""))
	url := "http://" + sc.Addr("outbound")
	res, err := h1Client().Get(url + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	recv(t, started, 5*time.Second, "stream start")

	if err := sc.Reload(context.Background(), mustParse(t, reloadConfig(b, "limits: { max_request_body_bytes: 10 }"))); err != nil {
		t.Fatal(err)
	}
	if _, body := get(t, h1Client(), url+"/", ""); body != "b" {
		t.Fatalf("after reload a new request reached %q, want b", body)
	}
	r2, err := h1Client().Post(url+"/", "text/plain", strings.NewReader(strings.Repeat("x", 11)))
	if err != nil {
		t.Fatal(err)
	}
	r2.Body.Close()
	if r2.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("new body limit not applied: %d", r2.StatusCode)
	}
	close(release)
	if body, err := io.ReadAll(res.Body); err != nil || string(body) != "oldend" {
		t.Fatalf("in-flight stream across the reload got %q, %v", body, err)
	}
}

func TestReloadRejectsBadConfigAndKeepsOld(t *testing.T) {
	a := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "a") }))
	sc := startFerry(t, reloadConfig(a, ""))
	url := "http://" + sc.Addr("outbound") + "/"

	// A listener change is refused whole, naming the key.
	changed := mustParse(t, strings.Replace(reloadConfig(a, ""), "listen: 127.0.0.1:0\n  routes", "listen: 127.0.0.1:1\n  routes", 1))
	err := sc.Reload(context.Background(), changed)
	if err == nil || !strings.Contains(err.Error(), "outbound.listen: changing it needs a restart") {
		t.Fatalf("listener change: %v", err)
	}
	// So is limits.max_connections: the listeners' bound is set at start.
	changed = mustParse(t, reloadConfig(a, "")+"limits: { max_connections: 10 }\n")
	if err := sc.Reload(context.Background(), changed); err == nil || !strings.Contains(err.Error(), "limits.max_connections: changing it needs a restart") {
		t.Fatalf("max_connections change: %v", err)
	}
	// A file that does not parse is refused by ReloadFile.
	path := filepath.Join(t.TempDir(), "ferry.yaml")
	os.WriteFile(path, []byte("outbound: { routes: [ { service: gone } ] }\n"), 0o600)
	if err := sc.ReloadFile(context.Background(), path); err == nil || !strings.Contains(err.Error(), `outbound.routes[0].service: service "gone" is not defined`) {
		t.Fatalf("bad file: %v", err)
	}
	if _, body := get(t, h1Client(), url, ""); body != "a" {
		t.Fatalf("after rejected reloads: %q", body)
	}
}

// A changed file is picked up by the watcher.
func TestWatchConfigFileReloads(t *testing.T) {
	a := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "a") }))
	b := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "b") }))
	sc := startFerry(t, reloadConfig(a, ""))
	url := "http://" + sc.Addr("outbound") + "/"
	path := filepath.Join(t.TempDir(), "ferry.yaml")
	initial := []byte(reloadConfig(a, ""))
	os.WriteFile(path, initial, 0o600)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go sc.WatchConfigFile(ctx, path, 10*time.Millisecond, initial)
	os.WriteFile(path, []byte("this: is: not yaml"), 0o600)
	os.WriteFile(path, []byte(reloadConfig(b, "")), 0o600)
	waitFor(t, "the watcher to apply the changed file", 10*time.Second, func() bool {
		_, body := get(t, h1Client(), url, "")
		return body == "b"
	})
}

func TestAdminConfigRedactsAndDrainStops(t *testing.T) {
	cfg := mustParse(t, `
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: svc } ] }
services: { svc: { endpoints: [127.0.0.1:9] } }
consul: { address: 127.0.0.1:9, token: s3cr3t-token }
shutdown: { grace: 5s }
`)
	sc, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sc.Run(context.Background()) }()
	waitFor(t, "ready", 5*time.Second, sc.Ready)
	admin := "http://" + sc.Addr("admin")
	res, body := get(t, h1Client(), admin+"/config", "")
	if res.StatusCode != 200 || strings.Contains(body, "s3cr3t") || !strings.Contains(body, "redacted") || !strings.Contains(body, "127.0.0.1:9") {
		t.Fatalf("/config: %d\n%s", res.StatusCode, body)
	}
	r, err := h1Client().Post(admin+"/drain", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusAccepted {
		t.Fatalf("/drain: %d", r.StatusCode)
	}
	if err := recv(t, done, 10*time.Second, "Run to return after /drain"); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// ferry_breaker_state reports the endpoints ferry knows: an endpoint a
// reload removed from its service, and every endpoint of a service the
// reload dropped, leave /metrics; an endpoint that stays keeps its series.
func TestBreakerStateForgetsEndpointsThatLeft(t *testing.T) {
	a, b, c := downOrigin(t), downOrigin(t), downOrigin(t)
	config := func(route, svcEndpoints, other string) string {
		return fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound:
  listen: 127.0.0.1:0
  routes: [ %s{ service: svc } ]
defaults: { breaker: { consecutive_failures: 1 }, outlier: { consecutive_5xx: 0 }, retry: { max_retries: 0 } }
services:
  svc: { endpoints: [%s] }
%s
telemetry: { access_log: "off" }
`, route, svcEndpoints, other)
	}
	sc := startFerry(t, config("{ host: other, service: other }, ", a+", "+b, "  other: { endpoints: ["+c+"] }"))
	metrics := func() string { _, body := get(t, h1Client(), "http://"+sc.Addr("admin")+"/metrics", ""); return body }
	waitFor(t, "every endpoint's breaker to open", 5*time.Second, func() bool {
		get(t, h1Client(), "http://"+sc.Addr("outbound")+"/", "svc")
		get(t, h1Client(), "http://"+sc.Addr("outbound")+"/", "other")
		m := metrics()
		return strings.Contains(m, openBreaker("svc", a)) && strings.Contains(m, openBreaker("svc", b)) && strings.Contains(m, openBreaker("other", c))
	})
	if err := sc.Reload(context.Background(), mustParse(t, config("", b, ""))); err != nil {
		t.Fatal(err)
	}
	m := grepLines(metrics(), "ferry_breaker_state{")
	if strings.Contains(m, a) || strings.Contains(m, c) || !strings.Contains(m, openBreaker("svc", b)) {
		t.Fatalf("after a reload that removed %s from svc and dropped service other (%s), want only %s's breaker series:\n%s", a, c, b, m)
	}
	// A reload that changes svc's resilience settings gives it new,
	// closed breakers: the series says so, not the old breaker's state.
	changed := strings.Replace(config("", b, ""), "consecutive_failures: 1", "consecutive_failures: 50", 1)
	if err := sc.Reload(context.Background(), mustParse(t, changed)); err != nil {
		t.Fatal(err)
	}
	closed := strings.Replace(openBreaker("svc", b), "} 2", "} 0", 1)
	if m := grepLines(metrics(), "ferry_breaker_state{"); !strings.Contains(m, closed) {
		t.Fatalf("after a reload that rebuilt svc's breakers, want %s:\n%s", closed, m)
	}
}

// The same when discovery drops an endpoint: its breaker series leaves
// /metrics, the one of the endpoint that stays does not.
func TestBreakerStateForgetsEndpointsDiscoveryDropped(t *testing.T) {
	a, b := downOrigin(t), downOrigin(t)
	svc := discovery.NewService("svc", "test")
	publish := func(addrs ...string) {
		var eps []discovery.Endpoint
		for _, addr := range addrs {
			eps = append(eps, discovery.Endpoint{Addr: addr, Weight: 1})
		}
		now := time.Now()
		svc.Publish(&discovery.Snapshot{Endpoints: eps, Ready: true, Updated: now, Checked: now})
	}
	publish(a, b)
	cfg := mustParse(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: svc } ] }
services: { svc: { endpoints: [%s], breaker: { consecutive_failures: 1 }, outlier: { consecutive_5xx: 0 }, retry: { max_retries: 0 } } }
telemetry: { access_log: "off" }
`, a))
	sc, err := New(cfg, Options{Resolver: oneService{svc}})
	if err != nil {
		t.Fatal(err)
	}
	if err := sc.Start(); err != nil {
		t.Fatal(err)
	}
	defer sc.Shutdown(context.Background())
	metrics := func() string {
		_, body := get(t, h1Client(), "http://"+sc.Addr("admin")+"/metrics", "")
		return grepLines(body, "ferry_breaker_state{")
	}
	waitFor(t, "both breakers to open", 5*time.Second, func() bool {
		get(t, h1Client(), "http://"+sc.Addr("outbound")+"/", "")
		m := metrics()
		return strings.Contains(m, openBreaker("svc", a)) && strings.Contains(m, openBreaker("svc", b))
	})
	publish(b)
	waitFor(t, "the series of the endpoint discovery dropped to leave /metrics", 5*time.Second, func() bool {
		return !strings.Contains(metrics(), a)
	})
	if m := metrics(); !strings.Contains(m, openBreaker("svc", b)) {
		t.Fatalf("the series of the endpoint that stayed is gone too:\n%s", m)
	}
}

// downOrigin starts an upstream that answers every request 503.
func downOrigin(t *testing.T) string {
	return origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", 503) }))
}

// openBreaker is the ferry_breaker_state sample of an open breaker.
func openBreaker(service, addr string) string {
	return fmt.Sprintf(`ferry_breaker_state{endpoint="%s",service="%s"} 2`, addr, service)
}

// oneService resolves every service name to one service.
type oneService struct{ svc *discovery.Service }

func (r oneService) Service(string) (*discovery.Service, error) { return r.svc, nil }

// With register set, ferry's own registration uses the Consul client built
// at start: a reload that changes consul (address, token, ...) would move
// discovery and leave the registration behind, so it needs a restart too.
func TestReloadConsulChangeWithRegisterNeedsRestart(t *testing.T) {
	conf := func(consul, register string) *Config {
		return mustParse(t, fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
inbound: { listen: 127.0.0.1:0, app: 127.0.0.1:9 }
consul: { address: %s }
%s`, consul, register))
	}
	const reg = "register: { name: web, port: 8080 }\n"
	if errs := restartOnly(conf("127.0.0.1:8500", reg), conf("127.0.0.1:8501", reg)); errs == nil || !strings.Contains(errs.Error(), "consul: changing it needs a restart") {
		t.Fatalf("consul change with register: %v", errs)
	}
	if errs := restartOnly(conf("127.0.0.1:8500", ""), conf("127.0.0.1:8501", "")); errs != nil {
		t.Fatalf("consul change without register: %v", errs)
	}
}

// A config applied on SIGHUP (ReloadFile) counts as seen by the file
// watcher: when the file then goes back to the config ferry started with,
// the watcher applies it, where it compared the file with the last content
// it had seen itself and kept the SIGHUP's config in force.
func TestWatchConfigFileAfterReloadFile(t *testing.T) {
	a := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "a") }))
	b := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "b") }))
	initial := []byte(reloadConfig(a, ""))
	sc := startFerry(t, string(initial))
	url := "http://" + sc.Addr("outbound") + "/"
	path := filepath.Join(t.TempDir(), "ferry.yaml")
	os.WriteFile(path, []byte(reloadConfig(b, "")), 0o600)
	if err := sc.ReloadFile(context.Background(), path); err != nil { // SIGHUP
		t.Fatal(err)
	}
	if _, body := get(t, h1Client(), url, ""); body != "b" {
		t.Fatalf("after ReloadFile: %q", body)
	}
	os.WriteFile(path, initial, 0o600)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go sc.WatchConfigFile(ctx, path, 10*time.Millisecond, initial)
	waitFor(t, "the watcher to apply the file as it is now", 5*time.Second, func() bool {
		_, body := get(t, h1Client(), url, "")
		return body == "a"
	})
}

// A changed file that is invalid is rejected naming the key, and is not
// tried again until the file changes: unlike a config whose services did
// not resolve (TestReloadRetriedAfterTransientRejection), no retry is
// planned, and the rejection says so.
func TestReloadInvalidConfigNotRetried(t *testing.T) {
	a := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "a") }))
	initial := []byte(reloadConfig(a, ""))
	sc := startFerry(t, string(initial))
	path := filepath.Join(t.TempDir(), "ferry.yaml")
	os.WriteFile(path, []byte("outbound: { routes: [ { service: gone } ] }\n"), 0o600)
	err := sc.ReloadFile(context.Background(), path) // SIGHUP
	if err == nil || !strings.Contains(err.Error(), `outbound.routes[0].service: service "gone" is not defined`) || !strings.Contains(err.Error(), "not tried again until the file changes") {
		t.Fatalf("invalid file: %v", err)
	}
	sc.fileMu.Lock()
	delay, gen := sc.retryDelay, sc.retryGen
	sc.fileMu.Unlock()
	if delay != 0 || gen != 1 {
		t.Fatalf("after an invalid config: retry delay %s, tries %d; want no retry planned after one try", delay, gen)
	}
}

// The admin listener may face the whole cluster (the injector puts it on
// 0.0.0.0 for kubelet's probes), so what ends the process or shows the
// config answers loopback callers only; probes and metrics answer anyone.
func TestAdminDrainAndConfigOnlyFromLoopback(t *testing.T) {
	sc, err := New(mustParse(t, `
admin: { listen: 127.0.0.1:0 }
outbound: { listen: 127.0.0.1:0, routes: [ { service: svc } ] }
services: { svc: { endpoints: [127.0.0.1:9] } }
`), Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := sc.adminHandler()
	serve := func(method, path, from string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, path, nil)
		r.RemoteAddr = from
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	for _, from := range []string{"192.0.2.7:40000", "[2001:db8::7]:40000", "10.0.0.3:1"} {
		if w := serve(http.MethodPost, "/drain", from); w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "loopback") {
			t.Errorf("POST /drain from %s: %d %q; want 403 naming loopback", from, w.Code, w.Body.String())
		}
		select {
		case <-sc.drainReq:
			t.Fatalf("POST /drain from %s asked for a drain", from)
		default:
		}
		if w := serve(http.MethodGet, "/config", from); w.Code != http.StatusForbidden {
			t.Errorf("GET /config from %s: %d; want 403", from, w.Code)
		}
		for _, p := range []string{"/live", "/metrics", "/upstreams"} {
			if w := serve(http.MethodGet, p, from); w.Code != http.StatusOK {
				t.Errorf("GET %s from %s: %d; want 200", p, from, w.Code)
			}
		}
	}
	for _, from := range []string{"127.0.0.1:40000", "127.9.8.7:1", "[::1]:40000"} {
		if w := serve(http.MethodGet, "/config", from); w.Code != http.StatusOK {
			t.Errorf("GET /config from %s: %d; want 200", from, w.Code)
		}
	}
	if w := serve(http.MethodPost, "/drain", "[::1]:40000"); w.Code != http.StatusAccepted {
		t.Fatalf("POST /drain from ::1: %d; want 202", w.Code)
	}
	select {
	case <-sc.drainReq:
	default:
		t.Fatal("POST /drain from loopback asked for no drain")
	}
}

// A service that resolves just as a reload looks at it, between reading
// its readiness and taking the channel that announces the next change, was
// missed: the reload waited for a change that had already happened, until
// its resolve timeout rejected a config whose services were all there.
func TestReloadSeesServiceResolvedWhileChecked(t *testing.T) {
	res := &heldResolver{later: make(chan *discovery.Service, 1)}
	sc := startSidecar(t, mustParse(t, `
outbound: { listen: 127.0.0.1:0, routes: [ { service: svc } ] }
services: { svc: { endpoints: [127.0.0.1:1] } }
telemetry: { access_log: "off" }
`), Options{Resolver: res})
	var once sync.Once
	testHookResolveChecked = func() {
		once.Do(func() {
			// The reload's service is handed out before this check runs.
			publishReady(<-res.later, "127.0.0.1:2")
		})
	}
	t.Cleanup(func() { testHookResolveChecked = nil })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := sc.Reload(ctx, mustParse(t, `
outbound: { listen: 127.0.0.1:0, routes: [ { service: svc } ] }
services: { svc: { endpoints: [127.0.0.1:2] } }
telemetry: { access_log: "off" }
`))
	if err != nil {
		t.Fatalf("Reload: %v; want the service resolved while it was checked to count", err)
	}
}

// max_in_flight holds across a reload that rebuilds the service's
// resilience state (its settings changed): the exchanges still running on
// the generation before count against the limit of the one in force, or
// every such reload would let as many again through.
func TestReloadKeepsMaxInFlightCount(t *testing.T) {
	up, started, release := heldOrigin(t, http.StatusOK)
	config := func(retries int) string {
		return reloadConfig(up, fmt.Sprintf("defaults: { max_in_flight: 1, retry: { max_retries: %d } }", retries))
	}
	sc := startFerry(t, config(0))
	url := "http://" + sc.Addr("outbound") + "/"
	done := getInBackground(url + "hold")
	recv(t, started, 5*time.Second, "first request at origin")
	if err := sc.Reload(context.Background(), mustParse(t, config(1))); err != nil {
		t.Fatal(err)
	}
	res, body := get(t, h1Client(), url, "")
	close(release)
	if res.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "in flight") {
		t.Fatalf("second request, with the first still in flight across the reload: %d %q, want 503 shed (max_in_flight 1)", res.StatusCode, body)
	}
	if ans := recv(t, done, 5*time.Second, "first request"); !strings.HasPrefix(ans, "200 ") {
		t.Fatalf("first request: %q", ans)
	}
}

// The line that rejects a change whose Consul services did not resolve
// says why each did not, as well as which: it named the services alone
// ("services not resolved: api"), the reason (the agent refusing
// connections) only in the watch's warning before it, so a reader of the
// rejection could not tell a wrong address from a missing service.
func TestReloadRejectionSaysWhyServicesDidNotResolve(t *testing.T) {
	restore := reloadResolveTimeout // after the test's ferry stopped (a cleanup registered before it)
	t.Cleanup(func() { reloadResolveTimeout = restore })
	reloadResolveTimeout = 2 * time.Second
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String() // nothing listens there once closed: connection refused
	ln.Close()
	a := origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "a") }))
	initial := []byte(reloadConfig(a, ""))
	logs := new(syncbuf.Buffer)
	sc := startSidecar(t, mustParse(t, string(initial)), Options{Log: slog.New(slog.NewJSONHandler(logs, nil))})
	path := filepath.Join(t.TempDir(), "ferry.yaml")
	if err := os.WriteFile(path, initial, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go sc.WatchConfigFile(ctx, path, 10*time.Millisecond, initial)
	if err := os.WriteFile(path, []byte(consulConfig(closed, `telemetry: { access_log: "off" }`)), 0o600); err != nil {
		t.Fatal(err)
	}
	var line map[string]any
	waitFor(t, "the change rejected", 15*time.Second, func() bool {
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, `"config change rejected`) {
				return json.Unmarshal([]byte(l), &line) == nil
			}
		}
		return false
	})
	msg, _ := line["error"].(string)
	if !strings.Contains(msg, "services not resolved: api (") || !strings.Contains(msg, "connection refused") {
		t.Fatalf("the rejection does not say why api did not resolve: %q\nlog:\n%s", msg, logs.String())
	}
}
