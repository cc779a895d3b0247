package inject

import (
	"fmt"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

// The API server refuses a preStop sleep action longer than the pod's
// terminationGracePeriodSeconds (validateSleepAction in
// pkg/apis/core/validation: "must be non-negative and less than
// terminationGracePeriodSeconds"); a missing period is defaulted to 30s
// before validation. An injected pod with such a hook is never created (a
// Deployment's pods, or the workload itself through `ferry inject`), so
// the injector must refuse it, naming the annotation, rather than inject.
func TestPreStopSleepFitsTerminationGracePeriod(t *testing.T) {
	inj := newTestInjector(t)
	for _, c := range []struct {
		period *int64 // nil: not set (the API server's default, 30)
		sleep  string // ferry.io/pre-stop-sleep; "": the default, 5s
	}{
		{ptr(int64(3)), ""},
		{ptr(int64(5)), ""},
		{ptr(int64(0)), ""},
		{ptr(int64(0)), "0s"},
		{ptr(int64(10)), "11s"},
		{ptr(int64(10)), "10s"},
		{nil, "31s"},
		{nil, "30s"},
	} {
		pod := appPod(map[string]string{})
		if c.sleep != "" {
			pod = appPod(map[string]string{AnnotationPreStopSleep: c.sleep})
		}
		period := int64(30)
		if c.period != nil {
			period = *c.period
			pod["spec"].(map[string]any)["terminationGracePeriodSeconds"] = *c.period
		}
		name := fmt.Sprintf("terminationGracePeriodSeconds %d, pre-stop-sleep %q", period, c.sleep)
		rep, ctr := injectJSONPod(t, inj, pod)
		if ctr == nil {
			if !strings.Contains(rep.Reason, AnnotationPreStopSleep) || !strings.Contains(rep.Reason, "terminationGracePeriodSeconds") {
				t.Errorf("%s: refused without naming %s and terminationGracePeriodSeconds: %q", name, AnnotationPreStopSleep, rep.Reason)
			}
			continue
		}
		if ctr.Lifecycle != nil && ctr.Lifecycle.PreStop != nil && ctr.Lifecycle.PreStop.Sleep != nil {
			if s := ctr.Lifecycle.PreStop.Sleep.Seconds; s > period {
				t.Errorf("%s: injected a preStop sleep of %ds, which the API server refuses above the period", name, s)
			}
		}
	}
}

// The Consul token Secret becomes the ferry container's
// env[].valueFrom.secretKeyRef, which the API server validates: the name
// as a DNS-1123 subdomain (ValidateSecretName), the key with
// IsConfigMapKey. A value it refuses must be refused at injection, naming
// the annotation; a pod injected with it is never created.
func TestConsulTokenSecretAcceptedOnlyWhenKubernetesAcceptsIt(t *testing.T) {
	inj := newTestInjector(t)
	long := strings.Repeat("a", 254)
	for _, v := range []string{
		"consul-token:token", "consul.acl:token.txt", "a:.token", "a:b..c", "a:_k-1.x",
		"a..b:token", "a.-b:token", "a-.b:token", ".a:token", long + ":token", long[:253] + ":token",
		"tok:..", "tok:.", "tok:..x", "tok:" + long, "tok:" + long[:253],
	} {
		name, key, _ := strings.Cut(v, ":")
		kubeErrs := append(validation.IsDNS1123Subdomain(name), validation.IsConfigMapKey(key)...)
		rep, c := injectPod(t, inj, map[string]string{
			AnnotationUpstreams: "files", AnnotationConsulTokenSecret: v,
		})
		switch {
		case len(kubeErrs) == 0 && c == nil:
			t.Errorf("%.40q: Kubernetes accepts it, the injector refused: %s", v, rep.Reason)
		case len(kubeErrs) > 0 && c != nil:
			t.Errorf("%.40q: injected, but the API server refuses the pod: %v", v, kubeErrs)
		case c == nil && !strings.Contains(rep.Reason, AnnotationConsulTokenSecret):
			t.Errorf("%.40q: the refusal does not name %s: %s", v, AnnotationConsulTokenSecret, rep.Reason)
		}
	}
}

// A pod with spec.os.name: windows may not set, in a container's
// securityContext, capabilities, seccompProfile, readOnlyRootFilesystem,
// allowPrivilegeEscalation, runAsUser or runAsGroup (validateWindows in
// pkg/apis/core/validation: "cannot be set for a windows pod"), all of
// which the ferry container sets; the ferry image is linux only anyway.
// Such a pod must be refused with the reason, not injected into a pod the
// API server refuses.
func TestWindowsPodRefused(t *testing.T) {
	inj := newTestInjector(t)
	for _, os := range []string{"windows", "linux", ""} {
		pod := appPod(map[string]string{})
		if os != "" {
			pod["spec"].(map[string]any)["os"] = map[string]any{"name": os}
		}
		rep, c := injectJSONPod(t, inj, pod)
		switch {
		case os == "windows" && c != nil:
			t.Errorf("os %s: injected a container whose securityContext the API server refuses on a windows pod", os)
		case os == "windows" && !strings.Contains(rep.Reason, "windows"):
			t.Errorf("os %s: refused without saying why: %q", os, rep.Reason)
		case os != "windows" && c == nil:
			t.Errorf("os %q: refused: %s", os, rep.Reason)
		}
	}
}

// A negative terminationGracePeriodSeconds is read as 1 by the API server
// (since Kubernetes 1.27, when it defaults the pod), so ferry's default
// 5s preStop sleep does not fit: refused, and the reason says the period
// ferry compared with. A period too large for a time.Duration in
// nanoseconds fits any sleep: injected.
func TestTerminationGracePeriodOutOfTheOrdinary(t *testing.T) {
	inj := newTestInjector(t)
	for _, c := range []struct {
		period   int64
		injected bool
		reason   string
	}{
		{-5, false, "(1s: the API server reads a negative period as 1)"},
		{-1, false, "(1s: the API server reads a negative period as 1)"},
		{9223372036854775807, true, ""},
		{9223372037, true, ""},
	} {
		pod := appPod(map[string]string{})
		pod["spec"].(map[string]any)["terminationGracePeriodSeconds"] = c.period
		rep, ctr := injectJSONPod(t, inj, pod)
		switch {
		case c.injected && ctr == nil:
			t.Errorf("period %d: refused: %s", c.period, rep.Reason)
		case !c.injected && ctr != nil:
			t.Errorf("period %d: injected", c.period)
		case !c.injected && !strings.Contains(rep.Reason, c.reason):
			t.Errorf("period %d: reason %q does not say %q", c.period, rep.Reason, c.reason)
		}
	}
}
