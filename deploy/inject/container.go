package inject

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// nonRootUID is the distroless "nonroot" user the ferry image runs as.
const nonRootUID = 65532

// container builds the ferry container of a plan.
func (p *plan) container(pullPolicy corev1.PullPolicy, config string) corev1.Container {
	args := []string{"run", "--config-env", ConfigEnv}
	if p.logLevel != "" {
		args = append(args, "--log-level", p.logLevel)
	}
	ports := []corev1.ContainerPort{{Name: "ferry-admin", ContainerPort: AdminPort, Protocol: corev1.ProtocolTCP}}
	if p.inboundPort > 0 {
		ports = append(ports, corev1.ContainerPort{Name: "ferry-inbound", ContainerPort: InboundPort, Protocol: corev1.ProtocolTCP})
	}
	probe := func(path string, period, failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: path, Port: intstr.FromInt32(AdminPort), Scheme: corev1.URISchemeHTTP,
			}},
			PeriodSeconds:    period,
			TimeoutSeconds:   1,
			FailureThreshold: failures,
		}
	}
	c := corev1.Container{
		Name:            ContainerName,
		Image:           p.image,
		ImagePullPolicy: pullPolicy,
		Args:            args,
		Env:             p.env(config),
		Ports:           ports,
		Resources:       *p.resources.DeepCopy(),
		// Kubelet runs the app containers only once this passes (native
		// sidecar); up to two minutes for ferry's listeners to come up.
		StartupProbe:   probe("/ready", 1, 120),
		ReadinessProbe: probe("/ready", 5, 2),
		LivenessProbe:  probe("/live", 10, 3),
		// A config error is printed on stderr; show it in the pod status.
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             ptr(true),
			RunAsUser:                ptr(int64(nonRootUID)),
			RunAsGroup:               ptr(int64(nonRootUID)),
			AllowPrivilegeEscalation: ptr(false),
			ReadOnlyRootFilesystem:   ptr(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
	if p.preStopSleep > 0 {
		c.Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{
			Sleep: &corev1.SleepAction{Seconds: int64(p.preStopSleep.Seconds())},
		}}
	}
	if p.native {
		c.RestartPolicy = ptr(corev1.ContainerRestartPolicyAlways)
	}
	return c
}

// env is the ferry container's environment. Variables that FERRY_CONFIG and
// CONSUL_HTTP_ADDR reference come first: kubelet expands $(VAR) only for
// variables defined earlier in the list.
func (p *plan) env(config string) []corev1.EnvVar {
	field := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{
			FieldRef: &corev1.ObjectFieldSelector{FieldPath: path},
		}}
	}
	env := []corev1.EnvVar{
		field("POD_NAME", "metadata.name"),
		field("POD_NAMESPACE", "metadata.namespace"),
		field("POD_IP", "status.podIP"),
	}
	if p.usesConsul() {
		env = append(env,
			field("HOST_IP", "status.hostIP"),
			corev1.EnvVar{Name: "CONSUL_HTTP_ADDR", Value: p.consulAddr},
		)
		if p.consulToken != nil {
			env = append(env, corev1.EnvVar{Name: "CONSUL_HTTP_TOKEN", ValueFrom: &corev1.EnvVarSource{
				SecretKeyRef: p.consulToken.DeepCopy(),
			}})
		}
	}
	if p.otelEndpoint != "" {
		env = append(env,
			corev1.EnvVar{Name: "OTEL_EXPORTER_OTLP_ENDPOINT", Value: p.otelEndpoint},
			corev1.EnvVar{Name: "OTEL_RESOURCE_ATTRIBUTES", Value: "k8s.pod.name=$(POD_NAME),k8s.namespace.name=$(POD_NAMESPACE)"},
		)
		if p.register != nil {
			env = append(env, corev1.EnvVar{Name: "OTEL_SERVICE_NAME", Value: p.register.name})
		}
	}
	env = append(env, corev1.EnvVar{Name: ConfigEnv, Value: config})
	return env
}

func ptr[T any](v T) *T { return &v }
