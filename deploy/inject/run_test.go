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
	cfg, err := sidecar.ParseConfig([]byte(containerEnv(t, *c)[ConfigEnv]))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Admin.Listen, cfg.Outbound.Listen, cfg.Inbound.Listen = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	sc, err := sidecar.New(cfg, sidecar.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := sc.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := sc.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	}()
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

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
