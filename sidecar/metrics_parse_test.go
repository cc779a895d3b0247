package sidecar

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"
)

// prometheusAccept is the Accept header of Prometheus 3's scrapes.
const prometheusAccept = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1"

// scrapeAdmin gets the admin /metrics as a scraper with accept would,
// gzip asked for, and parses it with Prometheus' scrape parser for the
// content type it came with; it fails on a parse error or a series
// given twice, and returns the series.
func scrapeAdmin(t *testing.T, sc *Sidecar, accept string) []labels.Labels {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+sc.Addr("admin")+"/metrics", nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	req.Header.Set("Accept-Encoding", "gzip")
	res, err := h1Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("/metrics not gzipped for a scraper asking for gzip: %v", res.Header)
	}
	r, err := gzip.NewReader(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	ctype := res.Header.Get("Content-Type")
	if om := strings.HasPrefix(ctype, "application/openmetrics-text"); om != (accept == prometheusAccept) {
		t.Fatalf("Accept %q answered with %q", accept, ctype)
	}
	p, err := textparse.New(body, ctype, labels.NewSymbolTable(), textparse.ParserOptions{})
	if err != nil {
		t.Fatalf("content type %q: %v", ctype, err)
	}
	var out []labels.Labels
	seen := map[string]bool{}
	for {
		e, err := p.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: Prometheus' parser refuses /metrics: %v\n%s", ctype, err, body)
		}
		if e != textparse.EntrySeries {
			continue
		}
		var l labels.Labels
		p.Labels(&l)
		if seen[l.String()] {
			t.Errorf("%s: series %s twice", ctype, l)
		}
		seen[l.String()] = true
		out = append(out, l)
	}
	return out
}

// hasSeries reports whether one of series is name with the labels kv.
func hasSeries(series []labels.Labels, name string, kv ...string) bool {
	for _, l := range series {
		if l.Get(labels.MetricName) != name {
			continue
		}
		ok := true
		for i := 0; i+1 < len(kv); i += 2 {
			ok = ok && l.Get(kv[i]) == kv[i+1]
		}
		if ok {
			return true
		}
	}
	return false
}

// The admin /metrics of a running ferry parses with Prometheus' own
// parsers, as Prometheus text and as OpenMetrics, gzipped, with a service
// name from the config that needs escaping; after a reload that renames
// the service, the breaker series follow the new name.
func TestAdminMetricsParseWithPrometheusParser(t *testing.T) {
	down := downOrigin(t)
	const weird = "we\"ird\\svc\nline2"
	config := func(name string) string {
		return fmt.Sprintf(`
admin: { listen: 127.0.0.1:0 }
outbound:
  listen: 127.0.0.1:0
  routes: [ { service: %q } ]
defaults: { breaker: { consecutive_failures: 1 }, outlier: { consecutive_5xx: 0 }, retry: { max_retries: 0 } }
services:
  %q: { endpoints: [%s] }
telemetry: { access_log: "off" }
`, name, name, down)
	}
	sc := startFerry(t, config(weird))
	url := "http://" + sc.Addr("outbound") + "/"
	// A request is counted once its answer went out (its bookkeeping
	// follows the answer), the breaker's state before: both are awaited.
	waitFor(t, "the breaker of "+down+" to open and its request counted", 5*time.Second, func() bool {
		get(t, h1Client(), url, "")
		series := scrapeAdmin(t, sc, "")
		return hasSeries(series, "ferry_breaker_state", "service", weird, "endpoint", down) &&
			hasSeries(series, "ferry_requests_total", "service", weird, "endpoint", down, "status_class", "5xx")
	})
	for _, accept := range []string{"", prometheusAccept} {
		series := scrapeAdmin(t, sc, accept)
		if !hasSeries(series, "ferry_requests_total", "service", weird, "endpoint", down, "status_class", "5xx") ||
			!hasSeries(series, "ferry_request_duration_seconds_bucket", "service", weird, "le", "+Inf") {
			t.Errorf("Accept %q: the requests to %q are not in /metrics as recorded", accept, weird)
		}
	}
	if err := sc.Reload(context.Background(), mustParse(t, config("renamed"))); err != nil {
		t.Fatal(err)
	}
	get(t, h1Client(), url, "")
	for _, accept := range []string{"", prometheusAccept} {
		series := scrapeAdmin(t, sc, accept)
		if hasSeries(series, "ferry_breaker_state", "service", weird) || !hasSeries(series, "ferry_breaker_state", "service", "renamed", "endpoint", down) {
			var got []string
			for _, l := range series {
				if strings.HasPrefix(l.Get(labels.MetricName), "ferry_breaker_state") {
					got = append(got, l.String())
				}
			}
			t.Errorf("Accept %q: after renaming the service, breaker series %v", accept, got)
		}
	}
}
