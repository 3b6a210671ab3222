package sim

import (
	"slices"
	"sync"
	"time"
)

// Result is what a run measured. Times are milliseconds of the run's clock.
type Result struct {
	Scenario string `json:"scenario"`
	// System is "meshkit" or the baseline's name ("xds").
	System string `json:"system"`
	Clock  string `json:"clock"`
	Agents int    `json:"agents"`
	// Publishes counted (versions published during the run).
	Publishes int `json:"publishes"`
	// DeliveredRatio is the share of (publish, agent up at the end) pairs where the agent
	// held that version or a newer one by the end of the run.
	DeliveredRatio float64 `json:"delivered_ratio"`
	// P50Ms, P90Ms, P99Ms, MaxMs are over every delivery of every publish.
	P50Ms float64 `json:"p50_ms"`
	P90Ms float64 `json:"p90_ms"`
	P99Ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms"`
	// PerPublish is the time until 50/90/99/100 % of the agents held each version.
	PerPublish []PublishResult `json:"per_publish"`
	// SeedEgressBytes is what the seed (or the hub) sent during the run, and per publish.
	SeedEgressBytes      uint64  `json:"seed_egress_bytes"`
	SeedEgressPerPublish float64 `json:"seed_egress_per_publish_bytes"`
	// BundleBytes is the size of the bundle published (the snapshot payload).
	BundleBytes int `json:"bundle_bytes"`
	// BytesPerAgent is what an agent received during the run, on average.
	BytesPerAgent float64 `json:"bytes_per_agent"`
	// ConvergeMs is the time from the last heal until every agent up held the newest
	// version published before it; -1 without a heal.
	ConvergeMs float64 `json:"converge_ms"`
	// Rejected counts messages the agents refused, by reason.
	Rejected map[string]uint64 `json:"rejected,omitempty"`
	// Regressions counts agents that ever served an older (epoch, version) after a newer one.
	Regressions int `json:"regressions"`
	// CrossedPartition counts agents that, cut off from the seed by a partition, came to
	// hold a version published after the cut before it healed: the simulated network
	// leaked (a mocknet stream can outlive its connection). 0 means every partition held.
	CrossedPartition int `json:"crossed_partition"`
	// WallSeconds is how long the run took, and HeapBytesPerAgent the heap it held per agent.
	WallSeconds       float64 `json:"wall_seconds"`
	HeapBytesPerAgent float64 `json:"heap_bytes_per_agent"`
	// CPUSeconds is the process CPU time the measured part of the run used (the seed or
	// hub and every agent or client: they share the process).
	CPUSeconds float64 `json:"cpu_seconds"`
	// ServingMin and ServingAvg are, sampled every second of the run, the lowest and the
	// mean share of the agents up that serve their data plane any configuration: what a
	// fleet keeps running while its seed (or hub) is gone or cut off.
	ServingMin float64 `json:"serving_min_ratio"`
	ServingAvg float64 `json:"serving_avg_ratio"`
	// ServerCPUSeconds is the part of it spent in the seed's (or hub's) goroutines, from a
	// CPU profile of the window (wall clock only; -1 when not measured). A lower bound:
	// sim/servercpu.go.
	ServerCPUSeconds float64 `json:"server_cpu_seconds"`

	// Trust is the propagation of the control stream (revocations, root and CA
	// rotations) during the run; nil when no control message was published in it.
	Trust *TrustResult `json:"trust,omitempty"`

	// Identity is the agents' certificates, with identity: true: sampled every second of
	// the run, the lowest and the mean share of the agents up holding a valid one of
	// their own (a peer without one is out of the mesh).
	Identity *IdentityResult `json:"identity,omitempty"`

	// For plots: every delivery latency (ms, sorted) and each agent's bytes received.
	Latencies  []float64 `json:"-"`
	AgentBytes []uint64  `json:"-"`
}

// IdentityResult is how many agents held a valid certificate of their own.
type IdentityResult struct {
	CertifiedMin float64 `json:"certified_min_ratio"`
	CertifiedAvg float64 `json:"certified_avg_ratio"`
	// CertifiedEnd is the share at the end of the run.
	CertifiedEnd float64 `json:"certified_end_ratio"`
}

// TrustResult is how control messages reached the agents: the time from the seed
// signing each one until each agent up held it or a newer one.
type TrustResult struct {
	Messages       int     `json:"messages"`
	DeliveredRatio float64 `json:"delivered_ratio"`
	P50Ms          float64 `json:"p50_ms"`
	P99Ms          float64 `json:"p99_ms"`
	MaxMs          float64 `json:"max_ms"`
	// PerMessage is each control message's propagation, with what it carried.
	PerMessage []PublishResult `json:"per_message"`
	// RootVersion is the newest root the seed put in force, and AgentsOnRoot how many of
	// the agents up hold it at the end.
	RootVersion  uint64 `json:"root_version"`
	AgentsOnRoot int    `json:"agents_on_root"`
}

// PublishResult is one version's propagation.
type PublishResult struct {
	Version uint64 `json:"version"`
	// What is set on control messages: the event that made it (revoke, rotate_root, …).
	What      string  `json:"what,omitempty"`
	AtMs      float64 `json:"at_ms"`
	Delivered int     `json:"delivered"`
	P50Ms     float64 `json:"p50_ms"`
	P90Ms     float64 `json:"p90_ms"`
	P99Ms     float64 `json:"p99_ms"`
	MaxMs     float64 `json:"max_ms"` // -1 when not every agent got it
}

