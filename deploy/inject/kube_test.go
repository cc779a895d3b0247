package inject

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	sigsyaml "sigs.k8s.io/yaml"
)

// TestContainerEncodesAsKubernetes: the container ferry builds with its own
// types is encoded byte for byte as k8s.io/api's corev1.Container encodes
// the same container, for every pod of the golden inputs and for option
// variants (pull policy, resources, no pre-stop sleep, regular container).
func TestContainerEncodesAsKubernetes(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*.in.yaml")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	variants := []Options{
		testOptions,
		{Image: "x:1", ImagePullPolicy: PullIfNotPresent, PreStopSleep: -1, DisableNativeSidecar: true, OTelEndpoint: "http://otel:4318",
			Resources: &Resources{Requests: map[string]string{"cpu": "0.25", "memory": "1.5Gi", "ephemeral-storage": "1e9"}, Limits: map[string]string{"memory": "2048Mi"}}},
		{Image: "x:2", Resources: &Resources{}},
	}
	checked := 0
	for _, opts := range variants {
		inj, err := New(opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, path := range inputs {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range splitDocuments(data) {
				obj := yamlObject(t, d.body)
				if obj == nil {
					continue
				}
				objs := []map[string]any{obj}
				if isList(obj) {
					objs = nil
					for _, it := range obj["items"].([]any) {
						if m, ok := it.(map[string]any); ok {
							objs = append(objs, m)
						}
					}
				}
				for _, o := range objs {
					mut, _ := inj.decide(o)
					if mut == nil {
						continue
					}
					ours, err := json.Marshal(mut.container)
					if err != nil {
						t.Fatal(err)
					}
					var c corev1.Container
					dec := json.NewDecoder(bytes.NewReader(ours))
					dec.DisallowUnknownFields()
					if err := dec.Decode(&c); err != nil {
						t.Fatalf("%s: not a corev1.Container: %v\n%s", path, err, ours)
					}
					theirs, err := json.Marshal(c)
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(ours, theirs) {
						t.Errorf("%s: ferry encodes\n%s\ncorev1 encodes\n%s", path, ours, theirs)
					}
					checked++
				}
			}
		}
	}
	if checked < 20 {
		t.Errorf("only %d containers checked", checked)
	}
}

// unknownFieldsPod has fields no Kubernetes version defines, at every level
// the injector walks through or edits.
const unknownFieldsPod = `apiVersion: v1
kind: Pod
futureTopLevel: {a: 1}
metadata:
  name: web
  futureMeta: x
  annotations:
    ferry.io/upstreams: files
spec:
  futureSpecField: [1, 2]
  initContainers:
  - name: setup
    image: setup:1
    futureContainerField: true
  containers:
  - name: app
    image: app:1
    futureContainerField: {nested: [x]}
    ports:
    - containerPort: 8080
      futurePortField: 7
status:
  futureStatus: y
`

