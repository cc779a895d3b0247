package deploy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	sigsyaml "sigs.k8s.io/yaml"
)

// chartValueKeys lists the chart's value keys, as dotted paths: every key
// of values.yaml, descending into the objects whose keys the schema fixes
// (additionalProperties false) and stopping at free-form ones (resources,
// annotations...) and at label selectors, which are one value each.
func chartValueKeys(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var values map[string]any
	if err := sigsyaml.Unmarshal(raw, &values); err != nil {
		t.Fatal(err)
	}
	raw, err = os.ReadFile(filepath.Join(chartDir, "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	type schema struct {
		AdditionalProperties any                `json:"additionalProperties"`
		Properties           map[string]*schema `json:"properties"`
	}
	var root schema
	if err := json.Unmarshal(raw, &root); err != nil {
		t.Fatal(err)
	}
	var keys []string
	var walk func(prefix string, v map[string]any, s *schema)
	walk = func(prefix string, v map[string]any, s *schema) {
		for k, sub := range v {
			p := prefix + k
			ss := s.Properties[k]
			if ss == nil {
				t.Errorf("values.yaml key %s is not in values.schema.json", p)
				continue
			}
			if m, ok := sub.(map[string]any); ok && ss.AdditionalProperties == false && !strings.HasSuffix(k, "Selector") {
				walk(p+".", m, ss)
				continue
			}
			keys = append(keys, p)
		}
	}
	walk("", values, &root)
	sort.Strings(keys)
	return keys
}

// readmeValueKeys lists the keys of the chart README's values table: its
// first column, where "`a.b`, `.c`" names a.b and a.c.
func readmeValueKeys(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(chartDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(raw), "## Values")
	if !ok {
		t.Fatal("the chart README has no Values section")
	}
	tick := regexp.MustCompile("`([^`]+)`")
	var keys []string
	for _, line := range strings.Split(table, "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		first := strings.Split(line, "|")[1]
		parent := ""
		for _, m := range tick.FindAllStringSubmatch(first, -1) {
			k := m[1]
			if strings.HasPrefix(k, ".") {
				k = parent + k
			} else if i := strings.LastIndex(k, "."); i >= 0 {
				parent = k[:i]
			} else {
				parent = ""
			}
			keys = append(keys, k)
		}
	}
	return keys
}

// TestHelmValuesDocumentedAndUsed: every value of values.yaml is in the
// chart README's values table and read by a template, and every value a
// template reads or the README lists is in values.yaml (so in the schema,
// which refuses any other key).
func TestHelmValuesDocumentedAndUsed(t *testing.T) {
	keys := chartValueKeys(t)
	documented := readmeValueKeys(t)
	var templates strings.Builder
	entries, err := os.ReadDir(filepath.Join(chartDir, "templates"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(chartDir, "templates", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		templates.Write(b)
	}
	tpl := templates.String()
	for _, k := range keys {
		if !slices.Contains(documented, k) {
			t.Errorf("value %s is not in the chart README's values table", k)
		}
		if !regexp.MustCompile(`\.Values\.` + regexp.QuoteMeta(k) + `\b`).MatchString(tpl) {
			t.Errorf("value %s is read by no template", k)
		}
	}
	known := func(path string) bool {
		for _, k := range keys {
			if path == k || strings.HasPrefix(path, k+".") {
				return true
			}
		}
		return false
	}
	for _, k := range documented {
		if !known(k) {
			t.Errorf("the chart README documents %s, which values.yaml does not have", k)
		}
	}
	for _, m := range regexp.MustCompile(`\.Values\.([A-Za-z0-9_.]+)`).FindAllStringSubmatch(tpl, -1) {
		if !known(strings.TrimSuffix(m[1], ".")) {
			t.Errorf("a template reads .Values.%s, which values.yaml does not have", m[1])
		}
	}
}
