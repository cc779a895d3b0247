//go:build !linux || !(amd64 || arm64)

package nodes

import (
	"errors"
	"runtime"
)

// ServeH1Epoll is built on epoll and the system call numbers of Linux on
// amd64 and arm64; elsewhere it only says so.
func ServeH1Epoll(listen, upstream string) error {
	return errors.New("h1epoll: needs Linux on amd64 or arm64, not " + runtime.GOOS + "/" + runtime.GOARCH)
}
