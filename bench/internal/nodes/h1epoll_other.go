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

// H1EpollOptions are the knobs of ServeH1EpollWith.
type H1EpollOptions struct {
	Loops       int
	SyscallWait bool
}

// ServeH1EpollWith is ServeH1Epoll with options; elsewhere it only says
// that it needs Linux.
func ServeH1EpollWith(listen, upstream string, o H1EpollOptions) error {
	return ServeH1Epoll(listen, upstream)
}
