package sidecar

import (
	"bytes"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The YAML library's error for a tab in the indentation names a line (the
// one before the tab's, for some), no key, and not the tab: "found
// character that cannot start any token", "found a tab character that
// violates indentation". tabIndentError says it in ferry's terms.

// yamlErrorLine matches the YAML library's syntax error, with its 1-based
// line when it gives one.
var yamlErrorLine = regexp.MustCompile(`^yaml: (?:line ([0-9]+): )?`)

// tabLineKey matches the key a line starts with ("key:" or "- key:").
var tabLineKey = regexp.MustCompile(`^(?:-[ \t]+)?([A-Za-z0-9_.-]+)[ \t]*:(?:[ \t]|$)`)

// tabIndentError returns the error for a syntax error that a tab indenting
// the line it names, or the next, explains; nil otherwise.
func tabIndentError(data []byte, err error) *ConfigError {
	m := yamlErrorLine.FindStringSubmatch(err.Error())
	if m == nil {
		return nil
	}
	at := 1
	if m[1] != "" {
		at, _ = strconv.Atoi(m[1])
	}
	lines := bytes.Split(data, []byte("\n"))
	for l := at; l <= at+1 && l <= len(lines); l++ {
		text := strings.TrimRight(string(lines[l-1]), "\r")
		rest := strings.TrimLeft(text, " \t")
		if !strings.Contains(text[:len(text)-len(rest)], "\t") {
			continue
		}
		where := ""
		if k := tabLineKey.FindStringSubmatch(rest); k != nil {
			where = fmt.Sprintf("key %q", k[1])
		}
		if after := lastKeyPath(bytes.Join(lines[:l-1], []byte("\n"))); after != "" {
			if where != "" {
				where += ", "
			}
			where += "after " + after
		}
		if where != "" {
			where = " (" + where + ")"
		}
		return &ConfigError{Line: l, Msg: "a tab indents this line" + where + ": YAML indents with spaces only, never tabs"}
	}
	return nil
}

// lastKeyPath is the key path of the last value the YAML text holds
// ("outbound.routes[0].service"), not looking into flow collections ({...},
// [...]); "" when the text does not parse or holds no key.
func lastKeyPath(text []byte) string {
	var doc yaml.Node
	if yaml.Unmarshal(text, &doc) != nil || doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return ""
	}
	path := ""
	for n := doc.Content[0]; n.Style&yaml.FlowStyle == 0 && len(n.Content) > 0; {
		switch n.Kind {
		case yaml.MappingNode:
			path = join(path, n.Content[len(n.Content)-2].Value)
		case yaml.SequenceNode:
			path = fmt.Sprintf("%s[%d]", path, len(n.Content)-1)
		default:
			return path
		}
		n = n.Content[len(n.Content)-1]
	}
	return path
}
