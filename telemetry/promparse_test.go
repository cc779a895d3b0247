package telemetry

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	promexemplar "github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"
)

// These tests read /metrics back with the parsers Prometheus itself uses
// (prometheus/common's text parser, and the scrape loop's text and
// OpenMetrics parsers from prometheus/prometheus; test-only dependencies),
// on top of parseExposition's checks, and check what those parsers let
// through but a scrape still suffers from: a series twice, a histogram
// whose buckets do not add up.

// hostile label values as the config (service names may hold quotes,
// backslashes and newlines), discovery (endpoints) and the environment
// (resource attributes) can give them.
const (
	hostileService  = "we\"ird\\svc\nline2"
	hostileEndpoint = "10.0.0.9:80\"\\\n"
	hostileListener = Listener("in\"bound\\\n")
)

// promSample is one sample as Prometheus' scrape parser read it.
type promSample struct {
	name     string
	labels   labels.Labels
	value    float64
	exemplar *promexemplar.Exemplar
}

// promParse reads body with Prometheus' scrape parser for contentType and
// fails the test on any error; it returns the samples and the types
// announced, by family name.
func promParse(t *testing.T, body []byte, contentType string) ([]promSample, map[string]model.MetricType) {
	t.Helper()
	p, err := textparse.New(body, contentType, labels.NewSymbolTable(), textparse.ParserOptions{})
	if err != nil {
		t.Fatalf("textparse.New(%q): %v", contentType, err)
	}
	var out []promSample
	types := map[string]model.MetricType{}
	for {
		e, err := p.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: Prometheus' parser refuses the scrape: %v\n%s", contentType, err, body)
		}
		switch e {
		case textparse.EntryType:
			name, typ := p.Type()
			if _, dup := types[string(name)]; dup {
				t.Errorf("%s: TYPE of %s twice", contentType, name)
			}
			types[string(name)] = typ
		case textparse.EntrySeries:
			_, _, v := p.Series()
			var s promSample
			p.Labels(&s.labels)
			s.name = s.labels.Get(labels.MetricName)
			s.value = v
			var ex promexemplar.Exemplar
			if p.Exemplar(&ex) {
				s.exemplar = &ex
			}
			out = append(out, s)
		}
	}
	return out, types
}

// checkPromSamples checks what a parser passes but a scrape would still
// suffer from: the same series twice (Prometheus keeps one and counts a
// duplicate-sample error), label values that are not UTF-8, a histogram
// series without _sum or _count or whose buckets are not cumulative up to
// +Inf equal to _count, counters without _total, exemplars over
// OpenMetrics' 128-character limit or on other than counters and buckets.
func checkPromSamples(t *testing.T, what string, samples []promSample, types map[string]model.MetricType) {
	t.Helper()
	seen := map[string]bool{}
	type hist struct {
		les      []float64
		counts   []float64
		sum, cnt bool
		count    float64
	}
	hists := map[string]*hist{}
	for _, s := range samples {
		key := s.labels.String()
		if seen[key] {
			t.Errorf("%s: series %s twice", what, key)
		}
		seen[key] = true
		if name, dup := s.labels.HasDuplicateLabelNames(); dup {
			t.Errorf("%s: label %s twice in %s", what, name, key)
		}
		s.labels.Range(func(l labels.Label) {
			if !utf8.ValidString(l.Value) {
				t.Errorf("%s: label %s of %s not UTF-8: %q", what, l.Name, s.name, l.Value)
			}
			if !model.LegacyValidation.IsValidLabelName(l.Name) {
				t.Errorf("%s: label name %q of %s", what, l.Name, s.name)
			}
		})
		if !model.LegacyValidation.IsValidMetricName(s.name) {
			t.Errorf("%s: metric name %q", what, s.name)
		}
		fam, typ := familyOf(s.name, types)
		if typ == "" {
			t.Errorf("%s: sample %s of no announced family", what, s.name)
		}
		if typ == model.MetricTypeCounter && !strings.HasSuffix(s.name, "_total") {
			t.Errorf("%s: counter sample %s without _total", what, s.name)
		}
		if s.exemplar != nil {
			if typ != model.MetricTypeCounter && !strings.HasSuffix(s.name, "_bucket") {
				t.Errorf("%s: exemplar on %s (%s)", what, s.name, typ)
			}
			n := 0
			s.exemplar.Labels.Range(func(l labels.Label) {
				n += utf8.RuneCountInString(l.Name) + utf8.RuneCountInString(l.Value)
			})
			if n > 128 {
				t.Errorf("%s: exemplar labels of %s hold %d characters, over OpenMetrics' 128", what, s.name, n)
			}
			if !s.exemplar.HasTs {
				t.Errorf("%s: exemplar of %s without a timestamp", what, s.name)
			}
		}
		if typ != model.MetricTypeHistogram {
			continue
		}
		series := labels.NewBuilder(s.labels).Del(labels.MetricName, labels.BucketLabel).Labels().String()
		h := hists[fam+series]
		if h == nil {
			h = &hist{}
			hists[fam+series] = h
		}
		switch s.name {
		case fam + "_bucket":
			le, err := parseValue(s.labels.Get(labels.BucketLabel))
			if err != nil {
				t.Errorf("%s: %s le %q", what, key, s.labels.Get(labels.BucketLabel))
			}
			if n := len(h.les); n > 0 && (le <= h.les[n-1] || s.value < h.counts[n-1]) {
				t.Errorf("%s: %s after le=%v %v: buckets not ascending and cumulative", what, key, h.les[n-1], h.counts[n-1])
			}
			h.les, h.counts = append(h.les, le), append(h.counts, s.value)
		case fam + "_sum":
			h.sum = true
		case fam + "_count":
			h.cnt, h.count = true, s.value
		}
	}
	for name, h := range hists {
		n := len(h.les)
		switch {
		case n == 0 || !math.IsInf(h.les[n-1], 1):
			t.Errorf("%s: histogram %s does not end in le=+Inf", what, name)
		case !h.sum || !h.cnt:
			t.Errorf("%s: histogram %s without _sum or _count", what, name)
		case h.counts[n-1] != h.count:
			t.Errorf("%s: histogram %s: +Inf bucket %v, _count %v", what, name, h.counts[n-1], h.count)
		}
	}
}

