package inject

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzInjectYAML: whatever YAML (or not) comes in, the injector never
// panics; when it answers without an error, injecting its output again
// changes nothing, and what it refused or skipped comes back untouched.
// Seeds: every golden input.
func FuzzInjectYAML(f *testing.F) {
	inputs, _ := filepath.Glob("testdata/*.in.yaml")
	for _, p := range inputs {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("kind: Pod\nmetadata: {annotations: {ferry.io/upstreams: \"a=b..c\"}}\nspec: {containers: [{name: a}]}\n"))
	f.Add([]byte("---\n--- \n...\n"))
	f.Add([]byte("apiVersion: v1\nkind: List\nitems: [1, {kind: Pod}]\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		inj := newTestInjector(t)
		out, reps, err := inj.InjectYAML(in)
		if err != nil {
			return // a readable error is a fine answer to bad input
		}
		injected := false
		for _, r := range reps {
			if r.Outcome == Injected {
				injected = true
			}
		}
		if !injected && !bytes.Equal(out, in) {
			t.Fatalf("nothing injected, yet the output differs:\n--- in\n%s\n--- out\n%s", in, out)
		}
		again, reps2, err := inj.InjectYAML(out)
		if err != nil {
			t.Fatalf("the injector's own output does not inject again: %v\n%s", err, out)
		}
		for _, r := range reps2 {
			if r.Outcome == Injected {
				t.Fatalf("a second injection injected %s\n--- first output\n%s", r, out)
			}
		}
		if !bytes.Equal(again, out) {
			t.Fatalf("injecting twice changed the output:\n--- once\n%s\n--- twice\n%s", out, again)
		}
	})
}
