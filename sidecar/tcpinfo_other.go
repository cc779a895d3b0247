//go:build !linux

package sidecar

import "net"

// socketFlow cannot say what a socket moved outside Linux (see
// tcpinfo_linux.go): kernel-to-kernel moves feed the idle timer by their
// segments alone there.
func socketFlow(*net.TCPConn) (flow, bool) { return flow{}, false }
