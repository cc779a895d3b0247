package inject

import (
	"encoding/json"
	"fmt"
)

// The few Kubernetes shapes the injector reads and writes, as its own
// types: the objects themselves stay generic (decoded JSON or YAML nodes),
// so fields ferry does not know about pass through untouched, and the
// binary does not carry the Kubernetes API packages, whose init functions
// would run in every `ferry run`. Field names, JSON tags and field order
// follow k8s.io/api/core/v1, so the container ferry writes is encoded
// exactly as corev1.Container would encode it (a test checks this).

// PullPolicy is a container's imagePullPolicy.
type PullPolicy string

// Image pull policies.
const (
	PullAlways       PullPolicy = "Always"
	PullIfNotPresent PullPolicy = "IfNotPresent"
	PullNever        PullPolicy = "Never"
)

// Resources are the ferry container's requests and limits, by resource
// name ("cpu", "memory", ...), as Kubernetes quantities ("50m", "64Mi").
type Resources struct {
	Requests map[string]string
	Limits   map[string]string
}

// resourceList is a parsed Requests or Limits.
type resourceList map[string]quantity

type resourceRequirements struct {
	Limits   resourceList `json:"limits,omitempty"`
	Requests resourceList `json:"requests,omitempty"`
}

func (r resourceRequirements) clone() resourceRequirements {
	c := resourceRequirements{}
	for _, l := range []struct{ from, to *resourceList }{{&r.Limits, &c.Limits}, {&r.Requests, &c.Requests}} {
		if *l.from != nil {
			*l.to = resourceList{}
			for k, v := range *l.from {
				(*l.to)[k] = v
			}
		}
	}
	return c
}

// parseResources reads Resources.
func parseResources(r Resources) (resourceRequirements, error) {
	var out resourceRequirements
	for _, l := range []struct {
		what string
		from map[string]string
		to   *resourceList
	}{{"limit", r.Limits, &out.Limits}, {"request", r.Requests, &out.Requests}} {
		for name, v := range l.from {
			q, err := parseQuantity(v)
			if err != nil {
				return out, fmt.Errorf("%s %s %q: not a quantity such as 100m or 128Mi", name, l.what, v)
			}
			if *l.to == nil {
				*l.to = resourceList{}
			}
			(*l.to)[name] = q
		}
	}
	return out, nil
}

type container struct {
	Name                     string               `json:"name"`
	Image                    string               `json:"image,omitempty"`
	Args                     []string             `json:"args,omitempty"`
	Ports                    []containerPort      `json:"ports,omitempty"`
	Env                      []envVar             `json:"env,omitempty"`
	Resources                resourceRequirements `json:"resources,omitempty"`
	RestartPolicy            string               `json:"restartPolicy,omitempty"`
	LivenessProbe            *probe               `json:"livenessProbe,omitempty"`
	ReadinessProbe           *probe               `json:"readinessProbe,omitempty"`
	StartupProbe             *probe               `json:"startupProbe,omitempty"`
	Lifecycle                *lifecycle           `json:"lifecycle,omitempty"`
	TerminationMessagePolicy string               `json:"terminationMessagePolicy,omitempty"`
	ImagePullPolicy          PullPolicy           `json:"imagePullPolicy,omitempty"`
	SecurityContext          *securityContext     `json:"securityContext,omitempty"`
}

type containerPort struct {
	Name          string `json:"name,omitempty"`
	ContainerPort int32  `json:"containerPort"`
	Protocol      string `json:"protocol,omitempty"`
}

type envVar struct {
	Name      string        `json:"name"`
	Value     string        `json:"value,omitempty"`
	ValueFrom *envVarSource `json:"valueFrom,omitempty"`
}

type envVarSource struct {
	FieldRef     *fieldSelector     `json:"fieldRef,omitempty"`
	SecretKeyRef *secretKeySelector `json:"secretKeyRef,omitempty"`
}

type fieldSelector struct {
	FieldPath string `json:"fieldPath"`
}

type secretKeySelector struct {
	Name string `json:"name,omitempty"`
	Key  string `json:"key"`
}

type probe struct {
	HTTPGet          *httpGetAction `json:"httpGet,omitempty"`
	TimeoutSeconds   int32          `json:"timeoutSeconds,omitempty"`
	PeriodSeconds    int32          `json:"periodSeconds,omitempty"`
	FailureThreshold int32          `json:"failureThreshold,omitempty"`
}

type httpGetAction struct {
	Path   string `json:"path,omitempty"`
	Port   int32  `json:"port"`
	Scheme string `json:"scheme,omitempty"`
}

type lifecycle struct {
	PreStop *lifecycleHandler `json:"preStop,omitempty"`
}

type lifecycleHandler struct {
	Sleep *sleepAction `json:"sleep,omitempty"`
}

type sleepAction struct {
	Seconds int64 `json:"seconds"`
}

type securityContext struct {
	Capabilities             *capabilities   `json:"capabilities,omitempty"`
	RunAsUser                *int64          `json:"runAsUser,omitempty"`
	RunAsGroup               *int64          `json:"runAsGroup,omitempty"`
	RunAsNonRoot             *bool           `json:"runAsNonRoot,omitempty"`
	ReadOnlyRootFilesystem   *bool           `json:"readOnlyRootFilesystem,omitempty"`
	AllowPrivilegeEscalation *bool           `json:"allowPrivilegeEscalation,omitempty"`
	SeccompProfile           *seccompProfile `json:"seccompProfile,omitempty"`
}

type capabilities struct {
	Drop []string `json:"drop,omitempty"`
}

type seccompProfile struct {
	Type string `json:"type"`
}

// podTemplate is what the injector reads of a pod (template): the
// annotations and the parts of the spec that decide the injection. It is
// decoded from the object's JSON; every other field is ignored here and
// kept as it is in the object.
type podTemplate struct {
	Metadata struct {
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
	Spec podSpec `json:"spec"`
}

type podSpec struct {
	InitContainers                []appContainer `json:"initContainers"`
	Containers                    []appContainer `json:"containers"`
	RestartPolicy                 string         `json:"restartPolicy"`
	TerminationGracePeriodSeconds *int64         `json:"terminationGracePeriodSeconds"`
	HostNetwork                   bool           `json:"hostNetwork"`
	OS                            *struct {
		Name string `json:"name"`
	} `json:"os"`
	// Resources are the pod-level resources, read only when set (see
	// podresources.go): a pod without them is injected whatever they hold.
	Resources json.RawMessage `json:"resources"`
}

type appContainer struct {
	Name  string `json:"name"`
	Ports []struct {
		Name          string `json:"name"`
		ContainerPort int32  `json:"containerPort"`
		Protocol      string `json:"protocol"`
	} `json:"ports"`
	// Read only when the pod sets pod-level resources.
	Resources     json.RawMessage `json:"resources"`
	RestartPolicy json.RawMessage `json:"restartPolicy"`
}
