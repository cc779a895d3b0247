package sidecar

import "golang.org/x/sys/unix"

const sendQueueKnown = true

// sendQueue is SIOCOUTQ: the bytes on the socket fd that the peer did not
// acknowledge (sent or not).
func sendQueue(fd uintptr) (int, error) { return unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) }
