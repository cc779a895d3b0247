package deploy

import (
	"strings"
	"testing"
)

// Values that go into object metadata or selectors as they are must be
// ones the API server accepts, or helm must refuse them naming the key.
// The schema took any value in these maps: `--set podAnnotations.a=true`
// rendered `a: true`, a bool annotation the API server refuses (the whole
// Deployment with it); a pod label the chart writes itself (its selector
// labels, ferry.io/inject) was written twice, and kubectl keeps the last:
// app.kubernetes.io/name=x made the template's labels miss the Deployment's
// selector, which the API server refuses. A misspelt key in
// webhook.namespaceSelector (matchlabels) was dropped silently, leaving a
// selector that matches every namespace: the webhook injected pods
// everywhere.
func TestHelmRefusesValuesThatRenderInvalidObjects(t *testing.T) {
	for _, tc := range []struct {
		args []string
		key  string
	}{
		{[]string{"--set", "podAnnotations.a=true"}, "podAnnotations"},
		{[]string{"--set", "podLabels.tier=1"}, "podLabels"},
		{[]string{"--set", "nodeSelector.disk=true"}, "nodeSelector"},
		{[]string{"--set", "serviceAccount.annotations.a=1"}, "serviceAccount/annotations"},
		{[]string{"--set", "webhook.namespaceSelector.matchLabels.mesh=true"}, "namespaceSelector/matchLabels"},
		{[]string{"--set-string", `podLabels.app\.kubernetes\.io/name=x`}, "podLabels"},
		{[]string{"--set-string", `podLabels.app\.kubernetes\.io/instance=x`}, "podLabels"},
		{[]string{"--set-string", `podLabels.ferry\.io/inject=enabled`}, "podLabels"},
		{[]string{"--set-string", "webhook.namespaceSelector.matchlabels.mesh=ferry"}, "matchlabels"},
		// Lists of Kubernetes objects, and cert-manager's durations, the
		// API server or cert-manager refused after helm had installed.
		{[]string{"--set", "imagePullSecrets[0]=regcred"}, "imagePullSecrets"},
		{[]string{"--set", "imagePullSecrets[0].nme=regcred"}, "imagePullSecrets"},
		{[]string{"--set", "tolerations[0]=dedicated"}, "tolerations"},
		{[]string{"--set", "tolerations[0].operator=exists"}, "tolerations"},
		{[]string{"--set", "tolerations[0].effect=NoSchedul"}, "tolerations"},
		{[]string{"--set", "certManager.duration=1y"}, "certManager/duration"},
		{[]string{"--set", "certManager.renewBefore=30 days"}, "certManager/renewBefore"},
	} {
		out, err := helm(t, append([]string{"template", "rel", chartDir}, tc.args...)...)
		if err == nil {
			t.Errorf("%s: rendered; want an error naming %s", strings.Join(tc.args, " "), tc.key)
			continue
		}
		if !strings.Contains(out, tc.key) {
			t.Errorf("%s: the error does not name %s:\n%.600s", strings.Join(tc.args, " "), tc.key, out)
		}
	}
	// String values in these maps still render.
	r := render(t, "mesh", "--set-string", "podAnnotations.a=true,podLabels.tier=1,nodeSelector.disk=ssd,serviceAccount.annotations.b=2",
		"--set", "webhook.namespaceSelector.matchExpressions[0].key=mesh,webhook.namespaceSelector.matchExpressions[0].operator=Exists")
	if got := r.deployments[0].Spec.Template.Annotations["a"]; got != "true" {
		t.Errorf("podAnnotations.a = %q", got)
	}
	// And so do those lists written as Kubernetes has them.
	r = render(t, "mesh", "--set", "imagePullSecrets[0].name=regcred,tolerations[0].key=dedicated,tolerations[0].operator=Equal,tolerations[0].value=mesh,tolerations[0].effect=NoSchedule,tolerations[1].operator=Exists,tolerations[1].tolerationSeconds=30",
		"--set", "certManager.enabled=true,certManager.duration=2160h,certManager.renewBefore=360h30m")
	spec := r.deployments[0].Spec.Template.Spec
	if len(spec.ImagePullSecrets) != 1 || spec.ImagePullSecrets[0].Name != "regcred" {
		t.Errorf("imagePullSecrets rendered as %+v", spec.ImagePullSecrets)
	}
	if len(spec.Tolerations) != 2 || spec.Tolerations[0].Key != "dedicated" || spec.Tolerations[0].Effect != "NoSchedule" ||
		spec.Tolerations[1].Operator != "Exists" || spec.Tolerations[1].TolerationSeconds == nil || *spec.Tolerations[1].TolerationSeconds != 30 {
		t.Errorf("tolerations rendered as %+v", spec.Tolerations)
	}
}
