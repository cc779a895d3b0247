package telemetry

import (
	"bytes"
	"compress/gzip"
	"math"
	"mime"
	"net/http"
	"sort"
	"strconv"
	"strings"
)

// Content types of the two exposition formats, as promhttp announced them.
const (
	contentTypeText        = "text/plain; version=0.0.4; charset=utf-8; escaping=underscores"
	contentTypeOpenMetrics = "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores"
)

// ServeHTTP serves the registry: OpenMetrics 1.0 (with exemplars) when the
// Accept header prefers it, Prometheus text 0.0.4 otherwise; gzipped when
// the client accepts gzip.
func (r *registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	om := wantsOpenMetrics(req.Header.Get("Accept"))
	var buf bytes.Buffer
	r.write(&buf, om)
	h := w.Header()
	h.Set("Vary", "Accept, Accept-Encoding") // the format, and gzip or not
	if om {
		h.Set("Content-Type", contentTypeOpenMetrics)
	} else {
		h.Set("Content-Type", contentTypeText)
	}
	if acceptsGzip(req.Header.Get("Accept-Encoding")) {
		h.Set("Content-Encoding", "gzip")
		gz := gzip.NewWriter(w)
		_, _ = gz.Write(buf.Bytes())
		_ = gz.Close()
		return
	}
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	_, _ = w.Write(buf.Bytes())
}

// wantsOpenMetrics reports whether the Accept header's most preferred
// format ferry can serve is OpenMetrics (version 1.0.0, 0.0.1 or none).
func wantsOpenMetrics(accept string) bool {
	type choice struct {
		om bool
		q  float64
	}
	var choices []choice
	for _, part := range strings.Split(accept, ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		q := 1.0
		if s, ok := params["q"]; ok {
			if v, err := strconv.ParseFloat(s, 64); err == nil {
				q = v
			}
		}
		if q <= 0 {
			continue
		}
		switch mt {
		case "application/openmetrics-text":
			if v := params["version"]; v == "" || v == "1.0.0" || v == "0.0.1" {
				choices = append(choices, choice{true, q})
			}
		case "text/plain", "text/*", "*/*":
			choices = append(choices, choice{false, q})
		}
	}
	sort.SliceStable(choices, func(a, b int) bool { return choices[a].q > choices[b].q })
	return len(choices) > 0 && choices[0].om
}

func acceptsGzip(enc string) bool {
	for _, part := range strings.Split(enc, ",") {
		name, params, _ := strings.Cut(part, ";")
		if !strings.EqualFold(strings.TrimSpace(name), "gzip") {
			continue
		}
		if v, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
			q, err := strconv.ParseFloat(v, 64)
			return err == nil && q > 0
		}
		return true
	}
	return false
}

// write renders every family; om selects OpenMetrics (exemplars, counter
// family names without _total, float values with a decimal point, # EOF).
func (r *registry) write(b *bytes.Buffer, om bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.prepare {
		p()
	}
	e := encoder{b: b, om: om}
	for _, f := range r.families {
		e.family(f)
	}
	if om {
		b.WriteString("# EOF\n")
	}
}

type encoder struct {
	b  *bytes.Buffer
	om bool
}

func (e encoder) family(f *family) {
	if f.collect != nil {
		var samples []collectedSample
		f.collect(func(v float64, values ...string) {
			samples = append(samples, collectedSample{values, v})
		})
		if len(samples) == 0 {
			return
		}
		e.header(f)
		sort.SliceStable(samples, func(a, c int) bool {
			for _, i := range f.order {
				if va, vc := samples[a].values[i], samples[c].values[i]; va != vc {
					return va < vc
				}
			}
			return false
		})
		name := f.textName()
		for _, s := range samples {
			e.sampleName(name, f, s.values, "", "")
			e.float(s.v)
			e.b.WriteByte('\n')
		}
		return
	}
	all := f.snapshot()
	if len(all) == 0 {
		return
	}
	e.header(f)
	for _, s := range all {
		switch f.kind {
		case kindCounter:
			e.sampleName(f.name+"_total", f, s.values, "", "")
			e.float(float64(s.n.Load()))
			e.exemplar(&s.ex)
		case kindGauge:
			e.sampleName(f.name, f, s.values, "", "")
			e.float(float64(s.n.Load()))
		case kindHistogram:
			e.histogram(f, s)
		}
		e.b.WriteByte('\n')
	}
}

