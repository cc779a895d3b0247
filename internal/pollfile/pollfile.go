// Package pollfile waits for a file to reach some content: for tests of
// code that writes files from a goroutine or process of its own.
package pollfile

import (
	"fmt"
	"os"
	"time"
)

// Await reads path every few milliseconds until ok accepts its content, or
// until d has passed, and returns the last content read; past d, with an
// error that names what was last read.
func Await(path string, d time.Duration, ok func(string) bool) (string, error) {
	deadline := time.Now().Add(d)
	for {
		b, err := os.ReadFile(path)
		if err == nil && ok(string(b)) {
			return string(b), nil
		}
		if time.Now().After(deadline) {
			return string(b), fmt.Errorf("%s after %s: read %q, %v", path, d, b, err)
		}
		time.Sleep(10 * time.Millisecond) // a polling pace
	}
}
