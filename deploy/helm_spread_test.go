package deploy

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// The webhook's replicas must not all land on one node: the node's
// failure or drain would take every replica at once, and pods created
// meanwhile start without ferry (failurePolicy Ignore) or are not created
// at all (Fail). By default the chart asks the scheduler to spread them
// over nodes (a preference, so a one-node cluster still runs them all);
// an affinity given in the values replaces it.
func TestHelmWebhookReplicasSpreadOverNodes(t *testing.T) {
	r := render(t, "mesh")
	spec := r.deployments[0].Spec.Template.Spec
	podLabels := labels.Set(r.deployments[0].Spec.Template.Labels)
	spread := false
	if spec.Affinity != nil && spec.Affinity.PodAntiAffinity != nil {
		for _, w := range spec.Affinity.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
			term := w.PodAffinityTerm
			sel, err := metav1.LabelSelectorAsSelector(term.LabelSelector)
			if err != nil {
				t.Fatalf("anti-affinity selector: %v", err)
			}
			if term.TopologyKey == corev1.LabelHostname && term.LabelSelector != nil && !sel.Empty() && sel.Matches(podLabels) && w.Weight > 0 {
				spread = true
			}
		}
		if len(spec.Affinity.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) != 0 {
			t.Errorf("a required anti-affinity would leave replicas unscheduled on a cluster with fewer nodes")
		}
	}
	if !spread {
		t.Errorf("the webhook's replicas are not spread over nodes by default: affinity %+v, topologySpreadConstraints %+v", spec.Affinity, spec.TopologySpreadConstraints)
	}

	r = render(t, "mesh", "--set", "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=pool",
		"--set", "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists")
	a := r.deployments[0].Spec.Template.Spec.Affinity
	if a == nil || a.NodeAffinity == nil || a.PodAntiAffinity != nil {
		t.Errorf("an affinity in the values is not used as given: %+v", a)
	}
}
