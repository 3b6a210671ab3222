package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"meshkit.dev/meshkit/sim"
)

// simReport is `meshkit sim --output json` with a baseline: both runs and their ratios.
type simReport struct {
	MeshKit  *sim.Result `json:"meshkit"`
	Baseline *sim.Result `json:"baseline"`
	// Ratios are baseline ÷ MeshKit: above 1 means MeshKit does better.
	Ratios map[string]float64 `json:"ratios"`
}

func (a *app) sim(fs *pflag.FlagSet) func(args []string) error {
	file := fs.StringP("filename", "f", "", "scenario file (see sim/scenarios/)")
	baseline := fs.String("baseline", "", "also run the scenario with a hub-and-spoke baseline: xds (go-control-plane)")
	output := fs.StringP("output", "o", "text", "text or json")
	plotPath := fs.String("plot", "", "draw the delivery CDF and per-agent load into this .svg or .png")
	clock := fs.String("clock", "", "override the scenario's clock: wall or virtual")
	seed := fs.Int64("seed", 0, "override the scenario's random seed")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the MeshKit run's measured window (after warm-up) to this file")
	return func(args []string) error {
		if err := noArgs(args); err != nil {
			return err
		}
		if err := required("filename", *file); err != nil {
			return err
		}
		if *output != "text" && *output != "json" {
			return usagef("--output must be one of text, json")
		}
		if *baseline != "" && *baseline != "xds" {
			return usagef("--baseline must be xds")
		}
		sc, err := sim.LoadScenario(*file)
		if err != nil {
			return err
		}
		if *clock != "" {
			if *clock != "wall" && *clock != "virtual" {
				return usagef("--clock must be wall or virtual")
			}
			sc.Clock = *clock
		}
		if *seed != 0 {
			sc.Seed = *seed
		}
		report := func(res, base *sim.Result) error {
			if *plotPath != "" {
				rs := []*sim.Result{res}
				if base != nil {
					rs = append(rs, base)
				}
				if err := sim.Plot(*plotPath, rs...); err != nil {
					return err
				}
			}
			if *output == "json" {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				if base == nil {
					return enc.Encode(res)
				}
				return enc.Encode(simReport{MeshKit: res, Baseline: base, Ratios: ratios(res, base)})
			}
			printSim(a.stdout, sc, res, base)
			if *plotPath != "" {
				fmt.Fprintf(a.stdout, "plot: %s\n", *plotPath)
			}
			return nil
		}
		if sc.Clock == "virtual" {
			if *baseline != "" {
				return usagef("--baseline runs on the wall clock only (the hub's gRPC stack is not simulated in virtual time)")
			}
			return a.simVirtual(sc, report)
		}
		run := func(label string, f func(opt sim.Options) (*sim.Result, error)) (*sim.Result, error) {
			opt := sim.Options{}
			if bar := a.progressBar(label, sc.Duration.D()); bar != nil {
				opt.Progress = func(done, _ time.Duration) { _ = bar.Set64(int64(done / time.Second)) }
				defer func() { _ = bar.Finish(); fmt.Fprintln(a.stderr) }()
			}
			return f(opt)
		}
		res, err := run("meshkit", func(opt sim.Options) (*sim.Result, error) {
			if *cpuProfile != "" {
				f, err := os.Create(*cpuProfile)
				if err != nil {
					return nil, err
				}
				defer f.Close()
				opt.CPUProfile = f
			}
			return sim.Run(a.ctx, sc, opt)
		})
		if err != nil {
			return err
		}
		var base *sim.Result
		if *baseline != "" {
			if base, err = run(*baseline, func(opt sim.Options) (*sim.Result, error) { return sim.RunBaseline(a.ctx, sc, opt, *baseline) }); err != nil {
				return err
			}
		}
		return report(res, base)
	}
}

