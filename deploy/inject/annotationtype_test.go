package inject

import (
	"strings"
	"testing"
)

// An annotation written unquoted in YAML (ferry.io/native-sidecar: false,
// ferry.io/inbound-port: 8080, ferry.io/pre-stop-sleep: 5) is a bool or a
// number, not the string Kubernetes requires. On the pod template the
// refusal read "cannot read the pod template: json: cannot unmarshal bool
// into Go struct field .metadata.annotations of type string", naming
// neither the annotation nor the fix; on the workload's own metadata a
// ferry.io/ one was skipped without a word, so ferry.io/native-sidecar:
// false there injected a native sidecar. Each is refused naming the
// annotation and saying to quote it.
func TestAnnotationThatIsNotAStringNamed(t *testing.T) {
	inj := newTestInjector(t)
	deployment := func(workloadAnn, templateAnn string) string {
		return "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  annotations: {" + workloadAnn + "}\n" +
			"spec:\n  template:\n    metadata:\n      annotations: {" + templateAnn + "}\n" +
			"    spec:\n      containers: [{name: app, image: app, ports: [{containerPort: 8080}]}]\n"
	}
	for _, tc := range []struct {
		name, in string
		want     []string
	}{
		{"bool on the template", deployment("", "ferry.io/native-sidecar: false"),
			[]string{`ferry.io/native-sidecar`, `bool false`, `"false"`}},
		{"number on the template", deployment("", "ferry.io/pre-stop-sleep: 5"),
			[]string{`ferry.io/pre-stop-sleep`, `number 5`, `"5"`}},
		{"float on the template", deployment("", "ferry.io/proxy-cpu-request: 0.5"),
			[]string{`ferry.io/proxy-cpu-request`, `number 0.5`, `"0.5"`}},
		{"another annotation on the template", deployment("", "prometheus.io/scrape: true, ferry.io/upstreams: files"),
			[]string{`prometheus.io/scrape`, `bool true`, `"true"`}},
		{"a mapping on the template", deployment("", "ferry.io/upstreams: {files: x}"),
			[]string{`ferry.io/upstreams`, `mapping`}},
		{"bool on the workload", deployment("ferry.io/native-sidecar: false", ""),
			[]string{`ferry.io/native-sidecar`, `bool false`, `"false"`, "workload"}},
		{"number in a JSON pod", `{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "annotations": {"ferry.io/inbound-port": 8080}},
 "spec": {"containers": [{"name": "app", "image": "app", "ports": [{"containerPort": 8080}]}]}}`,
			[]string{`ferry.io/inbound-port`, `number 8080`, `"8080"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, reps, err := inj.InjectYAML([]byte(tc.in))
			if err != nil {
				t.Fatalf("InjectYAML: %v", err)
			}
			if len(reps) != 1 || reps[0].Outcome != Refused {
				t.Fatalf("reports %+v, want one refusal", reps)
			}
			for _, w := range tc.want {
				if !strings.Contains(reps[0].Reason, w) {
					t.Errorf("reason %q does not say %s", reps[0].Reason, w)
				}
			}
			if string(out) != tc.in {
				t.Errorf("refused object changed:\n%s", out)
			}
		})
	}
	// Strings, and annotations other than ferry's on the workload (which
	// ferry does not read), still inject.
	for _, in := range []string{
		deployment("", `ferry.io/native-sidecar: "false", ferry.io/pre-stop-sleep: "5"`),
		deployment("team-size: 5", "note: ~"),
	} {
		if _, reps, err := inj.InjectYAML([]byte(in)); err != nil || len(reps) != 1 || reps[0].Outcome != Injected {
			t.Errorf("%s: %v %+v", in, err, reps)
		}
	}
}
