package inject

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/internal/shutdownbounds"
)

// afterGrace is what ferry may still spend once the drain's grace has
// ended: the wait for cut exchanges to be reported, the telemetry flush and
// the close of its stderr log writer.
const afterGrace = shutdownbounds.ReportWait + shutdownbounds.TelemetryFlush + shutdownbounds.LogClose

// injectedShutdown injects pod and returns how long the shutdown of the
// ferry it injects may take, read from what was injected (the preStop sleep
// and the generated config read by ferry's own loader), and the
// terminationGracePeriodSeconds warning if there was one. ok is false when
// the pod was not injected.
func injectedShutdown(t *testing.T, inj *Injector, pod string) (need time.Duration, warning string, rep Report, ok bool) {
	t.Helper()
	out, reports, err := inj.InjectJSON([]byte(pod))
	if err != nil {
		t.Fatal(err)
	}
	if len(reports) != 1 {
		t.Fatalf("reports %+v", reports)
	}
	if reports[0].Outcome != Injected {
		return 0, "", reports[0], false
	}
	tmpls := decodeStrict(t, out)
	cfg := checkInjectedTemplate(t, tmpls[0])
	c, _ := ferryContainer(&tmpls[0].Spec)
	var preStop time.Duration
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
		preStop = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	}
	for _, w := range reports[0].Warnings {
		if strings.Contains(w, "terminationGracePeriodSeconds") {
			warning = w
		}
	}
	return preStop + cfg.Shutdown.Delay + cfg.Shutdown.Grace + afterGrace, warning, reports[0], true
}

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
	period := 10*time.Second + afterGrace
	for _, grace := range []string{"0", "0s", "1s", "3s", "20s"} {
		pod := fmt.Sprintf(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","annotations":{%q:%q}},
"spec":{"terminationGracePeriodSeconds":%d,"containers":[{"name":"app","image":"app","ports":[{"containerPort":8080}]}]}}`,
			AnnotationShutdownGrace, grace, int64(period/time.Second))
		need, warning, rep, ok := injectedShutdown(t, inj, pod)
		if !ok {
			// Refusing a grace ferry cannot run is fine too, with a reason.
			if !strings.Contains(rep.Reason, AnnotationShutdownGrace) {
				t.Errorf("shutdown-grace %s: refused without naming the annotation: %q", grace, rep.Reason)
			}
			continue
		}
		if fits, warned := need <= period, warning != ""; fits == warned {
			t.Errorf("shutdown-grace %s: ferry's shutdown takes up to %s against a %s grace period; warned %v (warnings %q)",
				grace, need, period, warned, rep.Warnings)
		}
	}
}

// The injector's defaults (and so the chart's, which sets only the pre-stop
// sleep, to the same 5s: TestHelmDefaultsFitTheDefaultGracePeriod) must fit
// the default terminationGracePeriodSeconds, 30s, with everything ferry
// spends after the grace: an unannotated pod is injected without a warning.
func TestDefaultsFitTheDefaultGracePeriod(t *testing.T) {
	inj, err := New(Options{Image: "ferrymesh/ferry:test"})
	if err != nil {
		t.Fatal(err)
	}
	const pod = `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web"},
"spec":{"containers":[{"name":"app","image":"app","ports":[{"containerPort":8080}]}]}}`
	need, warning, rep, ok := injectedShutdown(t, inj, pod)
	if !ok {
		t.Fatalf("not injected: %+v", rep)
	}
	if need > 30*time.Second || warning != "" {
		t.Errorf("the default shutdown takes up to %s against the default grace period of 30s (warning %q)", need, warning)
	}
	if sum := DefaultPreStopSleep + DefaultShutdownDelay + DefaultShutdownGrace + afterGrace; sum != need || sum > 30*time.Second {
		t.Errorf("the defaults add up to %s, the injected shutdown to %s: want them equal and at most 30s", sum, need)
	}
}

// After the grace period ferry still spends time before it exits: it waits
// for the exchanges the drain cut to be reported, flushes telemetry, then
// writes out the log lines still buffered for stderr. A
// terminationGracePeriodSeconds that covers the pre-stop sleep, delay and
// grace but not those would let kubelet kill ferry before its last spans and
// log lines are out, so the injector warns about it.
func TestShutdownWarningCountsWhatFerrySpendsAfterTheGrace(t *testing.T) {
	inj, err := New(Options{Image: "ferrymesh/ferry:test"})
	if err != nil {
		t.Fatal(err)
	}
	const drain = 12 * time.Second // pre-stop sleep 1s + delay 1s + grace 10s
	full := drain + afterGrace
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
		need, warning, rep, ok := injectedShutdown(t, inj, pod)
		if !ok {
			t.Fatalf("terminationGracePeriodSeconds %s: %+v", c.period, rep)
		}
		if need != full {
			t.Fatalf("injected shutdown %s, want %s", need, full)
		}
		if warned := warning != ""; warned != c.warn {
			t.Errorf("terminationGracePeriodSeconds %s against a shutdown of up to %s: warned %v, want %v (warnings %q)",
				c.period, full, warned, c.warn, rep.Warnings)
			continue
		}
		if !c.warn {
			continue
		}
		for _, want := range []string{
			"= " + full.String() + ")",
			"up to " + shutdownbounds.LogClose.String() + " writing out log lines",
			// What runs inside the period but is not ferry's is named too.
			"app containers",
		} {
			if !strings.Contains(warning, want) {
				t.Errorf("the warning lacks %q: %q", want, warning)
			}
		}
	}
}

// A duration annotation written as a number of seconds was multiplied into
// a time.Duration without a bound, so a large number wrapped around:
// ferry.io/shutdown-delay "18446744074" became a delay of 290.448384ms and
// ferry.io/pre-stop-sleep "36028797018963973" a sleep of 5s, both injected,
// and a shutdown grace of "9223372037" was refused as negative. Each is
// more than the hour the annotations allow and is refused saying so.
func TestDurationAnnotationsInSecondsDoNotWrap(t *testing.T) {
	inj, err := New(Options{Image: "ferrymesh/ferry:test"})
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{AnnotationPreStopSleep, AnnotationShutdownDelay, AnnotationShutdownGrace} {
		for _, v := range []string{"18446744074", "36028797018963973", "9223372037", "9223372036854775807", "3601"} {
			ann := map[string]string{key: v}
			if key == AnnotationPreStopSleep {
				// Keep the sleep within the pod's grace period for "3600".
				ann[AnnotationShutdownDelay] = "1s"
			}
			rep, _ := injectPod(t, inj, ann)
			want := fmt.Sprintf("invalid annotation %s=%q: more than an hour", key, v)
			if rep.Outcome != Refused || rep.Reason != want {
				t.Errorf("%s: %q: %s %q, want refused %q", key, v, rep.Outcome, rep.Reason, want)
			}
		}
		pod := fmt.Sprintf(`{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "annotations": {%q: "3600"}},
			"spec": {"terminationGracePeriodSeconds": 4000, "containers": [{"name": "app", "ports": [{"containerPort": 8080}]}]}}`, key)
		need, _, rep, ok := injectedShutdown(t, inj, pod)
		if !ok {
			t.Errorf("%s: \"3600\": %s %s, want injected", key, rep.Outcome, rep.Reason)
			continue
		}
		if need < time.Hour {
			t.Errorf("%s: \"3600\": injected shutdown takes %s, want at least an hour", key, need)
		}
	}
}
