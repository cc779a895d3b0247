//go:build tools

// Package tools pins the helm binary that ferry's chart tests run for real
// (helm lint, helm template). scripts/tool.sh helm builds it.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
