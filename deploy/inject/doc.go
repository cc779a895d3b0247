// Package inject adds the ferry sidecar to Kubernetes workloads. It is a
// pure library: a Kubernetes object (Pod, Deployment, StatefulSet,
// DaemonSet, ReplicaSet, Job, CronJob, or a v1 List of them) goes in, and
// the injected object, or the same object with a reason for leaving it
// alone, comes out. `ferry inject` and the admission webhook are thin
// layers over it.
//
// What is injected, driven by ferry.io/ annotations (see annotations.go)
// over Options:
//
//   - a container named "ferry" running `ferry run --config-env
//     FERRY_CONFIG`, its config YAML generated into that variable (no
//     ConfigMap to keep in step with the pod);
//   - by default as a native sidecar: the first init container, with
//     restartPolicy Always and a startup probe on /ready, so kubelet starts
//     the app containers only once ferry is ready and stops ferry only after
//     them (like Istio's holdApplicationUntilProxyStarts);
//   - admin on 0.0.0.0:15000 so kubelet's readiness, liveness and startup
//     probes reach /ready and /live; outbound on 127.0.0.1:15001; inbound on
//     0.0.0.0:15006 to the app's port on 127.0.0.1 (or the
//     ferry.io/inbound-host annotation's host);
//   - a preStop sleep, ferry's shutdown delay and grace, resources (fitted
//     to the pod's budget when it sets pod-level resources, see
//     podresources.go), a restricted security context, and the
//     environment: POD_NAME, POD_NAMESPACE, POD_IP, HOST_IP and
//     CONSUL_HTTP_ADDR (the node's agent) when Consul is used, OTEL_* when
//     an endpoint is set.
//
// Injecting is idempotent: a pod with a "ferry" container is refused as
// already injected. Refused and skipped objects are never modified, and in
// a YAML stream their text is copied byte for byte. The package does not
// import ferry's sidecar package; its tests check every generated config
// with sidecar.ParseConfig. Nor does it import the Kubernetes API packages:
// objects stay generic (YAML nodes, decoded JSON), so fields ferry does not
// know pass through, and the few shapes it reads or builds are its own
// types (kube.go, quantity.go), checked against k8s.io/api in the tests.
package inject
