package deploy

import (
	"encoding/json"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/ferrymesh/ferry/deploy/inject"
	"github.com/ferrymesh/ferry/deploy/webhook"
)

// TestOptOutLabelAgreesWithTheWebhook: a pod labelled
// ferry.io/inject=disabled gets no sidecar from `ferry inject` (the
// library it runs), as it gets none from the chart's webhook, whose
// default objectSelector never sends such a pod; and the webhook refuses
// it itself too, for an objectSelector set otherwise. `ferry inject` read
// only the annotation: the same Deployment got a sidecar from it and none
// from the webhook.
func TestOptOutLabelAgreesWithTheWebhook(t *testing.T) {
	r := render(t, "mesh")
	sel, err := metav1.LabelSelectorAsSelector(r.webhooks[0].Webhooks[0].ObjectSelector)
	if err != nil {
		t.Fatal(err)
	}
	inj, err := inject.New(inject.Options{Image: "ferrymesh/ferry:test"})
	if err != nil {
		t.Fatal(err)
	}
	h := webhook.NewHandler(inj, webhook.Options{})
	for _, lbls := range []map[string]string{
		{"app": "web", "ferry.io/inject": "disabled"},
		{"app": "web"},
		{"app": "web", "ferry.io/inject": "enabled"},
		{"app": "web", "ferry.io/inject": "Disabled"}, // the selector matches the value exactly
		{"app": "web", "ferry.io/inject": ""},
	} {
		labelsYAML, _ := json.Marshal(lbls)
		manifest := `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  template:
    metadata:
      labels: ` + string(labelsYAML) + `
    spec:
      containers:
      - name: app
        image: app
        ports: [{containerPort: 8080}]
`
		out, reps, err := inj.InjectYAML([]byte(manifest))
		if err != nil || len(reps) != 1 {
			t.Fatalf("%v: %v %v", lbls, err, reps)
		}
		cli := reps[0].Outcome == inject.Injected
		if !cli && string(out) != manifest {
			t.Errorf("%v: not injected, yet the manifest changed", lbls)
		}

		// The pod the Deployment makes, as the API server sends it.
		var dep map[string]any
		if err := sigsyaml.Unmarshal([]byte(manifest), &dep); err != nil {
			t.Fatal(err)
		}
		pod := dep["spec"].(map[string]any)["template"].(map[string]any)
		pod["apiVersion"], pod["kind"] = "v1", "Pod"
		called := sel.Matches(labels.Set(lbls))
		patched, _, msg := reviewAll(t, h, pod)
		if web := called && patched; web != cli {
			t.Errorf("labels %v: ferry inject injects: %v (%s); the chart's webhook: %v (objectSelector sends it: %v; %s)",
				lbls, cli, reps[0], web, called, msg)
		}
		if lbls["ferry.io/inject"] == "disabled" {
			if patched {
				t.Errorf("labels %v: the webhook injects a pod labelled ferry.io/inject=disabled when called (an objectSelector set otherwise)", lbls)
			}
			if !strings.Contains(reps[0].Reason, "label ferry.io/inject=disabled") || !reps[0].OptedOut() {
				t.Errorf("labels %v: reason %q (opted out %v), want the label named, as an opt-out", lbls, reps[0].Reason, reps[0].OptedOut())
			}
		}
	}
}
