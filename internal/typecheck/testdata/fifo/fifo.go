// Package fifo is typecheck's test input: it builds on Unix only, as a
// file that forgot its build constraint would.
package fifo

import "syscall"

// Make makes a FIFO: syscall.Mkfifo does not exist on Windows.
func Make(path string) error { return syscall.Mkfifo(path, 0o600) }