// simVirtual runs the scenario in a testing/synctest bubble. A bubble needs a
// *testing.T, so the run is one test driven by testing.Main, which ends the process
// (exit 0, or 1 when the run failed) once the report is written.
func (a *app) simVirtual(sc *sim.Scenario, report func(res, base *sim.Result) error) error {
	out, ok := a.stdout.(*os.File)
	if !ok {
		return fmt.Errorf("--clock virtual writes to the process's standard output only")
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	os.Args = []string{os.Args[0], "-test.run=^TestVirtual$", "-test.timeout=0"}
	os.Stdout = devnull // testing's own PASS/FAIL lines; the report goes to out
	a.stdout = out
	testing.Main(func(string, string) (bool, error) { return true, nil },
		[]testing.InternalTest{{Name: "TestVirtual", F: func(t *testing.T) {
			res, err := sim.RunVirtual(t, sc, sim.Options{})
			if err == nil {
				err = report(res, nil)
			}
			if err != nil {
				fmt.Fprintln(a.stderr, "meshkit sim:", err)
				t.Fail()
			}
		}}}, nil, nil)
	return nil // not reached: testing.Main exits
}

func ratios(m, b *sim.Result) map[string]float64 {
	div := func(x, y float64) float64 {
		if y <= 0 {
			return 0
		}
		return x / y
	}
	return map[string]float64{
		"p99_ms":             div(b.P99Ms, m.P99Ms),
		"p50_ms":             div(b.P50Ms, m.P50Ms),
		"seed_egress_bytes":  div(float64(b.SeedEgressBytes), float64(m.SeedEgressBytes)),
		"cpu_seconds":        div(b.CPUSeconds, m.CPUSeconds),
		"server_cpu_seconds": div(b.ServerCPUSeconds, m.ServerCPUSeconds),
		"serving_min_ratio":  div(b.ServingMin, m.ServingMin),
		"delivered_ratio":    div(b.DeliveredRatio, m.DeliveredRatio),
	}
}

func printSim(w io.Writer, sc *sim.Scenario, m, b *sim.Result) {
	fmt.Fprintf(w, "scenario %q: %d agents, %s clock, %s, bundle ≈ %d B, links %s\n\n", sc.Name, sc.Agents, sc.Clock, sc.Duration.D(), m.BundleBytes, sc.Link.Latency.D())
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	cols := []*sim.Result{m}
	if b != nil {
		cols = append(cols, b)
	}
	head := "\t"
	for _, r := range cols {
		head += r.System + "\t"
	}
	if b != nil {
		head += "xds ÷ meshkit\t"
	}
	fmt.Fprintln(tw, head)
	row := func(name string, f func(*sim.Result) float64, format string, ratio bool) {
		line := name + "\t"
		for _, r := range cols {
			line += fmt.Sprintf(format, f(r)) + "\t"
		}
		if b != nil && ratio && f(m) > 0 {
			line += fmt.Sprintf("%.2f×", f(b)/f(m)) + "\t"
		} else if b != nil {
			line += "\t"
		}
		fmt.Fprintln(tw, line)
	}
	row("publishes", func(r *sim.Result) float64 { return float64(r.Publishes) }, "%.0f", false)
	row("delivered", func(r *sim.Result) float64 { return 100 * r.DeliveredRatio }, "%.1f %%", false)
	row("p50 ms", func(r *sim.Result) float64 { return r.P50Ms }, "%.0f", true)
	row("p90 ms", func(r *sim.Result) float64 { return r.P90Ms }, "%.0f", true)
	row("p99 ms", func(r *sim.Result) float64 { return r.P99Ms }, "%.0f", true)
	row("max ms", func(r *sim.Result) float64 { return r.MaxMs }, "%.0f", true)
	row("seed/hub egress per publish KiB", func(r *sim.Result) float64 { return r.SeedEgressPerPublish / 1024 }, "%.1f", true)
	row("  × bundle", func(r *sim.Result) float64 { return r.SeedEgressPerPublish / float64(max(r.BundleBytes, 1)) }, "%.1f", true)
	row("received per agent KiB", func(r *sim.Result) float64 { return r.BytesPerAgent / 1024 }, "%.1f", true)
	row("converge after heal ms", func(r *sim.Result) float64 { return r.ConvergeMs }, "%.0f", false)
	row("version regressions", func(r *sim.Result) float64 { return float64(r.Regressions) }, "%.0f", false)
	row("agents reached across the cut", func(r *sim.Result) float64 { return float64(r.CrossedPartition) }, "%.0f", false)
	row("agents serving, lowest %", func(r *sim.Result) float64 { return 100 * r.ServingMin }, "%.1f", false)
	row("agents serving, mean %", func(r *sim.Result) float64 { return 100 * r.ServingAvg }, "%.1f", false)
	row("CPU s (whole process)", func(r *sim.Result) float64 { return r.CPUSeconds }, "%.2f", true)
	if m.ServerCPUSeconds >= 0 {
		row("CPU s (seed / hub goroutines)", func(r *sim.Result) float64 { return r.ServerCPUSeconds }, "%.2f", true)
	}
	row("heap per agent KiB", func(r *sim.Result) float64 { return r.HeapBytesPerAgent / 1024 }, "%.0f", false)
	row("wall s", func(r *sim.Result) float64 { return r.WallSeconds }, "%.1f", false)
	_ = tw.Flush()
	if len(m.Rejected) > 0 {
		fmt.Fprintf(w, "\nrefused by agents: %s\n", counts(m.Rejected))
	}
	fmt.Fprintln(w, "\nper publish (meshkit): version  at  delivered  p50/p90/p99/max ms")
	for _, p := range m.PerPublish {
		fmt.Fprintf(w, "  v%-4d %7.0f ms  %4d  %6.0f %6.0f %6.0f %6.0f\n", p.Version, p.AtMs, p.Delivered, p.P50Ms, p.P90Ms, p.P99Ms, p.MaxMs)
	}
}

// progressBar returns a bar on stderr when it is a terminal and the run is longer than a
// few seconds; nil otherwise.
func (a *app) progressBar(label string, total time.Duration) *progressbar.ProgressBar {
	f, ok := a.stderr.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) || total < 5*time.Second {
		return nil
	}
	return progressbar.NewOptions64(int64(total/time.Second), progressbar.OptionSetWriter(f), progressbar.OptionSetDescription(label),
		progressbar.OptionShowCount(), progressbar.OptionSetPredictTime(false))
}
