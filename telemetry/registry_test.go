package telemetry

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"math"
	"net/http/httptest"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// parsedSample is one sample line read back by parseExposition.
type parsedSample struct {
	name     string
	labels   map[string]string
	value    float64
	exemplar map[string]string // nil without one
	exValue  float64
}

// parsedFamily is one HELP/TYPE block and its samples.
type parsedFamily struct {
	name, help, typ string
	samples         []parsedSample
}

// parseExposition reads a scrape strictly: every line is HELP, TYPE, a
// sample of the family announced last (its name, or name plus _total,
// _bucket, _sum, _count as the type allows) or, in OpenMetrics, the final
// # EOF. Label values are unescaped; histograms must be cumulative with a
// +Inf bucket equal to _count; exemplars only in OpenMetrics, only on
// counter totals and buckets.
func parseExposition(t *testing.T, body string, om bool) map[string]*parsedFamily {
	t.Helper()
	fams := map[string]*parsedFamily{}
	var cur *parsedFamily
	lines := strings.Split(body, "\n")
	if lines[len(lines)-1] != "" {
		t.Fatalf("exposition does not end in a newline")
	}
	lines = lines[:len(lines)-1]
	for n, line := range lines {
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("line %d %q: %s", n+1, line, fmt.Sprintf(format, args...))
		}
		switch {
		case line == "# EOF":
			if !om || n != len(lines)-1 {
				fail("# EOF is only the last line of OpenMetrics")
			}
		case strings.HasPrefix(line, "# HELP "):
			name, help, ok := strings.Cut(strings.TrimPrefix(line, "# HELP "), " ")
			if !ok || !validName(name) {
				fail("bad HELP")
			}
			if _, dup := fams[name]; dup {
				fail("family %s announced twice", name)
			}
			cur = &parsedFamily{name: name, help: unescapeHelp(t, help, om)}
			fams[name] = cur
		case strings.HasPrefix(line, "# TYPE "):
			name, typ, _ := strings.Cut(strings.TrimPrefix(line, "# TYPE "), " ")
			if cur == nil || name != cur.name || cur.typ != "" {
				fail("TYPE without its HELP")
			}
			switch typ {
			case "counter", "gauge", "histogram":
			default:
				fail("type %q", typ)
			}
			cur.typ = typ
		case strings.HasPrefix(line, "#"):
			fail("unexpected comment")
		default:
			if cur == nil || cur.typ == "" {
				fail("sample before HELP and TYPE")
			}
			s := parseSample(t, line, om, fail)
			if !sampleBelongs(cur, s.name, om) {
				fail("sample %s outside family %s (%s)", s.name, cur.name, cur.typ)
			}
			if s.exemplar != nil {
				if !strings.HasSuffix(s.name, "_total") && !strings.HasSuffix(s.name, "_bucket") {
					fail("exemplar on %s", s.name)
				}
			}
			cur.samples = append(cur.samples, s)
		}
	}
	if om && (len(lines) == 0 || lines[len(lines)-1] != "# EOF") {
		t.Fatal("OpenMetrics without # EOF")
	}
	for _, f := range fams {
		if f.typ == "histogram" {
			checkHistogram(t, f)
		}
	}
	return fams
}

func validName(s string) bool {
	for i, c := range s {
		if !(c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return s != ""
}

func sampleBelongs(f *parsedFamily, name string, om bool) bool {
	switch f.typ {
	case "counter":
		base := f.name
		if !om {
			base = strings.TrimSuffix(f.name, "_total")
		}
		return name == base+"_total"
	case "histogram":
		return name == f.name+"_bucket" || name == f.name+"_sum" || name == f.name+"_count"
	}
	return name == f.name
}

func unescapeHelp(t *testing.T, s string, om bool) string {
	t.Helper()
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			if s[i] == '"' && om {
				t.Fatalf("unescaped quote in OpenMetrics help %q", s)
			}
			b.WriteByte(s[i])
			continue
		}
		i++
		switch {
		case i < len(s) && s[i] == '\\':
			b.WriteByte('\\')
		case i < len(s) && s[i] == 'n':
			b.WriteByte('\n')
		case i < len(s) && s[i] == '"' && om:
			b.WriteByte('"')
		default:
			t.Fatalf("bad escape in help %q", s)
		}
	}
	return b.String()
}

