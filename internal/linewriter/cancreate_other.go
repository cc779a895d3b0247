//go:build !windows

package linewriter

import "golang.org/x/sys/unix"

// canCreateIn reports why a file could not be created in the directory
// dir, or nil if it could: open(2) with O_CREAT needs write and search
// permission on it. Checked for the effective uid and gid (AT_EACCESS),
// which open(2) uses, not the real ones access(2) checks: they differ in
// a set-uid ferry, and the verdict must be ferry run's.
func canCreateIn(dir string) error {
	return unix.Faccessat(unix.AT_FDCWD, dir, unix.W_OK|unix.X_OK, unix.AT_EACCESS)
}
