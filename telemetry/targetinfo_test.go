package telemetry

import (
	"bytes"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
)

// TestTargetInfoReservedAndInvalidKeys: resource attribute keys become
// target_info label names as the OpenTelemetry Prometheus compatibility
// rules say (characters outside [a-zA-Z0-9_], and a leading digit, become
// "_", runs of "_" become one, keys that then meet share a label, their
// values joined with ";" in key order). A key such as "__name__" must not
// become a second metric-name label (Prometheus' parsers then read the
// sample as another metric, or refuse the scrape), and no label may start
// with "__", which Prometheus reserves.
func TestTargetInfoReservedAndInvalidKeys(t *testing.T) {
	tel, _, _ := recorded(t, Config{ServiceName: "shop"}, env{"OTEL_RESOURCE_ATTRIBUTES": "__name__=evil," +
		"_name_=also,__address__=addr,a..b=1,a_b=2,a__b=3,9lives=cat,le=y,team=pay"})
	want := labels.FromStrings(labels.MetricName, "target_info",
		"_address_", "addr", "_lives", "cat", "_name_", "evil;also", "a_b", "1;3;2", "le", "y", "team", "pay")
	for _, accept := range []string{"", "application/openmetrics-text; version=1.0.0"} {
		body, ctype := scrape(t, tel.MetricsHandler(), accept)
		if accept == "" {
			tp := expfmt.NewTextParser(model.LegacyValidation)
			if _, err := tp.TextToMetricFamilies(bytes.NewReader([]byte(body))); err != nil {
				t.Errorf("expfmt refuses the text exposition: %v", err)
			}
		}
		samples, types := promParse(t, []byte(body), ctype)
		checkPromSamples(t, ctype, samples, types)
		var info []promSample
		for _, s := range samples {
			if s.labels.Has("team") {
				info = append(info, s)
			}
		}
		if len(info) != 1 {
			t.Fatalf("Accept %q: %d samples with the resource's labels, want 1 (target_info): %v", accept, len(info), info)
		}
		got := labels.NewBuilder(info[0].labels).Del("service_name", "host_name", "telemetry_sdk_language",
			"telemetry_sdk_name", "telemetry_sdk_version").Labels()
		if !labels.Equal(got, want) || info[0].value != 1 {
			t.Errorf("Accept %q: target_info\n got %v = %v\nwant %v = 1", accept, got, info[0].value, want)
		}
		info[0].labels.Range(func(l labels.Label) {
			if l.Name != labels.MetricName && len(l.Name) > 1 && l.Name[:2] == "__" {
				t.Errorf("Accept %q: target_info label %s is reserved", accept, l.Name)
			}
		})
	}
}
