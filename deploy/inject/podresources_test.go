package inject

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/ferrymesh/ferry/deploy/inject/apiservertest"
)

// rl is a resource list as written in a manifest.
type rl = map[string]any

// podLevelPod is the test app pod with pod-level resources (nil: none),
// the app container's resources, and init containers put before it.
func podLevelPod(ann map[string]string, podReq, podLim, appReq, appLim rl, inits ...any) map[string]any {
	pod := appPod(ann)
	spec := pod["spec"].(map[string]any)
	if podReq != nil || podLim != nil {
		res := map[string]any{}
		if podReq != nil {
			res["requests"] = podReq
		}
		if podLim != nil {
			res["limits"] = podLim
		}
		spec["resources"] = res
	}
	app := spec["containers"].([]any)[0].(map[string]any)
	res := map[string]any{}
	if appReq != nil {
		res["requests"] = appReq
	}
	if appLim != nil {
		res["limits"] = appLim
	}
	app["resources"] = res
	if len(inits) > 0 {
		spec["initContainers"] = inits
	}
	return pod
}

func initContainer(name string, req rl, restartAlways bool) map[string]any {
	c := map[string]any{"name": name, "image": name, "resources": map[string]any{"requests": req}}
	if restartAlways {
		c["restartPolicy"] = "Always"
	}
	return c
}

// asPod decodes a generic pod (strictly) into the Kubernetes type.
func asPod(t *testing.T, obj map[string]any) *corev1.Pod {
	t.Helper()
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := decodeStrict(t, raw)[0]
	return &corev1.Pod{ObjectMeta: tmpl.ObjectMeta, Spec: tmpl.Spec}
}

func listStrings(l corev1.ResourceList) map[string]string {
	if len(l) == 0 {
		return nil
	}
	m := map[string]string{}
	for k, v := range l {
		m[string(k)] = v.String()
	}
	return m
}

// podLevelOutcome is what the API server ends up storing for one way in.
type podLevelOutcome struct {
	report Report
	pod    *corev1.Pod // defaulted as the API server does; nil when refused
}

// admit runs what the API server does with a pod that reaches it: it
// defaults it, validates it, and reports the objections.
func admit(t *testing.T, pod *corev1.Pod) []string {
	t.Helper()
	apiservertest.DefaultPod(pod)
	return apiservertest.ValidatePodResources(&pod.Spec)
}

// injectCLI is `ferry inject` on the manifest (through the YAML path, as
// the CLI reads files), then the API server's defaulting and validation.
func injectCLI(t *testing.T, inj *Injector, pod map[string]any) podLevelOutcome {
	t.Helper()
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	out, reps, err := inj.InjectYAML(raw)
	if err != nil {
		t.Fatalf("InjectYAML: %v", err)
	}
	if len(reps) != 1 {
		t.Fatalf("reports %+v", reps)
	}
	// The JSON path (the webhook's) makes the same object of it.
	jout, jreps, err := inj.InjectJSON(raw)
	if err != nil || len(jreps) != 1 || jreps[0].Outcome != reps[0].Outcome || jreps[0].Reason != reps[0].Reason {
		t.Fatalf("InjectJSON: %v %+v, InjectYAML %+v", err, jreps, reps)
	}
	if reps[0].Outcome != Injected {
		return podLevelOutcome{report: reps[0]}
	}
	j, err := sigsyaml.YAMLToJSON(out)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(jsonValue(t, j), jsonValue(t, jout)) {
		t.Errorf("InjectYAML and InjectJSON differ:\n%s\n%s", j, jout)
	}
	tmpl := decodeStrict(t, out)[0]
	checkInjectedTemplate(t, tmpl)
	p := &corev1.Pod{ObjectMeta: tmpl.ObjectMeta, Spec: tmpl.Spec}
	if errs := admit(t, p); len(errs) > 0 {
		t.Errorf("`ferry inject`: the API server refuses the injected pod:\n  %s", strings.Join(errs, "\n  "))
	}
	return podLevelOutcome{report: reps[0], pod: p}
}

