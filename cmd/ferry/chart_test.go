package main

import (
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/ferrymesh/ferry/deploy/webhook/webhooktest"
	"github.com/ferrymesh/ferry/internal/syncbuf"
	"github.com/ferrymesh/ferry/internal/tooltest"
)

// chartWebhookArgs renders the Helm chart with helm and returns the
// webhook container's args as kubelet passes them ("$$" is "$").
func chartWebhookArgs(t *testing.T, set string) []string {
	t.Helper()
	args, out, err := renderChartWebhookArgs(t, set)
	if err != nil {
		t.Fatalf("helm template --set %s: %v\n%s", set, err, out)
	}
	return args
}

// renderChartWebhookArgs is chartWebhookArgs that returns helm's failure,
// with its output, instead of failing the test.
func renderChartWebhookArgs(t *testing.T, set string) ([]string, string, error) {
	t.Helper()
	var extra []string
	if set != "" {
		extra = []string{"--set", set}
	}
	return renderChartWebhookArgsWith(t, extra)
}

// renderChartWebhookArgsWith is renderChartWebhookArgs with helm's own
// arguments for the values (--set, --set-string...).
func renderChartWebhookArgsWith(t *testing.T, extra []string) ([]string, string, error) {
	t.Helper()
	helm := tooltest.Binary(t, "helm")
	// helm reads the chart in a child process, which go test's cache does
	// not see: read it here so that a changed template reruns the test.
	filepath.WalkDir("../../deploy/helm/ferry", func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			_, err = os.ReadFile(p)
		}
		return err
	})
	// The chart refuses helm's built-in default version (v1.20.0 for
	// scripts/tool.sh's build): render for the oldest its defaults are for.
	args := []string{"template", "rel", "../../deploy/helm/ferry", "--namespace", "mesh", "--show-only", "templates/deployment.yaml", "--kube-version", "1.30.0"}
	args = append(args, extra...)
	cmd := exec.Command(helm, args...)
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CONFIG_HOME="+home, "HELM_CACHE_HOME="+home, "HELM_DATA_HOME="+home, "KUBECONFIG="+filepath.Join(home, "none"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, string(out) + stderr.String(), err
	}
	var dep appsv1.Deployment
	if err := sigsyaml.UnmarshalStrict(out, &dep); err != nil {
		t.Fatalf("rendered Deployment: %v\n%s", err, out)
	}
	var got []string
	for _, a := range dep.Spec.Template.Spec.Containers[0].Args {
		got = append(got, strings.ReplaceAll(a, "$$", "$")) // the container defines no variable
	}
	return got, string(out), nil
}

// TestChartArgsRunTheWebhook: every flag the chart writes for the webhook
// exists and validates in `ferry webhook` (only the certificate paths and
// the listen address are the test's): the binary starts serving with them,
// for the default values and for the values that add flags.
func TestChartArgsRunTheWebhook(t *testing.T) {
	certs := webhooktest.Write(t, t.TempDir())
	for _, set := range []string{
		"",
		"inject.nativeSidecar=false,inject.imagePullPolicy=Always,inject.otelEndpoint=http://$(HOST_IP):4318,webhook.logLevel=debug,inject.image=registry.example/ferry:1.2.3,inject.consulAddr=https://$(HOST_IP):8501",
	} {
		args := chartWebhookArgs(t, set)
		if len(args) == 0 || args[0] != "webhook" {
			t.Fatalf("--set %s: args %q", set, args)
		}
		args = args[1:]
		for i, a := range args {
			switch {
			case strings.HasPrefix(a, "--tls-cert="):
				args[i] = "--tls-cert=" + certs.CertFile
			case strings.HasPrefix(a, "--tls-key="):
				args[i] = "--tls-key=" + certs.KeyFile
			case strings.HasPrefix(a, "--listen="):
				args[i] = "--listen=127.0.0.1:0"
			}
		}
		args = append(args, "--shutdown-delay=0") // the chart's own delay would only slow the test
		ctx, cancel := context.WithCancel(context.Background())
		var logs syncbuf.Buffer
		listening := make(chan net.Addr, 1)
		done := make(chan int, 1)
		go func() { done <- runWebhook(ctx, args, io.Discard, &logs, func(a net.Addr) { listening <- a }) }()
		select {
		case <-listening:
		case code := <-done:
			t.Errorf("--set %s: ferry webhook %q exited %d before serving: %s", set, args, code, logs.String())
			cancel()
			continue
		case <-time.After(10 * time.Second):
			t.Fatalf("--set %s: ferry webhook did not start", set)
		}
		cancel()
		if code := <-done; code != exitOK {
			t.Errorf("--set %s: ferry webhook exited %d: %s", set, code, logs.String())
		}
	}
}

