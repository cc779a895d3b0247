package telemetry

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

func scrape(t *testing.T, h http.Handler, accept string) (string, string) {
	t.Helper()
	r := httptest.NewRequest("GET", "/metrics", nil)
	if accept != "" {
		r.Header.Set("Accept", accept)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != 200 {
		t.Fatalf("/metrics status %d", w.Code)
	}
	body, _ := io.ReadAll(w.Body)
	return string(body), w.Header().Get("Content-Type")
}

// serveOne runs one traced outbound request through the helpers.
func serveOne(t *testing.T, tel *Telemetry, path string, status int, reason string) string {
	t.Helper()
	r := incoming("GET", "http://files"+path, nil)
	_, req := tel.StartRequest(r, Outbound)
	req.SetRoute("files", "files")
	att := req.StartAttempt(upstream(t, tel, r, "http://files"+path), AttemptInfo{Endpoint: "10.0.0.7:8080", Attempt: 1})
	att.End(Outcome{Status: status, BytesIn: 300})
	req.End(Outcome{Status: status, BytesIn: 20, BytesOut: 300, Reason: reason})
	return req.Span().SpanContext().TraceID().String()
}

func TestMetricsPrometheusText(t *testing.T) {
	tel, _, _ := recorded(t, Config{}, env{})
	serveOne(t, tel, "/files/123/report.pdf", 200, "")
	serveOne(t, tel, "/files/456/other.pdf", 200, "")
	serveOne(t, tel, "/files/789", 503, ReasonBreakerOpen)
	// An in-flight request shows in the gauge until it ends.
	_, open := tel.StartRequest(incoming("GET", "http://files/slow", nil), Inbound)
	defer open.End(Outcome{Status: 200})

	m := tel.Metrics()
	m.SetBreakerState("files", "10.0.0.7:8080", BreakerOpen)
	m.BreakerTransition("files", "10.0.0.8:8080", BreakerHalfOpen)
	m.Ejection("files")
	m.Retry(t.Context(), "files", ReasonDialFailed)
	m.Retry(t.Context(), "files", "some free text")
	m.WatchError("files")
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m.now = func() time.Time { return base.Add(42 * time.Second) }
	m.KnownSnapshots(func(yield func(string, time.Time) bool) { yield("files", base) })

	body, ctype := scrape(t, tel.MetricsHandler(), "")
	if !strings.HasPrefix(ctype, "text/plain") {
		t.Errorf("content type %q, want Prometheus text", ctype)
	}
	for _, want := range []string{
		`ferry_requests_total{endpoint="10.0.0.7:8080",listener="outbound",reason="",service="files",status_class="2xx"} 2`,
		`ferry_requests_total{endpoint="10.0.0.7:8080",listener="outbound",reason="breaker_open",service="files",status_class="5xx"} 1`,
		`ferry_request_duration_seconds_count{listener="outbound",service="files",status_class="2xx"} 2`,
		`ferry_request_duration_seconds_bucket{listener="outbound",service="files",status_class="2xx",le="900"} 2`,
		`ferry_requests_in_flight{listener="inbound"} 1`,
		`ferry_requests_in_flight{listener="outbound"} 0`,
		`ferry_body_bytes_total{direction="out",listener="outbound",service="files"} 900`,
		`ferry_body_bytes_total{direction="in",listener="outbound",service="files"} 60`,
		`ferry_breaker_state{endpoint="10.0.0.7:8080",service="files"} 2`,
		`ferry_breaker_state{endpoint="10.0.0.8:8080",service="files"} 1`,
		`ferry_breaker_transitions_total{service="files",to="half_open"} 1`,
		`ferry_ejections_total{service="files"} 1`,
		`ferry_retries_total{reason="dial_failed",service="files"} 1`,
		`ferry_retries_total{reason="other",service="files"} 1`,
		`ferry_consul_watch_errors_total{service="files"} 1`,
		`ferry_consul_snapshot_age_seconds{service="files"} 42`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("missing %s", want)
		}
	}
	if strings.Contains(body, "/files/123") || strings.Contains(body, "report.pdf") {
		t.Error("a raw path leaked into metric labels")
	}
	if t.Failed() {
		t.Logf("scrape:\n%s", grepFerry(body))
	}
}

