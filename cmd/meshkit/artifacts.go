package main

import (
	"log/slog"
	"path/filepath"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"meshkit.dev/meshkit/content"
	"meshkit.dev/meshkit/seed"
	"meshkit.dev/meshkit/seed/registry"
	"meshkit.dev/meshkit/wasm"
)

// seedArtifacts opens a seed's artifact store (DATA/content), its OCI registry
// (DATA/registry), the admission the seed runs on every Extension it is given, and, when
// the seed has a p2p host, serves the store to agents over the content protocol, a few
// agents at a time: agents fetch from one another first, so a seed uploads each artifact a
// few times whatever the fleet size.
func seedArtifacts(data, domain string, h host.Host, allow func(peer.ID) bool, log *slog.Logger) (*registry.Registry, seed.ArtifactChecker, func(), error) {
	store, err := content.Open(filepath.Join(data, "content"), content.Options{})
	if err != nil {
		return nil, nil, nil, err
	}
	registry.RouteLogs(log)
	reg, err := registry.New(registry.Config{Dir: filepath.Join(data, "registry"), Store: store, Logger: log})
	if err != nil {
		return nil, nil, nil, err
	}
	closeFn := func() { _ = reg.Close() }
	if h != nil {
		srv := content.Serve(h, domain, store, content.ServerConfig{MaxConcurrent: content.SeedSlots, Logger: log, Allow: allow})
		closeFn = func() { srv.Close(); _ = reg.Close() }
	}
	return reg, seed.NewStoreAdmission(store, wasm.NewAdmitter(wasm.Config{})), closeFn, nil
}
