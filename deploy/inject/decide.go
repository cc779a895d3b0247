package inject

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/ferrymesh/ferry/internal/shutdownbounds"
)

// Injector decides, for one Kubernetes object at a time, whether and how to
// add the ferry container. It is safe for concurrent use.
type Injector struct {
	opts Options
}

// New returns an injector with the given defaults.
func New(opts Options) (*Injector, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Injector{opts: o}, nil
}

// workload is a kind whose objects hold a pod template.
type workload struct {
	apiVersion string
	template   []string // path to the pod template; nil: the object is a pod
}

var workloads = map[string]workload{
	"Pod":         {"v1", nil},
	"Deployment":  {"apps/v1", []string{"spec", "template"}},
	"StatefulSet": {"apps/v1", []string{"spec", "template"}},
	"DaemonSet":   {"apps/v1", []string{"spec", "template"}},
	"ReplicaSet":  {"apps/v1", []string{"spec", "template"}},
	"Job":         {"batch/v1", []string{"spec", "template"}},
	"CronJob":     {"batch/v1", []string{"spec", "jobTemplate", "spec", "template"}},
}

// mutation is the change to make to one object: the ferry container goes
// first in initContainers (native sidecar) or in containers, and the
// annotations are set on the pod template.
type mutation struct {
	template    []string
	native      bool
	container   container
	annotations map[string]string
	// podRequests are pod-level requests to write into spec.resources:
	// the ones the API server would default for the pod without ferry
	// (see podresources.go). Empty for a pod the API server already
	// defaulted, as the webhook sees it.
	podRequests map[string]string
}

