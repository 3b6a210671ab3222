package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/pflag"
)

// Version is MeshKit's release version.
const Version = "0.1.0-dev"

func (a *app) version(fs *pflag.FlagSet) func(args []string) error {
	return func(args []string) error {
		if err := noArgs(args); err != nil {
			return err
		}
		mod := "(unknown module version)"
		if bi, ok := debug.ReadBuildInfo(); ok {
			mod = bi.Main.Version
		}
		fmt.Fprintf(a.stdout, "meshkit %s (module %s, %s, %s/%s)\n", Version, mod, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return nil
	}
}
