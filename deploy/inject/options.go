package inject

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Ports ferry listens on inside an injected pod. The app calls upstreams
// through OutboundPort on loopback; the mesh reaches the app through
// InboundPort; kubelet probes AdminPort.
const (
	AdminPort    = 15000
	OutboundPort = 15001
	InboundPort  = 15006
)

// ContainerName is the name of the injected container. A pod that already
// has a container of this name counts as injected.
const ContainerName = "ferry"

// ConfigEnv is the environment variable that carries ferry's config YAML;
// the container runs `ferry run --config-env FERRY_CONFIG`.
const ConfigEnv = "FERRY_CONFIG"

// DefaultImage is the image injected when Options.Image is empty.
const DefaultImage = "ferrymesh/ferry:latest"

// DefaultConsulAddr reaches the Consul agent on the pod's node: HOST_IP is
// set from the downward API (status.hostIP) and expanded by kubelet.
const DefaultConsulAddr = "$(HOST_IP):8500"

// Defaults of the lifecycle settings. They fit the default pod
// terminationGracePeriodSeconds of 30s with what ferry spends after the
// grace (see package shutdownbounds): 5s + 2s + 14s + 2s + 5s + 2s. The app
// containers' own exit also runs inside that period and is not counted.
const (
	DefaultPreStopSleep  = 5 * time.Second
	DefaultShutdownDelay = 2 * time.Second
	DefaultShutdownGrace = 14 * time.Second
)

// Options are the injector's defaults; annotations override them per pod.
// The zero value is usable: every empty field takes the documented default.
type Options struct {
	// Image of the ferry container. Default DefaultImage.
	Image string
	// ImagePullPolicy of the ferry container. Empty: Kubernetes' default.
	ImagePullPolicy PullPolicy
	// ConsulAddr becomes CONSUL_HTTP_ADDR when the config uses Consul.
	// Default DefaultConsulAddr (the node's agent).
	ConsulAddr string
	// OTelEndpoint becomes OTEL_EXPORTER_OTLP_ENDPOINT. Empty: not set.
	OTelEndpoint string
	// Resources of the ferry container, as Kubernetes quantities (New
	// refuses one that does not parse, or a limit below its request; the
	// container gets their canonical form, "0.5" as "500m"). Nil: requests
	// cpu 50m, memory 64Mi; limit memory 256Mi (no CPU limit, so ferry is
	// never throttled mid-stream).
	Resources *Resources
	// DisableNativeSidecar makes "false" the default of
	// AnnotationNativeSidecar (for clusters older than Kubernetes 1.29).
	DisableNativeSidecar bool
	// PreStopSleep, ShutdownDelay and ShutdownGrace are the lifecycle
	// defaults. Zero: DefaultPreStopSleep, DefaultShutdownDelay,
	// DefaultShutdownGrace. A negative value means zero, except for
	// ShutdownGrace, where it is an error (ferry reads a grace of 0 as
	// its default, 30s).
	PreStopSleep  time.Duration
	ShutdownDelay time.Duration
	ShutdownGrace time.Duration

	resources resourceRequirements // Resources, parsed by withDefaults
}

// DefaultResources returns the ferry container's default resources.
func DefaultResources() Resources {
	return Resources{
		Requests: map[string]string{"cpu": "50m", "memory": "64Mi"},
		Limits:   map[string]string{"memory": "256Mi"},
	}
}

// withDefaults fills the empty fields and checks the rest.
func (o Options) withDefaults() (Options, error) {
	if o.Image == "" {
		o.Image = DefaultImage
	}
	if o.ConsulAddr == "" {
		o.ConsulAddr = DefaultConsulAddr
	}
	if o.Resources == nil {
		r := DefaultResources()
		o.Resources = &r
	}
	res, err := parseResources(*o.Resources)
	if err == nil {
		err = checkResources(res)
	}
	if err != nil {
		return o, fmt.Errorf("inject options: resources: %w", err)
	}
	o.resources = res
	o.PreStopSleep = defaultDuration(o.PreStopSleep, DefaultPreStopSleep)
	o.ShutdownDelay = defaultDuration(o.ShutdownDelay, DefaultShutdownDelay)
	o.ShutdownGrace = defaultDuration(o.ShutdownGrace, DefaultShutdownGrace)
	if o.ShutdownGrace == 0 {
		return o, fmt.Errorf("inject options: shutdown grace: %w", errZeroGrace)
	}
	if o.PreStopSleep%time.Second != 0 {
		return o, &OptionError{"PreStopSleep", "pre-stop sleep", o.PreStopSleep.String(), errors.New("not a whole number of seconds")}
	}
	if o.OTelEndpoint != "" {
		if err := checkOTelEndpoint(o.OTelEndpoint); err != nil {
			return o, &OptionError{"OTelEndpoint", "OTel endpoint", o.OTelEndpoint, err}
		}
	}
	if err := checkConsulAddr(o.ConsulAddr); err != nil {
		return o, &OptionError{"ConsulAddr", "Consul address", o.ConsulAddr, err}
	}
	if strings.ContainsAny(o.Image, " \t\n$") {
		return o, &OptionError{"Image", "image", o.Image, errors.New("not an image reference")}
	}
	switch o.ImagePullPolicy {
	case "", PullAlways, PullIfNotPresent, PullNever:
	default:
		return o, &OptionError{"ImagePullPolicy", "image pull policy", string(o.ImagePullPolicy), errors.New("want Always, IfNotPresent or Never")}
	}
	return o, nil
}

// OptionError is New's refusal of one option's value. Field names the
// Options field, so that a command can name its own flag for it.
type OptionError struct {
	Field string // "OTelEndpoint", "ConsulAddr", "Image", "ImagePullPolicy", "PreStopSleep"
	what  string // the option in words
	Value string
	Err   error
}

func (e *OptionError) Error() string {
	return fmt.Sprintf("inject options: %s %q: %v", e.what, e.Value, e.Err)
}

func (e *OptionError) Unwrap() error { return e.Err }

// errZeroGrace refuses a shutdown grace of zero, which the config ferry
// reads cannot express.
var errZeroGrace = errors.New("must be more than 0 (ferry reads a shutdown.grace of 0 as its default, 30s)")

func defaultDuration(d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0:
		return 0
	}
	return d
}

// checkResources rejects a limit below its request.
func checkResources(r resourceRequirements) error {
	for name, req := range r.Requests {
		if lim, ok := r.Limits[name]; ok && lim.Cmp(req) < 0 {
			return fmt.Errorf("%s limit %s is below its request %s", name, lim.String(), req.String())
		}
	}
	return nil
}
