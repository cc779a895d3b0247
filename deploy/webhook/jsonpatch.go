package webhook

import (
	"encoding/json"
	"reflect"
	"sort"
	"strconv"
	"strings"
)

// Operation is one RFC 6902 JSON Patch operation. Diff emits only add,
// remove and replace.
type Operation struct {
	Op    string
	Path  string
	Value any
}

// MarshalJSON writes "value" for add and replace, even when it is null.
func (o Operation) MarshalJSON() ([]byte, error) {
	if o.Op == "remove" {
		return json.Marshal(struct {
			Op   string `json:"op"`
			Path string `json:"path"`
		}{o.Op, o.Path})
	}
	return json.Marshal(struct {
		Op    string `json:"op"`
		Path  string `json:"path"`
		Value any    `json:"value"`
	}{o.Op, o.Path, o.Value})
}

// Diff returns the operations that turn the JSON value from into to. Both
// are generic JSON (maps, slices, strings, numbers, bools, nil). Map keys
// are visited in sorted order, so the patch is deterministic; a list that
// grew or shrank in one place gets adds or removes there, not a rewrite of
// every later element.
func Diff(from, to any) []Operation {
	var ops []Operation
	diff("", from, to, &ops)
	return ops
}

func diff(path string, a, b any, ops *[]Operation) {
	if reflect.DeepEqual(a, b) {
		return
	}
	switch av := a.(type) {
	case map[string]any:
		if bv, ok := b.(map[string]any); ok {
			diffMaps(path, av, bv, ops)
			return
		}
	case []any:
		if bv, ok := b.([]any); ok {
			diffLists(path, av, bv, ops)
			return
		}
	}
	*ops = append(*ops, Operation{Op: "replace", Path: path, Value: b})
}

func diffMaps(path string, a, b map[string]any, ops *[]Operation) {
	keys := make([]string, 0, len(a)+len(b))
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		p := path + "/" + escapePointer(k)
		av, inA := a[k]
		bv, inB := b[k]
		switch {
		case inA && !inB:
			*ops = append(*ops, Operation{Op: "remove", Path: p})
		case !inA && inB:
			*ops = append(*ops, Operation{Op: "add", Path: p, Value: bv})
		default:
			diff(p, av, bv, ops)
		}
	}
}

func diffLists(path string, a, b []any, ops *[]Operation) {
	n := min(len(a), len(b))
	pre := 0
	for pre < n && reflect.DeepEqual(a[pre], b[pre]) {
		pre++
	}
	suf := 0
	for suf < n-pre && reflect.DeepEqual(a[len(a)-1-suf], b[len(b)-1-suf]) {
		suf++
	}
	am, bm := a[pre:len(a)-suf], b[pre:len(b)-suf]
	common := min(len(am), len(bm))
	for i := 0; i < common; i++ {
		diff(path+"/"+strconv.Itoa(pre+i), am[i], bm[i], ops)
	}
	for i := common; i < len(bm); i++ {
		*ops = append(*ops, Operation{Op: "add", Path: path + "/" + strconv.Itoa(pre+i), Value: bm[i]})
	}
	for i := common; i < len(am); i++ {
		// Each removal shifts the rest left: remove at the same index.
		*ops = append(*ops, Operation{Op: "remove", Path: path + "/" + strconv.Itoa(pre+common)})
	}
}

// escapePointer escapes a key for a JSON Pointer (RFC 6901).
func escapePointer(k string) string {
	return strings.ReplaceAll(strings.ReplaceAll(k, "~", "~0"), "/", "~1")
}
