package inject

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// A JSON document is read with encoding/json rather than the YAML parser,
// into the same YAML nodes, so that the injection works on one tree for
// both: the YAML parser refuses some valid JSON (a "\ud83d\ude00"
// surrogate pair, as Python's json.dumps and jq -a write any character
// outside the BMP), and decoding to a map would lose what the document says
// the way it says it (key order, a number such as 12345678901234567890).
// Nodes keep the keys in order and each number as written, and
// writeJSONNode writes them back out.

// jsonNode reads one JSON value that json.Valid accepted.
func jsonNode(data []byte) (*yaml.Node, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	n, err := readJSONValue(dec)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the JSON value")
	}
	return n, nil
}

func readJSONValue(dec *json.Decoder) (*yaml.Node, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		if t == '{' {
			n.Kind, n.Tag = yaml.MappingNode, "!!map"
		}
		for dec.More() {
			if n.Kind == yaml.MappingNode {
				k, err := dec.Token()
				if err != nil {
					return nil, err
				}
				key, _ := k.(string)
				n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key})
			}
			v, err := readJSONValue(dec)
			if err != nil {
				return nil, err
			}
			n.Content = append(n.Content, v)
		}
		if _, err := dec.Token(); err != nil { // the closing delimiter
			return nil, err
		}
		return n, nil
	case string:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: t}, nil
	case json.Number:
		// Decoded (for the fields ferry reads) as YAML would: an integer
		// beyond 64 bits as a float; written out as it is.
		tag := "!!float"
		if _, err := t.Int64(); err == nil {
			tag = "!!int"
		} else if _, err := strconv.ParseUint(string(t), 10, 64); err == nil {
			tag = "!!int"
		}
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: string(t)}, nil
	case bool:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: fmt.Sprint(t)}, nil
	default: // nil
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}, nil
	}
}

// writeJSONNode writes a node tree built from JSON (by jsonNode, or from
// the JSON of ferry's container) as json.MarshalIndent with a two-space
// indent would, keys in the tree's order and numbers as written.
func writeJSONNode(b *bytes.Buffer, n *yaml.Node, indent string) error {
	switch n.Kind {
	case yaml.MappingNode, yaml.SequenceNode:
		open, end, step := "[", "]", 1
		if n.Kind == yaml.MappingNode {
			open, end, step = "{", "}", 2
		}
		b.WriteString(open)
		if len(n.Content) == 0 {
			b.WriteString(end)
			return nil
		}
		inner := indent + "  "
		for i := 0; i+step <= len(n.Content); i += step {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString("\n" + inner)
			v := n.Content[i]
			if step == 2 {
				key, err := json.Marshal(v.Value)
				if err != nil {
					return err
				}
				b.Write(key)
				b.WriteString(": ")
				v = n.Content[i+1]
			}
			if err := writeJSONNode(b, v, inner); err != nil {
				return err
			}
		}
		b.WriteString("\n" + indent + end)
		return nil
	case yaml.ScalarNode:
		switch tag := n.ShortTag(); tag {
		case "!!str":
			s, err := json.Marshal(n.Value)
			if err != nil {
				return err
			}
			b.Write(s)
		case "!!null":
			b.WriteString("null")
		case "!!bool", "!!int", "!!float":
			if !json.Valid([]byte(n.Value)) || strings.HasPrefix(n.Value, "\"") {
				return fmt.Errorf("%s %q is not a JSON value", tag, n.Value)
			}
			b.WriteString(n.Value)
		default:
			return fmt.Errorf("a %s value in a JSON document", tag)
		}
		return nil
	}
	return fmt.Errorf("a YAML node of kind %d in a JSON document", n.Kind)
}

// numberOutOfRange finds a number in a node tree that a 64-bit float
// cannot hold (1e400, valid JSON), which the YAML decoder refuses in its
// own words, and returns its path below path (spec.x[1], or
// labels["a.b/c"] for a key with a dot) and the number as written.
func numberOutOfRange(n *yaml.Node, path string) (string, string, bool) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i].Value
			p := path + "." + key
			if path == "" {
				p = key
			}
			if strings.ContainsAny(key, ".[]\"") || key == "" {
				p = path + "[" + strconv.Quote(key) + "]"
			}
			if at, v, ok := numberOutOfRange(n.Content[i+1], p); ok {
				return at, v, true
			}
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			if at, v, ok := numberOutOfRange(c, fmt.Sprintf("%s[%d]", path, i)); ok {
				return at, v, true
			}
		}
	case yaml.ScalarNode:
		if tag := n.ShortTag(); tag == "!!float" || tag == "!!int" {
			if _, err := strconv.ParseFloat(n.Value, 64); errors.Is(err, strconv.ErrRange) {
				return path, n.Value, true
			}
		}
	}
	return "", "", false
}

// jsonStream returns where each value of a stream of JSON values written
// one after another starts and ends (kubectl apply reads such a stream as
// so many objects; `jq '.items[]'` writes one), or nil when data is not
// one.
func jsonStream(data []byte) [][2]int {
	dec := json.NewDecoder(bytes.NewReader(data))
	var spans [][2]int
	for {
		var v json.RawMessage
		if err := dec.Decode(&v); errors.Is(err, io.EOF) {
			return spans
		} else if err != nil {
			return nil
		}
		end := int(dec.InputOffset())
		spans = append(spans, [2]int{end - len(v), end})
	}
}

// injectJSONStream injects each value of a stream of JSON values. What
// lies between them is kept; a value that does not change is copied byte
// for byte.
func (in *Injector) injectJSONStream(data []byte, spans [][2]int) ([]byte, []Report, error) {
	var out bytes.Buffer
	var reports []Report
	at := 0
	for i, s := range spans {
		out.Write(data[at:s[0]])
		v, reps, err := in.injectJSONDocument(data[s[0]:s[1]])
		reports = append(reports, reps...)
		if err != nil {
			return nil, reports, fmt.Errorf("JSON value %d: %w", i+1, err)
		}
		// A changed value ends with a newline; the input's own spacing
		// follows it.
		out.Write(bytes.TrimSuffix(v, []byte("\n")))
		at = s[1]
	}
	out.Write(data[at:])
	return out.Bytes(), reports, nil
}
