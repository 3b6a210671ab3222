package main

import (
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/pflag"
)

// Version is MeshKit's release version.
const Version = "0.1.0-dev"

func (a *app) version(fs *pflag.FlagSet) func(args []string) error {
	output, checkOutput := outputFlag(fs)
	return func(args []string) error {
		if err := errors.Join(noArgs(args), checkOutput()); err != nil {
			return err
		}
		mod := "(unknown module version)"
		if bi, ok := debug.ReadBuildInfo(); ok {
			mod = bi.Main.Version
		}
		if *output == "json" {
			return a.printJSONValue(map[string]string{"version": Version, "module": mod, "go": runtime.Version(), "os": runtime.GOOS, "arch": runtime.GOARCH})
		}
		fmt.Fprintf(a.stdout, "meshkit %s (module %s, %s, %s/%s)\n", Version, mod, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return nil
	}
}