// parseLabels reads {a="x",b="y"} at the start of s and returns the labels
// and the rest after the closing brace.
func parseLabels(s string, fail func(string, ...any)) (map[string]string, string) {
	labels := map[string]string{}
	s = s[1:]
	for {
		if strings.HasPrefix(s, "}") {
			return labels, s[1:]
		}
		name, rest, ok := strings.Cut(s, `="`)
		if !ok || !validName(name) {
			fail("bad label name in %q", s)
		}
		var v strings.Builder
		i := 0
		for ; i < len(rest) && rest[i] != '"'; i++ {
			c := rest[i]
			if c == '\n' {
				fail("raw newline in a label value")
			}
			if c != '\\' {
				v.WriteByte(c)
				continue
			}
			i++
			if i >= len(rest) {
				fail("dangling escape")
			}
			switch rest[i] {
			case '\\':
				v.WriteByte('\\')
			case '"':
				v.WriteByte('"')
			case 'n':
				v.WriteByte('\n')
			default:
				fail("bad escape \\%c", rest[i])
			}
		}
		if i >= len(rest) {
			fail("unterminated label value")
		}
		if _, dup := labels[name]; dup {
			fail("label %s twice", name)
		}
		labels[name] = v.String()
		s = rest[i+1:]
		if strings.HasPrefix(s, ",") {
			s = s[1:]
		} else if !strings.HasPrefix(s, "}") {
			fail("bad label separator in %q", s)
		}
	}
}

func parseSample(t *testing.T, line string, om bool, fail func(string, ...any)) parsedSample {
	t.Helper()
	i := strings.IndexAny(line, "{ ")
	if i <= 0 {
		fail("no name")
	}
	s := parsedSample{name: line[:i], labels: map[string]string{}}
	if !validName(s.name) {
		fail("bad name")
	}
	rest := line[i:]
	if rest[0] == '{' {
		s.labels, rest = parseLabels(rest, fail)
	}
	if !strings.HasPrefix(rest, " ") {
		fail("no space before the value")
	}
	value, ex, hasEx := strings.Cut(rest[1:], " # ")
	var err error
	if s.value, err = parseValue(value); err != nil {
		fail("value: %v", err)
	}
	if om && !strings.HasSuffix(s.name, "_bucket") && !strings.HasSuffix(s.name, "_count") &&
		!strings.ContainsAny(value, ".eIN") {
		fail("OpenMetrics float %q without a decimal point", value)
	}
	if hasEx {
		if !om {
			fail("exemplar in Prometheus text")
		}
		if !strings.HasPrefix(ex, "{") {
			fail("exemplar without labels")
		}
		var after string
		s.exemplar, after = parseLabels(ex, fail)
		f := strings.Fields(after)
		if len(f) != 2 {
			fail("exemplar wants a value and a timestamp")
		}
		if s.exValue, err = parseValue(f[0]); err != nil {
			fail("exemplar value: %v", err)
		}
		if ts, err := strconv.ParseFloat(f[1], 64); err != nil || ts < 1e9 {
			fail("exemplar timestamp %q", f[1])
		}
	}
	return s
}

func parseValue(s string) (float64, error) {
	switch s {
	case "+Inf":
		return math.Inf(1), nil
	case "-Inf":
		return math.Inf(-1), nil
	case "NaN":
		return math.NaN(), nil
	}
	return strconv.ParseFloat(s, 64)
}

