package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version is MeshKit's release version.
const Version = "0.1.0-dev"

func (a *app) version(args []string) error {
	fs := a.newFlags("version", "version")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	mod := "(unknown module version)"
	if bi, ok := debug.ReadBuildInfo(); ok {
		mod = bi.Main.Version
	}
	fmt.Fprintf(a.stdout, "meshkit %s (module %s, %s, %s/%s)\n", Version, mod, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}
