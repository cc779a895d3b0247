// Package deploy holds what it takes to run ferry on Kubernetes. The Go code
// lives in its subpackages; this package only carries the tests of the
// artefacts beside it:
//
//   - inject: the pure injection library (Kubernetes object in, injected
//     object or a refusal with a reason out) that both `ferry inject` and
//     the admission webhook use.
//   - webhook: the mutating admission webhook (AdmissionReview v1 in,
//     JSONPatch out) over inject.
//   - helm/ferry: the Helm chart that installs the webhook.
//   - Dockerfile: the multi-stage build of the static, non-root ferry image.
//
// Nothing here imports package sidecar: the injected config is plain YAML,
// and the tests check it with sidecar.ParseConfig.
package deploy
