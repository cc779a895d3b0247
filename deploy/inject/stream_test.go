package inject

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

// streamPod is a pod ferry injects (it declares a port), named name.
func streamPod(name, annotations string) string {
	return `{"apiVersion": "v1", "kind": "Pod",
 "metadata": {"name": "` + name + `", "annotations": {` + annotations + `}},
 "spec": {"containers": [{"name": "app", "image": "app:1", "ports": [{"containerPort": 8080}]}]}}`
}

// jsonValues reads every JSON value of a stream.
func jsonValues(t *testing.T, data []byte) []map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var out []map[string]any
	for {
		var v map[string]any
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("output is not a stream of JSON objects: %v\n%s", err, data)
		}
		out = append(out, v)
	}
}

// JSON objects one after another in one document (what `jq '.items[]'`
// writes, and kubectl apply reads as so many objects) went to the YAML
// parser, which read the first and never looked further: the others were
// dropped from the output without a word, and the count said 1 injected.
func TestInjectJSONStreamKeepsEveryObject(t *testing.T) {
	inj := newTestInjector(t)
	a, b, c := streamPod("a", `"note": "a"`), streamPod("b", `"ferry.io/inject": "disabled"`), streamPod("c", `"note": "c"`)
	for _, tc := range []struct {
		name, in string
		outcomes []Outcome
	}{
		{"newlines", a + "\n" + b + "\n" + c + "\n", []Outcome{Injected, Refused, Injected}},
		{"no space", a + c, []Outcome{Injected, Injected}},
		{"after a separator", "---\n" + b + "\n\n  " + a + "\n", []Outcome{Refused, Injected}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, reps, err := inj.InjectYAML([]byte(tc.in))
			if err != nil {
				t.Fatalf("InjectYAML: %v", err)
			}
			var got []Outcome
			for _, r := range reps {
				got = append(got, r.Outcome)
			}
			if !reflect.DeepEqual(got, tc.outcomes) {
				t.Errorf("outcomes %v, want %v (%+v)", got, tc.outcomes, reps)
			}
			objs := jsonValues(t, bytes.TrimPrefix(out, []byte("---\n")))
			want := jsonValues(t, []byte(strings.TrimPrefix(tc.in, "---\n")))
			if len(objs) != len(want) {
				t.Fatalf("%d objects out of %d:\n%s", len(objs), len(want), out)
			}
			for i, o := range objs {
				if tc.outcomes[i] == Injected {
					withoutInjection(t, o)
				}
				if !reflect.DeepEqual(o, want[i]) {
					t.Errorf("object %d less ferry is not the input's:\n%s", i+1, out)
				}
			}
			// The refused pod is copied byte for byte.
			if strings.Contains(tc.in, b) && !bytes.Contains(out, []byte(b)) {
				t.Errorf("the refused pod was not copied as written:\n%s", out)
			}
			again, reps, err := inj.InjectYAML(out)
			if err != nil || len(reps) != len(tc.outcomes) || !bytes.Equal(again, out) {
				t.Errorf("second injection: %v, %d reports, output changed: %v", err, len(reps), !bytes.Equal(again, out))
			}
		})
	}
}

// What follows the first YAML document of a part between "---" lines (a
// document after "...", or text that is not YAML at all after a JSON
// object) was never read: it was dropped without an error. It is an error
// now, naming the line, so nothing is lost silently.
func TestInjectRefusesWhatFollowsTheFirstDocumentUnread(t *testing.T) {
	inj := newTestInjector(t)
	pod := "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec:\n  containers: [{name: app, image: app, ports: [{containerPort: 8080}]}]\n"
	for _, tc := range []struct{ name, in, want string }{
		{"document after ...", pod + "...\n" + strings.Replace(pod, "name: a", "name: b", 1), "document 1 (line 1): yaml: line 6: did not find expected <document start>"},
		{"document after ... in the second part", "---\n" + pod + "---\n" + pod + "...\n" + pod, "document 2 (line 8): yaml: line 6: did not find expected <document start>"},
		{"broken JSON after JSON", streamPod("a", "") + "\n" + `{"kind": "Pod"`, "document 1 (line 1): yaml: line 3: did not find expected <document start>"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := inj.InjectYAML([]byte(tc.in))
			if err == nil {
				t.Fatalf("no error; output:\n%s", out)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
		})
	}
	// A document end marker with nothing after it is fine, and so are
	// the next document's directives before its "---".
	for _, in := range []string{pod + "...\n", pod + "...\n# the end\n", pod + "...\n---\n" + pod, pod + "...\n%YAML 1.2\n# c\n---\n" + pod} {
		if _, reps, err := inj.InjectYAML([]byte(in)); err != nil || len(reps) == 0 || reps[0].Outcome != Injected || reps[len(reps)-1].Outcome != Injected {
			t.Errorf("InjectYAML(%q): %v %+v", in, err, reps)
		}
	}
}
