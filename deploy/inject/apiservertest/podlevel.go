// Package apiservertest holds, for the tests of ferry's injector and
// webhook, what the Kubernetes API server does to a pod that sets
// pod-level resources (spec.resources, the PodLevelResources feature):
// the defaulting it applies before admission webhooks see the pod and
// again after their patches, and the validation the pod must then pass.
// It is written from the API server's source (pkg/apis/core/v1/defaults.go,
// pkg/apis/core/validation/validation.go, and
// k8s.io/component-helpers/resource), not copied from it, and it covers
// only the resource rules. It imports k8s.io/api, so only tests may link
// it: the ferry binary never does.
package apiservertest

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// IsPodLevelResource reports whether Kubernetes accepts a resource name in
// spec.resources: cpu, memory and hugepages-* (IsSupportedPodLevelResource
// in k8s.io/component-helpers/resource).
func IsPodLevelResource(name corev1.ResourceName) bool {
	return name == corev1.ResourceCPU || name == corev1.ResourceMemory ||
		strings.HasPrefix(string(name), corev1.ResourceHugePagesPrefix)
}

// DefaultPod applies the resource defaulting of SetDefaults_Pod: a
// container (regular or init) with a limit but no request for a resource
// gets the limit as its request; then, when the pod sets pod-level limits
// (defaultPodRequests), a pod-level request that is absent becomes the
// containers' aggregate request for that resource when some container
// requests it (cpu and memory only: hugepages are not overcommittable),
// else the pod-level limit.
//
// The API server runs this before the mutating webhooks see the pod, and
// again on the pod a webhook's patch produced. Not mirrored: defaulting
// pod-level limits from the containers' limits, proposed upstream (issue
// 136120) but not part of the API ferry targets.
func DefaultPod(pod *corev1.Pod) {
	for _, list := range [][]corev1.Container{pod.Spec.Containers, pod.Spec.InitContainers} {
		for i := range list {
			r := &list[i].Resources
			if r.Limits == nil {
				continue
			}
			if r.Requests == nil {
				r.Requests = corev1.ResourceList{}
			}
			for name, q := range r.Limits {
				if _, ok := r.Requests[name]; !ok {
					r.Requests[name] = q.DeepCopy()
				}
			}
		}
	}
	res := pod.Spec.Resources
	if res == nil || len(res.Limits) == 0 {
		return
	}
	reqs := res.Requests
	if reqs == nil {
		reqs = corev1.ResourceList{}
	}
	for name, q := range AggregateRequests(&pod.Spec) {
		overcommit := !strings.HasPrefix(string(name), corev1.ResourceHugePagesPrefix)
		if _, ok := reqs[name]; !ok && IsPodLevelResource(name) && overcommit {
			reqs[name] = q.DeepCopy()
		}
	}
	for name, q := range res.Limits {
		if _, ok := reqs[name]; !ok && IsPodLevelResource(name) {
			reqs[name] = q.DeepCopy()
		}
	}
	if len(reqs) > 0 {
		res.Requests = reqs
	}
}

// AggregateRequests is what the containers of a pod request together, as
// AggregateContainerRequests computes it (the sidecar-containers formula):
// the regular containers and the restartable init containers (native
// sidecars) add up; each other init container runs alone beside the
// restartable init containers declared before it, and the pod needs the
// largest of those peaks or the sum, whichever is more.
func AggregateRequests(spec *corev1.PodSpec) corev1.ResourceList {
	sum := corev1.ResourceList{}
	for _, c := range spec.Containers {
		add(sum, c.Resources.Requests)
	}
	sidecars := corev1.ResourceList{}
	peak := corev1.ResourceList{}
	for _, c := range spec.InitContainers {
		var use corev1.ResourceList
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			add(sum, c.Resources.Requests)
			add(sidecars, c.Resources.Requests)
			use = sidecars
		} else {
			use = corev1.ResourceList{}
			add(use, c.Resources.Requests)
			add(use, sidecars)
		}
		for name, q := range use {
			if p, ok := peak[name]; !ok || q.Cmp(p) > 0 {
				peak[name] = q.DeepCopy()
			}
		}
	}
	for name, q := range peak {
		if s, ok := sum[name]; !ok || q.Cmp(s) > 0 {
			sum[name] = q.DeepCopy()
		}
	}
	return sum
}

func add(to, from corev1.ResourceList) {
	for name, q := range from {
		v := to[name]
		v.Add(q)
		to[name] = v
	}
}

// ValidatePodResources returns the API server's objections to the
// resources of a (defaulted) pod spec, in its words, sorted; none when it
// accepts them:
//
//   - every container's request is at most its limit
//     (ValidateContainerResourceRequirements: "must be less than or equal
//     to <resource> limit");
//   - with pod-level resources (validatePodResources): names are cpu,
//     memory or hugepages-*; each pod-level request is at most the
//     pod-level limit; each pod-level request is at least what the
//     containers request together ("must be greater than or equal to
//     aggregate container requests of ...", validatePodResourceConsistency;
//     a resource the pod does not request at pod level is not compared,
//     since Kubernetes 1.33, kubernetes/kubernetes#130131 and #132551);
//     and each regular container's limit is at most the pod-level limit
//     ("must be less than or equal to pod limits of ..."; init containers,
//     native sidecars included, are not compared).
func ValidatePodResources(spec *corev1.PodSpec) []string {
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	for _, l := range []struct {
		path string
		cs   []corev1.Container
	}{{"spec.initContainers", spec.InitContainers}, {"spec.containers", spec.Containers}} {
		for i, c := range l.cs {
			for name, req := range c.Resources.Requests {
				if req.Sign() < 0 {
					bad("%s[%d].resources.requests[%s]: Invalid value: %q: must be greater than or equal to 0", l.path, i, name, req.String())
				}
				if lim, ok := c.Resources.Limits[name]; ok && req.Cmp(lim) > 0 {
					bad("%s[%d].resources.requests: Invalid value: %q: must be less than or equal to %s limit of %s", l.path, i, req.String(), name, lim.String())
				}
			}
		}
	}
	res := spec.Resources
	if res == nil {
		return sorted(errs)
	}
	for _, l := range []struct {
		what string
		list corev1.ResourceList
	}{{"requests", res.Requests}, {"limits", res.Limits}} {
		for name := range l.list {
			if !IsPodLevelResource(name) {
				bad("spec.resources.%s[%s]: Unsupported value: %q: supported values: \"cpu\", \"memory\", \"hugepages-*\"", l.what, name, name)
			}
		}
	}
	for name, req := range res.Requests {
		if lim, ok := res.Limits[name]; ok && req.Cmp(lim) > 0 {
			bad("spec.resources.requests: Invalid value: %q: must be less than or equal to %s limit of %s", req.String(), name, lim.String())
		}
	}
	for name, agg := range AggregateRequests(spec) {
		if !IsPodLevelResource(name) {
			continue
		}
		if req, ok := res.Requests[name]; ok && agg.Cmp(req) > 0 {
			bad("spec.resources.requests[%s]: Invalid value: %q: must be greater than or equal to aggregate container requests of %s", name, req.String(), agg.String())
		}
	}
	for i, c := range spec.Containers {
		for name, lim := range c.Resources.Limits {
			if podLim, ok := res.Limits[name]; ok && lim.Cmp(podLim) > 0 {
				bad("spec.resources.containers[%d][%s].limits: Invalid value: %q: must be less than or equal to pod limits of %s", i, name, lim.String(), podLim.String())
			}
		}
	}
	return sorted(errs)
}

func sorted(s []string) []string {
	sort.Strings(s)
	return s
}