// injectWebhook is the webhook's path: the API server defaults the pod
// before the mutating webhooks see it, the injector runs on that, and the
// API server defaults the patched pod again before validating it.
func injectWebhook(t *testing.T, inj *Injector, pod map[string]any) podLevelOutcome {
	t.Helper()
	p := asPod(t, pod)
	p.TypeMeta = corev1.Pod{}.TypeMeta
	p.APIVersion, p.Kind = "v1", "Pod"
	apiservertest.DefaultPod(p)
	raw, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := decodeJSONObject(raw)
	if err != nil {
		t.Fatal(err)
	}
	changed, reps := inj.InjectObject(obj)
	if len(reps) != 1 {
		t.Fatalf("reports %+v", reps)
	}
	if !changed {
		return podLevelOutcome{report: reps[0]}
	}
	injected := asPod(t, obj)
	checkInjectedTemplate(t, &corev1.PodTemplateSpec{ObjectMeta: injected.ObjectMeta, Spec: injected.Spec})
	if errs := admit(t, injected); len(errs) > 0 {
		t.Errorf("webhook: the API server refuses the patched pod:\n  %s", strings.Join(errs, "\n  "))
	}
	return podLevelOutcome{report: reps[0], pod: injected}
}

func resourcesOf(p *corev1.Pod) corev1.ResourceRequirements {
	if p.Spec.Resources == nil {
		return corev1.ResourceRequirements{}
	}
	return *p.Spec.Resources
}

// checkSameBudget checks that injecting ferry left the pod-level budget
// the pod had without it: every pod-level request and limit keeps its
// value, no limit appears, and a request that appears is the one the API
// server defaults for a resource the pod did not budget (the containers'
// aggregate, as it would be without pod-level resources).
func checkSameBudget(t *testing.T, way string, before, after *corev1.Pod) {
	t.Helper()
	b, a := resourcesOf(before), resourcesOf(after)
	for _, l := range []struct {
		what          string
		before, after corev1.ResourceList
	}{{"requests", b.Requests, a.Requests}, {"limits", b.Limits, a.Limits}} {
		for name, q := range l.before {
			if got, ok := l.after[name]; !ok || got.Cmp(q) != 0 {
				t.Errorf("%s changed spec.resources.%s[%s] from %s to %s", way, l.what, name, q.String(), got.String())
			}
		}
	}
	for name := range a.Limits {
		if _, ok := b.Limits[name]; !ok {
			t.Errorf("%s added spec.resources.limits[%s]", way, name)
		}
	}
	agg := apiservertest.AggregateRequests(&after.Spec)
	for name, q := range a.Requests {
		if _, ok := b.Requests[name]; ok {
			continue
		}
		if want := agg[name]; q.Cmp(want) != 0 {
			t.Errorf("%s: spec.resources.requests[%s] is %s, not the containers' aggregate %s", way, name, q.String(), want.String())
		}
	}
}

func jsonValue(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	return v
}