// tracker records when each agent first held each version.
type tracker struct {
	mu       sync.Mutex
	start    time.Time
	held     []map[uint64]time.Duration // per agent: version → first time held (since start)
	last     []uint64
	regress  []bool
	pubAt    map[uint64]time.Duration
	pubOrder []uint64
	what     map[uint64]string // what each version carried, when labelled
	// While a partition is in place: the agents cut off from the seed, the newest version
	// published before the cut, and the agents that came to hold a newer one anyway (it
	// crossed the cut: the simulated network leaked).
	off      map[int]bool
	offAbove uint64
	crossed  map[int]bool
	maxPub   uint64 // the newest version published, warm-up included (reset keeps it)
}

func newTracker(agents int) *tracker {
	t := &tracker{held: make([]map[uint64]time.Duration, agents), last: make([]uint64, agents), regress: make([]bool, agents),
		pubAt: map[uint64]time.Duration{}, crossed: map[int]bool{}}
	for i := range t.held {
		t.held[i] = map[uint64]time.Duration{}
	}
	return t
}

// now is the time since the start; the caller holds t.mu.
func (t *tracker) now() time.Duration { return time.Since(t.start) }

// begin sets the start: agents' watchers record into the tracker meanwhile.
func (t *tracker) begin(at time.Time) {
	t.mu.Lock()
	t.start = at
	t.mu.Unlock()
}

func (t *tracker) hold(agent int, version uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if version < t.last[agent] {
		t.regress[agent] = true
	}
	t.last[agent] = max(t.last[agent], version)
	if _, ok := t.held[agent][version]; !ok {
		t.held[agent][version] = t.now()
	}
	if t.off[agent] && version > t.offAbove {
		t.crossed[agent] = true
	}
}

// cutOff records that agents are cut off from the seed from now on: no version published
// after this can reach them until healed.
func (t *tracker) cutOff(agents []int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.off == nil {
		t.off = map[int]bool{}
		t.offAbove = t.maxPub
	}
	for _, a := range agents {
		t.off[a] = true
	}
}

// healed ends the partition.
func (t *tracker) healed() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.off, t.offAbove = nil, 0
}

// label says what version carried (set before or after it is published).
func (t *tracker) label(version uint64, what string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.what == nil {
		t.what = map[uint64]string{}
	}
	t.what[version] = what
}

func (t *tracker) published(version uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.maxPub = max(t.maxPub, version)
	if _, ok := t.pubAt[version]; !ok {
		t.pubAt[version] = t.now()
		t.pubOrder = append(t.pubOrder, version)
	}
}

// heldAt is when agent first held version v or newer; ok false if never.
func (t *tracker) heldAt(agent int, v uint64) (time.Duration, bool) {
	best, ok := time.Duration(0), false
	for ver, at := range t.held[agent] {
		if ver >= v && (!ok || at < best) {
			best, ok = at, true
		}
	}
	return best, ok
}

// reset starts the measured window at at, forgetting what was recorded before.
func (t *tracker) reset(at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.start = at
	t.pubAt, t.pubOrder = map[uint64]time.Duration{}, nil
	for i := range t.held {
		t.held[i] = map[uint64]time.Duration{}
	}
}

// newest is the newest version published so far (0 if none).
func (t *tracker) newest() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n := len(t.pubOrder); n > 0 {
		return t.pubOrder[n-1]
	}
	return 0
}

// result computes delivery figures for the agents in up.
func (t *tracker) result(up []int, lastHeal time.Duration, healTarget uint64) *Result {
	t.mu.Lock()
	defer t.mu.Unlock()
	res := &Result{Publishes: len(t.pubOrder), ConvergeMs: -1}
	var all []float64
	delivered := 0
	for _, v := range t.pubOrder {
		at := t.pubAt[v]
		var lat []float64
		for _, i := range up {
			if h, ok := t.heldAt(i, v); ok {
				lat = append(lat, ms(max(h-at, 0)))
			}
		}
		slices.Sort(lat)
		delivered += len(lat)
		all = append(all, lat...)
		pr := PublishResult{Version: v, What: t.what[v], AtMs: ms(at), Delivered: len(lat), P50Ms: percentile(lat, 0.5), P90Ms: percentile(lat, 0.9), P99Ms: percentile(lat, 0.99), MaxMs: -1}
		if len(lat) == len(up) && len(lat) > 0 {
			pr.MaxMs = lat[len(lat)-1]
		}
		res.PerPublish = append(res.PerPublish, pr)
	}
	slices.Sort(all)
	res.Latencies = all
	res.P50Ms, res.P90Ms, res.P99Ms = percentile(all, 0.5), percentile(all, 0.9), percentile(all, 0.99)
	if len(all) > 0 {
		res.MaxMs = all[len(all)-1]
	}
	if n := len(t.pubOrder) * len(up); n > 0 {
		res.DeliveredRatio = float64(delivered) / float64(n)
	}
	if lastHeal >= 0 && healTarget > 0 {
		worst, every := time.Duration(0), true
		for _, i := range up {
			h, ok := t.heldAt(i, healTarget)
			if !ok {
				every = false
				break
			}
			worst = max(worst, h-lastHeal)
		}
		if every {
			res.ConvergeMs = ms(max(worst, 0))
		}
	}
	for _, reg := range t.regress {
		if reg {
			res.Regressions++
		}
	}
	res.CrossedPartition = len(t.crossed)
	return res
}

// trust summarizes a tracker of control versions.
func (t *tracker) trust(up []int) *TrustResult {
	r := t.result(up, -1, 0)
	if r.Publishes == 0 {
		return nil
	}
	return &TrustResult{Messages: r.Publishes, DeliveredRatio: r.DeliveredRatio, P50Ms: r.P50Ms, P99Ms: r.P99Ms, MaxMs: r.MaxMs, PerMessage: r.PerPublish}
}

// percentile of sorted xs (nearest rank); -1 when empty.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return -1
	}
	i := int(float64(len(xs))*p+0.999999) - 1
	return xs[min(max(i, 0), len(xs)-1)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
