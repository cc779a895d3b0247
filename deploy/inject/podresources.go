package inject

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/big"
	"sort"
	"strings"
)

// Pod-level resources (spec.resources, Kubernetes' PodLevelResources,
// beta from 1.34) give the whole pod a cpu and memory budget. The API
// server refuses a pod whose containers request together more than a
// pod-level request, or whose regular container has a limit above a
// pod-level limit (validatePodResourceConsistency in
// pkg/apis/core/validation), counting init containers the way the
// scheduler does: native sidecars add to everything, each other init
// container runs beside the sidecars declared before it. Adding ferry's
// own requests to such a pod could make every pod of the workload fail to
// be created. So, for each resource the pod budgets at pod level:
//
//   - ferry keeps its request when the budget leaves room for it beside
//     the containers; else it requests 0 and shares the pod's, with a
//     warning that says how much to raise the budget by. Sharing rather
//     than refusing because a refusal leaves the pod without ferry (the
//     webhook still lets it start), so its calls through ferry fail,
//     while a ferry that shares only loses its reservation inside a
//     budget that still bounds the whole pod.
//   - ferry drops its limit when it is above the pod-level limit: the pod's
//     limit bounds ferry anyway, and the API server refuses a regular
//     container's limit above it.
//   - A request or limit set by annotation is the user's explicit demand:
//     when it cannot be met the pod is refused naming the annotation and
//     the field, as any annotation the pod cannot use is.
//
// The budget is the one the API server validates against: when the pod
// sets pod-level limits, a pod-level request it leaves out defaults to
// what the containers request together, else to the limit
// (defaultPodRequests in pkg/apis/core/v1/defaults.go). The webhook sees
// the pod after that defaulting, `ferry inject` before it, so the injector
// applies it itself: both decide on the same numbers. And because the API
// server would default again from containers that now include ferry,
// `ferry inject` writes such a defaulted request into spec.resources:
// ferry never changes the pod's budget (the webhook's pod already has it).

// podResources is a resources field as the API server reads it:
// quantities written as strings or as JSON numbers.
type podResources struct {
	Requests podResourceList `json:"requests"`
	Limits   podResourceList `json:"limits"`
}

type podResourceList map[string]quantity

func (l *podResourceList) UnmarshalJSON(b []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	*l = podResourceList{}
	for name, v := range raw {
		s := string(v)
		if len(v) > 0 && v[0] == '"' {
			if err := json.Unmarshal(v, &s); err != nil {
				return err
			}
		}
		q, err := parseQuantity(s)
		if err != nil {
			return fmt.Errorf("%s %s: %v", name, v, err)
		}
		(*l)[name] = q
	}
	return nil
}

// decodeResources reads a raw resources field; absent or null is empty.
func decodeResources(raw json.RawMessage) (podResources, error) {
	var r podResources
	if len(raw) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return r, nil
	}
	err := json.Unmarshal(raw, &r)
	return r, err
}

// isPodLevelResource is a name Kubernetes accepts in spec.resources.
func isPodLevelResource(name string) bool {
	return name == "cpu" || name == "memory" || strings.HasPrefix(name, "hugepages-")
}

// podContainer is one container's requests, as the API server counts
// them: a limit without a request is also the request (SetDefaults_Pod).
type podContainer struct {
	requests    map[string]*big.Int
	restartable bool // a native sidecar
}

func effectiveRequests(req, lim map[string]quantity) map[string]*big.Int {
	out := map[string]*big.Int{}
	for name, q := range lim {
		out[name] = q.nanos
	}
	for name, q := range req {
		out[name] = q.nanos
	}
	return out
}

// aggregate is what the containers request together of one resource
// (AggregateContainerRequests): regular containers and native sidecars
// add up, each other init container runs beside the sidecars before it,
// and the pod needs the larger. ok is false when no container names it.
func aggregate(name string, inits, regular []podContainer) (sum *big.Int, ok bool) {
	sum = new(big.Int)
	for _, c := range regular {
		if q, has := c.requests[name]; has {
			sum.Add(sum, q)
			ok = true
		}
	}
	sidecars := new(big.Int)
	peak := new(big.Int)
	for _, c := range inits {
		q, has := c.requests[name]
		if !has {
			q = new(big.Int)
		}
		ok = ok || has
		use := new(big.Int)
		if c.restartable {
			sum.Add(sum, q)
			sidecars.Add(sidecars, q)
			use.Set(sidecars)
		} else {
			use.Add(q, sidecars)
		}
		if use.Cmp(peak) > 0 {
			peak = use
		}
	}
	if peak.Cmp(sum) > 0 {
		sum = peak
	}
	return sum, ok
}

// nanosQuantity writes a value the way the API server would.
func nanosQuantity(n *big.Int, name string) string {
	f := decimalSI
	if name != "cpu" {
		f = binarySI
	}
	return canonicalQuantity(n, f)
}

