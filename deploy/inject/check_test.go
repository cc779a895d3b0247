package inject

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"reflect"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/ferrymesh/ferry/sidecar"
)

// The downward-API values the checks pretend kubelet resolved.
var fakeFields = map[string]string{
	"metadata.name":      "web-7d9f-abcde",
	"metadata.namespace": "shop",
	"status.podIP":       "10.1.2.3",
	"status.hostIP":      "10.0.0.9",
}

// expandEnv does what kubelet does with $(VAR) in an env value: "$$" is
// "$", $(NAME) of a variable defined earlier is its value, anything else is
// kept.
func expandEnv(s string, vars map[string]string) string { return expandVars(s, vars) }

// containerEnv resolves a container's environment as kubelet would.
func containerEnv(t *testing.T, c corev1.Container) map[string]string {
	t.Helper()
	return containerEnvWith(t, c, nil)
}

// containerEnvWith is containerEnv with fields' values for the downward
// API's fields it names (by field path) instead of fakeFields'.
func containerEnvWith(t *testing.T, c corev1.Container, fields map[string]string) map[string]string {
	t.Helper()
	vars := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			vars[e.Name] = expandEnv(e.Value, vars)
		case e.ValueFrom.FieldRef != nil:
			v, ok := fields[e.ValueFrom.FieldRef.FieldPath]
			if !ok {
				v, ok = fakeFields[e.ValueFrom.FieldRef.FieldPath]
			}
			if !ok {
				t.Fatalf("env %s: unexpected field %s", e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
			vars[e.Name] = v
		case e.ValueFrom.SecretKeyRef != nil:
			vars[e.Name] = "secret:" + e.ValueFrom.SecretKeyRef.Name + "/" + e.ValueFrom.SecretKeyRef.Key
		default:
			t.Fatalf("env %s: unexpected source %+v", e.Name, e.ValueFrom)
		}
	}
	return vars
}

// decodeStrict decodes one YAML object into its Kubernetes type, refusing
// unknown fields, and returns its pod templates.
func decodeStrict(t *testing.T, doc []byte) []*corev1.PodTemplateSpec {
	t.Helper()
	var head struct{ APIVersion, Kind string }
	// JSON (what the webhook and InjectJSON write) is read as JSON, as the
	// API server reads it: sigs.k8s.io/yaml would first read it as YAML,
	// which refuses characters JSON strings may hold as they are (DEL,
	// C1 controls).
	isJSON := bytes.HasPrefix(bytes.TrimSpace(doc), []byte("{"))
	unmarshal := func(doc []byte, v any) error { return sigsyaml.Unmarshal(doc, v) }
	unmarshalStrict := func(doc []byte, v any) error { return sigsyaml.UnmarshalStrict(doc, v) }
	if isJSON {
		unmarshal = json.Unmarshal
		unmarshalStrict = func(doc []byte, v any) error {
			dec := json.NewDecoder(bytes.NewReader(doc))
			dec.DisallowUnknownFields()
			return dec.Decode(v)
		}
	}
	if err := unmarshal(doc, &head); err != nil {
		t.Fatalf("decode head: %v", err)
	}
	strict := func(v any) {
		t.Helper()
		if err := unmarshalStrict(doc, v); err != nil {
			t.Fatalf("%s is not a valid %s: %v\n%s", head.Kind, reflect.TypeOf(v).Elem(), err, doc)
		}
	}
	switch head.Kind {
	case "Pod":
		var p corev1.Pod
		strict(&p)
		return []*corev1.PodTemplateSpec{{ObjectMeta: p.ObjectMeta, Spec: p.Spec}}
	case "Deployment":
		var o appsv1.Deployment
		strict(&o)
		return []*corev1.PodTemplateSpec{&o.Spec.Template}
	case "StatefulSet":
		var o appsv1.StatefulSet
		strict(&o)
		return []*corev1.PodTemplateSpec{&o.Spec.Template}
	case "DaemonSet":
		var o appsv1.DaemonSet
		strict(&o)
		return []*corev1.PodTemplateSpec{&o.Spec.Template}
	case "ReplicaSet":
		var o appsv1.ReplicaSet
		strict(&o)
		return []*corev1.PodTemplateSpec{&o.Spec.Template}
	case "Job":
		var o batchv1.Job
		strict(&o)
		return []*corev1.PodTemplateSpec{&o.Spec.Template}
	case "CronJob":
		var o batchv1.CronJob
		strict(&o)
		return []*corev1.PodTemplateSpec{&o.Spec.JobTemplate.Spec.Template}
	case "List":
		var l corev1.List
		strict(&l)
		var out []*corev1.PodTemplateSpec
		for _, it := range l.Items {
			out = append(out, decodeStrict(t, it.Raw)...)
		}
		return out
	}
	return nil
}