// Once KnownEndpoints is set, a scrape shows the breaker state of the
// endpoints it yields, as it gives them, and of no other; an endpoint whose
// service has no breaker has no series.
func TestMetricsBreakerStateOfKnownEndpointsOnly(t *testing.T) {
	tel, _, _ := recorded(t, Config{}, env{})
	m := tel.Metrics()
	m.SetBreakerState("files", "10.0.0.7:8080", BreakerOpen)
	m.SetBreakerState("files", "10.0.0.8:8080", BreakerOpen)
	m.SetBreakerState("gone", "10.0.0.9:8080", BreakerOpen)
	m.SetBreakerState("plain", "10.0.0.5:8080", BreakerOpen)
	known := map[string]BreakerState{"10.0.0.8:8080": BreakerOpen, "10.0.0.5:8080": ""}
	m.KnownEndpoints(func(yield func(service, endpoint string, state BreakerState) bool) {
		for addr, state := range known {
			service := "files"
			if state == "" {
				service = "plain"
			}
			if !yield(service, addr, state) {
				return
			}
		}
	})
	body, _ := scrape(t, tel.MetricsHandler(), "")
	if got := grepFerry(body); strings.Contains(got, "10.0.0.7") || strings.Contains(got, "10.0.0.9") || strings.Contains(got, "10.0.0.5") ||
		!strings.Contains(got, `ferry_breaker_state{endpoint="10.0.0.8:8080",service="files"} 2`) {
		t.Fatalf("want only the known endpoint's breaker state:\n%s", got)
	}
	known["10.0.0.7:8080"] = BreakerHalfOpen
	known["10.0.0.8:8080"] = BreakerClosed // a new breaker (a reload)
	body, _ = scrape(t, tel.MetricsHandler(), "")
	if !strings.Contains(body, `ferry_breaker_state{endpoint="10.0.0.7:8080",service="files"} 1`) ||
		!strings.Contains(body, `ferry_breaker_state{endpoint="10.0.0.8:8080",service="files"} 0`) {
		t.Fatalf("want the states as KnownEndpoints gives them:\n%s", grepFerry(body))
	}
}

// A transition reported while a scrape runs, after the scrape read the
// breakers in force, is not what that scrape shows: its report may come
// late, from a breaker a reload has since replaced (whose new breaker is
// closed) or of an endpoint no longer in force. In ferry such a report
// straggles when the goroutine that made the change is held up between
// the change and its report, while a reload and a scrape run.
func TestMetricsBreakerStateIgnoresReportsDuringAScrape(t *testing.T) {
	tel, _, _ := recorded(t, Config{}, env{})
	m := tel.Metrics()
	m.KnownEndpoints(func(yield func(service, endpoint string, state BreakerState) bool) {
		yield("files", "10.0.0.8:8080", BreakerClosed) // a new breaker (a reload)
	})
	// Reports of the old generation, landing after the scrape's
	// syncEndpoints and before the families are written.
	m.reg.prepare = append(m.reg.prepare, func() {
		m.BreakerTransition("files", "10.0.0.8:8080", BreakerOpen)
		m.BreakerTransition("files", "10.0.0.7:8080", BreakerOpen) // no longer in force
	})
	body, _ := scrape(t, tel.MetricsHandler(), "")
	var lines []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "ferry_breaker_") {
			lines = append(lines, l)
		}
	}
	got := strings.Join(lines, "\n")
	if !strings.Contains(got, `ferry_breaker_state{endpoint="10.0.0.8:8080",service="files"} 0`) || strings.Contains(got, "10.0.0.7") {
		t.Fatalf("want the state of the breaker in force (closed), and no series of the endpoint not in force:\n%s", got)
	}
	// The transitions are still counted.
	if !strings.Contains(got, `ferry_breaker_transitions_total{service="files",to="open"} 2`) {
		t.Fatalf("want both transitions counted:\n%s", got)
	}
}

func TestMetricsOpenMetricsExemplars(t *testing.T) {
	tel, _, _ := recorded(t, Config{}, env{})
	traceID := serveOne(t, tel, "/x", 200, "")

	body, ctype := scrape(t, tel.MetricsHandler(), "application/openmetrics-text; version=1.0.0; charset=utf-8")
	if !strings.HasPrefix(ctype, "application/openmetrics-text") {
		t.Fatalf("content type %q, want OpenMetrics", ctype)
	}
	if !strings.HasSuffix(strings.TrimSpace(body), "# EOF") {
		t.Error("OpenMetrics body lacks # EOF")
	}
	counter := regexp.MustCompile(`(?m)^ferry_requests_total\{[^}]*status_class="2xx"[^}]*\} 1(\.0)? # \{[^}]*trace_id="` + traceID + `"`)
	if !counter.MatchString(body) {
		t.Errorf("no exemplar with trace id %s on ferry_requests_total:\n%s", traceID, grepFerry(body))
	}
	bucket := regexp.MustCompile(`(?m)^ferry_request_duration_seconds_bucket\{[^}]*\} 1(\.0)? # \{[^}]*trace_id="` + traceID + `"`)
	if !bucket.MatchString(body) {
		t.Errorf("no exemplar with trace id %s on a duration bucket", traceID)
	}
}

