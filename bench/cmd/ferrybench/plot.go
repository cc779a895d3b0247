package main

import (
	"fmt"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

func writePlots(cfg *config, r *results) error {
	seq := map[string][]memSample{}
	conc := map[string][]memSample{}
	for _, n := range r.Order {
		seq[n] = r.Seq[n].Samples
		conc[n] = r.Conc[n].Samples
	}
	if err := memPlot(filepath.Join(cfg.out, "mem_sequential.png"), r.Order, seq,
		fmt.Sprintf("Proxy RSS during %d sequential %s downloads", cfg.seqCount, humanBytes(cfg.seqSize))); err != nil {
		return err
	}
	if err := memPlot(filepath.Join(cfg.out, "mem_concurrent.png"), r.Order, conc,
		fmt.Sprintf("Proxy RSS during %d concurrent %s downloads", cfg.concCount, humanBytes(cfg.concSize))); err != nil {
		return err
	}
	if err := cpuPlot(filepath.Join(cfg.out, "cpu_per_gib.png"), cfg, r); err != nil {
		return err
	}
	return latencyPlot(filepath.Join(cfg.out, "latency.png"), cfg, r)
}

func memPlot(path string, order []string, samples map[string][]memSample, title string) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "seconds since the first download started"
	p.Y.Label.Text = "RSS (MiB, summed over the proxy's processes)"
	p.Y.Min = 0
	p.Legend.Top = true
	p.Legend.Left = true
	top := 0.0
	for i, n := range order {
		s := samples[n]
		if len(s) == 0 {
			continue
		}
		pts := make(plotter.XYs, len(s))
		for j, m := range s {
			pts[j].X = m.T.Seconds()
			pts[j].Y = float64(m.RSS) / (1 << 20)
			top = max(top, pts[j].Y)
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return fmt.Errorf("plot %s: %w", path, err)
		}
		l.Color = plotutil.Color(i)
		l.Dashes = plotutil.Dashes(i)
		l.Width = vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(n, l)
	}
	p.Y.Max = top * 1.45 // room for the legend
	p.Add(plotter.NewGrid())
	if err := p.Save(9*vg.Inch, 5*vg.Inch, path); err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	return nil
}

// cpuPlot is grouped bars: proxy CPU seconds per GiB downloaded and
// uploaded (medians).
func cpuPlot(path string, cfg *config, r *results) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Proxy CPU per GiB relayed (medians of %d rounds, %s down / %s up)", cfg.rounds, humanBytes(cfg.dlSize), humanBytes(cfg.ulSize))
	p.Y.Label.Text = "CPU seconds per GiB (utime+stime)"
	p.Legend.Top = true
	w := vg.Points(22)
	var down, up plotter.Values
	for _, n := range r.Order {
		down = append(down, medOf(r.Bulk[n], func(b bulkRound) float64 { return b.DownCPUPerGiB }))
		up = append(up, medOf(r.Bulk[n], func(b bulkRound) float64 { return b.UpCPUPerGiB }))
	}
	bd, err := plotter.NewBarChart(down, w)
	if err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	bd.Color = plotutil.Color(0)
	bd.Offset = -w / 2
	bu, err := plotter.NewBarChart(up, w)
	if err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	bu.Color = plotutil.Color(1)
	bu.Offset = w / 2
	p.Add(bd, bu, plotter.NewGrid())
	p.Legend.Add("download", bd)
	p.Legend.Add("upload", bu)
	p.NominalX(r.Order...)
	p.Y.Min = 0
	p.Y.Max = max(maxOf(down), maxOf(up)) * 1.3
	if err := p.Save(7*vg.Inch, 4*vg.Inch, path); err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	return nil
}

func maxOf(v plotter.Values) float64 {
	m := 0.0
	for _, x := range v {
		m = max(m, x)
	}
	return m
}

func latencyPlot(path string, cfg *config, r *results) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Latency at a constant %d req/s, %s bodies (%d rounds pooled)", cfg.latRate, humanBytes(cfg.smallSize), cfg.latRounds)
	p.X.Label.Text = "percentile"
	p.Y.Label.Text = "latency (ms, log scale)"
	measured := false
	for _, n := range append([]string{pDirect}, r.Order...) {
		measured = measured || len(r.LatPooled[n]) > 0
	}
	if measured {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	} else {
		// A log scale of no values cannot be drawn (gonum panics): an
		// empty plot says the run left the phase out.
		p.Title.Text += ": not measured in this run"
		p.Y.Label.Text = "latency (ms)"
	}
	var ticks []plot.Tick
	for i, q := range latQuantiles {
		ticks = append(ticks, plot.Tick{Value: float64(i), Label: fmt.Sprintf("p%g", q*100)})
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	p.Legend.Top = true
	p.Legend.Left = true
	for i, n := range append([]string{pDirect}, r.Order...) {
		lat := r.LatPooled[n]
		if len(lat) == 0 {
			continue
		}
		pts := make(plotter.XYs, len(latQuantiles))
		for j, q := range latQuantiles {
			pts[j].X = float64(j)
			pts[j].Y = max(float64(quantile(lat, q))/1e6, 0.001)
		}
		l, s, err := plotter.NewLinePoints(pts)
		if err != nil {
			return fmt.Errorf("plot %s: %w", path, err)
		}
		l.Color = plotutil.Color(i)
		l.Dashes = plotutil.Dashes(i)
		s.Color = plotutil.Color(i)
		s.Shape = plotutil.Shape(i)
		p.Add(l, s)
		name := n
		if n == pDirect {
			name = "direct (no proxy)"
		}
		p.Legend.Add(name, l, s)
	}
	p.Add(plotter.NewGrid())
	if err := p.Save(9*vg.Inch, 5*vg.Inch, path); err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	return nil
}
