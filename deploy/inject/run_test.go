package inject

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	corev1 "k8s.io/api/core/v1"

	"github.com/ferrymesh/ferry/sidecar"
)

// TestInjectedConfigRunsTheRealSidecar injects a pod whose upstream and app
// are real local servers, resolves the container's environment as kubelet
// would, and runs ferry's sidecar on that config: /ready answers, the
// outbound route reaches the upstream and inbound reaches the app. Only the
// listen addresses are moved to free loopback ports (so parallel test runs
// cannot collide); everything else is the injected config.
func TestInjectedConfigRunsTheRealSidecar(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "upstream %s %s", r.Host, r.URL.Path)
	}))
	defer upstream.Close()
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "app %s", r.URL.Path)
	}))
	defer app.Close()
	_, appPort, _ := net.SplitHostPort(app.Listener.Addr().String())

	pod := map[string]any{
		"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{"name": "web", "annotations": map[string]any{
			AnnotationUpstreams:       "files endpoints=" + upstream.Listener.Addr().String(),
			AnnotationShutdownDelay:   "0s",
			AnnotationInboundProtocol: "http1",
		}},
		"spec": map[string]any{"containers": []any{map[string]any{
			"name": "web", "image": "web", "ports": []any{map[string]any{"containerPort": json.Number(appPort)}},
		}}},
	}
	sc := runInjected(t, pod, nil)
	client := &http.Client{Timeout: 10 * time.Second}
	get := func(addr, host, path string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
		if host != "" {
			req.Host = host
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s%s: %v", addr, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(sc.Addr("admin"), "", "/ready"); code != 200 {
		t.Errorf("/ready: %d %q", code, body)
	}
	if code, body := get(sc.Addr("outbound"), "files", "/report.pdf"); code != 200 || !strings.HasPrefix(body, "upstream files /report.pdf") {
		t.Errorf("outbound: %d %q", code, body)
	}
	if code, _ := get(sc.Addr("outbound"), "other", "/"); code != http.StatusNotFound {
		t.Errorf("outbound without a route: %d, want 404", code)
	}
	if code, body := get(sc.Addr("inbound"), "web", "/hello"); code != 200 || body != "app /hello" {
		t.Errorf("inbound: %d %q", code, body)
	}
}

// runInjected injects pod, resolves the ferry container's environment as
// kubelet would (fields overrides the downward API's sample values), and
// runs ferry's sidecar on that config, its listeners moved to free
// loopback ports. It is shut down when the test ends.
func runInjected(t *testing.T, pod map[string]any, fields map[string]string) *sidecar.Sidecar {
	t.Helper()
	in := newTestInjector(t)
	if changed, reps := in.InjectObject(pod); !changed {
		t.Fatalf("not injected: %v", reps)
	}
	raw, _ := json.Marshal(pod)
	var p corev1.Pod
	if err := json.Unmarshal(raw, &p); err != nil {
		t.Fatal(err)
	}
	checkInjectedTemplate(t, &corev1.PodTemplateSpec{ObjectMeta: p.ObjectMeta, Spec: p.Spec})
	c, _ := ferryContainer(&p.Spec)
	cfg, err := sidecar.ParseConfig([]byte(containerEnvWith(t, *c, fields)[ConfigEnv]))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Admin.Listen = "127.0.0.1:0"
	if cfg.Outbound != nil {
		cfg.Outbound.Listen = "127.0.0.1:0"
	}
	if cfg.Inbound != nil {
		cfg.Inbound.Listen = "127.0.0.1:0"
	}
	sc, err := sidecar.New(cfg, sidecar.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := sc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := sc.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return sc
}

// ferry.io/inbound-host points inbound at an app that is not on IPv4
// loopback: one on the pod's own address ($(POD_IP), IPv4 or IPv6, as
// kubelet fills it in) or on IPv6 loopback alone. Each injected config is
// run, and inbound must reach the app; the default, 127.0.0.1, must not
// reach an app on [::1] alone.
func TestInjectedInboundHost(t *testing.T) {
	ipv6 := true
	if ln, err := net.Listen("tcp", "[::1]:0"); err != nil {
		ipv6 = false
	} else {
		ln.Close()
	}
	app := func(t *testing.T, addr string) string {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "app %s", r.URL.Path) })}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		return port
	}
	for _, tc := range []struct {
		name, listen, host, podIP string
		reach, needIPv6           bool
	}{
		{"pod IP, IPv4", "127.0.0.1:0", "$(POD_IP)", "127.0.0.1", true, false},
		{"pod IP, IPv6", "[::1]:0", "$(POD_IP)", "::1", true, true},
		{"IPv6 loopback", "[::1]:0", "::1", "", true, true},
		{"default, app on IPv6 loopback alone", "[::1]:0", "", "", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.needIPv6 && !ipv6 {
				t.Skip("no IPv6 loopback")
			}
			ann := map[string]any{AnnotationShutdownDelay: "0s", AnnotationInboundProtocol: "http1"}
			if tc.host != "" {
				ann[AnnotationInboundHost] = tc.host
			}
			pod := map[string]any{
				"apiVersion": "v1", "kind": "Pod",
				"metadata": map[string]any{"name": "web", "annotations": ann},
				"spec": map[string]any{"containers": []any{map[string]any{
					"name": "web", "image": "web", "ports": []any{map[string]any{"containerPort": json.Number(app(t, tc.listen))}},
				}}},
			}
			var fields map[string]string
			if tc.podIP != "" {
				fields = map[string]string{"status.podIP": tc.podIP}
			}
			sc := runInjected(t, pod, fields)
			res, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + sc.Addr("inbound") + "/hello")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if reached := res.StatusCode == 200 && string(b) == "app /hello"; reached != tc.reach {
				t.Fatalf("inbound answered %d %q; want the app reached: %v", res.StatusCode, b, tc.reach)
			}
		})
	}
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