// A pod that sets pod-level resources (spec.resources, PodLevelResources,
// beta from Kubernetes 1.34) is validated by the API server against its
// containers: what they request together must fit each pod-level request,
// and a regular container's limit the pod-level limit (see
// apiservertest.ValidatePodResources for the rules and their source).
// Injecting ferry's own requests into a pod whose budget they do not fit
// makes the API server refuse every pod of the workload. Each pod here is
// valid without ferry; injected by `ferry inject` or by the webhook (which
// sees the pod after the API server's defaulting), it must still be valid,
// the pod-level budget must be the one the pod had without ferry, and both
// ways in must give the same pod. Where the budget leaves room, ferry
// keeps its requests; where it does not, ferry requests 0 of that resource
// (it shares the pod's) with a warning, unless the request came from an
// annotation, which is refused naming it.
func TestPodLevelResources(t *testing.T) {
	inj := newTestInjector(t)
	def := map[string]string{"cpu": "50m", "memory": "64Mi"}
	defLim := map[string]string{"memory": "256Mi"}
	noNative := map[string]string{AnnotationNativeSidecar: "false"}
	for _, c := range []struct {
		name             string
		ann              map[string]string
		podReq, podLim   rl
		appReq, appLim   rl
		inits            []any
		wantReq, wantLim map[string]string // ferry's container
		refused          []string          // the refusal names these
		warned           bool
	}{
		{name: "no pod-level resources", appReq: rl{"cpu": "250m"},
			wantReq: def, wantLim: defLim},
		{name: "requests leave room", podReq: rl{"cpu": "1", "memory": "1Gi"}, appReq: rl{"cpu": "500m", "memory": "512Mi"},
			wantReq: def, wantLim: defLim},
		{name: "requests used up by the app", podReq: rl{"cpu": "500m", "memory": "512Mi"}, appReq: rl{"cpu": "500m", "memory": "512Mi"},
			wantReq: map[string]string{"cpu": "0", "memory": "0"}, wantLim: defLim, warned: true},
		{name: "room for cpu, not memory", podReq: rl{"cpu": "1", "memory": "512Mi"}, appReq: rl{"cpu": "500m", "memory": "500Mi"},
			wantReq: map[string]string{"cpu": "50m", "memory": "0"}, wantLim: defLim, warned: true},
		{name: "cpu at pod level, memory per container", podReq: rl{"cpu": "300m"}, appReq: rl{"cpu": "300m", "memory": "128Mi"},
			wantReq: map[string]string{"cpu": "0", "memory": "64Mi"}, wantLim: defLim, warned: true},
		{name: "limits only, containers request nothing", podLim: rl{"cpu": "2", "memory": "1Gi"},
			wantReq: def, wantLim: defLim},
		{name: "limits only, below ferry's memory limit", podLim: rl{"cpu": "1", "memory": "200Mi"},
			wantReq: def, wantLim: nil, warned: true},
		{name: "limits only, containers request", podLim: rl{"cpu": "1", "memory": "1Gi"}, appReq: rl{"cpu": "500m", "memory": "256Mi"},
			wantReq: map[string]string{"cpu": "0", "memory": "0"}, wantLim: defLim, warned: true},
		{name: "memory limits only, app limit becomes its request", podLim: rl{"memory": "512Mi"}, appLim: rl{"memory": "512Mi"},
			wantReq: map[string]string{"cpu": "50m", "memory": "0"}, wantLim: defLim, warned: true},
		{name: "native sidecar counts in every init container's peak", podReq: rl{"cpu": "1"}, appReq: rl{"cpu": "300m"},
			inits:   []any{initContainer("migrate", rl{"cpu": "980m"}, false)},
			wantReq: map[string]string{"cpu": "0", "memory": "64Mi"}, wantLim: defLim, warned: true},
		{name: "regular container does not add to init peaks", ann: noNative, podReq: rl{"cpu": "1"}, appReq: rl{"cpu": "300m"},
			inits:   []any{initContainer("migrate", rl{"cpu": "980m"}, false)},
			wantReq: def, wantLim: defLim},
		{name: "existing native sidecar", podReq: rl{"cpu": "500m"}, appReq: rl{"cpu": "300m"},
			inits:   []any{initContainer("logs", rl{"cpu": "200m"}, true)},
			wantReq: map[string]string{"cpu": "0", "memory": "64Mi"}, wantLim: defLim, warned: true},
		{name: "regular container above the pod memory limit", ann: noNative, podReq: rl{"memory": "200Mi"}, podLim: rl{"memory": "200Mi"},
			wantReq: def, wantLim: nil, warned: true},
		{name: "quantities as numbers", podReq: rl{"cpu": 2, "memory": "1Gi"}, appReq: rl{"cpu": 1},
			wantReq: def, wantLim: defLim},
		{name: "annotated request that fits", ann: map[string]string{AnnotationMemoryRequest: "100Mi"},
			podReq: rl{"memory": "1Gi"}, appReq: rl{"memory": "512Mi"},
			wantReq: map[string]string{"cpu": "50m", "memory": "100Mi"}, wantLim: defLim},
		{name: "annotated request that does not fit", ann: map[string]string{AnnotationCPURequest: "200m"},
			podReq: rl{"cpu": "500m"}, appReq: rl{"cpu": "400m"},
			refused: []string{AnnotationCPURequest, "spec.resources.requests"}},
		{name: "annotated limit above the pod limit", ann: map[string]string{AnnotationMemoryLimit: "512Mi"},
			podLim:  rl{"memory": "256Mi"},
			refused: []string{AnnotationMemoryLimit, "spec.resources.limits"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ann := c.ann
			if ann == nil {
				ann = map[string]string{}
			}
			pod := podLevelPod(ann, c.podReq, c.podLim, c.appReq, c.appLim, c.inits...)
			baseline := asPod(t, pod)
			if errs := admit(t, baseline); len(errs) > 0 {
				t.Fatalf("the test pod itself is invalid: %v", errs)
			}
			cli := injectCLI(t, inj, pod)
			hook := injectWebhook(t, inj, pod)
			if cli.report.Outcome != hook.report.Outcome || cli.report.Reason != hook.report.Reason ||
				!reflect.DeepEqual(cli.report.Warnings, hook.report.Warnings) {
				t.Errorf("`ferry inject` and the webhook decide differently:\n cli     %s %q\n webhook %s %q",
					cli.report, cli.report.Warnings, hook.report, hook.report.Warnings)
			}
			if c.refused != nil {
				if cli.pod != nil {
					t.Fatalf("injected, want a refusal naming %q", c.refused)
				}
				for _, s := range c.refused {
					if !strings.Contains(cli.report.Reason, s) {
						t.Errorf("refusal %q does not name %s", cli.report.Reason, s)
					}
				}
				return
			}
			if cli.pod == nil || hook.pod == nil {
				t.Fatalf("not injected: cli %s, webhook %s", cli.report, hook.report)
			}
			for _, o := range []struct {
				way string
				pod *corev1.Pod
			}{{"ferry inject", cli.pod}, {"webhook", hook.pod}} {
				checkSameBudget(t, o.way, baseline, o.pod)
				f, _ := ferryContainer(&o.pod.Spec)
				if got := listStrings(f.Resources.Requests); !reflect.DeepEqual(got, c.wantReq) {
					t.Errorf("%s: ferry requests %v, want %v", o.way, got, c.wantReq)
				}
				if got := listStrings(f.Resources.Limits); !reflect.DeepEqual(got, c.wantLim) {
					t.Errorf("%s: ferry limits %v, want %v", o.way, got, c.wantLim)
				}
			}
			if got, want := listStrings(resourcesOf(cli.pod).Requests), listStrings(resourcesOf(hook.pod).Requests); !reflect.DeepEqual(got, want) {
				t.Errorf("pod-level requests: `ferry inject` %v, webhook %v", got, want)
			}
			warned := false
			for _, w := range cli.report.Warnings {
				if strings.Contains(w, "spec.resources") {
					warned = true
				}
			}
			if warned != c.warned {
				t.Errorf("warnings %q, want one about spec.resources: %v", cli.report.Warnings, c.warned)
			}
		})
	}
}

