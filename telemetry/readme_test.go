package telemetry

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/sdk/resource"
)

// The README's metrics table lists every ferry_ metric /metrics shows, with
// its type and labels, and nothing else.
func TestReadmeMetricsTable(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(b), "| metric | type | labels |\n| --- | --- | --- |\n")
	if !ok {
		t.Fatal("README has no metrics table")
	}
	row := regexp.MustCompile("^\\| `(ferry_[a-z_]+)` \\| ([a-z]+)[^|]*\\|(.*)\\|$")
	type entry struct{ kind, labels string }
	doc := map[string]entry{}
	for _, line := range strings.Split(after, "\n") {
		if !strings.HasPrefix(line, "|") {
			break
		}
		m := row.FindStringSubmatch(line)
		if m == nil {
			t.Errorf("README metrics row not understood: %s", line)
			continue
		}
		labels := regexp.MustCompile(" \\(.*?\\)").ReplaceAllString(m[3], "")
		doc[m[1]] = entry{m[2], strings.Join(strings.Fields(strings.ReplaceAll(labels, ",", " ")), ",")}
	}

	m, err := newMetrics(resource.Empty(), &spanQueue{})
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[metricKind]string{kindCounter: "counter", kindGauge: "gauge", kindHistogram: "histogram"}
	var code []string
	for _, f := range m.reg.families {
		name := f.textName()
		if !strings.HasPrefix(name, "ferry_") {
			continue
		}
		code = append(code, name)
		d, ok := doc[name]
		if !ok {
			t.Errorf("%s is registered but not in the README's metrics table", name)
			continue
		}
		if d.kind != kinds[f.kind] {
			t.Errorf("%s: README says %s, registered as %s", name, d.kind, kinds[f.kind])
		}
		if want := strings.Join(f.labels, ","); d.labels != want {
			t.Errorf("%s: README labels %q, registered with %q", name, d.labels, want)
		}
	}
	for name := range doc {
		if !slices.Contains(code, name) {
			t.Errorf("README lists %s, which ferry does not register", name)
		}
	}
}
