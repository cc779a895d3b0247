package inject

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// The injector warns when ferry's shutdown does not fit the pod's
// terminationGracePeriodSeconds, and that check must count the shutdown
// ferry will really run: the generated config read by ferry's own loader.
// ferry.io/shutdown-grace: "0" was taken for no grace at all (5s + 2s + 0s
// fits 10s, no warning), while ferry reads shutdown.grace 0s as its default,
// 30s: kubelet would kill ferry mid-drain without a word.
func TestShutdownWarningCountsTheGraceFerryRuns(t *testing.T) {
	inj, err := New(Options{Image: "ferrymesh/ferry:test"})
	if err != nil {
		t.Fatal(err)
	}
	for _, grace := range []string{"0", "0s", "1s", "3s", "20s"} {
		pod := fmt.Sprintf(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","annotations":{%q:%q}},
"spec":{"terminationGracePeriodSeconds":10,"containers":[{"name":"app","image":"app","ports":[{"containerPort":8080}]}]}}`,
			AnnotationShutdownGrace, grace)
		out, reports, err := inj.InjectJSON([]byte(pod))
		if err != nil {
			t.Fatal(err)
		}
		if len(reports) != 1 {
			t.Fatalf("shutdown-grace %s: reports %+v", grace, reports)
		}
		if reports[0].Outcome != Injected {
			// Refusing a grace ferry cannot run is fine too, with a reason.
			if !strings.Contains(reports[0].Reason, AnnotationShutdownGrace) {
				t.Errorf("shutdown-grace %s: refused without naming the annotation: %q", grace, reports[0].Reason)
			}
			continue
		}
		tmpls := decodeStrict(t, out)
		cfg := checkInjectedTemplate(t, tmpls[0])
		c, _ := ferryContainer(&tmpls[0].Spec)
		var preStop time.Duration
		if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
			preStop = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
		}
		need := preStop + cfg.Shutdown.Delay + cfg.Shutdown.Grace
		warned := strings.Contains(strings.Join(reports[0].Warnings, "\n"), "terminationGracePeriodSeconds")
		if fits := need <= 10*time.Second; fits == warned {
			t.Errorf("shutdown-grace %s: ferry runs pre-stop %s + delay %s + grace %s = %s against a 10s grace period; warned %v (warnings %q)",
				grace, preStop, cfg.Shutdown.Delay, cfg.Shutdown.Grace, need, warned, reports[0].Warnings)
		}
	}
}
