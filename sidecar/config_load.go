package sidecar

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/ferrymesh/ferry/discovery"
	"github.com/ferrymesh/ferry/resilience"
)

// ConfigError is a configuration problem at one key path, such as
// "outbound.routes[0].service". ferry exits with code 2 on it.
type ConfigError struct {
	Path string // dotted key path; empty for the document as a whole
	Line int    // 1-based line in the file, 0 when unknown
	Msg  string
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	if e.Line > 0 {
		fmt.Fprintf(&b, " (line %d)", e.Line)
	}
	return b.String()
}

// ConfigErrors is every problem found in one file, in file order.
type ConfigErrors []*ConfigError

func (es ConfigErrors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// LoadConfigFile reads, defaults and validates a config file.
func LoadConfigFile(path string) (*Config, error) {
	_, cfg, err := readConfigFile(path)
	return cfg, err
}

// readConfigFile is LoadConfigFile that also returns the bytes read (nil
// when the file could not be read).
func readConfigFile(path string) ([]byte, *Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		return data, nil, fmt.Errorf("config %s:\n%w", path, err)
	}
	return data, cfg, nil
}

// ParseConfig decodes YAML config text strictly: unknown keys, wrong types
// and invalid values are reported with their key path. The result has every
// default filled in.
func ParseConfig(data []byte) (*Config, error) {
	if err := checkUTF8(data); err != nil {
		return nil, ConfigErrors{err}
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			what := "empty config"
			if len(data) == 0 {
				what += " (0 bytes)"
			}
			return nil, ConfigErrors{{Msg: what + ": at least one of outbound or inbound is required"}}
		}
		if e := tabIndentError(data, err); e != nil {
			return nil, ConfigErrors{e}
		}
		return nil, ConfigErrors{{Msg: err.Error()}}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, ConfigErrors{{Msg: "config must be a single YAML document"}}
	}
	var errs ConfigErrors
	checkNode(&doc, reflect.TypeOf(Config{}), "", &nodeCheck{errs: &errs, merged: map[mergeVisit]bool{}})
	if len(errs) > 0 {
		return nil, errs
	}
	cfg := &Config{Defaults: resilience.DefaultSettings()}
	if err := doc.Decode(cfg); err != nil {
		// checkNode validated every leaf; this is a backstop, and what
		// refuses an alias bomb.
		return nil, ConfigErrors{decodeError(&doc, "", err)}
	}
	// A section key with no value ("outbound:", "inbound: ~", "register:") is the
	// section with every default, as {} is; the decoder leaves it nil, as
	// if the key were absent.
	if n := rootValue(&doc, "outbound"); n != nil && isNull(n) {
		cfg.Outbound = &OutboundConfig{}
	}
	if n := rootValue(&doc, "inbound"); n != nil && isNull(n) {
		cfg.Inbound = &InboundConfig{}
	}
	if n := rootValue(&doc, "register"); n != nil && isNull(n) {
		cfg.Register = &discovery.Registration{}
	}
	// Each service starts from defaults: decode its keys over a fresh copy.
	defaults, services := rootValue(&doc, "defaults"), rootValue(&doc, "services")
	if services != nil && services.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(services.Content); i += 2 {
			name, node := services.Content[i].Value, services.Content[i+1]
			sc := &ServiceConfig{Settings: resilience.DefaultSettings()}
			if defaults != nil {
				if err := defaults.Decode(&sc.Settings); err != nil {
					return nil, ConfigErrors{decodeError(defaults, "defaults", err)}
				}
			}
			if err := node.Decode(sc); err != nil {
				return nil, ConfigErrors{decodeError(node, "services."+name, err)}
			}
			cfg.Services[name] = sc
		}
	}
	cfg.setDefaults()
	if errs := cfg.validate(); len(errs) > 0 {
		return nil, errs
	}
	return cfg, nil
}

// checkUTF8 reports the first byte of a UTF-8 config (one without a UTF-16
// byte order mark, which yaml decodes itself) that is not UTF-8, by line and
// column: yaml's own error says neither.
func checkUTF8(data []byte) *ConfigError {
	if bytes.HasPrefix(data, []byte{0xfe, 0xff}) || bytes.HasPrefix(data, []byte{0xff, 0xfe}) || utf8.Valid(data) {
		return nil
	}
	line, col := 1, 1
	for len(data) > 0 {
		r, size := utf8.DecodeRune(data)
		if r == utf8.RuneError && size <= 1 {
			return &ConfigError{Msg: fmt.Sprintf("not valid UTF-8: byte 0x%02x at line %d, column %d", data[0], line, col)}
		}
		if r == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
		data = data[size:]
	}
	return nil
}

