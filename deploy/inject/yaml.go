package inject

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// InjectYAML injects every object of a YAML (or JSON) stream of one or more
// documents separated by "---" lines. Documents that change are rewritten
// (key order and comments kept, indentation normalised to two spaces);
// every other document, separator and comment is copied byte for byte, so
// a stream where nothing is injected comes back identical. A document that
// is not valid YAML is an error naming it.
func (in *Injector) InjectYAML(data []byte) ([]byte, []Report, error) {
	var out bytes.Buffer
	var reports []Report
	for i, d := range splitDocuments(data) {
		out.WriteString(d.separator)
		body, reps, err := in.injectDocument(d.body)
		if err != nil {
			return nil, reports, fmt.Errorf("document %d (line %d): %w", i+1, d.line, err)
		}
		reports = append(reports, reps...)
		out.Write(body)
	}
	return out.Bytes(), reports, nil
}

// document is one part of a YAML stream: its "---" line (empty for the
// first document when the stream has none) and its text.
type document struct {
	separator string
	body      []byte
	line      int // 1-based line where the body starts
}

// splitDocuments cuts a stream at lines that are "---" (optionally followed
// by a space and more). Concatenating the parts gives back the input.
func splitDocuments(data []byte) []document {
	var docs []document
	cur := document{line: 1}
	line := 1
	for rest := data; len(rest) > 0; line++ {
		n := bytes.IndexByte(rest, '\n') + 1
		if n == 0 {
			n = len(rest)
		}
		l := rest[:n]
		rest = rest[n:]
		t := strings.TrimRight(string(l), "\r\n")
		if t == "---" || strings.HasPrefix(t, "--- ") || strings.HasPrefix(t, "---\t") {
			if cur.separator != "" || len(cur.body) > 0 {
				docs = append(docs, cur)
			}
			cur = document{separator: string(l), line: line + 1}
			continue
		}
		cur.body = append(cur.body, l...)
	}
	return append(docs, cur)
}

// injectDocument injects the objects of one document.
func (in *Injector) injectDocument(body []byte) ([]byte, []Report, error) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) > 0 && trimmed[0] == '{' {
		if json.Valid(body) {
			return in.injectJSONDocument(body)
		}
		if values := jsonStream(body); len(values) > 1 {
			return in.injectJSONStream(body, values)
		}
	}
	// The YAML parser reads one document; what follows it (a document
	// after a "..." line, text that is not YAML) would be dropped unread.
	// Directives at the end belong to the next document, after its "---".
	dec := yaml.NewDecoder(bytes.NewReader(withoutTrailingDirectives(body)))
	var doc yaml.Node
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return body, nil, nil // empty: only comments or blank lines
	} else if err != nil {
		return nil, nil, err
	}
	var next yaml.Node
	if err := dec.Decode(&next); err == nil {
		return nil, nil, fmt.Errorf("line %d: a second document without a \"---\" line before it", next.Line)
	} else if !errors.Is(err, io.EOF) {
		return nil, nil, err
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return body, nil, nil
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return body, []Report{{Outcome: Skipped, Reason: "the document is not an object"}}, nil
	}
	changed, reps := in.injectNode(root)
	if !changed {
		return body, reps, nil
	}
	if len(trimmed) > 0 && trimmed[0] == '{' {
		// A YAML flow mapping that is not JSON: JSON out, as for JSON in.
		var obj any
		if err := doc.Decode(&obj); err != nil {
			return nil, reps, fmt.Errorf("re-read injected document: %w", err)
		}
		out, err := json.MarshalIndent(obj, "", "  ")
		if err != nil {
			return nil, reps, fmt.Errorf("encode injected document: %w", err)
		}
		return append(out, '\n'), reps, nil
	}
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, reps, fmt.Errorf("encode injected document: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, reps, fmt.Errorf("encode injected document: %w", err)
	}
	return out.Bytes(), reps, nil
}

// withoutTrailingDirectives cuts the directives ("%YAML 1.2", "%TAG ...")
// that end a document's text, with the blank and comment lines among
// them: they are the next document's, which starts at the "---" line
// after them.
func withoutTrailingDirectives(body []byte) []byte {
	end, directive := len(body), false
	for end > 0 {
		start := bytes.LastIndexByte(body[:end-1], '\n') + 1
		line := bytes.TrimRight(body[start:end], " \t\r\n")
		switch {
		case len(line) > 0 && line[0] == '%':
			directive = true
		case len(line) > 0 && line[0] != '#':
			if directive {
				return body[:end]
			}
			return body
		}
		end = start
	}
	return body
}

