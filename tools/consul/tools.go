//go:build tools

// Package tools pins the Consul agent that ferry's discovery tests run for
// real. scripts/tool.sh consul builds it.
package tools

import _ "github.com/hashicorp/consul"