type collectedSample struct {
	values []string
	v      float64
}

func (e encoder) header(f *family) {
	name := f.textName()
	if e.om {
		name = f.name
	}
	e.b.WriteString("# HELP ")
	e.b.WriteString(name)
	e.b.WriteByte(' ')
	e.escape(f.help, e.om)
	e.b.WriteString("\n# TYPE ")
	e.b.WriteString(name)
	switch f.kind {
	case kindCounter:
		e.b.WriteString(" counter\n")
	case kindGauge:
		e.b.WriteString(" gauge\n")
	case kindHistogram:
		e.b.WriteString(" histogram\n")
	}
}

// histogram writes the cumulative buckets, _sum and _count of s (without
// the final newline).
func (e encoder) histogram(f *family, s *series) {
	var cum uint64
	for i := range s.counts {
		cum += s.counts[i].Load()
		le := "+Inf"
		if i < len(s.buckets) {
			le = e.formatFloat(s.buckets[i])
		}
		e.sampleName(f.name+"_bucket", f, s.values, "le", le)
		e.b.WriteString(strconv.FormatUint(cum, 10))
		e.exemplar(&s.bucketEx[i])
		e.b.WriteByte('\n')
	}
	e.sampleName(f.name+"_sum", f, s.values, "", "")
	e.float(math.Float64frombits(s.sumBits.Load()))
	e.b.WriteByte('\n')
	e.sampleName(f.name+"_count", f, s.values, "", "")
	e.b.WriteString(strconv.FormatUint(cum, 10))
}

// sampleName writes name{labels} and a space; values nil is the overflow
// series. extra is one more label (le) written last when set.
func (e encoder) sampleName(name string, f *family, values []string, extra, extraValue string) {
	e.b.WriteString(name)
	sep := byte('{')
	if values == nil && len(f.labels) > 0 {
		e.label(sep, overflowLabel, "true")
		sep = ','
	} else {
		for _, i := range f.order {
			e.label(sep, f.labels[i], values[i])
			sep = ','
		}
	}
	if extra != "" {
		e.label(sep, extra, extraValue)
		sep = ','
	}
	if sep == ',' {
		e.b.WriteByte('}')
	}
	e.b.WriteByte(' ')
}

func (e encoder) label(sep byte, name, value string) {
	e.b.WriteByte(sep)
	e.b.WriteString(name)
	e.b.WriteString(`="`)
	// Prometheus refuses the whole scrape over one value that is not
	// UTF-8 (from discovery, the config, OTEL_RESOURCE_ATTRIBUTES).
	e.escape(validUTF8(value), true)
	e.b.WriteByte('"')
}

// escape writes s with backslash and newline escaped, and double quotes
// too when quotes is set (label values; OpenMetrics help text).
func (e encoder) escape(s string, quotes bool) {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			e.b.WriteString(`\\`)
		case c == '\n':
			e.b.WriteString(`\n`)
		case c == '"' && quotes:
			e.b.WriteString(`\"`)
		default:
			e.b.WriteByte(c)
		}
	}
}

func (e encoder) float(v float64) { e.b.WriteString(e.formatFloat(v)) }

// formatFloat is Go's shortest representation; OpenMetrics adds ".0" to
// whole numbers so they read as floats, as promhttp did.
func (e encoder) formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	s := strconv.FormatFloat(v, 'g', -1, 64)
	if e.om && !strings.ContainsAny(s, ".e") {
		s += ".0"
	}
	return s
}

// exemplar writes " # {trace_id=..,span_id=..} value timestamp" in
// OpenMetrics; nothing in Prometheus text or without an exemplar.
func (e encoder) exemplar(slot *exemplarSlot) {
	if !e.om {
		return
	}
	x, ok := slot.load()
	if !ok {
		return
	}
	e.b.WriteString(` # {trace_id="`)
	e.b.WriteString(x.traceID.String())
	e.b.WriteString(`",span_id="`)
	e.b.WriteString(x.spanID.String())
	e.b.WriteString(`"} `)
	e.float(x.value)
	e.b.WriteByte(' ')
	e.b.WriteString(strconv.FormatFloat(float64(x.at)/1e9, 'g', -1, 64))
}
