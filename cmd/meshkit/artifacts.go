package main

import (
	"log/slog"
	"path/filepath"

	"github.com/libp2p/go-libp2p/core/host"

	"meshkit.dev/meshkit/content"
	"meshkit.dev/meshkit/seed"
)

// seedArtifacts opens a seed's artifact store (DATA/content), its OCI registry
// (DATA/registry) and, when the seed has a p2p host, serves the store to agents over the
// content protocol to one agent at a time: agents fetch from one another
// first, so a seed uploads each artifact about once whatever the fleet size.
func seedArtifacts(data, domain string, h host.Host, log *slog.Logger) (*seed.Registry, func(), error) {
	store, err := content.Open(filepath.Join(data, "content"), content.Options{})
	if err != nil {
		return nil, nil, err
	}
	reg, err := seed.NewRegistry(filepath.Join(data, "registry"), store, log)
	if err != nil {
		return nil, nil, err
	}
	closeFn := func() {}
	if h != nil {
		srv := content.Serve(h, domain, store, content.ServerConfig{MaxConcurrent: content.SeedSlots, Logger: log})
		closeFn = srv.Close
	}
	return reg, closeFn, nil
}
