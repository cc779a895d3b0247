package main

import (
	"fmt"
	"image/color"
	"image/png"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseMix(t *testing.T) {
	m, err := parseMix(defaultMix)
	if err != nil {
		t.Fatal(err)
	}
	if m.total != 100 || len(m.kinds) != len(allKinds) {
		t.Fatalf("default mix: %+v", m)
	}
	one, err := parseMix("small=0, upload=3")
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 100 {
		if k := one.pick(r); k != kindUpload {
			t.Fatalf("picked %q from a mix of uploads only", k)
		}
	}
	for _, bad := range []struct{ in, want string }{
		{"small", `"small": want kind=weight`},
		{"tiny=3", `unknown kind "tiny"`},
		{"small=x", `small: weight "x"`},
		{"small=-1", `small: weight "-1"`},
		{"small=1,small=2", `kind "small" given twice`},
		{"small=0", "no kind has a positive weight"},
	} {
		if _, err := parseMix(bad.in); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("parseMix(%q) = %v, want an error containing %q", bad.in, err, bad.want)
		}
	}
}

func TestParseFlags(t *testing.T) {
	cfg, err := parseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.duration != 10*time.Minute || cfg.concurrency != 256 || cfg.maxBody != 8<<20 {
		t.Fatalf("defaults: %+v", cfg)
	}
	for _, bad := range [][]string{
		{"-duration", "0s"}, {"-concurrency", "0"}, {"-max-body", "12QB"}, {"-max-body", "10"},
		{"-h2c", "1.5"}, {"-mix", "nope=1"}, {"extra"}, {"-reload-every", "-1s"}, {"-reload-every", "10ms"},
	} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("parseFlags(%q) accepted", bad)
		}
	}
	if n, err := parseSize("64MiB"); err != nil || n != 64<<20 {
		t.Fatalf("parseSize(64MiB) = %d, %v", n, err)
	}
}

// The verdict fails on a ferry-made error, on descriptors that did not come
// back, and on growth under load; it passes a clean run.
func TestJudge(t *testing.T) {
	cfg, _ := parseFlags([]string{"-duration", "100s"})
	rest := procSample{goroutines: 15, fds: 12, fdKinds: fdKinds{listening: 2, pipes: 1, others: 9}}
	mk := func(tAt float64, phase string, fds int, rss int64) sample {
		s := sample{t: tAt, phase: phase, procSample: rest}
		s.fds, s.rss = fds, rss
		return s
	}
	run := func(afterFDs int, lateRSS int64, ferryErrs int64) *results {
		r := &results{trafficStart: 0, trafficEnd: 100, traffic: newTraffic("", nil, mix{}, 1, 0, time.Second, 1)}
		r.traffic.ferryErrors.Store(ferryErrs)
		r.rest0 = mk(-1, "rest-before", 12, 20<<20)
		r.rest1 = mk(110, "rest-after", afterFDs, 40<<20)
		for i := range 100 {
			rss := int64(60 << 20)
			if i >= 75 {
				rss = lateRSS
			}
			r.samples = append(r.samples, mk(float64(i), "traffic", 300, rss))
		}
		r.judge(cfg)
		return r
	}
	if r := run(12, 70<<20, 0); len(r.verdicts) != 0 {
		t.Fatalf("clean run judged failed: %v", r.verdicts)
	}
	if r := run(12, 70<<20, 1); len(r.verdicts) != 1 || !strings.Contains(r.verdicts[0], "ferry made 1 errors") {
		t.Fatalf("a ferry error: %v", r.verdicts)
	}
	if r := run(30, 70<<20, 0); len(r.verdicts) != 1 || !strings.Contains(r.verdicts[0], "descriptors other than pipes at rest: 11 before traffic, 29 after") {
		t.Fatalf("descriptors left open: %v", r.verdicts)
	}
	if r := run(12, 100<<20, 0); len(r.verdicts) != 1 || !strings.Contains(r.verdicts[0], "RSS under load") {
		t.Fatalf("RSS growth: %v", r.verdicts)
	}
	reloads := func(rc reloadCount) []string {
		r := &results{trafficStart: 0, trafficEnd: 100, traffic: newTraffic("", nil, mix{}, 1, 0, time.Second, 1), reloads: rc}
		r.rest0, r.rest1 = mk(-1, "rest-before", 12, 20<<20), mk(110, "rest-after", 12, 20<<20)
		r.judge(cfg)
		return r.verdicts
	}
	if v := reloads(reloadCount{written: 10, applied: 7, lastInForce: true}); len(v) != 0 {
		t.Fatalf("reloads all applied (some coalesced): %v", v)
	}
	if v := reloads(reloadCount{written: 10, applied: 6, rejected: 1, lastInForce: true}); len(v) != 1 || !strings.Contains(v[0], "rejected 1 of the config changes") {
		t.Fatalf("a rejected reload: %v", v)
	}
	if v := reloads(reloadCount{written: 10, applied: 6}); len(v) != 1 || !strings.Contains(v[0], "did not apply the last config change (generation 10)") {
		t.Fatalf("the last change not in force: %v", v)
	}
}

// Each generation of the soak's config changes the service's settings
// from the one before, and the first is ferry's defaults.
func TestFerryConfigGenerations(t *testing.T) {
	if c := ferryConfig(1, 2, "127.0.0.1:3", 0); !strings.Contains(c, "max_retries: 2 }") {
		t.Fatalf("generation 0 is not ferry's default retries:\n%s", c)
	}
	for gen := 1; gen < 4; gen++ {
		if ferryConfig(1, 2, "o:1", gen) == ferryConfig(1, 2, "o:1", gen-1) || strings.Contains(ferryConfig(1, 2, "o:1", gen), fmt.Sprintf("max_retries: %d }", 2-(gen-1)%2)) {
			t.Fatalf("generation %d does not change the service's settings", gen)
		}
	}
}

func TestPlotWritesPNG(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.png")
	p := panel{title: "fds", xs: []float64{0, 1, 2, 3}, ys: []float64{10, 50, 40, 12}, color: color.RGBA{200, 0, 0, 255}}
	if err := writePlot(path, "title", "detail 0-9 a-z (x%)", []panel{p, p}, []float64{1, 2}); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != plotW || b.Dy() != titleH+2*(panelH+panelGap)+bottomText {
		t.Fatalf("size %v", b)
	}
	// The line is drawn: some pixel has the panel's colour.
	found := false
	for y := img.Bounds().Min.Y; y < img.Bounds().Max.Y && !found; y++ {
		for x := img.Bounds().Min.X; x < img.Bounds().Max.X; x++ {
			if r, g, b, _ := img.At(x, y).RGBA(); r>>8 == 200 && g == 0 && b == 0 {
				found = true
				break
			}
		}
	}
	if !found {
		t.Fatal("no pixel of the series' colour")
	}
	for _, r := range strings.ToUpper("0123456789abcdefghijklmnopqrstuvwxyz .,:;-+/()%=_?") {
		if _, ok := glyphs[r]; !ok {
			t.Errorf("no glyph for %q", r)
		}
	}
}

func TestNiceCeil(t *testing.T) {
	for in, want := range map[float64]float64{0: 1, 0.7: 0.8, 1: 1, 51: 60, 101: 120, 2150: 2500, 99999: 100000} {
		if got := niceCeil(in); got != want {
			t.Errorf("niceCeil(%v) = %v, want %v", in, got, want)
		}
	}
}
