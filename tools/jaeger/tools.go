//go:build tools

// Package tools pins the Jaeger v2 all-in-one binary that ferry's
// end-to-end tracing tests run for real. It is built by scripts/tool.sh.
package tools

import _ "github.com/jaegertracing/jaeger/cmd/jaeger"
