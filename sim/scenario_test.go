package sim_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"meshkit.dev/meshkit/sim"
)

func TestScenarioErrorsNameTheLine(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"unknown field", "name: x\nagents: 3\nduration: 5s\nlatncy: 20ms\n", "line 4: field latncy not found"},
		{"bad duration", "name: x\nagents: 3\nduration: soon\n", "line 3"},
		{"two actions", "name: x\nagents: 3\nduration: 5s\nevents:\n  - {at: 1s, publish: 1, heal: true}\n", "line 5: events[0]: exactly one action"},
		{"event after the end", "name: x\nagents: 3\nduration: 5s\nevents:\n  - {at: 1s, publish: 1}\n  - {at: 9s, heal: true}\n", "line 6: events[1]: at 9s is outside the run"},
		{"publishes past the end", "name: x\nagents: 3\nduration: 5s\nevents:\n  - {at: 1s, publish: 10, every: 1s}\n", "is after the end of the run"},
		{"no duration", "name: x\nagents: 3\n", "duration: required"},
		{"too many agents", "name: x\nagents: 20000\nduration: 5s\n", "agents: 20000; at most 10000"},
		{"regions", "name: x\nagents: 4\nduration: 5s\nregions: [{name: a, share: 0.5}, {name: b, share: 0.2}]\n", "shares add up to 0.700"},
		{"clock", "name: x\nagents: 4\nduration: 5s\nclock: lunar\n", `clock: "lunar"`},
		{"loss", "name: x\nagents: 4\nduration: 5s\nlink: {loss: 0.9}\n", "link: loss 0.900; a probability between 0 and 0.5"},
		{"jitter", "name: x\nagents: 4\nduration: 5s\nlink: {jitter: -5ms}\n", "jitter, rto and resample must not be negative"},
		{"revoke", "name: x\nagents: 4\nduration: 5s\nevents:\n  - {at: 1s, revoke: 9}\n", "revoke 9; a count of agents, at most 4"},
		{"rotate_ca", "name: x\nagents: 4\nduration: 5s\nevents:\n  - {at: 1s, rotate_ca: now}\n", `rotate_ca "now"; prepare, activate or retire`},
	} {
		_, err := sim.ParseScenario("s.yaml", []byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "s.yaml: ") {
			t.Errorf("%s: err = %v, want it to name s.yaml and contain %q", tc.name, err, tc.want)
		}
	}
}

// TestExampleScenariosParse keeps sim/scenarios/ valid.
func TestExampleScenariosParse(t *testing.T) {
	files, err := filepath.Glob("scenarios/*.yaml")
	if err != nil || len(files) < 5 {
		t.Fatalf("scenarios: %v %v", files, err)
	}
	for _, f := range files {
		if _, err := sim.LoadScenario(f); err != nil && !strings.Contains(err.Error(), "MiB available") {
			t.Errorf("%v", err)
		}
	}
	if _, err := os.Stat("scenarios/partition.yaml"); err != nil {
		t.Fatal(err)
	}
}
