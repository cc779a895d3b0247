package inject

import (
	"os"
	"testing"
)

// BenchmarkInjectYAML injects a Deployment with upstreams and a Consul
// registration, the way `ferry inject` does.
func BenchmarkInjectYAML(b *testing.B) {
	in, err := os.ReadFile("testdata/deployment.in.yaml")
	if err != nil {
		b.Fatal(err)
	}
	inj, err := New(Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if _, reps, err := inj.InjectYAML(in); err != nil || reps[0].Outcome != Injected {
			b.Fatalf("%v %v", err, reps)
		}
	}
}
