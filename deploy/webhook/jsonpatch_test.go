package webhook

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strconv"
	"testing"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
)

// randomJSON makes a small JSON value whose keys include the characters a
// JSON Pointer must escape.
func randomJSON(r *rand.Rand, depth int) any {
	switch n := r.IntN(7); {
	case depth > 3 || n == 0:
		return []any{"a", "b/c", nil, true, 1.5, "~0"}[r.IntN(6)]
	case n <= 3:
		m := map[string]any{}
		for i := r.IntN(4); i > 0; i-- {
			m[[]string{"a", "b", "x/y", "t~", "ferry.io/injected", ""}[r.IntN(6)]] = randomJSON(r, depth+1)
		}
		return m
	default:
		var l []any
		for i := r.IntN(5); i > 0; i-- {
			l = append(l, randomJSON(r, depth+1))
		}
		if l == nil {
			l = []any{}
		}
		return l
	}
}

// mutate changes a copy of v in a few random places.
func mutate(r *rand.Rand, v any) any {
	switch t := v.(type) {
	case map[string]any:
		m := map[string]any{}
		for k, e := range t {
			switch r.IntN(5) {
			case 0: // drop
			case 1:
				m[k] = randomJSON(r, 2)
			default:
				m[k] = mutate(r, e)
			}
		}
		if r.IntN(3) == 0 {
			m["new"+strconv.Itoa(r.IntN(3))] = randomJSON(r, 2)
		}
		return m
	case []any:
		l := []any{}
		if r.IntN(3) == 0 {
			l = append(l, randomJSON(r, 2))
		}
		for _, e := range t {
			if r.IntN(5) != 0 {
				l = append(l, mutate(r, e))
			}
		}
		if r.IntN(3) == 0 {
			l = append(l, randomJSON(r, 2))
		}
		return l
	}
	if r.IntN(4) == 0 {
		return randomJSON(r, 3)
	}
	return v
}

// TestDiffAppliesWithAnIndependentImplementation: for random documents, the
// patch Diff makes, applied by evanphx/json-patch, turns from into to.
func TestDiffAppliesWithAnIndependentImplementation(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 9))
	for i := 0; i < 3000; i++ {
		from := map[string]any{"root": randomJSON(r, 0), "list": randomJSON(r, 1)}
		to := mutate(r, from).(map[string]any)
		fromJSON, _ := json.Marshal(from)
		toJSON, _ := json.Marshal(to)
		ops := Diff(jsonValue(fromJSON), jsonValue(toJSON))
		patchJSON, err := json.Marshal(ops)
		if err != nil {
			t.Fatal(err)
		}
		patch, err := jsonpatch.DecodePatch(patchJSON)
		if err != nil {
			t.Fatalf("decode %s: %v", patchJSON, err)
		}
		got, err := patch.Apply(fromJSON)
		if err != nil {
			t.Fatalf("apply %s to %s: %v", patchJSON, fromJSON, err)
		}
		if !reflect.DeepEqual(jsonValue(got), jsonValue(toJSON)) {
			t.Fatalf("case %d:\nfrom  %s\nto    %s\npatch %s\ngot   %s", i, fromJSON, toJSON, patchJSON, got)
		}
		if reflect.DeepEqual(from, to) != (len(ops) == 0) {
			t.Fatalf("equal documents must give an empty patch and only those: %s", patchJSON)
		}
	}
}

func jsonValue(b []byte) any {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		panic(err)
	}
	return v
}

func TestDiffListInsertAtFront(t *testing.T) {
	from := map[string]any{"c": []any{"a", "b"}}
	to := map[string]any{"c": []any{"f", "a", "b"}}
	b, _ := json.Marshal(Diff(from, to))
	if string(b) != `[{"op":"add","path":"/c/0","value":"f"}]` {
		t.Errorf("got %s", b)
	}
	b, _ = json.Marshal(Diff(map[string]any{"a/b": 1.0}, map[string]any{"a/b": nil}))
	if string(b) != `[{"op":"replace","path":"/a~1b","value":null}]` {
		t.Errorf("got %s", b)
	}
}
