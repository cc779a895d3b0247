package inject

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// InjectObject injects one decoded object (JSON numbers as json.Number or
// Go numbers) in place and reports what it did. A List injects each item.
// A refused or skipped object is not modified.
func (in *Injector) InjectObject(obj map[string]any) (changed bool, reports []Report) {
	if isList(obj) {
		items, _ := obj["items"].([]any)
		for _, it := range items {
			m, ok := it.(map[string]any)
			if !ok {
				reports = append(reports, Report{Outcome: Skipped, Reason: "a List item that is not an object"})
				continue
			}
			c, r := in.InjectObject(m)
			changed = changed || c
			reports = append(reports, r...)
		}
		return changed, reports
	}
	mut, rep := in.decide(obj)
	if mut == nil {
		return false, []Report{rep}
	}
	if err := mut.applyMap(obj); err != nil {
		// decide read the same paths; this is a backstop.
		rep.Outcome, rep.Reason, rep.Warnings = Refused, err.Error(), nil
		return false, []Report{rep}
	}
	return true, []Report{rep}
}

// InjectJSON injects one JSON object (a Pod, a workload or a List). It
// returns the injected JSON, or the input itself when nothing changed.
func (in *Injector) InjectJSON(data []byte) ([]byte, []Report, error) {
	obj, err := decodeJSONObject(data)
	if err != nil {
		return nil, nil, err
	}
	changed, reps := in.InjectObject(obj)
	if !changed {
		return data, reps, nil
	}
	out, err := json.Marshal(obj)
	if err != nil {
		return nil, reps, fmt.Errorf("encode injected object: %w", err)
	}
	return out, reps, nil
}

// decodeJSONObject decodes a JSON object keeping numbers exact.
func decodeJSONObject(data []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		return nil, fmt.Errorf("decode JSON object: %w", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("decode JSON object: data after the object")
	}
	if obj == nil {
		return nil, fmt.Errorf("decode JSON object: null")
	}
	return obj, nil
}

func isList(obj map[string]any) bool {
	kind, _ := obj["kind"].(string)
	apiVersion, _ := obj["apiVersion"].(string)
	return kind == "List" && apiVersion == "v1"
}

// containerMap is the container as generic JSON.
func (m *mutation) containerMap() (map[string]any, error) {
	raw, err := json.Marshal(m.container)
	if err != nil {
		return nil, fmt.Errorf("encode ferry container: %w", err)
	}
	return decodeJSONObject(raw)
}

// applyMap makes the change on a generic object.
func (m *mutation) applyMap(obj map[string]any) error {
	tmpl := obj
	for _, k := range m.template {
		next, ok := tmpl[k].(map[string]any)
		if !ok {
			return fmt.Errorf("no pod template")
		}
		tmpl = next
	}
	c, err := m.containerMap()
	if err != nil {
		return err
	}
	spec, ok := tmpl["spec"].(map[string]any)
	if !ok {
		return fmt.Errorf("no pod spec")
	}
	meta, ok := tmpl["metadata"].(map[string]any)
	if !ok {
		meta = map[string]any{}
		tmpl["metadata"] = meta
	}
	ann, ok := meta["annotations"].(map[string]any)
	if !ok {
		ann = map[string]any{}
		meta["annotations"] = ann
	}
	for k, v := range m.annotations {
		ann[k] = v
	}
	if len(m.podRequests) > 0 {
		res, ok := spec["resources"].(map[string]any)
		if !ok {
			return fmt.Errorf("spec.resources is not an object")
		}
		req, ok := res["requests"].(map[string]any)
		if !ok {
			req = map[string]any{}
			res["requests"] = req
		}
		for k, v := range m.podRequests {
			req[k] = v
		}
	}
	list := "containers"
	if m.native {
		list = "initContainers"
	}
	old, _ := spec[list].([]any)
	spec[list] = append([]any{c}, old...)
	return nil
}