// decide inspects one object (decoded JSON or YAML) and returns the change
// to make, or nil with the reason in the report.
func (in *Injector) decide(obj map[string]any) (*mutation, Report) {
	kind, _ := obj["kind"].(string)
	apiVersion, _ := obj["apiVersion"].(string)
	meta, _ := obj["metadata"].(map[string]any)
	rep := Report{Kind: kind}
	rep.Namespace, _ = meta["namespace"].(string)
	rep.Name, _ = meta["name"].(string)
	if rep.Name == "" {
		if g, _ := meta["generateName"].(string); g != "" {
			rep.Name = g + "*"
		}
	}
	refuse := func(format string, args ...any) (*mutation, Report) {
		rep.Outcome = Refused
		rep.Reason = fmt.Sprintf(format, args...)
		return nil, rep
	}
	// refuseAll refuses for every reason given: each bad annotation is
	// named in one go.
	refuseAll := func(reasons []string) (*mutation, Report) {
		rep.Outcome = Refused
		rep.Reason = strings.Join(reasons, "; ")
		if len(reasons) > 1 {
			rep.Reasons = reasons
		}
		return nil, rep
	}
	w, ok := workloads[kind]
	if !ok {
		rep.Outcome = Skipped
		rep.Reason = fmt.Sprintf("kind %q holds no pod template", kind)
		if kind == "" {
			rep.Reason = "no kind"
		}
		return nil, rep
	}
	if apiVersion != w.apiVersion {
		rep.Outcome = Skipped
		rep.Reason = fmt.Sprintf("apiVersion %q: ferry injects %s %s", apiVersion, w.apiVersion, kind)
		return nil, rep
	}
	tmpl := obj
	for _, k := range w.template {
		next, ok := tmpl[k].(map[string]any)
		if !ok {
			return refuse("no pod template at %s", strings.Join(w.template, "."))
		}
		tmpl = next
	}
	// The chart's webhook never sees a pod labelled ferry.io/inject=
	// disabled (its default objectSelector), and refuses one it is sent
	// all the same; so does ferry inject, so that both leave it alone.
	// The label is the pod's own: the template's, never the workload's,
	// which the pod does not carry. Checked first, as the API server
	// would not send the pod at all.
	if m, ok := tmpl["metadata"].(map[string]any); ok {
		if l, ok := m["labels"].(map[string]any); ok && l[LabelInject] == InjectDisabled {
			rep.optedOut = true
			return refuse("label %s=%s", LabelInject, InjectDisabled)
		}
	}
	// An annotation written unquoted in YAML is a bool or a number, which
	// Kubernetes refuses: name each rather than leave the decoder's error.
	var notStrings []string
	if m, ok := tmpl["metadata"].(map[string]any); ok {
		if a, ok := m["annotations"].(map[string]any); ok {
			notStrings = append(notStrings, notAString(a, "", "on the pod template")...)
		}
	}
	if w.template != nil {
		if a, ok := meta["annotations"].(map[string]any); ok {
			notStrings = append(notStrings, notAString(a, annotationPrefix, "on the "+kind+"'s own metadata (the workload)")...)
		}
	}
	if len(notStrings) > 0 {
		return refuseAll(notStrings)
	}
	var pod podTemplate
	raw, err := json.Marshal(map[string]any{"metadata": tmpl["metadata"], "spec": tmpl["spec"]})
	if err == nil {
		err = json.Unmarshal(raw, &pod)
	}
	if err != nil {
		return refuse("cannot read the pod template: %v", err)
	}
	ann := map[string]string{}
	if w.template != nil {
		if a, ok := meta["annotations"].(map[string]any); ok {
			for k, v := range a {
				if s, ok := v.(string); ok {
					ann[k] = s
				}
			}
		}
	}
	for k, v := range pod.Metadata.Annotations {
		ann[k] = v
	}
	spec := &pod.Spec

	switch v := strings.TrimSpace(ann[AnnotationInject]); v {
	case "", InjectEnabled:
	case InjectDisabled:
		rep.optedOut = true
		return refuse("annotation %s=%s", AnnotationInject, InjectDisabled)
	default:
		return refuse("invalid annotation %s=%q: want %s or %s", AnnotationInject, v, InjectEnabled, InjectDisabled)
	}
	for _, c := range append(append([]appContainer(nil), spec.InitContainers...), spec.Containers...) {
		if c.Name == ContainerName {
			rep.optedOut = true
			return refuse("already injected: the pod has a container named %q", ContainerName)
		}
	}
	if spec.HostNetwork {
		return refuse("hostNetwork pod: ferry's ports %d, %d and %d would be taken on the node", AdminPort, OutboundPort, InboundPort)
	}
	if spec.OS != nil && spec.OS.Name != "" && spec.OS.Name != "linux" {
		// The ferry image is linux only, and the API server refuses its
		// container's securityContext on a windows pod.
		return refuse("spec.os.name %q: ferry runs on linux only (and the API server refuses the ferry container's securityContext on a windows pod)", spec.OS.Name)
	}
	if len(spec.Containers) == 0 {
		return refuse("the pod has no containers")
	}
	if reason := portOutOfRange(w.template, spec); reason != "" {
		return refuse("%s", reason)
	}
	if reason := portConflict(spec); reason != "" {
		return refuse("%s", reason)
	}
	p, errs := in.opts.makePlan(ann, spec)
	if len(errs) > 0 {
		reasons := make([]string, len(errs))
		for i, err := range errs {
			reasons[i] = err.Error()
		}
		return refuseAll(reasons)
	}
	if p.inboundPort == 0 && len(p.upstreams) == 0 {
		return refuse("nothing to proxy: no %s and no inbound port (the default container declares no TCP port; set %s)",
			AnnotationUpstreams, AnnotationInboundPort)
	}
	var unused []string
	if p.register != nil && p.inboundPort == 0 {
		unused = append(unused, fmt.Sprintf("annotation %s needs an inbound port: Consul would list an address nothing serves (set %s)",
			AnnotationConsulService, AnnotationInboundPort))
	}
	// An annotation the pod would not use is refused, not dropped.
	for _, k := range []string{AnnotationInboundProtocol, AnnotationInboundHost} {
		if _, set := ann[k]; set && p.inboundPort == 0 {
			unused = append(unused, fmt.Sprintf("annotation %s has no effect: the pod has no inbound port (%s is none, or the default container declares no TCP port)",
				k, AnnotationInboundPort))
		}
	}
	if !p.usesConsul() {
		for _, k := range []string{AnnotationConsulAddr, AnnotationConsulTokenSecret} {
			if _, set := ann[k]; set {
				unused = append(unused, fmt.Sprintf("annotation %s has no effect: the pod does not use Consul (every upstream has static endpoints and there is no %s)",
					k, AnnotationConsulService))
			}
		}
	}
	if len(unused) > 0 {
		return refuseAll(unused)
	}
	if isFerryPort(p.inboundPort) {
		return refuse("inbound port %d (%s, else the default container's first port) is one of ferry's own ports (%d, %d, %d)",
			p.inboundPort, AnnotationInboundPort, AdminPort, OutboundPort, InboundPort)
	}
	if period := gracePeriod(spec); p.preStopSleep > period {
		// The API server refuses a sleep action longer than the period
		// (validateSleepAction): the pod would never be created.
		return refuse("ferry's preStop sleep %s (%s, else --pre-stop-sleep) is longer than the pod's terminationGracePeriodSeconds (%s), which the API server refuses: shorten the sleep (\"0s\": no preStop hook) or raise the period",
			p.preStopSleep, AnnotationPreStopSleep, gracePeriodText(spec))
	}
	if !p.native && spec.RestartPolicy != "" && spec.RestartPolicy != "Always" {
		return refuse("%s=false on a pod with restartPolicy %s: a ferry regular container never exits, so the pod would never complete",
			AnnotationNativeSidecar, spec.RestartPolicy)
	}
	podRequests, podWarnings, err := p.fitPodResources(spec)
	if err != nil {
		return refuse("%v", err)
	}
	config, err := p.configYAML()
	if err != nil {
		return refuse("%v", err)
	}
	rep.Warnings = append(warnings(ann, spec, p), podWarnings...)
	rep.Outcome = Injected
	return &mutation{
		template:    w.template,
		native:      p.native,
		container:   p.container(in.opts.ImagePullPolicy, config),
		annotations: map[string]string{AnnotationInjected: p.image},
		podRequests: podRequests,
	}, rep
}

