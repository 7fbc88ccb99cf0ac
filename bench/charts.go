package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

// Chart sizes: wide enough for a README column, tall enough for a legend.
const (
	chartWidth  = 7 * vg.Inch
	chartHeight = 4.5 * vg.Inch
)

// chartNote is the two lines under each chart's title: what ran, where
// and when.
func chartNote(cfg config) string {
	return fmt.Sprintf("one %v run per point, %s\n%s/%s, %d CPUs, %s",
		cfg.duration, time.Now().UTC().Format("2006-01-02"), runtime.GOOS, runtime.GOARCH,
		runtime.NumCPU(), runtime.Version())
}

// writeCharts draws writers.svg (the durable workload: writes/s against
// writers, one line per implementation) and cost.svg (the coordinator's ns
// per write against channels and against delta size) into dir, from the
// rows of one run. A chart whose workloads did not run is not written.
func writeCharts(dir string, rows []result, note string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var errs []error
	if p := writersChart(rows, note); p != nil {
		errs = append(errs, saveSVG(filepath.Join(dir, "writers.svg"), [][]*plot.Plot{{p}}))
	}
	var cost []*plot.Plot
	for _, w := range []workload{channels, deltaSize} {
		if p := costChart(rows, w, note); p != nil {
			cost = append(cost, p)
		}
	}
	if len(cost) > 0 {
		errs = append(errs, saveSVG(filepath.Join(dir, "cost.svg"), [][]*plot.Plot{cost}))
	}
	return errors.Join(errs...)
}

// writersChart plots writes/s against writers for the durable workload on
// log-log axes, or returns nil if it did not run.
func writersChart(rows []result, note string) *plot.Plot {
	var lines []any
	var xs []float64
	for _, im := range impls[durable] {
		var pts plotter.XYs
		for _, r := range rows {
			if r.workload == durable && r.impl == im.name {
				pts = append(pts, plotter.XY{X: float64(r.writers), Y: r.rate()})
				xs = append(xs, float64(r.writers))
			}
		}
		if len(pts) > 0 {
			lines = append(lines, im.name, pts)
		}
	}
	if len(lines) == 0 {
		return nil
	}
	p := newChart("Durable writes: throughput against writers (higher is better)", note)
	p.X.Label.Text = "writers, each waiting until its write is durable"
	p.Y.Label.Text = "writes/s"
	p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
	p.X.Tick.Marker = valueTicks(xs, strconv.Itoa)
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	// The lines rise to the right: the top left corner stays clear.
	if err := plotutil.AddLinePoints(p, lines...); err != nil {
		panic(err) // only for arguments of the wrong type: a bug here
	}
	return p
}

// costChart plots the coordinator's ns per write against the setting the
// workload varies (channels or delta size), or returns nil if it did not
// run.
func costChart(rows []result, w workload, note string) *plot.Plot {
	var pts plotter.XYs
	var xs []float64
	for _, r := range rows {
		if r.workload != w || r.impl != "coordinator" {
			continue
		}
		x := float64(r.cell.channels)
		if w == deltaSize {
			x = float64(r.cell.flushSize)
		}
		pts = append(pts, plotter.XY{X: x, Y: r.nsPerWrite()})
		xs = append(xs, x)
	}
	if len(pts) == 0 {
		return nil
	}
	var p *plot.Plot
	switch w {
	case channels:
		p = newChart("Cost against channels", note)
		p.X.Label.Text = fmt.Sprintf("channels (%d writers, spread round-robin)", scalingWriters)
		p.X.Tick.Marker = valueTicks(xs, strconv.Itoa)
	default:
		p = newChart("Cost against delta size", note)
		p.X.Label.Text = fmt.Sprintf("Config.FlushSize (%d writers)", scalingWriters)
		p.X.Tick.Marker = valueTicks(xs, formatSize)
	}
	p.Y.Label.Text = "coordinator: ns per write (lower is better)"
	p.X.Scale = plot.LogScale{}
	p.Y.Min = 0
	line, points, err := plotter.NewLinePoints(pts)
	if err != nil {
		panic(err) // only for NaN or infinite figures: a bug here
	}
	line.Color, points.Color = plotutil.Color(0), plotutil.Color(0)
	p.Add(line, points) // one line: no legend
	return p
}

// newChart returns a plot titled with title and, on the next lines, note.
func newChart(title, note string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title + "\n" + note
	p.Title.TextStyle.Font.Size = vg.Points(10)
	p.Legend.Top = true
	p.Legend.Left = true
	p.Add(plotter.NewGrid())
	return p
}

// valueTicks labels exactly the x values that were measured.
func valueTicks(xs []float64, label func(int) string) plot.ConstantTicks {
	xs = slices.Clone(xs)
	slices.Sort(xs)
	var ticks plot.ConstantTicks
	for _, x := range slices.Compact(xs) {
		ticks = append(ticks, plot.Tick{Value: x, Label: label(int(x))})
	}
	return ticks
}

// saveSVG draws plots, one row of tiles per slice, into one SVG file.
func saveSVG(path string, plots [][]*plot.Plot) error {
	cols := len(plots[0])
	img := vgsvg.New(chartWidth*vg.Length(cols+1)/2, chartHeight) // two tiles share 1.5 widths
	tiles := draw.Tiles{Rows: len(plots), Cols: cols, PadX: vg.Millimeter * 4,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 4}
	canvases := plot.Align(plots, tiles, draw.New(img))
	for i, row := range plots {
		for j, p := range row {
			p.Draw(canvases[i][j])
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := img.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
