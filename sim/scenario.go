package sim

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Scenario is a simulation: a domain of agents and a seed over simulated links, and a
// timeline of events. It is read from YAML (see sim/scenarios/ and docs/sim.md).
type Scenario struct {
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
	// Seed fixes the random topology, keys and event choices (gossip itself is not
	// bit-reproducible: report distributions over several seeds).
	Seed int64 `yaml:"seed"`
	// Agents is the number of agents.
	Agents int `yaml:"agents"`
	// Clock is "wall" (real timers) or "virtual" (a testing/synctest bubble).
	Clock string `yaml:"clock"`
	// Duration bounds the run after warm-up: it stops by itself then, whatever is pending.
	Duration Duration `yaml:"duration"`
	// Warmup lets connections and meshes form before t=0.
	Warmup Duration `yaml:"warmup"`
	// BundleBytes is the approximate size of each published bundle.
	BundleBytes int  `yaml:"bundle_bytes"`
	Link        Link `yaml:"link"`
	// Degree is how many random agents each agent is linked to (besides the seed).
	Degree  int      `yaml:"degree"`
	Regions []Region `yaml:"regions"`
	// InterRegionLatency is the latency of links between regions (Link.Latency within).
	InterRegionLatency Duration `yaml:"inter_region_latency"`
	Events             []Event  `yaml:"events"`
	// Identity enrols every agent with the seed's CA (a join token each) and keeps the
	// mesh to peers showing a valid certificate of the domain (--require-peer-certificates):
	// a seed outage longer than LeafLifetime lets the agents' certificates expire.
	Identity bool `yaml:"identity"`
	// LeafLifetime is the lifetime of the leaves the seed issues (default 12h).
	LeafLifetime Duration `yaml:"leaf_lifetime"`
	// InlineMax is the largest message the seed floods (0: seed.DefaultInlineMax); larger
	// bundles are announced and fetched by hash hop by hop.
	InlineMax int `yaml:"inline_max"`
}

// Link shapes every simulated link.
type Link struct {
	Latency Duration `yaml:"latency"`
	// Bandwidth in bytes per second; 0 means unlimited.
	Bandwidth float64 `yaml:"bandwidth"`
	// Jitter spreads each link's one-way latency uniformly over latency ± jitter,
	// drawn again every Resample.
	Jitter Duration `yaml:"jitter"`
	// Loss is the chance that a link loses a segment during one Resample interval. The
	// links are reliable streams, as TCP and QUIC are, so a loss shows as what it does to
	// them: that interval's writes, and everything queued behind them, arrive one
	// retransmission timeout (RTO) late.
	Loss float64 `yaml:"loss"`
	// RTO is the retransmission timeout a loss costs; default max(200ms, 3 × latency),
	// Linux's minimum RTO or three round trips.
	RTO Duration `yaml:"rto"`
	// Resample is how often jitter and loss are drawn again for every link; default 50ms.
	Resample Duration `yaml:"resample"`
}

// shaped reports whether links vary over time (jitter or loss).
func (l Link) shaped() bool { return l.Jitter > 0 || l.Loss > 0 }

// rto is the delay one loss adds on a link whose base latency is lat.
func (l Link) rto(lat time.Duration) time.Duration {
	if l.RTO > 0 {
		return l.RTO.D()
	}
	return max(200*time.Millisecond, 3*lat)
}

// resample is the interval between draws of jitter and loss.
func (l Link) resample() time.Duration {
	if l.Resample > 0 {
		return l.Resample.D()
	}
	return 50 * time.Millisecond
}

// Region is a share of the agents placed together.
type Region struct {
	Name  string  `yaml:"name"`
	Share float64 `yaml:"share"`
}