// TestUnknownFieldsSurvive: fields ferry does not know (newer Kubernetes
// fields, CRD-style extensions) come out of InjectYAML and InjectJSON as
// they went in, beside the injected container.
func TestUnknownFieldsSurvive(t *testing.T) {
	inj := newTestInjector(t)
	out, reps, err := inj.InjectYAML([]byte(unknownFieldsPod))
	if err != nil || len(reps) != 1 || reps[0].Outcome != Injected {
		t.Fatalf("InjectYAML: %v %v", reps, err)
	}
	got, want := yamlObject(t, out), yamlObject(t, []byte(unknownFieldsPod))
	withoutInjection(t, got)
	if g, w := mustJSON(t, got), mustJSON(t, want); g != w {
		t.Errorf("YAML: removing ferry does not give back the input:\n got %s\nwant %s", g, w)
	}
	for _, f := range []string{"futureTopLevel", "futureMeta", "futureSpecField", "futureContainerField: true", "nested:", "futurePortField: 7", "futureStatus"} {
		if !strings.Contains(string(out), f) {
			t.Errorf("YAML output lost %q:\n%s", f, out)
		}
	}

	in, err := sigsyaml.YAMLToJSON([]byte(unknownFieldsPod))
	if err != nil {
		t.Fatal(err)
	}
	jout, reps, err := inj.InjectJSON(in)
	if err != nil || len(reps) != 1 || reps[0].Outcome != Injected {
		t.Fatalf("InjectJSON: %v %v", reps, err)
	}
	var gotJ map[string]any
	if err := json.Unmarshal(jout, &gotJ); err != nil {
		t.Fatal(err)
	}
	withoutInjection(t, gotJ)
	if g, w := mustJSON(t, gotJ), mustJSON(t, want); g != w {
		t.Errorf("JSON: removing ferry does not give back the input:\n got %s\nwant %s", g, w)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestOptionsResources: Options.Resources are quantity strings, checked by
// New; what the container gets is their canonical form.
func TestOptionsResources(t *testing.T) {
	for _, tc := range []struct {
		res  Resources
		err  string
		want string // the container's resources as JSON
	}{
		{DefaultResources(), "", `{"limits":{"memory":"256Mi"},"requests":{"cpu":"50m","memory":"64Mi"}}`},
		{Resources{Requests: map[string]string{"cpu": "0.5", "memory": "1024Mi"}}, "", `{"requests":{"cpu":"500m","memory":"1Gi"}}`},
		{Resources{}, "", `{}`},
		{Resources{Requests: map[string]string{"cpu": "lots"}}, `inject options: resources: cpu request "lots": not a quantity`, ""},
		{Resources{Requests: map[string]string{"memory": "1Gi"}, Limits: map[string]string{"memory": "512Mi"}}, "inject options: resources: memory limit 512Mi is below its request 1Gi", ""},
	} {
		res := tc.res
		inj, err := New(Options{Resources: &res})
		if tc.err != "" {
			if err == nil || !strings.HasPrefix(err.Error(), tc.err) {
				t.Errorf("%+v: error %v, want %q", tc.res, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%+v: %v", tc.res, err)
		}
		pod := yamlObject(t, []byte("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: app, ports: [{containerPort: 80}]}]}\n"))
		mut, rep := inj.decide(pod)
		if mut == nil {
			t.Fatalf("not injected: %v", rep)
		}
		if got := mustJSON(t, mut.container.Resources); got != tc.want {
			t.Errorf("%+v: resources %s, want %s", tc.res, got, tc.want)
		}
	}
}

// A ferry.io/proxy-* limit below its request is refused naming the
// annotation, and the other side's annotation when the request or limit
// it falls short of is the injector's default. The reason said only
// "ferry resources from annotations: memory limit 32Mi is below its
// request 64Mi": with one annotation on the pod, that 64Mi was a default
// the reader had to know about, and which annotation lowers it went
// unsaid.
func TestResourceAnnotationBelowItsRequestNamed(t *testing.T) {
	inj, err := New(Options{Image: "ferrymesh/ferry:test"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ann  map[string]string
		want string
	}{
		{map[string]string{AnnotationMemoryLimit: "32Mi"},
			`invalid annotation ferry.io/proxy-memory-limit="32Mi": below ferry's default memory request 64Mi (set ferry.io/proxy-memory-request too)`},
		{map[string]string{AnnotationCPULimit: "10m"},
			`invalid annotation ferry.io/proxy-cpu-limit="10m": below ferry's default cpu request 50m (set ferry.io/proxy-cpu-request too)`},
		{map[string]string{AnnotationMemoryRequest: "1Gi"},
			`invalid annotation ferry.io/proxy-memory-request="1Gi": above ferry's default memory limit 256Mi (set ferry.io/proxy-memory-limit too)`},
		{map[string]string{AnnotationMemoryRequest: "1Gi", AnnotationMemoryLimit: "100Mi"},
			`invalid annotation ferry.io/proxy-memory-limit="100Mi": below ferry.io/proxy-memory-request="1Gi"`},
		{map[string]string{AnnotationCPURequest: "1", AnnotationCPULimit: "0.5"},
			`invalid annotation ferry.io/proxy-cpu-limit="0.5": below ferry.io/proxy-cpu-request="1"`},
	} {
		rep, _ := injectPod(t, inj, tc.ann)
		if rep.Outcome != Refused || rep.Reason != tc.want {
			t.Errorf("%v: %s %q, want refused %q", tc.ann, rep.Outcome, rep.Reason, tc.want)
		}
	}
	// A limit at or above its request is injected.
	rep, c := injectPod(t, inj, map[string]string{AnnotationMemoryLimit: "64Mi", AnnotationCPURequest: "1", AnnotationCPULimit: "1"})
	if rep.Outcome != Injected {
		t.Fatalf("limits equal to their requests: %s %s", rep.Outcome, rep.Reason)
	}
	if got := mustJSON(t, c.Resources); got != `{"limits":{"cpu":"1","memory":"64Mi"},"requests":{"cpu":"1","memory":"64Mi"}}` {
		t.Errorf("resources %s", got)
	}
}
