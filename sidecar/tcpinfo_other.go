//go:build !linux

package sidecar

import "net"

// socketFlow cannot say what a socket moved outside Linux (see
// tcpinfo_linux.go): kernel-to-kernel moves feed the idle timer by their
// segments alone there.
func socketFlow(*net.TCPConn) (flow, bool) { return flow{}, false }

// unreadBytes cannot say what waits in a socket's receive queue outside
// Linux.
func unreadBytes(*net.TCPConn) (int, bool) { return 0, false }
