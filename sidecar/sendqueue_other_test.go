//go:build !linux && !darwin

package sidecar

import "errors"

// Outside Linux and macOS there is no SIOCOUTQ or SO_NWRITE to read a
// socket's send queue with: waitSent skips the test that needs it.
const sendQueueKnown = false

func sendQueue(uintptr) (int, error) {
	return 0, errors.New("reading a socket's send queue needs Linux (SIOCOUTQ) or macOS (SO_NWRITE)")
}