// Event is one step of the timeline. Exactly one action is set.
type Event struct {
	At Duration `yaml:"at"`
	// Publish makes the seed publish this many new versions, Every apart.
	Publish int      `yaml:"publish"`
	Every   Duration `yaml:"every"`
	// Partition cuts the agents in two: this fraction stays with the seed, the rest is
	// cut off from it and from them.
	Partition float64 `yaml:"partition"`
	// Heal restores every link.
	Heal bool `yaml:"heal"`
	// KillSeed and RestartSeed stop and start the seed (its state survives, as on disk).
	KillSeed    bool `yaml:"kill_seed"`
	RestartSeed bool `yaml:"restart_seed"`
	// KillAgents stops this fraction of the agents; RestartAgents starts them again with
	// their data (last-known-good) intact.
	KillAgents    float64 `yaml:"kill_agents"`
	RestartAgents bool    `yaml:"restart_agents"`
	// Forge makes a malicious peer linked to a few agents inject this many forged bundles.
	Forge int `yaml:"forge"`
	// Revoke revokes this many random agents' peers: one control message each.
	Revoke int `yaml:"revoke"`
	// RotateRoot makes the seed a new key and puts in force the next root version, which
	// lists it beside the newest key before it (the older ones leave): overlap.
	RotateRoot bool `yaml:"rotate_root"`
	// RotateCA takes one step of the CA's rotation: prepare, activate or retire.
	RotateCA string `yaml:"rotate_ca"`

	line int
}

// Duration is a time.Duration written as "20ms", "1m".
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (e.g. 20ms, 1m)", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// D is the duration as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalYAML keeps the event's line for error messages.
func (e *Event) UnmarshalYAML(n *yaml.Node) error {
	type plain Event
	var p plain
	if err := n.Decode(&p); err != nil {
		return err
	}
	*e = Event(p)
	e.line = n.Line
	return nil
}

// Limits the simulator refuses to exceed.
const (
	MaxAgents = 10_000
	// bytesPerAgent is the measured memory of one simulated agent (mocknet host,
	// gossipsub, agent state), used to refuse runs that cannot fit.
	bytesPerAgent = 1_200 << 10
)

// LoadScenario reads and checks a scenario file.
func LoadScenario(path string) (*Scenario, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseScenario(path, b)
}

