package inject

import (
	"fmt"
	"strings"
	"testing"
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
