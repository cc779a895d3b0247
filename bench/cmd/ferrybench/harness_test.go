package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/bench/internal/nodes"
)

const wrkSample = `Running 3s test @ http://127.0.0.1:4000/?size=1024
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.10ms    3.01ms  60.12ms   91.00%
    Req/Sec     6.80k   500.00     7.90k    70.00%
  Latency Distribution
     50%  980.00us
     75%    1.98ms
     90%    4.10ms
     99%   18.70ms
  40779 requests in 3.00s, 45.20MB read
  Non-2xx or 3xx responses: 3
  Socket errors: connect 0, read 2, write 0, timeout 1
Requests/sec:  13593.12
Transfer/sec:     15.07MB
`

func TestParseWrk(t *testing.T) {
	w, err := parseWrk(wrkSample)
	if err != nil {
		t.Fatal(err)
	}
	if w.RPS != 13593.12 || w.Requests != 40779 || w.Errors != 6 {
		t.Errorf("rps %v requests %d errors %d; want 13593.12 40779 6", w.RPS, w.Requests, w.Errors)
	}
	if w.Non2xx != 3 || w.SocketErrs != "connect 0, read 2, write 0, timeout 1" {
		t.Errorf("non-2xx %d socket errors %q", w.Non2xx, w.SocketErrs)
	}
	if w.P50 != 980*time.Microsecond || w.P99 != 18700*time.Microsecond {
		t.Errorf("p50 %v p99 %v; want 980µs 18.7ms", w.P50, w.P99)
	}
	if _, err := parseWrk("unable to connect to 127.0.0.1:1 Connection refused"); err == nil {
		t.Error("output without figures parsed")
	}
	noDist := strings.Replace(wrkSample, "Latency Distribution", "", 1)
	noDist = strings.Replace(noDist, "     50%  980.00us\n", "", 1)
	if _, err := parseWrk(noDist); err == nil {
		t.Error("output without the 50% line parsed")
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"1024": 1024, "100MiB": 100 << 20, "1GiB": 1 << 30, "64KiB": 64 << 10, "7B": 7} {
		got, err := parseSize(in)
		if err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "MiB", "-1", "1TB", "x"} {
		if _, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) accepted", bad)
		}
	}
}

func TestQuantileAndMedian(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i))
	}
	if q := quantile(d, 0.5); q != 50 {
		t.Errorf("p50 = %d, want 50", q)
	}
	if q := quantile(d, 0.99); q != 99 {
		t.Errorf("p99 = %d, want 99", q)
	}
	if q := quantile(d, 0.999); q != 100 {
		t.Errorf("p99.9 = %d, want 100", q)
	}
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median odd = %v", m)
	}
	if m := median([]float64{4, 1, 2, 3}); m != 2.5 {
		t.Errorf("median even = %v", m)
	}
}

func TestRotate(t *testing.T) {
	got := strings.Join(rotate([]string{"a", "b", "c"}, 4), "")
	if got != "bca" {
		t.Errorf("rotate by 4 = %s, want bca", got)
	}
}

func TestOriginServesSizeAndDrains(t *testing.T) {
	srv := httptest.NewServer(nodes.OriginHandler())
	defer srv.Close()
	c := srv.Client()
	buf := make([]byte, 4096)
	if err := download(t.Context(), c, strings.TrimPrefix(srv.URL, "http://"), 200_003, buf); err != nil {
		t.Fatal(err)
	}
	if err := upload(t.Context(), c, strings.TrimPrefix(srv.URL, "http://"), 300_007); err != nil {
		t.Fatal(err)
	}
	res, err := c.Get(srv.URL + "/?size=nope")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "nope") {
		t.Errorf("bad size: %s %q", res.Status, b)
	}
}

func TestShellJoinAndWithoutFlag(t *testing.T) {
	args := withoutFlag([]string{"--quick", "--invocation", "bench/run.sh --quick", "--out=x", "-invocation=y"}, "invocation")
	if got := shellJoin(args); got != "--quick --out=x" {
		t.Errorf("got %q", got)
	}
	if got := shellJoin([]string{"a b", "it's"}); got != `'a b' 'it'\''s'` {
		t.Errorf("got %q", got)
	}
}