// ParseScenario parses and checks a scenario; errors name the file and line.
func ParseScenario(name string, b []byte) (*Scenario, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	sc := &Scenario{}
	if err := dec.Decode(sc); err != nil {
		return nil, fmt.Errorf("%s: %v", name, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	sc.defaults()
	if err := sc.check(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return sc, nil
}

func (sc *Scenario) defaults() {
	if sc.Clock == "" {
		sc.Clock = "wall"
	}
	if sc.Seed == 0 {
		sc.Seed = 1
	}
	if sc.BundleBytes == 0 {
		sc.BundleBytes = 4 << 10
	}
	if sc.Degree == 0 {
		sc.Degree = min(8, max(sc.Agents-1, 1))
	}
	if sc.Warmup == 0 {
		sc.Warmup = Duration(3 * time.Second)
	}
}

func (sc *Scenario) check() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	switch {
	case sc.Agents < 1:
		bad("agents: %d; at least 1", sc.Agents)
	case sc.Agents > MaxAgents:
		bad("agents: %d; at most %d", sc.Agents, MaxAgents)
	}
	if sc.Clock != "wall" && sc.Clock != "virtual" {
		bad("clock: %q; wall or virtual", sc.Clock)
	}
	if sc.Duration <= 0 {
		bad("duration: required and positive (the run stops by itself then)")
	}
	if sc.BundleBytes < 256 || sc.BundleBytes > 16<<20 {
		bad("bundle_bytes: %d; between 256 and 16 MiB", sc.BundleBytes)
	}
	if sc.Link.Latency < 0 || sc.Link.Bandwidth < 0 || sc.InterRegionLatency < 0 {
		bad("link: latency and bandwidth must not be negative")
	}
	if sc.LeafLifetime != 0 && (!sc.Identity || sc.LeafLifetime.D() < 10*time.Second) {
		bad("leaf_lifetime: %s; at least 10s, and only with identity: true", sc.LeafLifetime.D())
	}
	if sc.InlineMax < 0 || sc.InlineMax > 60<<10 {
		bad("inline_max: %d; between 0 (the default) and 61440 (a gossip message is at most 64 KiB)", sc.InlineMax)
	}
	if sc.Link.Jitter < 0 || sc.Link.RTO < 0 || sc.Link.Resample < 0 {
		bad("link: jitter, rto and resample must not be negative")
	}
	if sc.Link.Loss < 0 || sc.Link.Loss > 0.5 {
		bad("link: loss %.3f; a probability between 0 and 0.5", sc.Link.Loss)
	}
	if sc.Link.shaped() && sc.Link.Resample > 0 && sc.Link.Resample.D() < time.Millisecond {
		bad("link: resample %s; at least 1ms", sc.Link.Resample.D())
	}
	if sc.Agents > 1 && (sc.Degree < 1 || sc.Degree > sc.Agents-1) {
		bad("degree: %d; between 1 and agents-1 (%d)", sc.Degree, sc.Agents-1)
	}
	var share float64
	for i, r := range sc.Regions {
		if r.Name == "" || r.Share <= 0 {
			bad("regions[%d]: needs a name and a positive share", i)
		}
		share += r.Share
	}
	if len(sc.Regions) > 0 && (share < 0.999 || share > 1.001) {
		bad("regions: shares add up to %.3f, not 1", share)
	}
	for i, e := range sc.Events {
		where := fmt.Sprintf("line %d: events[%d]", e.line, i)
		n := 0
		for _, set := range []bool{e.Publish != 0, e.Partition != 0, e.Heal, e.KillSeed, e.RestartSeed, e.KillAgents != 0, e.RestartAgents, e.Forge != 0,
			e.Revoke != 0, e.RotateRoot, e.RotateCA != ""} {
			if set {
				n++
			}
		}
		switch {
		case n != 1:
			bad("%s: exactly one action (publish, partition, heal, kill_seed, restart_seed, kill_agents, restart_agents, forge, revoke, rotate_root, rotate_ca); %d given", where, n)
		case e.At < 0 || e.At > sc.Duration:
			bad("%s: at %s is outside the run (0 to duration %s)", where, e.At.D(), sc.Duration.D())
		case e.Publish < 0 || (e.Publish > 1 && e.Every <= 0):
			bad("%s: publish %d needs every > 0 between them", where, e.Publish)
		case e.Publish > 0 && e.At+Duration(e.Publish-1)*e.Every > sc.Duration:
			bad("%s: the last of %d publishes (at %s) is after the end of the run", where, e.Publish, (e.At + Duration(e.Publish-1)*e.Every).D())
		case e.Partition < 0 || e.Partition >= 1:
			bad("%s: partition %.2f; the fraction of agents kept with the seed, between 0 and 1", where, e.Partition)
		case e.KillAgents < 0 || e.KillAgents > 1:
			bad("%s: kill_agents %.2f; a fraction between 0 and 1", where, e.KillAgents)
		case e.Forge < 0:
			bad("%s: forge %d; a count", where, e.Forge)
		case e.Revoke < 0 || e.Revoke > sc.Agents:
			bad("%s: revoke %d; a count of agents, at most %d", where, e.Revoke, sc.Agents)
		case e.RotateCA != "" && e.RotateCA != "prepare" && e.RotateCA != "activate" && e.RotateCA != "retire":
			bad("%s: rotate_ca %q; prepare, activate or retire", where, e.RotateCA)
		}
	}
	if need := int64(sc.Agents) * bytesPerAgent; need > availableMemory() {
		bad("agents: %d need about %d MiB; this machine has %d MiB available", sc.Agents, need>>20, availableMemory()>>20)
	}
	return errors.Join(errs...)
}

// availableMemory reads MemAvailable from /proc/meminfo (or assumes plenty elsewhere).
func availableMemory() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 1 << 62
	}
	for _, line := range strings.Split(string(b), "\n") {
		var kb int64
		if _, err := fmt.Sscanf(line, "MemAvailable: %d kB", &kb); err == nil {
			return kb << 10
		}
	}
	return 1 << 62
}
