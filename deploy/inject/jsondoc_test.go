package inject

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// A JSON manifest was read by the YAML parser and written back from a Go
// map: valid JSON that YAML does not take ("\ud83d\ude00", the surrogate
// pair Python's json.dumps and jq -a write for a character outside the
// BMP) failed the whole file with "yaml: found invalid Unicode character
// escape code", the keys of the injected document came out sorted, and an
// integer beyond 64 bits came out as a float (1.2345678901234568e+29).
// The README promises that a changed document keeps its key order and
// every field: the JSON document must say what it said, in the same order,
// plus ferry.
func TestInjectJSONKeepsWhatTheDocumentSays(t *testing.T) {
	inj := newTestInjector(t)
	in := `{"kind": "Deployment", "apiVersion": "apps/v1",
 "metadata": {"name": "web", "labels": {"app": "web"}},
 "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
  "template": {
   "metadata": {"labels": {"app": "web"}, "annotations": {"note": "smile \ud83d\ude00 caf\u00e9", "ferry.io/upstreams": "files"}},
   "spec": {"containers": [{"name": "app", "image": "app:1", "ports": [{"containerPort": 8080}]}],
    "x-extension": {"big": 123456789012345678901234567890, "ratio": 1.0, "small": -1.5e-3, "none": null, "list": [], "map": {}}}}}}
`
	out, reps, err := inj.InjectYAML([]byte(in))
	if err != nil {
		t.Fatalf("InjectYAML: %v", err)
	}
	if len(reps) != 1 || reps[0].Outcome != Injected {
		t.Fatalf("reports %+v", reps)
	}
	if !json.Valid(out) {
		t.Fatalf("not JSON:\n%s", out)
	}

	// Every value as written: the annotation read back, the numbers as
	// their text.
	obj, err := decodeJSONObject(out)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := obj["spec"].(map[string]any)["template"].(map[string]any)
	if got := tmpl["metadata"].(map[string]any)["annotations"].(map[string]any)["note"]; got != "smile \U0001F600 café" {
		t.Errorf("annotation note %q", got)
	}
	ext := tmpl["spec"].(map[string]any)["x-extension"].(map[string]any)
	for k, want := range map[string]string{"big": "123456789012345678901234567890", "ratio": "1.0", "small": "-1.5e-3"} {
		if got, _ := ext[k].(json.Number); string(got) != want {
			t.Errorf("x-extension.%s %v, want %s", k, ext[k], want)
		}
	}
	withoutInjection(t, obj)
	want, err := decodeJSONObject([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(obj, want) {
		t.Errorf("the output less ferry is not the input:\n%s", out)
	}

	// Keys in the input's order, ferry's after them.
	for _, keys := range [][]string{
		{`"kind"`, `"apiVersion"`, `"metadata"`, `"spec"`},
		{`"replicas"`, `"selector"`, `"template"`},
		{`"labels": {`, `"annotations": {`},
		{`"note"`, `"ferry.io/upstreams"`, `"ferry.io/injected"`},
		{`"containers"`, `"x-extension"`, `"initContainers"`},
		{`"big"`, `"ratio"`, `"small"`, `"none"`, `"list"`, `"map"`},
	} {
		at := -1
		for _, k := range keys {
			i := strings.Index(string(out), k)
			if i < at {
				t.Errorf("key %s out of order %v in:\n%s", k, keys, out)
				break
			}
			at = i
		}
	}
	if !bytes.HasSuffix(out, []byte("}\n")) {
		t.Errorf("output does not end with a newline after the object")
	}

	// Injecting again changes nothing, byte for byte.
	again, reps, err := inj.InjectYAML(out)
	if err != nil || len(reps) != 1 || reps[0].Outcome != Refused || !bytes.Equal(again, out) {
		t.Errorf("second injection: %v %+v, output changed: %v", err, reps, !bytes.Equal(again, out))
	}
}

// A JSON number beyond what a 64-bit float holds (1e400) is valid JSON
// that no Kubernetes reader takes as a number. The object was refused with
// the YAML decoder's words ("yaml: cannot decode !!str `1e400` as a
// !!float"), naming neither the field nor the object. The refusal must say
// where the number is and what is wrong with it in JSON terms; the other
// objects of the document are injected as before.
func TestInjectJSONNumberOutOfRangeNamed(t *testing.T) {
	inj := newTestInjector(t)
	pod := func(name, field string) string {
		return `{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "` + name + `", "annotations": {"ferry.io/inbound-port": "8080"}},
 "spec": {` + field + `"containers": [{"name": "app", "image": "app:1", "ports": [{"containerPort": 8080}]}]}}`
	}
	for _, c := range []struct{ field, path, number string }{
		{`"terminationGracePeriodSeconds": 1e400, `, "spec.terminationGracePeriodSeconds", "1e400"},
		{`"x": {"y": [0, -2.5E+999]}, `, "spec.x.y[1]", "-2.5E+999"},
		{`"nodeSelector": {"a.b/c": 1e309}, `, `spec.nodeSelector["a.b/c"]`, "1e309"},
	} {
		in := `{"apiVersion": "v1", "kind": "List", "items": [` + pod("bad", c.field) + `, ` + pod("good", "") + `]}`
		_, reps, err := inj.InjectYAML([]byte(in))
		if err != nil {
			t.Fatalf("%s: InjectYAML: %v", c.path, err)
		}
		if len(reps) != 2 || reps[1].Outcome != Injected {
			t.Fatalf("%s: reports %+v", c.path, reps)
		}
		r := reps[0]
		if r.Outcome != Refused || r.Name != "bad" {
			t.Errorf("%s: report %+v, want pod bad refused", c.path, r)
		}
		want := c.path + ": the JSON number " + c.number + " is out of range"
		if !strings.Contains(r.Reason, want) || strings.Contains(r.Reason, "yaml") || strings.Contains(r.Reason, "!!") {
			t.Errorf("%s: reason %q, want it to say %q, without the YAML decoder's words", c.path, r.Reason, want)
		}
	}
}
