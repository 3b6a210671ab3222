package sim

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"runtime/pprof"

	"github.com/google/pprof/profile"
)

// The seed (or the hub) runs in goroutines labelled roleLabel=server, and so does every
// goroutine they start: a CPU profile of the measured window then tells the server's CPU
// time apart from the agents' (they share the process). Work a server does in a goroutine
// an agent started (mocknet delivers a stream to the goroutine of whoever opened it) is
// counted as the agents': the server figure is a lower bound.
const roleLabel = "meshkit.sim.role"

// asServer runs f with the server label, so that goroutines it starts carry it.
func asServer(f func()) {
	pprof.Do(context.Background(), pprof.Labels(roleLabel, "server"), func(context.Context) { f() })
}

// cpuWindow profiles the process until stop; stop returns the CPU seconds of goroutines
// labelled server (-1 when another profile was running), and copies the profile to also.
type cpuWindow struct {
	buf bytes.Buffer
	ok  bool
}

func startCPUWindow() *cpuWindow {
	w := &cpuWindow{}
	w.ok = pprof.StartCPUProfile(&w.buf) == nil
	return w
}

func (w *cpuWindow) stop(also io.Writer) (serverSeconds float64, err error) {
	if !w.ok {
		return -1, nil
	}
	pprof.StopCPUProfile()
	if also != nil {
		if _, err := also.Write(w.buf.Bytes()); err != nil {
			return -1, fmt.Errorf("sim: cpu profile: %w", err)
		}
	}
	p, err := profile.Parse(bytes.NewReader(w.buf.Bytes()))
	if err != nil {
		return -1, fmt.Errorf("sim: cpu profile: %w", err)
	}
	idx := -1
	for i, st := range p.SampleType {
		if st.Type == "cpu" && st.Unit == "nanoseconds" {
			idx = i
		}
	}
	if idx < 0 {
		return -1, nil
	}
	var ns int64
	for _, s := range p.Sample {
		if v := s.Label[roleLabel]; len(v) == 1 && v[0] == "server" {
			ns += s.Value[idx]
		}
	}
	return float64(ns) / 1e9, nil
}