func isFerryPort(p int32) bool { return p == AdminPort || p == OutboundPort || p == InboundPort }

// portOutOfRange names an app container port outside 1-65535, which the
// API server refuses and ferry would take for the default inbound port.
func portOutOfRange(template []string, spec *podSpec) string {
	prefix := ""
	if len(template) > 0 {
		prefix = strings.Join(template, ".") + "."
	}
	for _, l := range []struct {
		name string
		list []appContainer
	}{{"initContainers", spec.InitContainers}, {"containers", spec.Containers}} {
		for i, c := range l.list {
			for j, port := range c.Ports {
				if port.ContainerPort < 1 || port.ContainerPort > 65535 {
					return fmt.Sprintf("container %q: %sspec.%s[%d].ports[%d].containerPort %d is not a port (1-65535), which the API server refuses",
						c.Name, prefix, l.name, i, j, port.ContainerPort)
				}
			}
		}
	}
	return ""
}

// portConflict names an app container that declares one of ferry's ports.
// ferry listens on TCP: the same number over UDP or SCTP is another port
// (a pod's ports are keyed by containerPort and protocol), and no protocol
// is TCP.
func portConflict(spec *podSpec) string {
	for _, c := range append(append([]appContainer(nil), spec.InitContainers...), spec.Containers...) {
		for _, port := range c.Ports {
			if port.Protocol == "UDP" || port.Protocol == "SCTP" {
				continue
			}
			if isFerryPort(port.ContainerPort) {
				return fmt.Sprintf("container %q declares port %d, which ferry listens on", c.Name, port.ContainerPort)
			}
		}
	}
	return ""
}