// checkHistogram: per series, buckets ascend in le, counts are cumulative,
// and +Inf equals _count.
func checkHistogram(t *testing.T, f *parsedFamily) {
	t.Helper()
	key := func(l map[string]string) string {
		var parts []string
		for k, v := range l {
			if k != "le" {
				parts = append(parts, k+"="+v)
			}
		}
		sort.Strings(parts)
		return strings.Join(parts, ",")
	}
	lastLe, lastCount, inf := map[string]float64{}, map[string]float64{}, map[string]float64{}
	for _, s := range f.samples {
		k := key(s.labels)
		switch {
		case strings.HasSuffix(s.name, "_bucket"):
			le, err := parseValue(s.labels["le"])
			if err != nil {
				t.Fatalf("%s: le %q", f.name, s.labels["le"])
			}
			if prev, ok := lastLe[k]; ok && le <= prev {
				t.Fatalf("%s{%s}: le %v after %v", f.name, k, le, prev)
			}
			if s.value < lastCount[k] {
				t.Fatalf("%s{%s}: bucket counts not cumulative", f.name, k)
			}
			lastLe[k], lastCount[k] = le, s.value
			if math.IsInf(le, 1) {
				inf[k] = s.value
			}
		case strings.HasSuffix(s.name, "_count"):
			if got, ok := inf[k]; !ok || got != s.value {
				t.Fatalf("%s{%s}: _count %v, +Inf bucket %v", f.name, k, s.value, got)
			}
		}
	}
}

func findSample(f *parsedFamily, name string, labels map[string]string) *parsedSample {
	if f == nil {
		return nil
	}
next:
	for i, s := range f.samples {
		if s.name != name || len(s.labels) != len(labels) {
			continue
		}
		for k, v := range labels {
			if s.labels[k] != v {
				continue next
			}
		}
		return &f.samples[i]
	}
	return nil
}

func scrapeRegistry(t *testing.T, r *registry, om bool) string {
	t.Helper()
	var b bytes.Buffer
	r.write(&b, om)
	return b.String()
}

// sampledContext carries a sampled remote span context.
func sampledContext(trace1, span1 byte) (context.Context, trace.SpanContext) {
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{trace1, 1, 2, 3},
		SpanID:     trace.SpanID{span1, 1},
		TraceFlags: trace.FlagsSampled,
	})
	return trace.ContextWithSpanContext(context.Background(), sc), sc
}

