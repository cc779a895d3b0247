package inject

import "sort"

// Annotations read from the pod template (and, for workloads, from the
// workload's own metadata; the template wins). Every one is optional.
const (
	// AnnotationInject is "enabled" (the default) or "disabled".
	AnnotationInject = "ferry.io/inject"
	// AnnotationUpstreams lists the upstream services the app calls through
	// ferry's outbound listener, 127.0.0.1:15001. See ParseUpstreams for the
	// syntax, e.g. "files; api=/api; search=search.internal/v2 tags=v2".
	AnnotationUpstreams = "ferry.io/upstreams"
	// AnnotationInboundPort is the app port ferry's inbound listener
	// (0.0.0.0:15006) forwards to, as a number (plain digits 1-65535, no
	// sign or leading zero) or a container port name; "none" turns inbound
	// off. Default: the first TCP port of the default
	// container (kubectl.kubernetes.io/default-container, else the first).
	AnnotationInboundPort = "ferry.io/inbound-port"
	// AnnotationInboundProtocol is spoken to the app: auto (default), http1
	// or h2c.
	AnnotationInboundProtocol = "ferry.io/inbound-protocol"
	// AnnotationInboundHost is where the app listens for ferry's inbound
	// listener: an IP address or host name, or $(POD_IP) for an app that
	// listens on the pod's address only. Default 127.0.0.1; ::1 for an app
	// on IPv6 loopback alone.
	AnnotationInboundHost = "ferry.io/inbound-host"
	// AnnotationConsulService registers the pod in Consul under this name,
	// at $(POD_IP):15006. Default: no registration.
	AnnotationConsulService = "ferry.io/consul-service"
	// AnnotationConsulTags are the registration's tags, comma-separated.
	AnnotationConsulTags = "ferry.io/consul-tags"
	// AnnotationConsulMeta is extra registration meta, "k=v,k2=v2". ferry
	// always adds k8s-namespace and k8s-pod.
	AnnotationConsulMeta = "ferry.io/consul-meta"
	// AnnotationConsulAddr is the Consul agent's HTTP address (becomes
	// CONSUL_HTTP_ADDR). Default: Options.ConsulAddr, the node's agent at
	// $(HOST_IP):8500.
	AnnotationConsulAddr = "ferry.io/consul-addr"
	// AnnotationConsulTokenSecret is "secret-name:key": CONSUL_HTTP_TOKEN is
	// read from that Secret key.
	AnnotationConsulTokenSecret = "ferry.io/consul-token-secret"
	// AnnotationOTelEndpoint sets OTEL_EXPORTER_OTLP_ENDPOINT. Default:
	// Options.OTelEndpoint (none: no export).
	AnnotationOTelEndpoint = "ferry.io/otel-endpoint"
	// AnnotationImage overrides Options.Image.
	AnnotationImage = "ferry.io/proxy-image"
	// Resource annotations override Options.Resources, e.g. "100m", "128Mi".
	AnnotationCPURequest    = "ferry.io/proxy-cpu-request"
	AnnotationCPULimit      = "ferry.io/proxy-cpu-limit"
	AnnotationMemoryRequest = "ferry.io/proxy-memory-request"
	AnnotationMemoryLimit   = "ferry.io/proxy-memory-limit"
	// AnnotationNativeSidecar is "true" (default: ferry is an init container
	// with restartPolicy Always, and the app containers start only once
	// ferry's startup probe saw /ready) or "false" (ferry is the first
	// regular container; nothing holds the app until ferry is ready).
	AnnotationNativeSidecar = "ferry.io/native-sidecar"
	// AnnotationPreStopSleep keeps ferry serving this long after the pod
	// starts terminating, before it gets SIGTERM ("5s" or "5"; whole
	// seconds). Default Options.PreStopSleep.
	AnnotationPreStopSleep = "ferry.io/pre-stop-sleep"
	// AnnotationShutdownDelay and AnnotationShutdownGrace set ferry's
	// shutdown.delay (serve with /ready 503) and shutdown.grace (in-flight
	// requests finish). Defaults Options.ShutdownDelay / ShutdownGrace.
	AnnotationShutdownDelay = "ferry.io/shutdown-delay"
	AnnotationShutdownGrace = "ferry.io/shutdown-grace"
	// AnnotationLogLevel is ferry's --log-level: debug, info (default), warn
	// or error.
	AnnotationLogLevel = "ferry.io/log-level"

	// AnnotationInjected is written by the injector on the pod template:
	// the image it injected. It is informational; the ferry container
	// itself is what marks a pod as injected.
	AnnotationInjected = "ferry.io/injected"
)

// annotationPrefix is the prefix every ferry annotation starts with; an
// unknown key under it is reported as a warning (most likely a typo).
const annotationPrefix = "ferry.io/"

var knownAnnotations = map[string]bool{
	AnnotationInject: true, AnnotationUpstreams: true, AnnotationInboundPort: true,
	AnnotationInboundProtocol: true, AnnotationInboundHost: true, AnnotationConsulService: true, AnnotationConsulTags: true,
	AnnotationConsulMeta: true, AnnotationConsulAddr: true, AnnotationConsulTokenSecret: true,
	AnnotationOTelEndpoint: true, AnnotationImage: true, AnnotationCPURequest: true,
	AnnotationCPULimit: true, AnnotationMemoryRequest: true, AnnotationMemoryLimit: true,
	AnnotationNativeSidecar: true, AnnotationPreStopSleep: true, AnnotationShutdownDelay: true,
	AnnotationShutdownGrace: true, AnnotationLogLevel: true, AnnotationInjected: true,
}

// KnownAnnotations returns every annotation the injector reads or writes,
// sorted.
func KnownAnnotations() []string {
	out := make([]string, 0, len(knownAnnotations))
	for k := range knownAnnotations {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// LabelInject, a pod label, set to InjectDisabled leaves the pod alone,
// as the annotation does: the chart's webhook objectSelector skips such a
// pod by default, and the injector refuses it too.
const LabelInject = "ferry.io/inject"

// Values of AnnotationInject (and InjectDisabled of LabelInject).
const (
	InjectEnabled  = "enabled"
	InjectDisabled = "disabled"
)