// injectJSONDocument injects a document that is one JSON object and
// writes it back as JSON, keys in their order and numbers as written.
func (in *Injector) injectJSONDocument(body []byte) ([]byte, []Report, error) {
	root, err := jsonNode(body)
	if err != nil {
		return nil, nil, err
	}
	if root.Kind != yaml.MappingNode {
		return body, []Report{{Outcome: Skipped, Reason: "the document is not an object"}}, nil
	}
	changed, reps := in.injectNode(root)
	if !changed {
		return body, reps, nil
	}
	var out bytes.Buffer
	if err := writeJSONNode(&out, root, ""); err != nil {
		return nil, reps, fmt.Errorf("encode injected document: %w", err)
	}
	out.WriteByte('\n')
	return out.Bytes(), reps, nil
}

// injectNode injects one object node (a List injects each item).
func (in *Injector) injectNode(n *yaml.Node) (bool, []Report) {
	var head struct {
		APIVersion any `yaml:"apiVersion"`
		Kind       any `yaml:"kind"`
		Metadata   struct {
			Name, Namespace any
		} `yaml:"metadata"`
	}
	_ = n.Decode(&head) // a document that does not decode is skipped below
	if head.Kind == "List" && head.APIVersion == "v1" {
		items := mapValue(n, "items")
		if items == nil || items.Kind != yaml.SequenceNode {
			return false, []Report{{Kind: "List", Outcome: Skipped, Reason: "a List without items"}}
		}
		changed := false
		var reps []Report
		for _, it := range items.Content {
			if it.Kind != yaml.MappingNode {
				reps = append(reps, Report{Outcome: Skipped, Reason: "a List item that is not an object"})
				continue
			}
			c, r := in.injectNode(it)
			changed = changed || c
			reps = append(reps, r...)
		}
		return changed, reps
	}
	var obj map[string]any
	if err := n.Decode(&obj); err != nil {
		kind, _ := head.Kind.(string)
		rep := Report{Kind: kind, Outcome: Skipped, Reason: "cannot decode: " + err.Error()}
		rep.Name, _ = head.Metadata.Name.(string)
		rep.Namespace, _ = head.Metadata.Namespace.(string)
		if path, number, ok := numberOutOfRange(n, ""); ok {
			// JSON makes such a node (YAML reads 1e400 as a string unless
			// it is tagged !!float).
			rep.Reason = fmt.Sprintf("cannot decode: %s: the JSON number %s is out of range: more than a 64-bit float holds (about 1.8e308)", path, number)
		}
		if _, ok := workloads[kind]; ok {
			rep.Outcome = Refused
		}
		return false, []Report{rep}
	}
	obj = jsonCompatible(obj).(map[string]any)
	mut, rep := in.decide(obj)
	if mut == nil {
		return false, []Report{rep}
	}
	if err := mut.applyNode(n); err != nil {
		rep.Outcome, rep.Reason, rep.Warnings = Refused, err.Error(), nil
		return false, []Report{rep}
	}
	return true, []Report{rep}
}

// jsonCompatible turns the map[any]any that YAML may produce for nested
// mappings into map[string]any.
func jsonCompatible(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			t[k] = jsonCompatible(e)
		}
		return t
	case map[any]any:
		m := make(map[string]any, len(t))
		for k, e := range t {
			m[fmt.Sprint(k)] = jsonCompatible(e)
		}
		return m
	case []any:
		for i, e := range t {
			t[i] = jsonCompatible(e)
		}
	}
	return v
}

