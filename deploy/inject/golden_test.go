package inject

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// testOptions are the injector defaults every golden file is made with.
var testOptions = Options{Image: "ferrymesh/ferry:test"}

func newTestInjector(t *testing.T) *Injector {
	t.Helper()
	in, err := New(testOptions)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func formatReports(reps []Report) string {
	var b strings.Builder
	for _, r := range reps {
		b.WriteString(r.String())
		b.WriteByte('\n')
		for _, w := range r.Warnings {
			b.WriteString("  warning: " + w + "\n")
		}
	}
	return b.String()
}

func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./deploy/inject -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (run with -update after checking the change):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// TestGolden injects every testdata/*.in.yaml and compares the output and
// the reports with the golden files. It also checks, for every case, what
// must hold whatever the golden files say: refusals and skips leave the
// input byte-identical; injected objects decode strictly into their
// Kubernetes types, their config parses with ferry's parser, removing what
// ferry added gives back the input, and injecting again changes nothing.
func TestGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*.in.yaml")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, path := range inputs {
		name := strings.TrimSuffix(filepath.Base(path), ".in.yaml")
		t.Run(name, func(t *testing.T) {
			in, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			inj := newTestInjector(t)
			out, reps, err := inj.InjectYAML(in)
			if err != nil {
				t.Fatalf("InjectYAML: %v", err)
			}
			golden(t, filepath.Join("testdata", name+".golden.yaml"), out)
			golden(t, filepath.Join("testdata", name+".reports.golden"), []byte(formatReports(reps)))

			injected := 0
			for _, r := range reps {
				if r.Outcome == Injected {
					injected++
				}
			}
			refusal := strings.HasPrefix(name, "refuse-") || name == "unknown-kinds"
			if refusal {
				if injected != 0 {
					t.Errorf("a refusal case injected %d objects", injected)
				}
				if !bytes.Equal(out, in) {
					t.Errorf("refused or skipped input was changed:\n%s", out)
				}
				for _, r := range reps {
					if r.Reason == "" {
						t.Errorf("%s without a reason", r)
					}
				}
				return
			}
			if injected == 0 {
				t.Fatalf("nothing injected: %s", formatReports(reps))
			}

			inDocs, outDocs := splitDocuments(in), splitDocuments(out)
			if len(inDocs) != len(outDocs) {
				t.Fatalf("%d documents in, %d out", len(inDocs), len(outDocs))
			}
			checked := 0
			for i := range outDocs {
				if outDocs[i].separator != inDocs[i].separator {
					t.Errorf("document %d: separator %q became %q", i+1, inDocs[i].separator, outDocs[i].separator)
				}
				if bytes.Equal(inDocs[i].body, outDocs[i].body) {
					continue
				}
				for _, tmpl := range decodeStrict(t, outDocs[i].body) {
					if c, _ := ferryContainer(&tmpl.Spec); c != nil {
						checkInjectedTemplate(t, tmpl)
						checked++
					}
				}
				got, want := yamlObject(t, outDocs[i].body), yamlObject(t, inDocs[i].body)
				withoutInjection(t, got)
				if !reflect.DeepEqual(got, want) {
					t.Errorf("document %d: removing ferry does not give back the input:\n got %v\nwant %v", i+1, got, want)
				}
			}
			if checked != injected {
				t.Errorf("%d injected objects reported, %d found in the output", injected, checked)
			}

			again, reps2, err := inj.InjectYAML(out)
			if err != nil {
				t.Fatalf("second InjectYAML: %v", err)
			}
			if !bytes.Equal(again, out) {
				t.Errorf("injecting twice changed the output:\n%s", again)
			}
			for _, r := range reps2 {
				if r.Outcome == Injected {
					t.Errorf("second pass injected %s", r)
				}
			}
		})
	}
}
