package sidecar

import (
	"fmt"
	"math"
	"strings"

	"go.yaml.in/yaml/v3"
)

// decodeError is the error of decoding n, the node at path, into a Go
// value. yaml refuses a document whose aliases expand too much (its guard
// against alias bombs) with "document contains excessive aliasing", which
// names no key and no line: that one becomes an error naming the alias
// that expands the most, by key path and line, and its anchor's line.
func decodeError(n *yaml.Node, path string, err error) *ConfigError {
	if !strings.Contains(err.Error(), "excessive aliasing") {
		return &ConfigError{Path: path, Msg: err.Error()}
	}
	w := aliasWalk{size: map[*yaml.Node]uint64{}}
	w.walk(n, path)
	if w.alias == nil { // yaml's guard fired on aliases that are not in n
		return &ConfigError{Path: path, Msg: fmt.Sprintf("aliases expand too much: refused as an alias bomb (%v)", err)}
	}
	size := fmt.Sprint(w.max)
	if w.max == math.MaxUint64 {
		size = "more than " + size
	}
	return &ConfigError{Path: w.path, Line: w.alias.Line, Msg: fmt.Sprintf("alias *%s (anchor at line %d) expands to %s values: refused as an alias bomb (%v)", w.alias.Value, w.alias.Alias.Line, size, err)}
}

// aliasWalk finds the alias whose value, aliases within it expanded,
// has the most nodes: the first in file order of those that have.
type aliasWalk struct {
	size  map[*yaml.Node]uint64 // the expanded size of each node seen
	alias *yaml.Node
	path  string
	max   uint64
}

// walk visits every node under n (at path) as written, aliases not
// followed, so in time linear in the file.
func (w *aliasWalk) walk(n *yaml.Node, path string) {
	switch n.Kind {
	case yaml.AliasNode:
		if size := w.expanded(n); size > w.max {
			w.alias, w.path, w.max = n, path, size
		}
	case yaml.DocumentNode:
		for _, c := range n.Content {
			w.walk(c, path)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			w.walk(c, fmt.Sprintf("%s[%d]", path, i))
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			p := join(path, n.Content[i].Value)
			w.walk(n.Content[i], p)
			w.walk(n.Content[i+1], p)
		}
	}
}

// expanded is the number of nodes n stands for once every alias in it is
// replaced by its value (saturating at math.MaxUint64), each node's
// counted once (memoised), so in time linear in the file.
func (w *aliasWalk) expanded(n *yaml.Node) uint64 {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		return w.expanded(n.Alias)
	}
	if size, ok := w.size[n]; ok {
		return size
	}
	w.size[n] = math.MaxUint64 // a node that contains itself never ends
	size := uint64(1)
	for _, c := range n.Content {
		c := w.expanded(c)
		if size > math.MaxUint64-c {
			size = math.MaxUint64
			break
		}
		size += c
	}
	w.size[n] = size
	return size
}
