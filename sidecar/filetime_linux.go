package sidecar

import (
	"os"
	"syscall"
	"time"
)

// lastChange is when fi's file was last changed: the later of its
// modification time and its status change time. A tool that keeps a
// copy's modification time (cp -p, tar, rsync -t) sets an old one once it
// has written the file, but cannot set the change time, which that very
// step moves to now.
func lastChange(fi os.FileInfo) time.Time {
	t := fi.ModTime()
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if c := time.Unix(st.Ctim.Unix()); c.After(t) {
			t = c
		}
	}
	return t
}
