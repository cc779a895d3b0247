//go:build !linux

package sidecar

import (
	"os"
	"time"
)

// lastChange is fi's modification time outside Linux (see
// filetime_linux.go for the change time it also takes there).
func lastChange(fi os.FileInfo) time.Time { return fi.ModTime() }
