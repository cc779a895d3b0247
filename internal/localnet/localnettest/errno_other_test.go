//go:build !windows

package localnettest

import "syscall"

// The errors a refused connect and a bind to a held port give.
var errConnRefused, errAddrInUse error = syscall.ECONNREFUSED, syscall.EADDRINUSE