var durationType = reflect.TypeOf(time.Duration(0))

// durationSyntax matches the text time.ParseDuration reads: a sign, then
// numbers each with a unit.
var durationSyntax = regexp.MustCompile(`^[-+]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ns|us|\x{b5}s|\x{3bc}s|ms|s|m|h))+$`)

// checkNode walks a YAML node beside the Go type it decodes into and records
// unknown keys and undecodable values under their key path.
func checkNode(n *yaml.Node, t reflect.Type, path string, c *nodeCheck) {
	errs := c.errs
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 1 {
			checkNode(n.Content[0], t, path, c)
		}
		return
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Tag == "!!null" {
		return
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	fail := func(format string, args ...any) {
		*errs = append(*errs, &ConfigError{Path: path, Line: n.Line, Msg: fmt.Sprintf(format, args...)})
	}
	switch {
	case t.Kind() == reflect.Struct || t.Kind() == reflect.Map:
		if n.Kind != yaml.MappingNode {
			fail("expected a mapping, got %s", describe(n))
			return
		}
		var fields map[string]reflect.StructField
		if t.Kind() == reflect.Struct {
			fields = yamlFields(t)
		}
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				*errs = append(*errs, &ConfigError{Path: path, Line: k.Line, Msg: fmt.Sprintf("a key must be a name, got %s", describe(k))})
				continue
			}
			if k.ShortTag() == "!!merge" {
				// "<<: *anchor" or "<<: [*a, *b]": the merged mappings'
				// keys are this mapping's, checked here; its own keys win
				// over them, so they are no duplicates.
				checkMerge(v, t, path, c)
				continue
			}
			p := join(path, k.Value)
			if seen[k.Value] {
				*errs = append(*errs, &ConfigError{Path: p, Line: k.Line, Msg: "duplicate key"})
				continue
			}
			seen[k.Value] = true
			if fields == nil { // a map: any key, values of the element type
				checkNode(v, t.Elem(), p, c)
				continue
			}
			f, ok := fields[k.Value]
			if !ok {
				*errs = append(*errs, &ConfigError{Path: p, Line: k.Line, Msg: fmt.Sprintf("unknown key (known: %s)", knownKeys(t))})
				continue
			}
			checkNode(v, f.Type, p, c)
		}
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			fail("expected a list, got %s", describe(n))
			return
		}
		for i, v := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			if isNull(v) {
				// The decoder would drop it, or decode it as an empty
				// value: say so instead.
				*errs = append(*errs, &ConfigError{Path: p, Line: v.Line, Msg: "empty list entry (null): give it a value or remove it"})
				continue
			}
			checkNode(v, t.Elem(), p, c)
		}
	default:
		if n.Kind != yaml.ScalarNode {
			fail("expected a single value, got %s", describe(n))
			return
		}
		if isInteger(t) && t != durationType {
			if msg := checkWholeNumber(n, t); msg != "" {
				fail("invalid value %q: %s", n.Value, msg)
				return
			}
		}
		v := reflect.New(t)
		if err := n.Decode(v.Interface()); err != nil {
			want := t.Kind().String()
			switch {
			case isInteger(t) && t != durationType:
				want = "a whole number"
			case t.Kind() == reflect.Float64 || t.Kind() == reflect.Float32:
				if _, err := strconv.ParseFloat(strings.ReplaceAll(n.Value, "_", ""), t.Bits()); errors.Is(err, strconv.ErrRange) {
					fail("invalid value %q: out of range (more than a %d-bit float holds, about %s)", n.Value, t.Bits(), maxFloat(t.Bits()))
					return
				}
				want = "a number"
			}
			if t == durationType {
				if durationSyntax.MatchString(n.Value) {
					// Well formed, so time.ParseDuration refused it for
					// overflowing.
					fail("invalid value %q: too large (a duration is at most %v)", n.Value, time.Duration(math.MaxInt64))
					return
				}
				want = `a duration such as "5s" or "2m"`
			}
			fail("invalid value %q: want %s", n.Value, want)
		}
	}
}