// familyOf returns the announced family a sample name belongs to, and its
// type.
func familyOf(name string, types map[string]model.MetricType) (string, model.MetricType) {
	if typ, ok := types[name]; ok {
		return name, typ
	}
	for _, suffix := range []string{"_total", "_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if typ, ok := types[base]; ok {
				return base, typ
			}
		}
	}
	return "", ""
}

// busyTelemetry is a Telemetry with every ferry family recorded, sampled
// spans (exemplars), and hostile label values.
func busyTelemetry(t *testing.T) *Telemetry {
	t.Helper()
	tel, _, _ := recorded(t, Config{ServiceName: "shop \"front\"\\"}, env{
		"OTEL_RESOURCE_ATTRIBUTES": "k8s.pod.name=pod%22a%5Cb%0Ac,1st=x,k8s_pod_name=dup,weird-key.%C3%A9=v",
	})
	for _, l := range []Listener{Outbound, hostileListener} {
		for _, o := range []Outcome{
			{Status: 200, BytesIn: 12, BytesOut: 3400},
			{Status: 503, Reason: ReasonBreakerOpen},
			{Status: 502, Reason: "free \"text\"\nreason"},
			{Reason: ReasonClientCanceled},
		} {
			r := incoming("GET", "http://svc/x", nil)
			_, req := tel.StartRequest(r, l)
			req.SetRoute("svc/\"x\"", hostileService)
			att := req.StartAttempt(upstream(t, tel, r, "http://svc/x"), AttemptInfo{Endpoint: hostileEndpoint, Attempt: 1})
			req.Retry(2, ReasonDialFailed)
			att.End(Outcome{Status: o.Status})
			req.End(o)
		}
		tel.Answered(l, 431, ReasonHeaderTooLarge)
	}
	m := tel.Metrics()
	ctx, _ := sampledContext(4, 2)
	m.Retry(ctx, hostileService, "made up")
	m.Retry(context.Background(), hostileService, ReasonTimeout)
	m.BreakerTransition(hostileService, hostileEndpoint, BreakerOpen)
	m.SetBreakerState("files", "10.0.0.7:8080", BreakerHalfOpen)
	m.Ejection(hostileService)
	m.ConnectionLimitReached(string(hostileListener))
	m.ConnectionClosedForRoom(string(hostileListener))
	m.ConnectionClosed(string(hostileListener), ConnClosedPrematureResets)
	m.WatchError(hostileService)
	m.KnownSnapshots(func(yield func(string, time.Time) bool) {
		_ = yield(hostileService, time.Time{}) && yield("files", time.Time{})
	})
	m.ConfigReload(true)
	m.ConfigReload(false)
	return tel
}