// The checker the test above relies on refuses what the API server
// refuses: otherwise a passing test would prove nothing.
func TestPodResourcesCheckerRefuses(t *testing.T) {
	for _, c := range []struct {
		name string
		pod  map[string]any
		want string
	}{
		{"containers over the pod request", podLevelPod(map[string]string{}, rl{"cpu": "500m"}, nil, rl{"cpu": "600m"}, nil),
			"must be greater than or equal to aggregate container requests of 600m"},
		{"init peak over the pod request", podLevelPod(map[string]string{}, rl{"cpu": "500m"}, nil, rl{"cpu": "100m"}, nil,
			initContainer("a", rl{"cpu": "100m"}, true), initContainer("b", rl{"cpu": "450m"}, false)),
			"aggregate container requests of 550m"},
		{"container limit over the pod limit", podLevelPod(map[string]string{}, nil, rl{"memory": "100Mi"}, nil, rl{"memory": "200Mi"}),
			"must be less than or equal to pod limits of 100Mi"},
		{"pod request over the pod limit", podLevelPod(map[string]string{}, rl{"cpu": "2"}, rl{"cpu": "1"}, nil, nil),
			"must be less than or equal to cpu limit of 1"},
	} {
		errs := admit(t, asPod(t, c.pod))
		if !strings.Contains(strings.Join(errs, "\n"), c.want) {
			t.Errorf("%s: objections %q, want %q", c.name, errs, c.want)
		}
	}
}

