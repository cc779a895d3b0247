package deploy

import (
	"strings"
	"testing"
)

// TestHelmPriorityClassName: priorityClassName took any string, and the
// API server refuses a Deployment whose pods name a PriorityClass that is
// not a lower-case DNS subdomain (helm install then failed on the
// Deployment alone, the webhook configuration already in place). The
// schema refuses it naming the key; a valid name reaches the pod spec, and
// the default sets none.
func TestHelmPriorityClassName(t *testing.T) {
	for _, v := range []string{"High_Priority", "Critical", "-webhook", "webhook.", "a..b", "system cluster critical", strings.Repeat("a", 254)} {
		out, err := helm(t, "template", "rel", chartDir, "--set-string", "priorityClassName="+v)
		if err == nil || !strings.Contains(out, "/priorityClassName") {
			t.Errorf("priorityClassName=%q: err %v, want an error naming /priorityClassName:\n%.400s", v, err, out)
		}
	}
	if got := render(t, "mesh").deployments[0].Spec.Template.Spec.PriorityClassName; got != "" {
		t.Errorf("default priorityClassName %q, want none", got)
	}
	for _, v := range []string{"system-cluster-critical", "mesh.webhooks-1", strings.Repeat("a", 253)} {
		if got := render(t, "mesh", "--set-string", "priorityClassName="+v).deployments[0].Spec.Template.Spec.PriorityClassName; got != v {
			t.Errorf("priorityClassName=%q rendered %q", v, got)
		}
	}
}
