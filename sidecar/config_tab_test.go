package sidecar

import (
	"errors"
	"strings"
	"testing"
)

// A tab in the indentation got the YAML library's own message ("yaml: line
// 4: found a tab character that violates indentation", or "found character
// that cannot start any token"), which names no key, does not say a tab
// cannot indent YAML, and for the first form names the line before the
// tab's. The error must name the tab's line, the key it follows, and say
// that YAML indents with spaces.
func TestParseConfigTabIndentNamed(t *testing.T) {
	for _, tc := range []struct {
		text  string
		line  int
		after string // "": no key before the tab
		key   string // the key on the tab's line, "" when none
	}{
		{"\toutbound: {}\n", 1, "", "outbound"},
		{"outbound:\n\tlisten: 127.0.0.1:15001\n", 2, "outbound", "listen"},
		{"outbound:\n  listen: 127.0.0.1:15001\n  routes:\n    - service: a\n\t  host: x\nservices:\n  a: {endpoints: [127.0.0.1:1]}\n",
			5, "outbound.routes[0].service", "host"},
		{"outbound:\n  routes:\n  - service: a\nservices:\n  a:\n    endpoints:\n\t- 127.0.0.1:1\n", 7, "services.a.endpoints", ""},
		{"outbound: {}\nservices:\n  a:\n    timeouts:\n      connect: 1s\n  \t  overall: 2s\n", 6, "services.a.timeouts.connect", "overall"},
		{"outbound: {}\nservices:\n  a: {endpoints: [127.0.0.1:1]}\n\t\n", 4, "services.a", ""},
	} {
		_, err := ParseConfig([]byte(tc.text))
		var errs ConfigErrors
		if !errors.As(err, &errs) || len(errs) != 1 {
			t.Errorf("%q: error %v, want one ConfigError", tc.text, err)
			continue
		}
		e := errs[0]
		msg := e.Error()
		if e.Line != tc.line || !strings.Contains(msg, "tab") || !strings.Contains(msg, "YAML indents with spaces only") || strings.Contains(msg, "yaml:") {
			t.Errorf("%q: %q (line %d), want line %d and that YAML indents with spaces only, not the library's message", tc.text, msg, e.Line, tc.line)
		}
		if tc.after != "" && !strings.Contains(msg, "after "+tc.after) {
			t.Errorf("%q: %q does not say it follows %s", tc.text, msg, tc.after)
		}
		if tc.key != "" && !strings.Contains(msg, `key "`+tc.key+`"`) {
			t.Errorf("%q: %q does not name the key %q on the line", tc.text, msg, tc.key)
		}
	}
	// A tab that does not indent is no error.
	if _, err := ParseConfig([]byte("outbound:\n  listen:\t127.0.0.1:15001\n")); err != nil {
		t.Errorf("tab after a key: %v", err)
	}
}
