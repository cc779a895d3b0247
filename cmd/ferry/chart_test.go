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
	helm := tooltest.Binary(t, "helm")
	// helm reads the chart in a child process, which go test's cache does
	// not see: read it here so that a changed template reruns the test.
	filepath.WalkDir("../../deploy/helm/ferry", func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			_, err = os.ReadFile(p)
		}
		return err
	})
	args := []string{"template", "rel", "../../deploy/helm/ferry", "--namespace", "mesh", "--show-only", "templates/deployment.yaml"}
	if set != "" {
		args = append(args, "--set", set)
	}
	cmd := exec.Command(helm, args...)
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CONFIG_HOME="+home, "HELM_CACHE_HOME="+home, "HELM_DATA_HOME="+home, "KUBECONFIG="+filepath.Join(home, "none"))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm template --set %s: %v", set, err)
	}
	var dep appsv1.Deployment
	if err := sigsyaml.UnmarshalStrict(out, &dep); err != nil {
		t.Fatalf("rendered Deployment: %v\n%s", err, out)
	}
	var got []string
	for _, a := range dep.Spec.Template.Spec.Containers[0].Args {
		got = append(got, strings.ReplaceAll(a, "$$", "$")) // the container defines no variable
	}
	return got
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
