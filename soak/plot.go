package main

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os"
)

// panel is one time series drawn in its own box of the plot.
type panel struct {
	title string
	xs    []float64 // seconds since traffic started
	ys    []float64
	color color.RGBA
}

// Plot geometry, in pixels.
const (
	plotW      = 1100
	panelH     = 190
	marginL    = 90
	marginR    = 20
	titleH     = 52
	panelGap   = 46
	bottomText = 40
)

var (
	white = color.RGBA{255, 255, 255, 255}
	black = color.RGBA{20, 20, 20, 255}
	grid  = color.RGBA{225, 225, 225, 255}
	grey  = color.RGBA{110, 110, 110, 255}
)

// writePlot draws the panels one above the other, sharing the time axis,
// under a title and a line of detail, and writes a PNG.
func writePlot(path, title, detail string, panels []panel, vlines []float64) error {
	h := titleH + len(panels)*(panelH+panelGap) + bottomText
	img := image.NewRGBA(image.Rect(0, 0, plotW, h))
	draw.Draw(img, img.Bounds(), &image.Uniform{white}, image.Point{}, draw.Src)
	drawText(img, marginL, 8, title, 2, black)
	drawText(img, marginL, 28, detail, 1, grey)

	xmax := 1.0
	for _, p := range panels {
		for _, x := range p.xs {
			xmax = math.Max(xmax, x)
		}
	}
	xmax = niceCeil(xmax)
	for i, p := range panels {
		top := titleH + i*(panelH+panelGap) + 18
		drawPanel(img, p, top, xmax, vlines)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return fmt.Errorf("encode %s: %w", path, err)
	}
	return f.Close()
}

func drawPanel(img *image.RGBA, p panel, top int, xmax float64, vlines []float64) {
	left, right := marginL, plotW-marginR
	bottom := top + panelH
	ymin, ymax := 0.0, 1.0
	for _, y := range p.ys {
		ymax = math.Max(ymax, y)
	}
	ymax = niceCeil(ymax * 1.05)
	label := p.title
	if n := len(p.ys); n > 0 {
		lo, hi := p.ys[0], p.ys[0]
		for _, y := range p.ys {
			lo, hi = math.Min(lo, y), math.Max(hi, y)
		}
		label = fmt.Sprintf("%s   first %s  min %s  max %s  last %s", p.title, num(p.ys[0]), num(lo), num(hi), num(p.ys[n-1]))
	}
	drawText(img, left, top-16, label, 2, black)

	px := func(x float64) int { return left + int(math.Round(x/xmax*float64(right-left))) }
	py := func(y float64) int { return bottom - int(math.Round((y-ymin)/(ymax-ymin)*float64(panelH))) }

	// Grid and tick labels: five steps on each axis.
	for i := 0; i <= 4; i++ {
		y := ymin + (ymax-ymin)*float64(i)/4
		yy := py(y)
		hline(img, left, right, yy, grid)
		s := num(y)
		drawText(img, left-8-textWidth(s, 1), yy-3, s, 1, grey)
	}
	for i := 0; i <= 10; i++ {
		x := xmax * float64(i) / 10
		xx := px(x)
		vline(img, xx, top, bottom, grid)
		s := fmt.Sprintf("%gs", math.Round(x*10)/10)
		if xmax >= 300 {
			s = fmt.Sprintf("%gm", math.Round(x/60*10)/10)
		}
		drawText(img, xx-textWidth(s, 1)/2, bottom+6, s, 1, grey)
	}
	for _, x := range vlines {
		for y := top; y <= bottom; y += 4 {
			vline(img, px(x), y, y+1, grey)
		}
	}
	// Frame.
	hline(img, left, right, top, grey)
	hline(img, left, right, bottom, grey)
	vline(img, left, top, bottom, grey)
	vline(img, right, top, bottom, grey)

	for i := 1; i < len(p.xs); i++ {
		line(img, px(p.xs[i-1]), py(p.ys[i-1]), px(p.xs[i]), py(p.ys[i]), p.color)
	}
	if len(p.xs) == 1 {
		line(img, px(p.xs[0]), py(p.ys[0]), px(p.xs[0])+1, py(p.ys[0]), p.color)
	}
}

// num prints a value briefly: integers as integers, others with one
// decimal.
func num(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e9 {
		return fmt.Sprintf("%d", int64(v))
	}
	return fmt.Sprintf("%.1f", v)
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func hline(img *image.RGBA, x0, x1, y int, c color.Color) {
	for x := x0; x <= x1; x++ {
		img.Set(x, y, c)
	}
}

func vline(img *image.RGBA, x, y0, y1 int, c color.Color) {
	for y := y0; y <= y1; y++ {
		img.Set(x, y, c)
	}
}

// line draws a two-pixel-thick segment (Bresenham).
func line(img *image.RGBA, x0, y0, x1, y1 int, c color.Color) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := sign(x1-x0), sign(y1-y0)
	e := dx + dy
	for {
		img.Set(x0, y0, c)
		img.Set(x0, y0+1, c)
		img.Set(x0+1, y0, c)
		if x0 == x1 && y0 == y1 {
			return
		}
		e2 := 2 * e
		if e2 >= dy {
			e += dy
			x0 += sx
		}
		if e2 <= dx {
			e += dx
			y0 += sy
		}
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

func sign(v int) int {
	switch {
	case v < 0:
		return -1
	case v > 0:
		return 1
	}
	return 0
}