func TestMetricsNoExemplarsWithTracingOff(t *testing.T) {
	tel, err := New(t.Context(), Config{AccessLog: "off"}, WithEnv(env{}.get))
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(t.Context())
	serveOne(t, tel, "/x", 200, "")
	body, _ := scrape(t, tel.MetricsHandler(), "application/openmetrics-text; version=1.0.0")
	if !strings.Contains(body, "ferry_requests_total{") {
		t.Fatal("requests not counted with tracing off")
	}
	if strings.Contains(body, "trace_id=") {
		t.Error("exemplar without a trace")
	}
	if strings.Contains(body, MetricSpansDropped) {
		t.Error("span queue metrics with tracing off")
	}
}

func grepFerry(body string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "ferry_") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestLabelCacheIsBounded(t *testing.T) {
	f := newFamily("test", "test", kindCounter, "k")
	c := newLabelCache(func(k string) *series { return f.with(k) })
	first := c.get("a")
	if again := c.get("a"); again != first {
		t.Error("second lookup returned another series")
	}
	for i := range maxCachedLabelSets + 10 {
		if s := c.get(strconv.Itoa(i)); s == nil {
			t.Fatalf("no series for %d", i)
		}
	}
	if n := len(*c.m.Load()); n != maxCachedLabelSets {
		t.Errorf("cache holds %d entries, want the bound %d", n, maxCachedLabelSets)
	}
}

// TestTargetInfoLabelNamesUnique: resource attributes whose keys
// map to the same Prometheus label name ("k8s.pod.name", "k8s_pod_name")
// must not produce a target_info sample with a duplicate label name:
// Prometheus rejects the whole scrape ("duplicate label names").
func TestTargetInfoLabelNamesUnique(t *testing.T) {
	tel, _, _ := recorded(t, Config{}, env{"OTEL_RESOURCE_ATTRIBUTES": "k8s.pod.name=a,k8s_pod_name=b"})
	for _, accept := range []string{"", "application/openmetrics-text; version=1.0.0"} {
		body, _ := scrape(t, tel.MetricsHandler(), accept)
		for _, line := range strings.Split(body, "\n") {
			if !strings.HasPrefix(line, "target_info{") {
				continue
			}
			seen := map[string]bool{}
			for _, m := range regexp.MustCompile(`[{,]([A-Za-z_][A-Za-z0-9_]*)="`).FindAllStringSubmatch(line, -1) {
				if seen[m[1]] {
					t.Errorf("accept %q: label %s twice in %s", accept, m[1], line)
				}
				seen[m[1]] = true
			}
		}
	}
}

// A request's exemplars name the span its context carries, whichever
// way it came: ferry's recording server span, a caller's sampled span
// passed through with tracing off, none for a server span the sampler
// dropped or a caller's unsampled span.
func TestMetricsExemplarsNameTheRequestsSpan(t *testing.T) {
	const tid, sid = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	for _, tc := range []struct {
		name        string
		traced      bool
		sampler     string
		traceparent string
		want        string // trace id of the exemplar; "" none; "own": the server span's
	}{
		{name: "recording", traced: true, sampler: "always_on", want: "own"},
		{name: "recording under a caller", traced: true, sampler: "always_on", traceparent: "00-" + tid + "-" + sid + "-01", want: tid},
		{name: "dropped", traced: true, sampler: "always_off"},
		{name: "dropped under an unsampled caller", traced: true, sampler: "parentbased_always_on", traceparent: "00-" + tid + "-" + sid + "-00"},
		{name: "off, sampled caller", traceparent: "00-" + tid + "-" + sid + "-01", want: tid},
		{name: "off, unsampled caller", traceparent: "00-" + tid + "-" + sid + "-00"},
		{name: "off, no caller"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tel *Telemetry
			if tc.traced {
				tel, _, _ = recorded(t, Config{}, env{"OTEL_TRACES_SAMPLER": tc.sampler})
			} else {
				var err error
				if tel, err = New(t.Context(), Config{AccessLog: "off"}, WithEnv(env{}.get)); err != nil {
					t.Fatal(err)
				}
				defer tel.Shutdown(t.Context())
			}
			var hdr map[string]string
			if tc.traceparent != "" {
				hdr = map[string]string{"traceparent": tc.traceparent}
			}
			_, req := tel.StartRequest(incoming("GET", "http://files/x", hdr), Outbound)
			req.SetRoute("files", "files")
			req.End(Outcome{Status: 200, BytesOut: 3})
			want := tc.want
			if want == "own" {
				want = req.Span().SpanContext().TraceID().String()
			}
			body, _ := scrape(t, tel.MetricsHandler(), "application/openmetrics-text; version=1.0.0")
			ids := regexp.MustCompile(`(?m)^ferry_requests_total\{[^}]*\} 1(\.0)? # \{[^}]*trace_id="([0-9a-f]+)"`).FindAllStringSubmatch(body, -1)
			switch {
			case want == "" && len(ids) != 0:
				t.Errorf("exemplar with trace id %s, want none", ids[0][2])
			case want != "" && (len(ids) != 1 || ids[0][2] != want):
				t.Errorf("exemplars %v, want one with trace id %s:\n%s", ids, want, grepFerry(body))
			}
		})
	}
}
