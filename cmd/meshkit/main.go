// Command meshkit is MeshKit's single binary: keys, roots, bundles, and (in later
// releases) the seed, agent, bridge and simulator.
package main

import (
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
