package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/ferrymesh/ferry/deploy/inject"
	"github.com/ferrymesh/ferry/deploy/webhook/webhooktest"
	"github.com/ferrymesh/ferry/internal/syncbuf"
	"github.com/ferrymesh/ferry/internal/tooltest"
)

// preStopSleepCases are values of the chart's inject.preStopSleep, the
// --pre-stop-sleep flag and the ferry.io/pre-stop-sleep annotation, with
// whether they are a pre-stop sleep ferry takes: whole seconds from 0 to
// an hour, as a number of seconds or in h, m and s written largest first.
var preStopSleepCases = []struct {
	v    string
	want bool
}{
	{"5s", true}, {"0s", true}, {"0", true}, {"5", true}, {"1m", true},
	{"1m30s", true}, {"90s", true}, {"3600s", true}, {"3600", true},
	{"60m", true}, {"1h", true}, {"1h0m0s", true}, {"59m59s", true},
	{"05s", true}, {"0m0s", true},

	{"1500ms", false}, {"1.5s", false}, {"0.5m", false}, {"-3s", false},
	{"2h", false}, {"1h1s", false}, {"61m", false}, {"3601s", false},
	{"3601", false}, {"1m60s", false}, {"5s5s", false}, {"30s1m", false},
	{"", false}, {"abc", false}, {"+5s", false}, {"5 s", false}, {"2000ms", false},
}

// TestPreStopSleepChartWebhookAndInjectorAgree: the chart's schema, the
// webhook's --pre-stop-sleep (which the chart renders the value into),
// `ferry inject --pre-stop-sleep` and the ferry.io/pre-stop-sleep
// annotation accept exactly the same values. The schema refused values the
// webhook took ("1m", "0") and took values the annotation refuses ("2h").
func TestPreStopSleepChartWebhookAndInjectorAgree(t *testing.T) {
	certs := webhooktest.Write(t, t.TempDir())
	pod := func(v string) []byte {
		return []byte(`apiVersion: v1
kind: Pod
metadata:
  name: web
  annotations:
    ferry.io/pre-stop-sleep: "` + v + `"
spec:
  terminationGracePeriodSeconds: 7200
  containers:
  - name: app
    image: app
    ports: [{containerPort: 8080}]
`)
	}
	in, err := os.ReadFile(testdata + "multidoc.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range preStopSleepCases {
		// helm, as a string (--set-string, or quoted in a values file).
		args, out, err := renderChartWebhookArgsFlag(t, "--set-string", "inject.preStopSleep="+c.v)
		switch {
		case c.want && err != nil:
			t.Errorf("chart: inject.preStopSleep=%q refused, the webhook takes it: %.400s", c.v, out)
		case !c.want && err == nil:
			code, log := startChartWebhook(t, args, certs)
			t.Errorf("chart: inject.preStopSleep=%q rendered; ferry webhook exited %d: %s", c.v, code, strings.TrimSpace(log))
		case !c.want && !strings.Contains(out, "/inject/preStopSleep"):
			t.Errorf("chart: inject.preStopSleep=%q: helm's error does not name /inject/preStopSleep:\n%.400s", c.v, out)
		case c.want:
			if code, log := startChartWebhook(t, args, certs); code != 0 {
				t.Errorf("chart: inject.preStopSleep=%q: ferry webhook exited %d: %s", c.v, code, log)
			}
		}
		// The webhook's flag itself.
		var errb syncbuf.Buffer
		code := runWebhook(context.Background(), []string{"--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key", "--pre-stop-sleep=" + c.v}, io.Discard, &errb, nil)
		// A flag the webhook takes gets as far as the missing certificate.
		if took := strings.Contains(errb.String(), "TLS key pair"); took != c.want {
			t.Errorf("ferry webhook --pre-stop-sleep=%q: exit %d %q, want taken=%v", c.v, code, strings.TrimSpace(errb.String()), c.want)
		}
		// ferry inject's flag.
		var out2, errb2 bytes.Buffer
		if code := cmdInject([]string{"--pre-stop-sleep=" + c.v}, bytes.NewReader(in), &out2, &errb2); (code == exitOK) != c.want {
			t.Errorf("ferry inject --pre-stop-sleep=%q: exit %d %q, want taken=%v", c.v, code, strings.TrimSpace(errb2.String()), c.want)
		}
		// The annotation, on a pod whose grace period takes any of them.
		var out3, errb3 bytes.Buffer
		cmdInject(nil, bytes.NewReader(pod(c.v)), &out3, &errb3)
		if injected := strings.Contains(errb3.String(), "1 injected"); injected != c.want {
			t.Errorf("ferry.io/pre-stop-sleep: %q: %q, want injected=%v", c.v, strings.TrimSpace(errb3.String()), c.want)
		}
	}
	// A number (--set, or unquoted in a values file) is a number of seconds.
	for _, c := range []struct {
		v    string
		want bool
	}{{"0", true}, {"5", true}, {"3600", true}, {"3601", false}, {"-1", false}} {
		args, out, err := renderChartWebhookArgsFlag(t, "--set", "inject.preStopSleep="+c.v)
		if (err == nil) != c.want {
			t.Errorf("chart: --set inject.preStopSleep=%s: err %v, want taken=%v: %.400s", c.v, err, c.want, out)
			continue
		}
		if err == nil {
			if code, log := startChartWebhook(t, args, certs); code != 0 {
				t.Errorf("chart: --set inject.preStopSleep=%s: ferry webhook exited %d: %s", c.v, code, log)
			}
		}
	}
}

// renderChartWebhookArgsFlag is renderChartWebhookArgs with the helm flag
// that sets the value (--set, --set-string).
func renderChartWebhookArgsFlag(t *testing.T, flag, value string) ([]string, string, error) {
	t.Helper()
	tooltest.Binary(t, "helm")
	return renderChartWebhookArgsWith(t, []string{flag, value})
}

// The chart's schema holds the injector's expression itself.
func TestPreStopSleepSchemaIsTheInjectorsPattern(t *testing.T) {
	raw, err := os.ReadFile("../../deploy/helm/ferry/values.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var schema struct {
		Properties struct {
			Inject struct {
				Properties struct {
					PreStopSleep struct {
						AnyOf []struct {
							Type    string `json:"type"`
							Pattern string `json:"pattern"`
						} `json:"anyOf"`
					} `json:"preStopSleep"`
				} `json:"properties"`
			} `json:"inject"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(raw, &schema); err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, s := range schema.Properties.Inject.Properties.PreStopSleep.AnyOf {
		if s.Type == "string" {
			patterns = append(patterns, s.Pattern)
		}
	}
	if len(patterns) != 1 || patterns[0] != inject.PreStopSleepPattern {
		t.Errorf("inject.preStopSleep's string patterns %q, want exactly inject.PreStopSleepPattern %q", patterns, inject.PreStopSleepPattern)
	}
}