// Both formats, plain and through content negotiation, parse with
// Prometheus' own parsers, hostile label values included, and read back
// what was recorded.
func TestMetricsParseWithPrometheusParsers(t *testing.T) {
	tel := busyTelemetry(t)
	for _, c := range []struct {
		accept string
		om     bool
	}{
		{"", false},
		{"text/plain;version=0.0.4;q=0.9,*/*;q=0.1", false},
		{"application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2", true},
	} {
		r := httptest.NewRequest("GET", "/metrics", nil)
		if c.accept != "" {
			r.Header.Set("Accept", c.accept)
		}
		w := httptest.NewRecorder()
		tel.MetricsHandler().ServeHTTP(w, r)
		body, ctype := w.Body.Bytes(), w.Header().Get("Content-Type")
		if got := strings.HasPrefix(ctype, "application/openmetrics-text"); got != c.om {
			t.Fatalf("Accept %q: Content-Type %q", c.accept, ctype)
		}
		what := "Prometheus text"
		if c.om {
			what = "OpenMetrics"
		} else {
			// prometheus/common's parser, which client tooling (promtool,
			// federation tests) reads text with.
			tp := expfmt.NewTextParser(model.LegacyValidation)
			if _, err := tp.TextToMetricFamilies(bytes.NewReader(body)); err != nil {
				t.Errorf("expfmt refuses the text exposition: %v", err)
			}
		}
		samples, types := promParse(t, body, ctype)
		checkPromSamples(t, what, samples, types)
		parseExposition(t, string(body), c.om)

		find := func(name string, kv ...string) *promSample {
			want := labels.FromStrings(append([]string{labels.MetricName, name}, kv...)...)
			for i := range samples {
				if labels.Equal(samples[i].labels, want) {
					return &samples[i]
				}
			}
			t.Errorf("%s: no sample %s", what, want)
			return nil
		}
		if s := find("ferry_requests_total", "listener", string(hostileListener), "service", hostileService,
			"endpoint", hostileEndpoint, "status_class", "2xx", "reason", ""); s != nil && (s.value != 1 || c.om != (s.exemplar != nil)) {
			t.Errorf("%s: %s = %v, exemplar %v", what, s.labels, s.value, s.exemplar)
		}
		if s := find("ferry_requests_total", "listener", string(hostileListener), "service", hostileService,
			"endpoint", hostileEndpoint, "status_class", "5xx", "reason", ReasonOther); s != nil && s.value != 1 {
			t.Errorf("%s: %s = %v", what, s.labels, s.value)
		}
		if s := find("ferry_request_duration_seconds_count", "listener", string(hostileListener), "service", hostileService,
			"status_class", "none"); s != nil && s.value != 1 {
			t.Errorf("%s: %s = %v", what, s.labels, s.value)
		}
		if s := find("ferry_retries_total", "service", hostileService, "reason", ReasonOther); s != nil && (s.value != 1 || c.om != (s.exemplar != nil)) {
			t.Errorf("%s: %s = %v, exemplar %v", what, s.labels, s.value, s.exemplar)
		}
		if s := find("ferry_breaker_state", "service", hostileService, "endpoint", hostileEndpoint); s != nil && s.value != 2 {
			t.Errorf("%s: %s = %v", what, s.labels, s.value)
		}
		find("ferry_connections_closed_for_room_total", "listener", string(hostileListener))
		find("ferry_connections_closed_total", "listener", string(hostileListener), "reason", ConnClosedPrematureResets)
		find("ferry_consul_snapshot_age_seconds", "service", hostileService)
		if s := find("ferry_config_last_reload_successful"); s != nil && s.value != 0 {
			t.Errorf("%s: %s = %v", what, s.labels, s.value)
		}
		var info *promSample
		for i := range samples {
			if samples[i].name == "target_info" {
				info = &samples[i]
			}
		}
		if info == nil {
			t.Fatalf("%s: no target_info", what)
		}
		if v := info.labels.Get("k8s_pod_name"); v != "pod\"a\\b\nc;dup" {
			t.Errorf("%s: target_info k8s_pod_name %q", what, v)
		}
		if v := info.labels.Get("service_name"); v != "shop \"front\"\\" {
			t.Errorf("%s: target_info service_name %q", what, v)
		}
		var names []string
		info.labels.Range(func(l labels.Label) { names = append(names, l.Name) })
		sort.Strings(names)
		t.Logf("%s: target_info labels %v", what, names)
	}
}
