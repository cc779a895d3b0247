package telemetry

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.opentelemetry.io/otel/attribute"
)

// spanLimits bound what one span keeps, as the OpenTelemetry SDK's
// SpanLimits do, read from the same environment variables. A count limit
// below zero means no limit; what goes over is counted as dropped (the
// oldest events and links go first). valueLength truncates string values
// (and each string of a string slice) to that many characters; -1 keeps
// them whole.
type spanLimits struct {
	attributes      int // per span
	events          int
	links           int
	eventAttributes int
	linkAttributes  int
	valueLength     int
}

// defaultSpanLimit is the SDK's default for every count limit.
const defaultSpanLimit = 128

func defaultSpanLimits() spanLimits {
	return spanLimits{defaultSpanLimit, defaultSpanLimit, defaultSpanLimit, defaultSpanLimit, defaultSpanLimit, -1}
}

// resolveSpanLimits reads OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT (else
// OTEL_ATTRIBUTE_COUNT_LIMIT), OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT (else
// OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT), OTEL_SPAN_EVENT_COUNT_LIMIT,
// OTEL_SPAN_LINK_COUNT_LIMIT, OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT and
// OTEL_LINK_ATTRIBUTE_COUNT_LIMIT. A value that is not an integer is an
// error naming the variable.
func resolveSpanLimits(getenv func(string) string) (spanLimits, error) {
	l := defaultSpanLimits()
	for _, f := range []struct {
		dst  *int
		keys []string
	}{
		{&l.attributes, []string{"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "OTEL_ATTRIBUTE_COUNT_LIMIT"}},
		{&l.valueLength, []string{"OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT"}},
		{&l.events, []string{"OTEL_SPAN_EVENT_COUNT_LIMIT"}},
		{&l.links, []string{"OTEL_SPAN_LINK_COUNT_LIMIT"}},
		{&l.eventAttributes, []string{"OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT"}},
		{&l.linkAttributes, []string{"OTEL_LINK_ATTRIBUTE_COUNT_LIMIT"}},
	} {
		for _, k := range f.keys {
			v := strings.TrimSpace(getenv(k))
			if v == "" {
				continue
			}
			n, err := strconv.Atoi(v)
			if err != nil {
				return l, fmt.Errorf("%s: %q is not an integer", k, v)
			}
			*f.dst = n
			break
		}
	}
	if l.valueLength < 0 {
		l.valueLength = -1
	}
	return l, nil
}

// limit is n when the limit is off (negative), else the limit.
func limitOr(limit, n int) int {
	if limit < 0 {
		return n
	}
	return limit
}

// truncate shortens string values to the value length limit, on a
// character boundary.
func (l spanLimits) truncate(kv attribute.KeyValue) attribute.KeyValue {
	if l.valueLength < 0 {
		return kv
	}
	switch kv.Value.Type() {
	case attribute.STRING:
		if s := kv.Value.AsString(); len(s) > l.valueLength {
			return kv.Key.String(truncateString(s, l.valueLength))
		}
	case attribute.STRINGSLICE:
		ss := kv.Value.AsStringSlice()
		changed := false
		for i, s := range ss {
			if len(s) > l.valueLength {
				ss[i], changed = truncateString(s, l.valueLength), true
			}
		}
		if changed {
			return kv.Key.StringSlice(ss)
		}
	}
	return kv
}

// truncateString keeps the first n characters of s (n bytes of invalid
// UTF-8 count one each).
func truncateString(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	i := 0
	for c := 0; c < n && i < len(s); c++ {
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
	}
	return s[:i]
}

// limitAttrs keeps at most limit attributes of an event or link, each
// truncated; it returns how many it dropped.
func (l spanLimits) limitAttrs(kvs []attribute.KeyValue, limit int) ([]attribute.KeyValue, int) {
	dropped := 0
	if limit >= 0 && len(kvs) > limit {
		kvs, dropped = kvs[:limit], len(kvs)-limit
	}
	if l.valueLength >= 0 {
		out := make([]attribute.KeyValue, len(kvs))
		for i, kv := range kvs {
			out[i] = l.truncate(kv)
		}
		kvs = out
	}
	return kvs, dropped
}