// checkMerge checks the value of a merge key (<<) of the mapping at path:
// a mapping, or a list of mappings, whose keys are checked as the
// mapping's own.
func checkMerge(v *yaml.Node, t reflect.Type, path string, c *nodeCheck) {
	if v.Kind == yaml.AliasNode {
		v = v.Alias
	}
	list := []*yaml.Node{v}
	if v.Kind == yaml.SequenceNode {
		list = v.Content
	}
	for _, m := range list {
		if m.Kind == yaml.AliasNode {
			m = m.Alias
		}
		if m.Kind != yaml.MappingNode {
			*c.errs = append(*c.errs, &ConfigError{Path: join(path, "<<"), Line: m.Line, Msg: fmt.Sprintf("expected a mapping or a list of mappings to merge, got %s", describe(m))})
			continue
		}
		// A mapping merged again (directly or through other merges) was
		// checked the first time: merges of merges would otherwise take
		// time exponential in the file's size.
		if c.merged[mergeVisit{m, t}] {
			continue
		}
		c.merged[mergeVisit{m, t}] = true
		checkNode(m, t, path, c)
	}
}

// nodeCheck is checkNode's state: the errors found, and the mappings
// already checked as the value of a merge key.
type nodeCheck struct {
	errs   *ConfigErrors
	merged map[mergeVisit]bool
}

type mergeVisit struct {
	n *yaml.Node
	t reflect.Type
}

// isNull reports a null value (null, ~ or nothing at all), aliased or not.
func isNull(n *yaml.Node) bool {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n.Tag == "!!null"
}

// rootValue returns the value node of a top-level key, or nil.
func rootValue(doc *yaml.Node, key string) *yaml.Node {
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil
	}
	root := doc.Content[0]
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == key {
			return root.Content[i+1]
		}
	}
	return nil
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return fmt.Sprintf("%q", n.Value)
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// yamlFields maps the YAML keys of a struct type to its fields, following
// inlined structs.
func yamlFields(t reflect.Type) map[string]reflect.StructField {
	out := map[string]reflect.StructField{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" && strings.Contains(opts, "inline") && f.Type.Kind() == reflect.Struct {
			for k, sub := range yamlFields(f.Type) {
				out[k] = sub
			}
			continue
		}
		if name != "" {
			out[name] = f
		}
	}
	return out
}

func knownKeys(t reflect.Type) string {
	fields := yamlFields(t)
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return strings.Join(keys, ", ")
}

// decimalDigits matches a whole number in decimal digits, signed or not.
var decimalDigits = regexp.MustCompile(`^[-+]?[0-9][0-9_]*$`)

// checkWholeNumber says what is wrong with a scalar read into the integer
// type t, or "" for the decoder to judge: a fraction (the decoder would
// drop it: 0.5 would be 0), a leading zero (the decoder reads 0503 as
// YAML 1.1 octal, 323), digits out of t's range (YAML takes
// 99999999999999999999 for a float).
func checkWholeNumber(n *yaml.Node, t reflect.Type) string {
	if tag := n.ShortTag(); tag != "!!int" && tag != "!!float" {
		return "" // a string ("0503" quoted): not a number
	}
	if !decimalDigits.MatchString(n.Value) {
		if n.ShortTag() == "!!float" {
			return "want a whole number"
		}
		return ""
	}
	digits := strings.TrimLeft(n.Value, "+-")
	if len(digits) > 1 && digits[0] == '0' {
		return "a whole number has no leading zero (YAML would read it as octal)"
	}
	if err := n.Decode(reflect.New(t).Interface()); err == nil && n.ShortTag() == "!!int" {
		return ""
	}
	switch {
	case t.Kind() >= reflect.Uint && t.Kind() <= reflect.Uint64 && strings.HasPrefix(n.Value, "-"):
		return "must not be negative"
	case t.Kind() >= reflect.Uint && t.Kind() <= reflect.Uint64:
		return fmt.Sprintf("out of range (at most %d)", uint64(1)<<t.Bits()-1)
	case strings.HasPrefix(n.Value, "-"):
		return fmt.Sprintf("out of range (at least %d)", int64(-1)<<(t.Bits()-1))
	}
	return fmt.Sprintf("out of range (at most %d)", int64(1)<<(t.Bits()-1)-1)
}

// maxFloat is about the largest float of the given bits.
func maxFloat(bits int) string {
	if bits == 32 {
		return "3.4e38"
	}
	return "1.8e308"
}

// isInteger reports an integer kind.
func isInteger(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return true
	}
	return false
}