// applyNode makes the change on a YAML node, keeping its key order and
// comments.
func (m *mutation) applyNode(obj *yaml.Node) error {
	tmpl := obj
	for _, k := range m.template {
		tmpl = mapValue(tmpl, k)
		if tmpl == nil || tmpl.Kind != yaml.MappingNode {
			return fmt.Errorf("no pod template (or a YAML alias in its path)")
		}
	}
	spec := mapValue(tmpl, "spec")
	if spec == nil || spec.Kind != yaml.MappingNode {
		return fmt.Errorf("no pod spec (or a YAML alias in its path)")
	}
	raw, err := json.Marshal(m.container)
	if err != nil {
		return fmt.Errorf("encode ferry container: %w", err)
	}
	var c yaml.Node
	if err := yaml.Unmarshal(raw, &c); err != nil {
		return fmt.Errorf("encode ferry container: %w", err)
	}
	container := c.Content[0]
	plainStyle(container)
	list := "containers"
	if m.native {
		list = "initContainers"
	}
	// A key ferry adds beside a merge key ("<<") overrides what the merge
	// brings: when the merge holds the key, adding ours would drop the
	// merged value (the app's containers, the template's annotations).
	for _, k := range []struct {
		n    *yaml.Node
		key  string
		path string
	}{
		{tmpl, "metadata", "metadata"},
		{mapValue(tmpl, "metadata"), "annotations", "metadata.annotations"},
		{spec, list, "spec." + list},
	} {
		if fromMerge(k.n, k.key) {
			return fmt.Errorf("the pod template's %s comes from a YAML merge key (<<), which ferry cannot add to in place; write it out", k.path)
		}
	}
	meta := ensureMapping(tmpl, "metadata")
	ann := ensureMapping(meta, "annotations")
	if meta == nil || ann == nil {
		return fmt.Errorf("pod template metadata is not a mapping")
	}
	for k, v := range m.annotations {
		setString(ann, k, v)
	}
	if len(m.podRequests) > 0 {
		res := mapValue(spec, "resources")
		if res == nil || res.Kind != yaml.MappingNode || fromMerge(spec, "resources") {
			return fmt.Errorf("the pod template's spec.resources is a YAML alias or comes from a merge key (<<), which ferry cannot add its defaulted requests to in place; write it out")
		}
		if fromMerge(res, "requests") {
			return fmt.Errorf("the pod template's spec.resources.requests comes from a YAML merge key (<<), which ferry cannot add to in place; write it out")
		}
		req := ensureMapping(res, "requests")
		if req == nil {
			return fmt.Errorf("spec.resources.requests is not a mapping (or a YAML alias)")
		}
		names := make([]string, 0, len(m.podRequests))
		for k := range m.podRequests {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			setString(req, k, m.podRequests[k])
		}
	}
	seq := mapValue(spec, list)
	if seq == nil || seq.Tag == "!!null" {
		seq = &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		setValue(spec, list, seq)
	}
	if seq.Kind != yaml.SequenceNode {
		return fmt.Errorf("spec.%s is not a list", list)
	}
	seq.Style = 0
	seq.Content = append([]*yaml.Node{container}, seq.Content...)
	return nil
}

// mapValue returns the value of key in a mapping node, or nil.
func mapValue(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// fromMerge reports whether a mapping node gets key only through a merge
// key ("<<"): key is not written in the mapping itself, but the mapping
// as read (merges applied) has it.
func fromMerge(n *yaml.Node, key string) bool {
	if n == nil || n.Kind != yaml.MappingNode || mapValue(n, key) != nil {
		return false
	}
	merges := false
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Tag == "!!merge" {
			merges = true
		}
	}
	if !merges {
		return false
	}
	var m map[string]any
	if err := n.Decode(&m); err != nil {
		return true // cannot tell: do not risk dropping what it holds
	}
	_, ok := m[key]
	return ok
}

// setValue sets key in a mapping node, appending it when absent.
func setValue(n *yaml.Node, key string, v *yaml.Node) {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			n.Content[i+1] = v
			return
		}
	}
	n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, v)
}

func setString(n *yaml.Node, key, value string) {
	setValue(n, key, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: value})
}

// ensureMapping returns the mapping under key, creating it when absent or
// null; nil when key holds something else.
func ensureMapping(n *yaml.Node, key string) *yaml.Node {
	if n == nil {
		return nil
	}
	v := mapValue(n, key)
	if v == nil || v.Tag == "!!null" {
		v = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		setValue(n, key, v)
	}
	if v.Kind != yaml.MappingNode {
		return nil
	}
	return v
}

// plainStyle drops the JSON (flow, double-quoted) styles of a node built
// from JSON, so it is written as block YAML; the encoder quotes the strings
// that need it.
func plainStyle(n *yaml.Node) {
	n.Style = 0
	for _, c := range n.Content {
		plainStyle(c)
	}
}
