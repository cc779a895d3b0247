// Package webhook is ferry's mutating admission webhook: a thin HTTPS layer
// over package inject. The API server sends an AdmissionReview v1 for each
// pod being created; the handler runs the same injection as `ferry inject`
// and answers with a JSONPatch computed from the pod before and after
// (Diff). It never blocks a pod: skipped and refused pods are allowed
// without a patch, with the reason in the response. It owns the TLS
// listener (certificates reloaded on renewal) and /healthz; it does not
// talk to the Kubernetes API.
package webhook