// startChartWebhook runs `ferry webhook` with the args the chart renders
// (the certificate paths and the listen address are the test's) until it
// serves, then stops it. It returns the exit code and the log of a webhook
// that exited before serving, and 0 and "" for one that served.
func startChartWebhook(t *testing.T, args []string, certs webhooktest.Certs) (int, string) {
	t.Helper()
	if len(args) == 0 || args[0] != "webhook" {
		t.Fatalf("args %q", args)
	}
	args = append([]string(nil), args[1:]...)
	for i, a := range args {
		switch {
		case strings.HasPrefix(a, "--tls-cert="):
			args[i] = "--tls-cert=" + certs.CertFile
		case strings.HasPrefix(a, "--tls-key="):
			args[i] = "--tls-key=" + certs.KeyFile
		case strings.HasPrefix(a, "--listen="):
			args[i] = "--listen=127.0.0.1:0"
		}
	}
	args = append(args, "--shutdown-delay=0")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs syncbuf.Buffer
	listening := make(chan net.Addr, 1)
	done := make(chan int, 1)
	go func() { done <- runWebhook(ctx, args, io.Discard, &logs, func(a net.Addr) { listening <- a }) }()
	select {
	case <-listening:
	case code := <-done:
		return code, logs.String()
	case <-time.After(10 * time.Second):
		t.Fatalf("ferry webhook %q did not start", args)
	}
	cancel()
	if code := <-done; code != exitOK {
		t.Errorf("ferry webhook %q exited %d: %s", args, code, logs.String())
	}
	return 0, ""
}

// The schema let through values of inject.* and image.* that `ferry
// webhook` refuses when it starts: helm install succeeded, and the webhook
// pods then exited 2 at every restart (a Consul address with a grpc://
// scheme, an OTel endpoint without a host or with port 99999, an image
// reference with a space...), so under failurePolicy Ignore every pod
// started without ferry, and the cause was only in the webhook's log.
// helm must refuse each naming the key, and take the forms the webhook
// takes.
func TestChartRefusesValuesTheWebhookRefuses(t *testing.T) {
	certs := webhooktest.Write(t, t.TempDir())
	for _, tc := range []struct{ set, key string }{
		{"inject.consulAddr=grpc://consul:8502", "/inject/consulAddr"},
		{"inject.consulAddr=consul 8500", "/inject/consulAddr"},
		{"inject.otelEndpoint=http://", "/inject/otelEndpoint"},
		{"inject.otelEndpoint=http://collector:99999", "/inject/otelEndpoint"},
		{"inject.otelEndpoint=http://collector:0", "/inject/otelEndpoint"},
		{"inject.otelEndpoint=https://otel collector", "/inject/otelEndpoint"},
		{"inject.image=registry.example/ferry:1.2 beta", "/inject/image"},
		{"inject.image=registry.example/$(TEAM)/ferry:1", "/inject/image"},
		{"image.repository=ferry mesh", "/image/repository"},
		{"image.tag=1.2 beta", "/image/tag"},
	} {
		args, out, err := renderChartWebhookArgs(t, tc.set)
		if err == nil {
			code, log := startChartWebhook(t, args, certs)
			t.Errorf("--set %s: helm rendered it, and ferry webhook exited %d: %s", tc.set, code, strings.TrimSpace(log))
			continue
		}
		if !strings.Contains(out, tc.key) {
			t.Errorf("--set %s: helm's error does not name %s:\n%.600s", tc.set, tc.key, out)
		}
	}
	for _, set := range []string{
		"inject.consulAddr=unix:///var/run/consul/consul.sock",
		"inject.consulAddr=consul.service.consul:8500",
		"inject.consulAddr=http://[fd00::2]:8500",
		"inject.otelEndpoint=https://otel.example.com",
		"inject.otelEndpoint=http://[fd00::1]:4318/",
		"inject.otelEndpoint=http://collector:04318/v1?x=1",
		"image.tag=1.2.3-rc.1",
		"inject.image=registry.example:5000/ferry@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
	} {
		args, out, err := renderChartWebhookArgs(t, set)
		if err != nil {
			t.Errorf("--set %s: %v\n%.600s", set, err, out)
			continue
		}
		if code, log := startChartWebhook(t, args, certs); code != 0 {
			t.Errorf("--set %s: ferry webhook exited %d: %s", set, code, log)
		}
	}
}