// fitPodResources fits ferry's resources (p.resources) to the pod-level
// resources of spec, as described above. It returns the defaulted
// pod-level requests to write (by name, as quantities), the warnings, or
// the reason to refuse the pod.
func (p *plan) fitPodResources(spec *podSpec) (write map[string]string, warns []string, err error) {
	pod, err := decodeResources(spec.Resources)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot read spec.resources (the pod-level resources): %v; the API server refuses it too", err)
	}
	governs := false
	for _, l := range []podResourceList{pod.Requests, pod.Limits} {
		for name := range l {
			governs = governs || isPodLevelResource(name)
		}
	}
	if !governs {
		return nil, nil, nil
	}
	var inits, regular []podContainer
	for _, l := range []struct {
		path string
		cs   []appContainer
		to   *[]podContainer
	}{{"spec.initContainers", spec.InitContainers, &inits}, {"spec.containers", spec.Containers, &regular}} {
		for i, c := range l.cs {
			r, err := decodeResources(c.Resources)
			var policy string
			if err == nil && len(c.RestartPolicy) > 0 {
				err = json.Unmarshal(c.RestartPolicy, &policy)
			}
			if err != nil {
				return nil, nil, fmt.Errorf("cannot read %s[%d] (%q)'s resources, which a pod with pod-level resources must fit: %v; the API server refuses it too", l.path, i, c.Name, err)
			}
			*l.to = append(*l.to, podContainer{requests: effectiveRequests(r.Requests, r.Limits), restartable: policy == "Always"})
		}
	}

	// The pod-level requests the API server validates against.
	budget := map[string]quantity{}
	for name, q := range pod.Requests {
		budget[name] = q
	}
	if len(pod.Limits) > 0 {
		names := map[string]bool{}
		for _, c := range append(append([]podContainer(nil), inits...), regular...) {
			for name := range c.requests {
				names[name] = true
			}
		}
		for name := range names {
			if _, set := budget[name]; set || !isPodLevelResource(name) || strings.HasPrefix(name, "hugepages-") {
				continue
			}
			sum, _ := aggregate(name, inits, regular)
			budget[name] = quantity{nanos: sum, text: nanosQuantity(sum, name)}
		}
		for name, q := range pod.Limits {
			if _, set := budget[name]; !set && isPodLevelResource(name) {
				budget[name] = q
			}
		}
	}

	res := &p.resources
	names := map[string]bool{}
	for name := range res.Requests {
		names[name] = true
	}
	for name := range res.Limits {
		names[name] = true
	}
	sorted := make([]string, 0, len(names))
	for name := range names {
		sorted = append(sorted, name)
	}
	sort.Strings(sorted)
	for _, name := range sorted {
		budgetReq, hasReq := budget[name]
		podReq := budgetReq.nanos
		podLim, hasLim := pod.Limits[name]
		if !isPodLevelResource(name) || (!hasReq && !hasLim) {
			continue
		}
		if strings.HasPrefix(name, "hugepages-") {
			return nil, nil, fmt.Errorf("ferry's resources name %s, which the pod budgets at pod level (spec.resources): ferry does not fit hugepages into a pod-level budget", name)
		}
		if lim, ok := res.Limits[name]; ok && hasLim && lim.Cmp(podLim) > 0 {
			if key, ok := p.annotated["limits/"+name]; ok {
				return nil, nil, fmt.Errorf("annotation %s=%s is above the pod-level limit spec.resources.limits.%s %s: ferry could never use it (and the API server refuses a regular container's limit above the pod's); lower the annotation or raise the pod-level limit",
					key, lim, name, podLim)
			}
			delete(res.Limits, name)
			warns = append(warns, fmt.Sprintf("ferry's %s limit %s is above the pod-level limit spec.resources.limits.%s %s: ferry gets no %s limit of its own, the pod's bounds it",
				name, lim, name, podLim, name))
		}
		req, ok := res.Requests[name]
		from := "requests/" + name
		if !ok {
			// The API server would make ferry's limit its request.
			req, ok = res.Limits[name]
			from = "limits/" + name
		}
		if !ok || !hasReq {
			continue
		}
		ferry := podContainer{requests: map[string]*big.Int{name: req.nanos}, restartable: p.native}
		without, _ := aggregate(name, inits, regular)
		var with *big.Int
		if p.native {
			with, _ = aggregate(name, append([]podContainer{ferry}, inits...), regular)
		} else {
			with, _ = aggregate(name, inits, append([]podContainer{ferry}, regular...))
		}
		if with.Cmp(podReq) <= 0 {
			continue
		}
		short := nanosQuantity(new(big.Int).Sub(with, podReq), name)
		if key, ok := p.annotated[from]; ok {
			return nil, nil, fmt.Errorf("annotation %s=%s does not fit the pod-level %s request %s (spec.resources.requests.%s, as written or as the API server defaults it from spec.resources.limits) beside the containers' %s: the API server refuses a pod whose containers request more; lower or remove the annotation (ferry then shares the pod's %s), or raise spec.resources.requests.%s by %s",
				key, req, name, budgetReq, name, nanosQuantity(without, name), name, name, short)
		}
		zero, _ := parseQuantity("0")
		if res.Requests == nil {
			res.Requests = resourceList{}
		}
		res.Requests[name] = zero
		warns = append(warns, fmt.Sprintf("the pod-level %s request %s (spec.resources.requests.%s, as written or as the API server defaults it from spec.resources.limits) leaves no room for ferry's %s beside the containers' %s: ferry requests 0 and shares the pod's %s; raise spec.resources.requests.%s by %s to reserve it",
			name, budgetReq, name, req, nanosQuantity(without, name), name, name, short))
	}

	// A defaulted pod-level request is written out when ferry names the
	// resource: the API server would otherwise default it again, counting
	// ferry.
	for name, q := range budget {
		if _, written := pod.Requests[name]; written {
			continue
		}
		_, inReq := res.Requests[name]
		_, inLim := res.Limits[name]
		if inReq || inLim {
			if write == nil {
				write = map[string]string{}
			}
			write[name] = q.String()
		}
	}
	return write, warns, nil
}