// Pod-level resources the injector cannot read make it refuse the pod with
// the reason (the API server refuses such a pod too); it never panics and
// never injects on numbers it could not read. Without pod-level resources
// the containers' resources are not read at all, as before.
func TestPodLevelResourcesUnreadable(t *testing.T) {
	inj := newTestInjector(t)
	withSpec := func(edit func(spec, app map[string]any)) map[string]any {
		pod := appPod(map[string]string{})
		spec := pod["spec"].(map[string]any)
		edit(spec, spec["containers"].([]any)[0].(map[string]any))
		return pod
	}
	podLevel := map[string]any{"requests": map[string]any{"cpu": "1"}}
	for _, c := range []struct {
		name   string
		pod    map[string]any
		reason string // "": injected
	}{
		{"spec.resources not an object", withSpec(func(spec, _ map[string]any) { spec["resources"] = "lots" }), "spec.resources"},
		{"pod-level quantity", withSpec(func(spec, _ map[string]any) {
			spec["resources"] = map[string]any{"requests": map[string]any{"cpu": "lots"}}
		}), "spec.resources"},
		{"pod-level null quantity", withSpec(func(spec, _ map[string]any) {
			spec["resources"] = map[string]any{"limits": map[string]any{"memory": nil}}
		}), "spec.resources"},
		{"requests a list", withSpec(func(spec, _ map[string]any) {
			spec["resources"] = map[string]any{"requests": []any{"cpu"}}
		}), "spec.resources"},
		{"container quantity", withSpec(func(spec, app map[string]any) {
			spec["resources"] = podLevel
			app["resources"] = map[string]any{"requests": map[string]any{"cpu": "1.2.3"}}
		}), `spec.containers[0] ("app")`},
		{"container resources not an object", withSpec(func(spec, app map[string]any) {
			spec["resources"] = podLevel
			app["resources"] = 7
		}), `spec.containers[0] ("app")`},
		{"init container restartPolicy a number", withSpec(func(spec, _ map[string]any) {
			spec["resources"] = podLevel
			spec["initContainers"] = []any{map[string]any{"name": "init", "restartPolicy": 1}}
		}), `spec.initContainers[0] ("init")`},
		{"no pod-level resources: containers not read", withSpec(func(_, app map[string]any) {
			app["resources"] = map[string]any{"requests": map[string]any{"cpu": "1.2.3"}}
		}), ""},
		{"spec.resources null", withSpec(func(spec, _ map[string]any) { spec["resources"] = nil }), ""},
		{"only names that are not pod-level", withSpec(func(spec, _ map[string]any) {
			spec["resources"] = map[string]any{"requests": map[string]any{"ephemeral-storage": "1Gi"}}
		}), ""},
	} {
		raw, err := json.Marshal(c.pod)
		if err != nil {
			t.Fatal(err)
		}
		for _, way := range []string{"json", "yaml"} {
			var reps []Report
			if way == "json" {
				_, reps, err = inj.InjectJSON(raw)
			} else {
				_, reps, err = inj.InjectYAML(raw)
			}
			if err != nil || len(reps) != 1 {
				t.Fatalf("%s %s: %v %+v", c.name, way, err, reps)
			}
			r := reps[0]
			switch {
			case c.reason == "" && r.Outcome != Injected:
				t.Errorf("%s (%s): %s", c.name, way, r)
			case c.reason != "" && (r.Outcome != Refused || !strings.Contains(r.Reason, c.reason)):
				t.Errorf("%s (%s): %s, want a refusal naming %s", c.name, way, r, c.reason)
			}
		}
	}
}
