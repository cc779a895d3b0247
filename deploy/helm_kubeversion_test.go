package deploy

import (
	"strings"
	"testing"
)

// TestHelmChecksTheKubernetesVersion: the chart installed on any cluster,
// though its objects need Kubernetes 1.21 (policy/v1 PodDisruptionBudget,
// and the kubernetes.io/metadata.name namespace label its webhook's
// namespaceSelector excludes its own namespace and kube-system by), and its
// defaults make the webhook inject what older API servers refuse: a native
// sidecar (an init container with restartPolicy Always, on by default from
// 1.29) and a preStop sleep action (from 1.30). There the install succeeded
// and every pod of a labelled namespace was then refused, whatever
// failurePolicy said. Chart.yaml's kubeVersion now refuses a cluster before
// 1.21, and a version without the feature a value asks for fails naming the
// value to change. helm install and upgrade check the cluster's version;
// helm template the one --kube-version gives.
func TestHelmChecksTheKubernetesVersion(t *testing.T) {
	for _, tc := range []struct {
		kube string
		set  []string
		msg  string // empty: renders
	}{
		{"1.20.15", []string{"--set", "inject.nativeSidecar=false,inject.preStopSleep=0s"}, ">=1.21.0-0"},
		{"1.28.9", nil, "inject.nativeSidecar"},
		{"1.27.3", []string{"--set", "inject.preStopSleep=0s"}, "inject.nativeSidecar"},
		{"1.29.4", nil, "inject.preStopSleep"},
		{"1.29.4", []string{"--set", "inject.preStopSleep=90"}, "inject.preStopSleep"},
		{"1.25.0", []string{"--set", "inject.nativeSidecar=false,inject.preStopSleep=1m"}, "inject.preStopSleep"},
		{"v1.29.15-eks-4a2b9c1", nil, "inject.preStopSleep"},

		{"1.30.0", nil, ""},
		{"v1.30.1-eks-2a1b3c", nil, ""},
		{"v1.31.0+k3s1", nil, ""},
		{"1.29.0", []string{"--set", "inject.preStopSleep=0s"}, ""},
		{"1.29.0", []string{"--set", "inject.preStopSleep=0"}, ""},
		{"1.21.0", []string{"--set", "inject.nativeSidecar=false,inject.preStopSleep=0h0m0s"}, ""},
		{"1.21.0", []string{"--set", "inject.nativeSidecar=false,inject.preStopSleep=00"}, ""},
	} {
		args := append([]string{"template", "rel", chartDir, "--kube-version", tc.kube}, tc.set...)
		out, err := helm(t, args...)
		switch {
		case tc.msg == "" && err != nil:
			t.Errorf("Kubernetes %s %v: %v\n%.600s", tc.kube, tc.set, err, out)
		case tc.msg != "" && err == nil:
			t.Errorf("Kubernetes %s %v: rendered; want an error naming %s", tc.kube, tc.set, tc.msg)
		case tc.msg != "" && !strings.Contains(out, tc.msg):
			t.Errorf("Kubernetes %s %v: the error does not name %s:\n%.600s", tc.kube, tc.set, tc.msg, out)
		}
	}
}