// ferryContainer finds the injected container; native tells where.
func ferryContainer(spec *corev1.PodSpec) (c *corev1.Container, native bool) {
	for i := range spec.InitContainers {
		if spec.InitContainers[i].Name == ContainerName {
			return &spec.InitContainers[i], true
		}
	}
	for i := range spec.Containers {
		if spec.Containers[i].Name == ContainerName {
			return &spec.Containers[i], false
		}
	}
	return nil, false
}

// checkInjectedTemplate checks an injected pod template: the container is
// where it belongs, its probes, and its config parses with ferry's own
// parser once kubelet would have expanded it.
func checkInjectedTemplate(t *testing.T, tmpl *corev1.PodTemplateSpec) *sidecar.Config {
	t.Helper()
	c, native := ferryContainer(&tmpl.Spec)
	if c == nil {
		t.Fatalf("no ferry container in %+v", tmpl.Spec)
	}
	if native {
		if tmpl.Spec.InitContainers[0].Name != ContainerName {
			t.Errorf("ferry is not the first init container")
		}
		if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			t.Errorf("native sidecar without restartPolicy Always")
		}
	} else if tmpl.Spec.Containers[0].Name != ContainerName {
		t.Errorf("ferry is not the first container")
	}
	if c.StartupProbe == nil || c.StartupProbe.HTTPGet == nil || c.StartupProbe.HTTPGet.Path != "/ready" ||
		c.StartupProbe.HTTPGet.Port.IntValue() != AdminPort {
		t.Errorf("startup probe: %+v", c.StartupProbe)
	}
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet.Path != "/ready" || c.LivenessProbe == nil || c.LivenessProbe.HTTPGet.Path != "/live" {
		t.Errorf("probes: readiness %+v liveness %+v", c.ReadinessProbe, c.LivenessProbe)
	}
	if tmpl.Annotations[AnnotationInjected] != c.Image {
		t.Errorf("annotation %s = %q, want the image %q", AnnotationInjected, tmpl.Annotations[AnnotationInjected], c.Image)
	}
	if got := strings.Join(c.Args, " "); !strings.HasPrefix(got, "run --config-env "+ConfigEnv) {
		t.Errorf("args %q", got)
	}
	env := containerEnv(t, *c)
	text, ok := env[ConfigEnv]
	if !ok {
		t.Fatalf("no %s in the ferry container", ConfigEnv)
	}
	cfg, err := sidecar.ParseConfig([]byte(text))
	if err != nil {
		t.Fatalf("the injected config does not parse: %v\n%s", err, text)
	}
	if cfg.Admin.Listen != fmt.Sprintf("0.0.0.0:%d", AdminPort) {
		t.Errorf("admin.listen %s: kubelet's probes could not reach it", cfg.Admin.Listen)
	}
	if cfg.Register != nil && cfg.Register.Address != fakeFields["status.podIP"] {
		t.Errorf("register.address %q, want the pod IP", cfg.Register.Address)
	}
	if addr, ok := env["CONSUL_HTTP_ADDR"]; ok && strings.Contains(addr, "$(") {
		t.Errorf("CONSUL_HTTP_ADDR %q was not expanded", addr)
	}
	return cfg
}

// withoutInjection removes what the injector adds to a generic object: the
// ferry container, the ferry.io/injected annotation, and the maps or lists
// that only held them.
func withoutInjection(t *testing.T, obj map[string]any) {
	t.Helper()
	if isList(obj) {
		for _, it := range obj["items"].([]any) {
			withoutInjection(t, it.(map[string]any))
		}
		return
	}
	w, ok := workloads[fmt.Sprint(obj["kind"])]
	if !ok {
		return
	}
	tmpl := obj
	for _, k := range w.template {
		tmpl = tmpl[k].(map[string]any)
	}
	if meta, ok := tmpl["metadata"].(map[string]any); ok {
		if ann, ok := meta["annotations"].(map[string]any); ok {
			delete(ann, AnnotationInjected)
			if len(ann) == 0 {
				delete(meta, "annotations")
			}
		}
		if len(meta) == 0 {
			delete(tmpl, "metadata")
		}
	}
	spec := tmpl["spec"].(map[string]any)
	for _, list := range []string{"initContainers", "containers"} {
		cs, _ := spec[list].([]any)
		var kept []any
		for _, c := range cs {
			if c.(map[string]any)["name"] != ContainerName {
				kept = append(kept, c)
			}
		}
		if len(kept) != len(cs) {
			if len(kept) == 0 {
				delete(spec, list)
			} else {
				spec[list] = kept
			}
		}
	}
}

