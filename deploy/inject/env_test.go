package inject

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/ferrymesh/ferry/discovery"
	"github.com/ferrymesh/ferry/telemetry"
)

// injectPod injects a one-container pod (app port 8080) with the given
// annotations and returns the report and, when injected, ferry's container.
func injectPod(t *testing.T, inj *Injector, ann map[string]string) (Report, *corev1.Container) {
	t.Helper()
	return injectJSONPod(t, inj, appPod(ann))
}

// injectJSONPod is injectPod for a pod of the caller's making.
func injectJSONPod(t *testing.T, inj *Injector, pod map[string]any) (Report, *corev1.Container) {
	t.Helper()
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	out, reps, err := inj.InjectJSON(raw)
	if err != nil {
		t.Fatal(err)
	}
	if len(reps) != 1 {
		t.Fatalf("reports %+v", reps)
	}
	if reps[0].Outcome != Injected {
		return reps[0], nil
	}
	tmpl := decodeStrict(t, out)[0]
	checkInjectedTemplate(t, tmpl)
	c, _ := ferryContainer(&tmpl.Spec)
	return reps[0], c
}

// telemetryFromEnv builds ferry's telemetry from the environment kubelet
// gives the injected container, as `ferry run` does at start.
func telemetryFromEnv(env map[string]string) error {
	tel, err := telemetry.New(context.Background(), telemetry.Config{}, telemetry.WithEnv(func(k string) string { return env[k] }))
	if err != nil {
		return err
	}
	return tel.Shutdown(context.Background())
}

