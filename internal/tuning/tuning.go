// Package tuning is the seam through which the simulator and tests adjust how a role
// runs: knobs production never sets, kept out of the roles' public configuration. Being
// internal, nothing outside this module can name it.
package tuning

import (
	"time"

	"meshkit.dev/meshkit/p2p"
)

// Replica adjusts a receive pipeline (replica.Config.Tuning, node.New's last argument).
type Replica struct {
	// CloseFiles closes the last-known-good slot files after each write instead of keeping
	// them open (two per stream): for a process that hosts thousands of agents, like the
	// simulator at 10,000, whose open-file limit cannot hold two each.
	CloseFiles bool
	// P2P adjusts the p2p configuration.
	P2P func(*p2p.Config)
	// CostModel, when set, is slept for each bundle verified and applied, given its size:
	// for virtual-time simulations, where CPU work would otherwise cost no time at all.
	CostModel func(bytes int) time.Duration
}
