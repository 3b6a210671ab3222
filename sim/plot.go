package sim

import (
	"fmt"
	"image/color"
	"path/filepath"
	"slices"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// Plot draws, for every result, the delivery CDF (share of deliveries within t) and the
// bytes each agent received (sorted), side by side, into path (.svg or .png).
func Plot(path string, results ...*Result) error {
	ext := strings.ToLower(filepath.Ext(path))
	if ext != ".svg" && ext != ".png" {
		return fmt.Errorf("sim: plot %s: use a .svg or .png file", path)
	}
	cdf := plot.New()
	cdf.Title.Text = "Publish → held by agent"
	cdf.X.Label.Text = "milliseconds"
	cdf.Y.Label.Text = "share of deliveries"
	load := plot.New()
	load.Title.Text = "Bytes received per agent"
	load.X.Label.Text = "agents (sorted)"
	load.Y.Label.Text = "KiB"
	palette := []color.Color{color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}, color.RGBA{G: 0x80, A: 0xff}}
	for k, r := range results {
		name := fmt.Sprintf("%s (p99 %.0f ms)", r.System, r.P99Ms)
		if len(r.Latencies) > 0 {
			pts := make(plotter.XYs, len(r.Latencies))
			for i, l := range r.Latencies {
				pts[i] = plotter.XY{X: l, Y: float64(i+1) / float64(len(r.Latencies))}
			}
			line, err := plotter.NewLine(pts)
			if err != nil {
				return err
			}
			line.Color = palette[k%len(palette)]
			cdf.Add(line)
			cdf.Legend.Add(name, line)
		}
		if len(r.AgentBytes) > 0 {
			bs := slices.Clone(r.AgentBytes)
			slices.Sort(bs)
			pts := make(plotter.XYs, len(bs))
			for i, b := range bs {
				pts[i] = plotter.XY{X: float64(i), Y: float64(b) / 1024}
			}
			line, err := plotter.NewLine(pts)
			if err != nil {
				return err
			}
			line.Color = palette[k%len(palette)]
			load.Add(line)
			load.Legend.Add(r.System, line)
		}
	}
	cdf.Legend.Top, cdf.Legend.Left = false, false
	load.Legend.Top, load.Legend.Left = true, true
	w, h := 12*vg.Inch, 4.5*vg.Inch
	var c vg.CanvasWriterTo
	if ext == ".svg" {
		c = vgsvg.New(w, h)
	} else {
		c = vgimg.PngCanvas{Canvas: vgimg.New(w, h)}
	}
	dc := draw.New(c)
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadX: vg.Millimeter * 6, PadY: vg.Millimeter * 4, PadLeft: vg.Millimeter * 4, PadRight: vg.Millimeter * 4, PadTop: vg.Millimeter * 4, PadBottom: vg.Millimeter * 4}
	cdf.Draw(tiles.At(dc, 0, 0))
	load.Draw(tiles.At(dc, 1, 0))
	return writeCanvas(path, c)
}
