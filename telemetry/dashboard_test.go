package telemetry

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

const dashboardPath = "../deploy/grafana/ferry.json"

// dashboardExprs returns every PromQL expression in the dashboard: panel
// targets (rows included) and query variables.
func dashboardExprs(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.FromSlash(dashboardPath))
	if err != nil {
		t.Fatal(err)
	}
	type target struct {
		Expr string `json:"expr"`
	}
	type panel struct {
		Title   string   `json:"title"`
		Type    string   `json:"type"`
		Targets []target `json:"targets"`
		Panels  []panel  `json:"panels"`
	}
	var d struct {
		Title      string  `json:"title"`
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	var exprs []string
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("panel %q has an empty expr", p.Title)
				}
				exprs = append(exprs, tg.Expr)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Fatalf("templating query: %v", err)
		}
		exprs = append(exprs, q.Query)
	}
	if len(exprs) == 0 {
		t.Fatal("dashboard has no queries")
	}
	return exprs
}

var (
	promStrings   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	promMatchers  = regexp.MustCompile(`\{[^}]*\}`)
	promRanges    = regexp.MustCompile(`\[[^\]]*\]`)
	promGrouping  = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promIdent     = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promKeywords  = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "bool": true, "offset": true, "and": true, "or": true, "unless": true, "group_left": true, "group_right": true}
	labelValuesFn = regexp.MustCompile(`label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)`)
)

// metricNames extracts the metric names a PromQL expression reads.
func metricNames(expr string) []string {
	if m := labelValuesFn.FindStringSubmatch(expr); m != nil {
		return []string{m[1]}
	}
	e := promStrings.ReplaceAllString(expr, " ")
	e = promMatchers.ReplaceAllString(e, " ")
	e = promRanges.ReplaceAllString(e, " ")
	e = promGrouping.ReplaceAllString(e, " ")
	var out []string
	for _, loc := range promIdent.FindAllStringIndex(e, -1) {
		id := e[loc[0]:loc[1]]
		rest := strings.TrimLeft(e[loc[1]:], " ")
		if promKeywords[id] || strings.HasPrefix(rest, "(") {
			continue // keyword or function call
		}
		if loc[0] > 0 && (e[loc[0]-1] == '$' || (e[loc[0]-1] >= '0' && e[loc[0]-1] <= '9') || e[loc[0]-1] == '.') {
			continue // variable or part of a number
		}
		out = append(out, id)
	}
	return out
}

// exportedFamilies runs every instrument once and returns the metric names
// /metrics serves (histograms with their _bucket/_sum/_count series).
func exportedFamilies(t *testing.T) map[string]bool {
	t.Helper()
	tel, err := New(t.Context(), Config{AccessLog: "off"}, WithEnv(env{}.get), WithSpanExporter(tracetest.NewNoopExporter()))
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(t.Context())
	serveOne(t, tel, "/x", 503, ReasonBreakerOpen)
	m := tel.Metrics()
	m.SetBreakerState("files", "10.0.0.7:8080", BreakerClosed)
	m.BreakerTransition("files", "10.0.0.7:8080", BreakerOpen)
	m.Ejection("files")
	m.Retry(t.Context(), "files", ReasonTimeout)
	m.KnownSnapshots(func(yield func(string, time.Time) bool) { yield("files", time.Now()) })
	m.WatchError("files")

	body, _ := scrape(t, tel.MetricsHandler(), "")
	fams := map[string]bool{}
	for _, line := range strings.Split(body, "\n") {
		f := strings.Fields(line)
		if len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			fams[f[2]] = true
			if f[3] == "histogram" {
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					fams[f[2]+s] = true
				}
			}
		}
	}
	return fams
}

func TestDashboardUsesExistingMetrics(t *testing.T) {
	fams := exportedFamilies(t)
	used := map[string]bool{}
	for _, expr := range dashboardExprs(t) {
		names := metricNames(expr)
		if len(names) == 0 {
			t.Errorf("no metric found in %q", expr)
		}
		for _, n := range names {
			used[strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(n, "_bucket"), "_sum"), "_count")] = true
			if !fams[n] {
				t.Errorf("dashboard expr %q reads %s, which /metrics does not serve", expr, n)
			}
		}
	}
	// Every ferry metric has a panel, and the documented names are real.
	var missing []string
	for _, name := range []string{MetricRequests, MetricRequestDuration, MetricInFlight, MetricBodyBytes, MetricRetries,
		MetricBreakerState, MetricBreakerTransition, MetricEjections, MetricSnapshotAge, MetricWatchErrors,
		MetricSpansDropped, MetricSpansExported, MetricSpansExportFailed, MetricSpanQueue} {
		if !fams[name] {
			t.Errorf("documented metric %s is not served", name)
		}
		if !used[name] {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("metrics without a dashboard panel: %v", missing)
	}
}

func TestMetricNamesParser(t *testing.T) {
	got := metricNames(`histogram_quantile(0.99, sum by (le, service) (rate(ferry_request_duration_seconds_bucket{service=~"$service",x="a{b}"}[$__rate_interval]))) / on (service) group_left up`)
	if strings.Join(got, ",") != "ferry_request_duration_seconds_bucket,up" {
		t.Errorf("parsed %v", got)
	}
}