// warnings lists what is worth telling about an injection that goes ahead.
func warnings(ann map[string]string, spec *podSpec, p *plan) []string {
	var out []string
	var unknown []string
	for k := range ann {
		if strings.HasPrefix(k, annotationPrefix) && !knownAnnotations[k] {
			unknown = append(unknown, k)
		}
	}
	sort.Strings(unknown)
	for _, k := range unknown {
		out = append(out, fmt.Sprintf("unknown annotation %s ignored (known: %s)", k, strings.Join(KnownAnnotations(), ", ")))
	}
	grace := gracePeriod(spec)
	// After the grace ferry may still wait for the exchanges it cut to be
	// reported, flush telemetry, then write out its buffered log lines,
	// before it exits.
	const report, flush, logs = shutdownbounds.ReportWait, shutdownbounds.TelemetryFlush, shutdownbounds.LogClose
	if need := p.preStopSleep + p.shutdownDelay + p.shutdownGrace + report + flush + logs; need > grace {
		out = append(out, fmt.Sprintf("ferry's shutdown (pre-stop sleep %s + delay %s + grace %s + up to %s reporting cut exchanges + up to %s flushing telemetry + up to %s writing out log lines = %s) is longer than the pod's terminationGracePeriodSeconds (%s): kubelet may kill ferry mid-drain; not counted: the app containers' own exit, which runs in the same period (a native sidecar is stopped only after it)",
			p.preStopSleep, p.shutdownDelay, p.shutdownGrace, report, flush, logs, need, gracePeriodText(spec)))
	}
	return out
}

// gracePeriod is the pod's terminationGracePeriodSeconds as the API
// server takes it: 30s when unset (its default), 1s when negative (its
// defaulting reads a negative period as 1 since Kubernetes 1.27), and the
// longest time.Duration for more seconds than that holds (which would
// wrap around in nanoseconds).
func gracePeriod(spec *podSpec) time.Duration {
	if spec.TerminationGracePeriodSeconds == nil {
		return 30 * time.Second
	}
	switch s := *spec.TerminationGracePeriodSeconds; {
	case s < 0:
		return time.Second
	case s > int64(math.MaxInt64/time.Second):
		return math.MaxInt64
	default:
		return time.Duration(s) * time.Second
	}
}

// gracePeriodText words gracePeriod for a message.
func gracePeriodText(spec *podSpec) string {
	if s := spec.TerminationGracePeriodSeconds; s != nil && *s < 0 {
		return fmt.Sprintf("%s: the API server reads a negative period as 1", gracePeriod(spec))
	}
	return gracePeriod(spec).String()
}

// notAString names every annotation (by key, among those starting with
// prefix) whose value is not a string, in key order, and says how to
// write each. A null value is left alone: Kubernetes reads it as empty.
func notAString(ann map[string]any, prefix, where string) []string {
	keys := make([]string, 0, len(ann))
	for k := range ann {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out []string
	for _, k := range keys {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		var what string
		switch v := ann[k].(type) {
		case nil, string:
			continue
		case bool:
			what = fmt.Sprintf("the bool %v", v)
		case json.Number, int, int64, uint64, float64:
			what = fmt.Sprintf("the number %v", v)
		case map[string]any:
			what = "a mapping"
		case []any:
			what = "a list"
		default:
			what = fmt.Sprintf("a %T", v)
		}
		if strings.HasPrefix(what, "the ") {
			out = append(out, fmt.Sprintf("annotation %s %s is %s, not a string as Kubernetes requires: quote it (%s: \"%v\")", k, where, what, k, ann[k]))
			continue
		}
		out = append(out, fmt.Sprintf("annotation %s %s is %s, not a string as Kubernetes requires", k, where, what))
	}
	return out
}
