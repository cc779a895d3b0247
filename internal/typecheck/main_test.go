package main

import (
	"strings"
	"testing"
)

// A package whose file and test file call what only Unix has fails the
// check for Windows, naming both, and passes it for Linux and macOS.
func TestCheckFindsWhatAGOOSLacks(t *testing.T) {
	for _, tc := range []struct {
		goos string
		want []string
	}{
		{"linux", nil},
		{"darwin", nil}, // on amd64: Mkfifo and Kill are there on every GOARCH
		{"windows", []string{"fifo.go:8:47: undefined: syscall.Mkfifo", "fifo_test.go:9:43: undefined: syscall.Kill"}},
	} {
		var out strings.Builder
		n, err := check(tc.goos, "amd64", []string{"./testdata/fifo"}, &out)
		if err != nil {
			t.Fatalf("%s: %v", tc.goos, err)
		}
		if n != len(tc.want) {
			t.Errorf("%s: %d errors, want %d:\n%s", tc.goos, n, len(tc.want), out.String())
		}
		for _, w := range tc.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%s: no %q in:\n%s", tc.goos, w, out.String())
			}
		}
	}
}
