package inject

import (
	"reflect"
	"strings"
	"testing"

	sigsyaml "sigs.k8s.io/yaml"
)

// A manifest may use YAML merge keys ("<<"), which kubectl reads (the
// fields a merge brings are the object's fields). ferry inject edits the
// YAML nodes in place; when the list or map it adds to came from a merge,
// a new key written beside "<<" overrides the merged one, and what the
// merge held was lost: the app's init containers, or its containers with
// native-sidecar false, or the template's annotations. Whatever ferry
// writes, removing what it added must give back the input as kubectl
// reads it; a manifest it cannot edit that way is refused unchanged.
func TestInjectYAMLKeepsMergedFields(t *testing.T) {
	inj := newTestInjector(t)
	for name, doc := range map[string]string{
		"merged initContainers": `apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  <<: {initContainers: [{name: init, image: busybox}]}
  containers: [{name: app, image: app, ports: [{containerPort: 8080}]}]
`,
		"merged containers, regular-container ferry": `apiVersion: v1
kind: Pod
metadata:
  name: web
  annotations: {ferry.io/native-sidecar: "false"}
spec:
  <<: {containers: [{name: app, image: app, ports: [{containerPort: 8080}]}]}
`,
		"merged annotations": `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      <<: {annotations: {ferry.io/upstreams: files, team: shop}}
      labels: {app: web}
    spec:
      containers: [{name: app, image: app}]
`,
		"merge beside the edited key": `apiVersion: v1
kind: Pod
metadata:
  <<: {labels: {app: web}}
  name: web
  annotations: {team: shop}
spec:
  <<: {restartPolicy: Always}
  initContainers: [{name: init, image: busybox}]
  containers: [{name: app, image: app, ports: [{containerPort: 8080}]}]
`,
	} {
		t.Run(name, func(t *testing.T) { checkMergedFieldsKept(t, inj, name, doc) })
	}
}

func checkMergedFieldsKept(t *testing.T, inj *Injector, name, doc string) {
	{
		out, reps, err := inj.InjectYAML([]byte(doc))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(reps) != 1 {
			t.Fatalf("%s: reports %+v", name, reps)
		}
		if reps[0].Outcome != Injected {
			if string(out) != doc {
				t.Errorf("%s: refused (%s) but changed", name, reps[0].Reason)
			}
			if !strings.Contains(reps[0].Reason, "<<") {
				t.Errorf("%s: refused without naming the merge key: %s", name, reps[0].Reason)
			}
			if name == "merge beside the edited key" {
				t.Errorf("%s: refused, though the keys ferry edits are written out: %s", name, reps[0].Reason)
			}
			return
		}
		for _, tmpl := range decodeStrict(t, out) {
			checkInjectedTemplate(t, tmpl)
		}
		got := yamlObject(t, out)
		withoutInjection(t, got)
		var want map[string]any
		if err := sigsyaml.Unmarshal([]byte(doc), &want); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: the injected manifest, less ferry, is not the input as kubectl reads it:\n--- in\n%s\n--- out\n%s", name, doc, out)
		}
	}
}
