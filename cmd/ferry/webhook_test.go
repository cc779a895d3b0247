package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"

	"github.com/ferrymesh/ferry/deploy/webhook/webhooktest"

	"github.com/ferrymesh/ferry/internal/syncbuf"
)

// TestWebhookPatchEqualsCLIInjection runs `ferry webhook` over TLS, sends a
// real AdmissionReview, applies the JSONPatch with an independent
// implementation, and compares with what `ferry inject` prints for the same
// pod.
func TestWebhookPatchEqualsCLIInjection(t *testing.T) {
	certs := webhooktest.Write(t, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	var logs syncbuf.Buffer
	addr, done := startWebhook(t, ctx, &logs, "--tls-cert", certs.CertFile, "--tls-key", certs.KeyFile,
		"--listen", "127.0.0.1:0", "--image", "ferrymesh/ferry:test", "--shutdown-delay", "0")
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: certs.Pool}}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}

	review, err := os.ReadFile("../../deploy/webhook/testdata/review-pod.json")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Post("https://"+addr.String()+"/inject", "application/json", bytes.NewReader(review))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var rev admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &rev); err != nil || rev.Response == nil || !rev.Response.Allowed {
		t.Fatalf("response %d %s: %v", resp.StatusCode, body, err)
	}
	var in admissionv1.AdmissionReview
	json.Unmarshal(review, &in)
	pod := in.Request.Object.Raw
	patch, err := jsonpatch.DecodePatch(rev.Response.Patch)
	if err != nil {
		t.Fatal(err)
	}
	patched, err := patch.Apply(pod)
	if err != nil {
		t.Fatal(err)
	}

	var cliOut, cliErr bytes.Buffer
	if code := cmdInject([]string{"--image", "ferrymesh/ferry:test"}, bytes.NewReader(pod), &cliOut, &cliErr); code != exitOK {
		t.Fatalf("ferry inject exit %d: %s", code, cliErr.String())
	}
	var got, want any
	if err := json.Unmarshal(patched, &got); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(cliOut.Bytes(), &want); err != nil {
		t.Fatalf("ferry inject output (JSON in, JSON out): %v\n%s", err, cliOut.String())
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("webhook and CLI disagree:\nwebhook %v\ncli     %v", got, want)
	}

	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Errorf("webhook exit %d: %s", code, logs.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("webhook did not stop")
	}
	if !strings.Contains(logs.String(), `"msg":"injected"`) {
		t.Errorf("logs %s", logs.String())
	}
}

func TestWebhookUsageErrors(t *testing.T) {
	certs := webhooktest.Write(t, t.TempDir())
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{}, exitConfig, "--tls-cert and --tls-key are required"},
		{[]string{"--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"}, exitConfig, "TLS key pair"},
		{[]string{"--tls-cert", certs.KeyFile, "--tls-key", certs.KeyFile}, exitConfig, "TLS key pair"},
		{[]string{"--tls-cert", certs.CertFile, "--tls-key", certs.KeyFile, "--listen", "256.0.0.1:1"}, exitFail, "256.0.0.1"},
		{[]string{"--tls-cert", certs.CertFile, "--tls-key", certs.KeyFile, "--log-level", "loud"}, exitConfig, "--log-level"},
		{[]string{"--tls-cert", certs.CertFile, "--tls-key", certs.KeyFile, "--otel-endpoint", "x"}, exitConfig, "--otel-endpoint"},
		{[]string{"--tls-cert", certs.CertFile, "--tls-key", certs.KeyFile, "--shutdown-delay", "-1s"}, exitConfig, "--shutdown-delay"},
	} {
		var errb syncbuf.Buffer
		if code := runWebhook(context.Background(), tc.args, io.Discard, &errb, nil); code != tc.code || !strings.Contains(errb.String(), tc.msg) {
			t.Errorf("%v: exit %d %q, want %d with %q", tc.args, code, errb.String(), tc.code, tc.msg)
		}
	}
}

// TestWebhookServesThroughShutdownDelay: after SIGTERM the webhook keeps
// answering reviews for --shutdown-delay, while the API server still sends
// them to this pod; a webhook that stopped at once would fail them, and
// under failurePolicy Ignore those pods would start without ferry.
func TestWebhookServesThroughShutdownDelay(t *testing.T) {
	certs := webhooktest.Write(t, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	var logs syncbuf.Buffer
	addr, done := startWebhook(t, ctx, &logs, "--tls-cert", certs.CertFile, "--tls-key", certs.KeyFile,
		"--listen", "127.0.0.1:0", "--shutdown-delay", "4s")
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: certs.Pool}, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	review, err := os.ReadFile("../../deploy/webhook/testdata/review-pod.json")
	if err != nil {
		t.Fatal(err)
	}
	cancel() // as SIGTERM
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "ferry webhook stopping") {
		if time.Now().After(deadline) {
			t.Fatalf("no stopping line: %s", logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	resp, err := client.Post("https://"+addr.String()+"/inject", "application/json", bytes.NewReader(review))
	if err != nil {
		t.Fatalf("a review sent after SIGTERM, within the shutdown delay: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("a review sent after SIGTERM: status %d", resp.StatusCode)
	}
	select {
	case code := <-done:
		if code != exitOK {
			t.Errorf("webhook exit %d: %s", code, logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("webhook did not stop after its shutdown delay")
	}
	if c, err := net.DialTimeout("tcp", addr.String(), time.Second); err == nil {
		c.Close()
		t.Error("the webhook still accepts connections after it stopped")
	}
}

// startWebhook runs `ferry webhook` with args until ctx ends and returns
// the address it serves on and the channel its exit code comes on.
func startWebhook(t *testing.T, ctx context.Context, logs *syncbuf.Buffer, args ...string) (net.Addr, <-chan int) {
	t.Helper()
	addrc := make(chan net.Addr, 1)
	done := make(chan int, 1)
	go func() { done <- runWebhook(ctx, args, io.Discard, logs, func(a net.Addr) { addrc <- a }) }()
	select {
	case addr := <-addrc:
		return addr, done
	case code := <-done:
		t.Fatalf("webhook exited %d: %s", code, logs.String())
	case <-time.After(10 * time.Second):
		t.Fatal("webhook did not start")
	}
	return nil, nil
}
