package deploy

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
	sigsyaml "sigs.k8s.io/yaml"
)

// The chart names its Service after the release (or fullnameOverride), and
// a Service name must be a DNS-1035 label: a release name helm accepts, such
// as ferry.v2 or 1ferry, rendered a Service the API server refuses. helm
// must refuse it, saying what to set.
func TestHelmServiceNameIsADNSLabel(t *testing.T) {
	for _, tc := range [][]string{
		{"ferry.v2"},
		{"1ferry"},
		{"rel", "--set", "fullnameOverride=Ferry"},
		{"rel", "--set", "fullnameOverride=web.hook"},
		{"rel", "--set", "nameOverride=my_ferry"},
	} {
		out, err := helm(t, append([]string{"template", tc[0], chartDir}, tc[1:]...)...)
		if err != nil {
			if !strings.Contains(out, "fullnameOverride") {
				t.Errorf("%v: refused without saying what to set:\n%.600s", tc, out)
			}
			continue
		}
		for _, doc := range strings.Split(out, "\n---") {
			var obj struct {
				Kind     string
				Metadata struct{ Name string }
			}
			if err := sigsyaml.Unmarshal([]byte(doc), &obj); err != nil || obj.Kind != "Service" {
				continue
			}
			if errs := validation.IsDNS1035Label(obj.Metadata.Name); len(errs) > 0 {
				t.Errorf("%v: rendered a Service named %q, which the API server refuses: %v", tc, obj.Metadata.Name, errs)
			}
		}
	}
	// Names that are labels still render.
	render(t, "mesh", "--set", "fullnameOverride=mesh-injector")
}