// yamlObject decodes one YAML or JSON document into generic JSON.
func yamlObject(t *testing.T, doc []byte) map[string]any {
	t.Helper()
	j, err := sigsyaml.YAMLToJSON(doc)
	if err != nil {
		t.Fatalf("YAML to JSON: %v", err)
	}
	if bytes.Equal(bytes.TrimSpace(j), []byte("null")) {
		return nil
	}
	var m map[string]any
	if err := json.Unmarshal(j, &m); err != nil {
		t.Fatalf("decode: %v", err)
	}
	return m
}

// An endpoint in the upstreams annotation is injected only when ferry
// accepts it: one ferry refuses at load (a port with a sign or a leading
// zero, a host no dial can reach) made ferry exit at every start, and the
// pod never got ready. The refusal names the annotation.
func TestUpstreamEndpointAcceptedOnlyWhenFerryAcceptsIt(t *testing.T) {
	inj := newTestInjector(t)
	for _, ep := range []string{
		"10.0.0.1:8080", "files.shop.svc:80", "[::1]:80", "[fe80::1%eth0]:80", "files_1:65535",
		"10.0.0.1:080", "10.0.0.1:+80", "10.0.0.1:0", "10.0.0.1:65536", "files:", ":80",
		"user@files:80", "files?x:80", "files#x:80", "caf\u00e9:80", "[files]:80",
		"files:80:90", "files",
	} {
		_, ferryErr := sidecar.ParseConfig([]byte("outbound: {}\nservices: { files: { endpoints: [" + strconv.Quote(ep) + "] } }\n"))
		rep, c := injectPod(t, inj, map[string]string{AnnotationUpstreams: "files endpoints=" + ep})
		switch {
		case ferryErr == nil && c == nil:
			t.Errorf("%q: ferry accepts it, the injector refused: %s", ep, rep.Reason)
		case ferryErr != nil && c != nil:
			t.Errorf("%q: injected, but ferry would exit at start: %v", ep, ferryErr)
		case c == nil && !strings.Contains(rep.Reason, AnnotationUpstreams):
			t.Errorf("%q: the refusal does not name %s: %s", ep, AnnotationUpstreams, rep.Reason)
		}
	}
}

// ferry.io/inbound-host is injected only when ferry accepts the inbound.app
// it makes (else ferry would exit at every start); $(POD_IP) is accepted
// as kubelet fills it in, IPv4 or IPv6. The refusal names the annotation.
func TestInboundHostAcceptedOnlyWhenFerryAcceptsIt(t *testing.T) {
	inj := newTestInjector(t)
	for _, host := range []string{
		"::1", "10.0.0.7", "fe80::1%eth0", "app.shop.svc", "localhost", "$(POD_IP)",
		"", "user@app", "a b", "caf\u00e9", "[::1]", "$(HOST_IP)", "app:80", "$(POD_IP):80",
		"fe80::1%a]", "fe80::1%$(POD_NAME)", "fe80::1%[x",
	} {
		rep, c := injectPod(t, inj, map[string]string{AnnotationInboundHost: host})
		if c == nil {
			if !strings.Contains(rep.Reason, AnnotationInboundHost) {
				t.Errorf("%q: the refusal does not name %s: %s", host, AnnotationInboundHost, rep.Reason)
			}
			if ferryAcceptsApp(t, net.JoinHostPort(host, "8080")) && host != "$(POD_IP)" {
				t.Errorf("%q: ferry accepts it, the injector refused: %s", host, rep.Reason)
			}
			if host == "$(POD_IP)" {
				t.Errorf("%q refused: %s", host, rep.Reason)
			}
			continue
		}
		for _, podIP := range []string{"10.1.2.3", "fd00::1:2:3"} {
			env := containerEnvWith(t, *c, map[string]string{"status.podIP": podIP})
			if _, err := sidecar.ParseConfig([]byte(env[ConfigEnv])); err != nil {
				t.Errorf("%q (pod IP %s): injected, but ferry would exit at start: %v", host, podIP, err)
			}
		}
	}
}

// ferryAcceptsApp reports whether ferry's config loader takes app as
// inbound.app.
func ferryAcceptsApp(t *testing.T, app string) bool {
	t.Helper()
	_, err := sidecar.ParseConfig([]byte("inbound: { listen: 127.0.0.1:0, app: " + strconv.Quote(app) + " }\n"))
	return err == nil
}