// The OTel endpoint may name $(HOST_IP), a collector on the node (the
// documented way, and what the chart's inject.otelEndpoint suggests).
// kubelet expands it only when HOST_IP is defined before it, and the
// injector defined HOST_IP only for pods that use Consul: a pod with static
// upstreams, or only an inbound port, got the literal "$(HOST_IP)" as its
// collector's host and exported nothing.
func TestOTelEndpointHostIPExpandedWithoutConsul(t *testing.T) {
	for _, tc := range []struct {
		name string
		ann  map[string]string
		opts Options
	}{
		{"annotation, inbound only", map[string]string{AnnotationOTelEndpoint: "http://$(HOST_IP):4317"}, Options{}},
		{"annotation, static upstream", map[string]string{
			AnnotationOTelEndpoint: "http://$(HOST_IP):4317", AnnotationUpstreams: "files endpoints=files.shop.svc:8080",
		}, Options{}},
		{"option, inbound only", nil, Options{OTelEndpoint: "http://$(HOST_IP):4317"}},
		{"annotation, Consul", map[string]string{
			AnnotationOTelEndpoint: "http://$(HOST_IP):4317", AnnotationUpstreams: "files",
		}, Options{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Image = "ferrymesh/ferry:test"
			inj, err := New(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			rep, c := injectPod(t, inj, tc.ann)
			if c == nil {
				t.Fatalf("not injected: %s", rep.Reason)
			}
			env := containerEnv(t, *c)
			want := "http://" + fakeFields["status.hostIP"] + ":4317"
			if got := env["OTEL_EXPORTER_OTLP_ENDPOINT"]; got != want {
				t.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT as kubelet expands it: %q, want %q", got, want)
			}
			if err := telemetryFromEnv(env); err != nil {
				t.Errorf("ferry's telemetry refuses the environment: %v", err)
			}
		})
	}
}

// The OTel endpoint was checked only for an http:// or https:// prefix, so
// values ferry refuses at start (a port that is not a number or above
// 65535, a bad percent escape, an unclosed IPv6 bracket) were injected:
// ferry exited 2 on every start, and as a native sidecar it held the app
// back forever. The injector must accept exactly what ferry accepts once
// kubelet expanded the value, and refuse the rest naming the annotation
// (the option: New fails).
func TestOTelEndpointAcceptedOnlyWhenFerryAcceptsIt(t *testing.T) {
	vars := map[string]string{
		"POD_NAME": fakeFields["metadata.name"], "POD_NAMESPACE": fakeFields["metadata.namespace"],
		"POD_IP": fakeFields["status.podIP"], "HOST_IP": fakeFields["status.hostIP"],
	}
	inj := newTestInjector(t)
	for _, v := range []string{
		"http://otel-collector:4317",
		"https://otel.example.com",
		"http://$(HOST_IP):4318/prefix",
		"http://[::1]:4317",
		"http://otel-collector.$(POD_NAMESPACE).svc:4317",
		"http://collector:bad",
		"http://collector:99999",
		"http://collector:0",
		"http://collector:4317/%zz",
		"https://[::1",
		"http://$(HOST_IP):port",
		"http://:4317",
		"http://",
		"collector:4317",
	} {
		ferryErr := telemetryFromEnv(map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": expandEnv(v, vars)})
		rep, c := injectPod(t, inj, map[string]string{AnnotationOTelEndpoint: v})
		switch {
		case ferryErr == nil && c == nil:
			t.Errorf("%q: ferry accepts it, the injector refused: %s", v, rep.Reason)
		case ferryErr != nil && c != nil:
			t.Errorf("%q: injected, but ferry would exit at start: %v", v, ferryErr)
		case c == nil && !strings.Contains(rep.Reason, AnnotationOTelEndpoint):
			t.Errorf("%q: the refusal does not name %s: %s", v, AnnotationOTelEndpoint, rep.Reason)
		case c != nil:
			if err := telemetryFromEnv(containerEnv(t, *c)); err != nil {
				t.Errorf("%q: ferry refuses the injected environment: %v", v, err)
			}
		}
		_, err := New(Options{OTelEndpoint: v})
		if (err == nil) != (ferryErr == nil) {
			t.Errorf("%q as Options.OTelEndpoint: New says %v, ferry says %v", v, err, ferryErr)
		}
	}
}

// consulFromEnv builds ferry's Consul client from CONSUL_HTTP_ADDR as
// `ferry run` does at start (it does not contact the agent).
func consulFromEnv(t *testing.T, addr string) error {
	t.Setenv("CONSUL_HTTP_ADDR", addr)
	c, err := discovery.NewConsul(context.Background(), discovery.ConsulConfig{}, discovery.ConsulOptions{})
	if err != nil {
		return err
	}
	return c.Close()
}

// The Consul address (ferry.io/consul-addr, --consul-addr, the chart's
// inject.consulAddr) was checked only for white space. ferry's Consul
// client takes host:port, or http://, https:// or unix:// in front, and
// exits at start on another scheme ("consul://...", "HTTP://...",
// "tcp://..."): every start of such a pod failed. The injector must
// accept exactly what ferry accepts once kubelet expanded the value, and
// refuse the rest naming the annotation (the option: New fails).
func TestConsulAddrAcceptedOnlyWhenFerryAcceptsIt(t *testing.T) {
	vars := map[string]string{
		"POD_NAME": fakeFields["metadata.name"], "POD_NAMESPACE": fakeFields["metadata.namespace"],
		"POD_IP": fakeFields["status.podIP"], "HOST_IP": fakeFields["status.hostIP"],
	}
	inj := newTestInjector(t)
	for _, v := range []string{
		"$(HOST_IP):8500",
		"consul.consul.svc:8500",
		"http://$(HOST_IP):8500",
		"https://consul.example.com:8501/prefix",
		"unix:///var/run/consul/consul.sock",
		"consul://consul:8500",
		"HTTP://consul:8500",
		"tcp://consul:8500",
		"://consul:8500",
	} {
		ferryErr := consulFromEnv(t, expandEnv(v, vars))
		// A service resolved through Consul: the pod uses CONSUL_HTTP_ADDR.
		rep, c := injectPod(t, inj, map[string]string{AnnotationConsulAddr: v, AnnotationUpstreams: "files"})
		switch {
		case ferryErr == nil && c == nil:
			t.Errorf("%q: ferry accepts it, the injector refused: %s", v, rep.Reason)
		case ferryErr != nil && c != nil:
			t.Errorf("%q: injected, but ferry would exit at start: %v", v, ferryErr)
		case c == nil && !strings.Contains(rep.Reason, AnnotationConsulAddr):
			t.Errorf("%q: the refusal does not name %s: %s", v, AnnotationConsulAddr, rep.Reason)
		case c != nil:
			if err := consulFromEnv(t, containerEnv(t, *c)["CONSUL_HTTP_ADDR"]); err != nil {
				t.Errorf("%q: ferry refuses the injected CONSUL_HTTP_ADDR: %v", v, err)
			}
		}
		_, err := New(Options{ConsulAddr: v})
		if (err == nil) != (ferryErr == nil) {
			t.Errorf("%q as Options.ConsulAddr: New says %v, ferry says %v", v, err, ferryErr)
		}
	}
}

// appPod is a one-container pod (app port 8080) with the given annotations.
func appPod(ann map[string]string) map[string]any {
	return map[string]any{
		"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{"name": "web", "annotations": ann},
		"spec": map[string]any{"containers": []any{map[string]any{
			"name": "app", "image": "app", "ports": []any{map[string]any{"containerPort": 8080}},
		}}},
	}
}
