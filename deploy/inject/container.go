package inject

// nonRootUID is the distroless "nonroot" user the ferry image runs as.
const nonRootUID = 65532

// container builds the ferry container of a plan.
func (p *plan) container(pullPolicy PullPolicy, config string) container {
	args := []string{"run", "--config-env", ConfigEnv}
	if p.logLevel != "" {
		args = append(args, "--log-level", p.logLevel)
	}
	ports := []containerPort{{Name: "ferry-admin", ContainerPort: AdminPort, Protocol: "TCP"}}
	if p.inboundPort > 0 {
		ports = append(ports, containerPort{Name: "ferry-inbound", ContainerPort: InboundPort, Protocol: "TCP"})
	}
	newProbe := func(path string, period, failures int32) *probe {
		return &probe{
			HTTPGet:          &httpGetAction{Path: path, Port: AdminPort, Scheme: "HTTP"},
			PeriodSeconds:    period,
			TimeoutSeconds:   1,
			FailureThreshold: failures,
		}
	}
	c := container{
		Name:            ContainerName,
		Image:           p.image,
		ImagePullPolicy: pullPolicy,
		Args:            args,
		Env:             p.env(config),
		Ports:           ports,
		Resources:       p.resources.clone(),
		// Kubelet runs the app containers only once this passes (native
		// sidecar); up to two minutes for ferry's listeners to come up.
		StartupProbe:   newProbe("/ready", 1, 120),
		ReadinessProbe: newProbe("/ready", 5, 2),
		LivenessProbe:  newProbe("/live", 10, 3),
		// A config error is printed on stderr; show it in the pod status.
		TerminationMessagePolicy: "FallbackToLogsOnError",
		SecurityContext: &securityContext{
			RunAsNonRoot:             ptr(true),
			RunAsUser:                ptr(int64(nonRootUID)),
			RunAsGroup:               ptr(int64(nonRootUID)),
			AllowPrivilegeEscalation: ptr(false),
			ReadOnlyRootFilesystem:   ptr(true),
			Capabilities:             &capabilities{Drop: []string{"ALL"}},
			SeccompProfile:           &seccompProfile{Type: "RuntimeDefault"},
		},
	}
	if p.preStopSleep > 0 {
		c.Lifecycle = &lifecycle{PreStop: &lifecycleHandler{
			Sleep: &sleepAction{Seconds: int64(p.preStopSleep.Seconds())},
		}}
	}
	if p.native {
		c.RestartPolicy = "Always"
	}
	return c
}

// env is the ferry container's environment. Variables that FERRY_CONFIG,
// CONSUL_HTTP_ADDR and OTEL_EXPORTER_OTLP_ENDPOINT reference come first: kubelet expands $(VAR) only for
// variables defined earlier in the list.
func (p *plan) env(config string) []envVar {
	field := func(name, path string) envVar {
		return envVar{Name: name, ValueFrom: &envVarSource{FieldRef: &fieldSelector{FieldPath: path}}}
	}
	env := []envVar{
		field("POD_NAME", "metadata.name"),
		field("POD_NAMESPACE", "metadata.namespace"),
		field("POD_IP", "status.podIP"),
	}
	// HOST_IP is the node, where the Consul agent and an OTel collector
	// usually run: the Consul address and the OTel endpoint may name it.
	if p.usesConsul() || p.otelEndpoint != "" {
		env = append(env, field("HOST_IP", "status.hostIP"))
	}
	if p.usesConsul() {
		env = append(env, envVar{Name: "CONSUL_HTTP_ADDR", Value: p.consulAddr})
		if p.consulToken != nil {
			ref := *p.consulToken
			env = append(env, envVar{Name: "CONSUL_HTTP_TOKEN", ValueFrom: &envVarSource{SecretKeyRef: &ref}})
		}
	}
	if p.otelEndpoint != "" {
		env = append(env,
			envVar{Name: "OTEL_EXPORTER_OTLP_ENDPOINT", Value: p.otelEndpoint},
			envVar{Name: "OTEL_RESOURCE_ATTRIBUTES", Value: "k8s.pod.name=$(POD_NAME),k8s.namespace.name=$(POD_NAMESPACE)"},
		)
		if p.register != nil {
			env = append(env, envVar{Name: "OTEL_SERVICE_NAME", Value: p.register.name})
		}
	}
	env = append(env, envVar{Name: ConfigEnv, Value: config})
	return env
}

func ptr[T any](v T) *T { return &v }
