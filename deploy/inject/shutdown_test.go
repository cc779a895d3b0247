package inject

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/internal/shutdownbounds"
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
	// Room for the pre-stop sleep (5s), the delay (2s), a grace of 3s and
	// what ferry spends after it.
	period := 10*time.Second + shutdownbounds.ReportWait + shutdownbounds.TelemetryFlush
	for _, grace := range []string{"0", "0s", "1s", "3s", "20s"} {
		pod := fmt.Sprintf(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","annotations":{%q:%q}},
"spec":{"terminationGracePeriodSeconds":%d,"containers":[{"name":"app","image":"app","ports":[{"containerPort":8080}]}]}}`,
			AnnotationShutdownGrace, grace, int64(period/time.Second))
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
		need := preStop + cfg.Shutdown.Delay + cfg.Shutdown.Grace + shutdownbounds.ReportWait + shutdownbounds.TelemetryFlush
		warned := strings.Contains(strings.Join(reports[0].Warnings, "\n"), "terminationGracePeriodSeconds")
		if fits := need <= period; fits == warned {
			t.Errorf("shutdown-grace %s: ferry runs pre-stop %s + delay %s + grace %s + its exit = %s against a %s grace period; warned %v (warnings %q)",
				grace, preStop, cfg.Shutdown.Delay, cfg.Shutdown.Grace, need, period, warned, reports[0].Warnings)
		}
	}
}

// After the grace period ferry still spends time before it exits: it waits
// for the exchanges the drain cut to be reported, then flushes telemetry.
// A terminationGracePeriodSeconds that covers the pre-stop sleep, delay and
// grace but not those would let kubelet kill ferry before its last spans
// and access log lines are out, so the injector warns about it.
func TestShutdownWarningCountsReportWaitAndTelemetryFlush(t *testing.T) {
	inj, err := New(Options{Image: "ferrymesh/ferry:test"})
	if err != nil {
		t.Fatal(err)
	}
	const drain = 12 * time.Second // pre-stop sleep 1s + delay 1s + grace 10s
	extra := shutdownbounds.ReportWait + shutdownbounds.TelemetryFlush
	full := drain + extra
	for _, c := range []struct {
		period time.Duration
		warn   bool
	}{
		{drain, true},
		{full - time.Second, true},
		{full, false},
		{full + time.Minute, false},
	} {
		pod := fmt.Sprintf(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","annotations":{%q:"1s",%q:"1s",%q:"10s"}},
"spec":{"terminationGracePeriodSeconds":%d,"containers":[{"name":"app","image":"app","ports":[{"containerPort":8080}]}]}}`,
			AnnotationPreStopSleep, AnnotationShutdownDelay, AnnotationShutdownGrace, int64(c.period/time.Second))
		_, reports, err := inj.InjectJSON([]byte(pod))
		if err != nil {
			t.Fatal(err)
		}
		if len(reports) != 1 || reports[0].Outcome != Injected {
			t.Fatalf("terminationGracePeriodSeconds %s: reports %+v", c.period, reports)
		}
		var warning string
		for _, w := range reports[0].Warnings {
			if strings.Contains(w, "terminationGracePeriodSeconds") {
				warning = w
			}
		}
		if warned := warning != ""; warned != c.warn {
			t.Errorf("terminationGracePeriodSeconds %s against a shutdown of up to %s: warned %v, want %v (warnings %q)",
				c.period, full, warned, c.warn, reports[0].Warnings)
			continue
		}
		if c.warn && !strings.Contains(warning, "= "+full.String()+")") {
			t.Errorf("the warning does not give the whole shutdown, %s: %q", full, warning)
		}
	}
}