func TestRegistryFormatsParseBack(t *testing.T) {
	r := &registry{}
	c := r.counter("t_requests", "Requests \\ with \"quotes\"\nand a newline.", "a", "b")
	g := r.gauge("t_level", "A gauge.", "name")
	h := r.histogram("t_seconds", "A histogram.", []float64{0.5, 1, 2.5}, "k")
	r.collected("t_age_seconds", "Collected.", kindGauge, func(emit func(float64, ...string)) {
		emit(1.5, "y")
		emit(0.25, "x")
	}, "s")
	r.counter("t_unused", "Never recorded: not shown.")

	weird := "q\"uo\\te\nline"
	ctx, sc := sampledContext(9, 7)
	ref, sampled := spanRefFrom(ctx)
	if !sampled {
		t.Fatal("sampled context not seen as sampled")
	}
	c.with("x", weird).addSampled(3, ref, true)
	c.with("x", weird).add(2)
	c.with("a", "b").add(1)
	g.with("n").set(-4)
	h.with("v").observe(0.5, ref, true) // le is inclusive: bucket 0.5
	h.with("v").observe(2, spanRef{}, false)
	h.with("v").observe(7, spanRef{}, false)

	for _, om := range []bool{false, true} {
		body := scrapeRegistry(t, r, om)
		fams := parseExposition(t, body, om)
		cname := "t_requests_total"
		if om {
			cname = "t_requests"
		}
		cf := fams[cname]
		if cf == nil || cf.typ != "counter" || cf.help != "Requests \\ with \"quotes\"\nand a newline." {
			t.Fatalf("om=%v counter family %+v\n%s", om, cf, body)
		}
		s := findSample(cf, "t_requests_total", map[string]string{"a": "x", "b": weird})
		if s == nil || s.value != 5 {
			t.Fatalf("om=%v escaped label value did not read back: %+v\n%s", om, s, body)
		}
		if om {
			if s.exemplar["trace_id"] != sc.TraceID().String() || s.exemplar["span_id"] != sc.SpanID().String() || s.exValue != 3 {
				t.Errorf("counter exemplar %v %v", s.exemplar, s.exValue)
			}
		} else if strings.Contains(body, "trace_id") {
			t.Error("exemplar in Prometheus text")
		}
		if s := findSample(cf, "t_requests_total", map[string]string{"a": "a", "b": "b"}); s == nil || s.value != 1 || s.exemplar != nil {
			t.Errorf("om=%v unsampled counter: %+v", om, s)
		}
		if s := findSample(fams["t_level"], "t_level", map[string]string{"name": "n"}); s == nil || s.value != -4 {
			t.Errorf("om=%v gauge: %+v", om, s)
		}
		hf := fams["t_seconds"]
		le := func(v string) *parsedSample {
			return findSample(hf, "t_seconds_bucket", map[string]string{"k": "v", "le": v})
		}
		one, half := "1", "0.5"
		if om {
			one = "1.0"
		}
		for _, want := range []struct {
			le    string
			count float64
		}{{half, 1}, {one, 1}, {"2.5", 2}, {"+Inf", 3}} {
			if s := le(want.le); s == nil || s.value != want.count {
				t.Errorf("om=%v bucket le=%s: %+v", om, want.le, s)
			}
		}
		if s := le(half); om && (s == nil || s.exemplar["trace_id"] != sc.TraceID().String() || s.exValue != 0.5) {
			t.Errorf("bucket exemplar: %+v", s)
		}
		if s := findSample(hf, "t_seconds_sum", map[string]string{"k": "v"}); s == nil || s.value != 9.5 {
			t.Errorf("om=%v sum: %+v", om, s)
		}
		af := fams["t_age_seconds"]
		if af == nil || len(af.samples) != 2 || af.samples[0].labels["s"] != "x" {
			t.Errorf("om=%v collected family not sorted: %+v", om, af)
		}
		if _, ok := fams["t_unused"]; ok {
			t.Error("a family without series is shown")
		}
		if _, ok := fams["t_unused_total"]; ok {
			t.Error("a family without series is shown")
		}
	}
}

func TestRegistryOverflow(t *testing.T) {
	r := &registry{}
	c := r.counter("t_things", "Things.", "id")
	for i := range cardinalityLimit + 5 {
		c.with(strconv.Itoa(i)).add(1)
	}
	c.with("0").add(1) // an existing series still counts on its own
	for _, om := range []bool{false, true} {
		f := parseExposition(t, scrapeRegistry(t, r, om), om)
		name := "t_things_total"
		if om {
			name = "t_things"
		}
		fam := f[name]
		if len(fam.samples) != cardinalityLimit {
			t.Fatalf("om=%v %d series, want the cap %d", om, len(fam.samples), cardinalityLimit)
		}
		over := findSample(fam, "t_things_total", map[string]string{overflowLabel: "true"})
		if over == nil || over.value != 6 {
			t.Fatalf("om=%v overflow series %+v, want 6 folded measurements", om, over)
		}
		if s := findSample(fam, "t_things_total", map[string]string{"id": "0"}); s == nil || s.value != 2 {
			t.Errorf("om=%v first series %+v", om, s)
		}
	}
}

func TestRegistryConcurrentAdds(t *testing.T) {
	r := &registry{}
	c := r.counter("t_n", "N.", "k")
	h := r.histogram("t_h", "H.", durationBuckets, "k")
	const workers, each = 4, 2000
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				c.with(strconv.Itoa(i % 3)).add(1)
				h.with("k").observe(float64(w), spanRef{}, false)
				if i%500 == 0 {
					scrapeRegistry(t, r, i%1000 == 0)
				}
			}
		}()
	}
	wg.Wait()
	fams := parseExposition(t, scrapeRegistry(t, r, false), false)
	var total float64
	for _, s := range fams["t_n_total"].samples {
		total += s.value
	}
	if total != workers*each {
		t.Errorf("counted %v, want %d", total, workers*each)
	}
	if s := findSample(fams["t_h"], "t_h_sum", map[string]string{"k": "k"}); s == nil || s.value != each*(0+1+2+3) {
		t.Errorf("histogram sum %+v", s)
	}
}

