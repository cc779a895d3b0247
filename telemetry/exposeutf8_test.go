package telemetry

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// Prometheus refuses a whole scrape over one label value that is not valid
// UTF-8 ("invalid UTF-8 label value"), in both formats. Label values come
// from discovery (endpoints), the config and the environment (target_info
// from OTEL_RESOURCE_ATTRIBUTES, percent-decoded), so a stray byte in any
// of them must not cost every metric: it is shown as U+FFFD.
func TestMetricsLabelValuesAreValidUTF8(t *testing.T) {
	tel, err := New(t.Context(), Config{AccessLog: "off"},
		WithEnv(env{"OTEL_RESOURCE_ATTRIBUTES": "team=%FFpay"}.get))
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(t.Context())
	tel.Metrics().SetBreakerState("files\xc3", "10.0.0.7:8080\xff", BreakerOpen)
	for _, accept := range []string{"", "application/openmetrics-text"} {
		body, _ := scrape(t, tel.MetricsHandler(), accept)
		if !utf8.ValidString(body) {
			for _, line := range strings.Split(body, "\n") {
				if !utf8.ValidString(line) {
					t.Errorf("Accept %q: line not valid UTF-8: %q", accept, line)
				}
			}
			continue
		}
		fams := parseExposition(t, body, accept != "")
		if s := findSample(fams[MetricBreakerState], MetricBreakerState,
			map[string]string{"service": "files\uFFFD", "endpoint": "10.0.0.7:8080\uFFFD"}); s == nil || s.value != 2 {
			t.Errorf("Accept %q: breaker state sample %v", accept, s)
		}
		if ti := fams["target_info"]; ti == nil || ti.samples[0].labels["team"] != "\uFFFDpay" {
			t.Errorf("Accept %q: target_info %v", accept, ti)
		}
	}
}

// Label values that differ only in bytes that are not UTF-8 read the same
// once shown as U+FFFD: they must count in one series, not in two series
// with the same labels (Prometheus keeps one sample of a series given
// twice and counts the scrape's duplicates as errors).
func TestMetricsInvalidUTF8ValuesShareOneSeries(t *testing.T) {
	tel, _, _ := recorded(t, Config{}, env{})
	tel.Metrics().Ejection("files\xc3")
	tel.Metrics().Ejection("files\xc4")
	tel.Metrics().Ejection("files\uFFFD")
	for _, accept := range []string{"", "application/openmetrics-text"} {
		body, ctype := scrape(t, tel.MetricsHandler(), accept)
		samples, types := promParse(t, []byte(body), ctype)
		checkPromSamples(t, ctype, samples, types)
		fams := parseExposition(t, body, accept != "")
		name := MetricEjections
		if accept != "" {
			name = strings.TrimSuffix(name, "_total")
		}
		if s := findSample(fams[name], MetricEjections, map[string]string{"service": "files\uFFFD"}); s == nil || s.value != 3 {
			t.Errorf("Accept %q: %s = %+v, want one series of 3", accept, MetricEjections, s)
		}
	}
}
