package deploy

import (
	"slices"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/ferrymesh/ferry/deploy/inject"
)

// TestHelmProductionDefaults: what a platform engineer checks before
// installing the chart, as rendered with the defaults. The webhook never
// sees its own namespace nor kube-system, whatever namespaceSelector the
// values give (its pods, or the control plane's, could not be created
// while it is down under failurePolicy Fail), and its own pods carry the
// opt-out label the default objectSelector skips; sideEffects None (dry
// runs are sent), v1 reviews only, a timeout within the API server's 30s,
// matchPolicy Equivalent; the webhook pod runs non-root with a read-only
// root filesystem, no privilege escalation, no capabilities, the runtime's
// seccomp profile, no service account token, probes over HTTPS and a
// memory limit; the Service names its port.
func TestHelmProductionDefaults(t *testing.T) {
	for _, set := range [][]string{nil, {"--set", "webhook.namespaceSelector.matchLabels=null,webhook.namespaceSelector.matchExpressions[0].key=team,webhook.namespaceSelector.matchExpressions[0].operator=Exists"}} {
		r := render(t, "mesh", set...)
		wh := r.webhooks[0].Webhooks[0]
		var excluded []string
		for _, e := range wh.NamespaceSelector.MatchExpressions {
			if e.Key == "kubernetes.io/metadata.name" && e.Operator == metav1.LabelSelectorOpNotIn {
				excluded = append(excluded, e.Values...)
			}
		}
		for _, ns := range []string{"mesh", "kube-system"} {
			if !slices.Contains(excluded, ns) {
				t.Errorf("%v: namespaceSelector does not exclude %s: %+v", set, ns, wh.NamespaceSelector)
			}
		}
		if set != nil {
			continue
		}
		dep := r.deployments[0]
		sel, err := metav1.LabelSelectorAsSelector(wh.ObjectSelector)
		if err != nil || sel.Matches(labels.Set(dep.Spec.Template.Labels)) {
			t.Errorf("the default objectSelector %+v sends the webhook's own pods (labels %v) to it (%v)", wh.ObjectSelector, dep.Spec.Template.Labels, err)
		}
		if dep.Spec.Template.Labels[inject.AnnotationInject] != inject.InjectDisabled {
			t.Errorf("webhook pod labels %v", dep.Spec.Template.Labels)
		}
		if wh.SideEffects == nil || *wh.SideEffects != admissionregistrationv1.SideEffectClassNone ||
			wh.TimeoutSeconds == nil || *wh.TimeoutSeconds > 30 || wh.MatchPolicy == nil || *wh.MatchPolicy != admissionregistrationv1.Equivalent ||
			!slices.Equal(wh.AdmissionReviewVersions, []string{"v1"}) || wh.FailurePolicy == nil || *wh.FailurePolicy != admissionregistrationv1.Ignore {
			t.Errorf("webhook %+v", wh)
		}
		ps := dep.Spec.Template.Spec
		if ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken {
			t.Errorf("the webhook pod mounts a service account token")
		}
		psc := ps.SecurityContext
		if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 ||
			psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("pod securityContext %+v", psc)
		}
		c := ps.Containers[0]
		sc := c.SecurityContext
		if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.ReadOnlyRootFilesystem == nil ||
			!*sc.ReadOnlyRootFilesystem || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
			len(sc.Capabilities.Add) != 0 || (sc.Privileged != nil && *sc.Privileged) {
			t.Errorf("container securityContext %+v", sc)
		}
		for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe} {
			if p == nil || p.HTTPGet == nil || p.HTTPGet.Scheme != corev1.URISchemeHTTPS || p.HTTPGet.Path != "/healthz" {
				t.Errorf("probe %+v", p)
			}
		}
		if c.Resources.Limits.Memory().IsZero() || c.Resources.Requests.Cpu().IsZero() {
			t.Errorf("resources %+v", c.Resources)
		}
		for _, p := range r.services[0].Spec.Ports {
			if p.Name == "" || p.TargetPort.String() != c.Ports[0].Name {
				t.Errorf("service port %+v", p)
			}
		}
	}
}