func TestWantsOpenMetrics(t *testing.T) {
	for accept, want := range map[string]bool{
		"":                             false,
		"text/plain":                   false,
		"application/openmetrics-text": true,
		"application/openmetrics-text; version=1.0.0; charset=utf-8": true,
		"application/openmetrics-text; version=0.0.1":                true,
		"application/openmetrics-text; version=2.0.0":                false,
		// Prometheus' own scrape header.
		"application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2": true,
		"text/plain;version=0.0.4;q=0.9,application/openmetrics-text;q=0.5":                                                             false,
		"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;q=0.5": true,
		"*/*": false,
	} {
		if got := wantsOpenMetrics(accept); got != want {
			t.Errorf("Accept %q: OpenMetrics %v, want %v", accept, got, want)
		}
	}
}

func TestMetricsHandlerGzipAndRuntime(t *testing.T) {
	tel, err := New(t.Context(), Config{AccessLog: "off"}, WithEnv(env{}.get))
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(t.Context())
	plain, ctype := scrape(t, tel.MetricsHandler(), "")
	if ctype != contentTypeText {
		t.Errorf("content type %q", ctype)
	}
	fams := parseExposition(t, plain, false)
	for _, name := range []string{
		"go_goroutines", "go_info", "go_memstats_heap_alloc_bytes", "go_memstats_alloc_bytes_total",
		"go_memstats_sys_bytes", "go_threads", "process_cpu_seconds_total", "process_resident_memory_bytes",
		"process_open_fds", "process_start_time_seconds", "target_info",
	} {
		f := fams[name]
		if f == nil || len(f.samples) == 0 {
			t.Errorf("no %s", name)
			continue
		}
		if v := f.samples[0].value; v <= 0 && name != "process_cpu_seconds_total" {
			t.Errorf("%s = %v", name, v)
		}
	}
	if s := fams["process_start_time_seconds"]; s != nil {
		if at := time.Unix(int64(s.samples[0].value), 0); time.Since(at) > time.Hour || time.Until(at) > time.Minute {
			t.Errorf("process start time %v", at)
		}
	}
	if s := fams["target_info"]; s != nil && s.samples[0].labels["service_name"] == "" {
		t.Errorf("target_info labels %v", s.samples[0].labels)
	}

	r := httptest.NewRequest("GET", "/metrics", nil)
	r.Header.Set("Accept-Encoding", "gzip")
	r.Header.Set("Accept", "application/openmetrics-text")
	w := httptest.NewRecorder()
	tel.MetricsHandler().ServeHTTP(w, r)
	if w.Header().Get("Content-Encoding") != "gzip" || w.Header().Get("Content-Type") != contentTypeOpenMetrics {
		t.Fatalf("headers %v", w.Header())
	}
	zr, err := gzip.NewReader(w.Body)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	parseExposition(t, string(body), true)

	// Every answer names the request fields it depends on, so a cache
	// between the scraper and ferry keeps the formats and encodings apart:
	// the plain text answer too.
	for _, enc := range []string{"gzip", ""} {
		r := httptest.NewRequest("GET", "/metrics", nil)
		r.Header.Set("Accept-Encoding", enc)
		w := httptest.NewRecorder()
		tel.MetricsHandler().ServeHTTP(w, r)
		if v := w.Header().Values("Vary"); !slices.Equal(v, []string{"Accept, Accept-Encoding"}) {
			t.Errorf("Accept-Encoding %q: Vary %q, want \"Accept, Accept-Encoding\"", enc, v)
		}
	}
}
