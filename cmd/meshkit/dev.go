package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/pflag"

	"meshkit.dev/meshkit/examples"
	"meshkit.dev/meshkit/node"
	"meshkit.dev/meshkit/p2p"
	"meshkit.dev/meshkit/seed"
	"meshkit.dev/meshkit/seed/boltstore"
	"meshkit.dev/meshkit/trust"
)

// devAgent is one agent of `meshkit dev` and what it serves.
type devAgent struct {
	host       host.Host
	agent      *node.Agent
	sb         *node.Southbound
	http       *http.Server
	southbound string
	status     string
}

// dev runs a whole domain in one process on loopback: an embedded seed with the example
// resources and N agents peering over libp2p, each serving OmniRelay's watch.
// devCAOverlap is how long dev's next CA is in the trust bundle before it signs.
const devCAOverlap = 3 * time.Second

func (a *app) dev(fs *pflag.FlagSet) func(args []string) error {
	agents := fs.Int("agents", 3, "number of agents")
	data := fs.String("data", "", "data directory (default: a temporary one, removed on exit)")
	grpcAddr := fs.String("grpc-addr", "127.0.0.1:17400", "seed admin gRPC (meshkit apply's default); a free port if taken")
	httpAddr := fs.String("http-addr", "127.0.0.1:17480", "seed REST, /healthz, /metrics; a free port if taken")
	sbPort := fs.Int("southbound-port", 17421, "agent i serves OmniRelay's watch on this port + i - 1 (a free port if taken; 0: always free ports)")
	noExamples := fs.Bool("no-examples", false, "start with an empty desired state instead of examples/shop")
	return func(args []string) error {
		if err := noArgs(args); err != nil {
			return err
		}
		if *agents < 1 || *agents > 64 {
			return usagef("--agents must be between 1 and 64")
		}
		for _, addr := range []string{*grpcAddr, *httpAddr} {
			if !loopback(addr) {
				return usagef("dev lets anonymous callers administer its seed, so it only listens on loopback; %s is not (run `meshkit seed` with --policy to serve other machines)", addr)
			}
		}
		if *data == "" {
			d, err := os.MkdirTemp("", "meshkit-dev-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(d)
			*data = d
		}
		ctx, stop := signal.NotifyContext(a.ctx, os.Interrupt, syscall.SIGTERM)
		defer stop()
		log := slog.New(slog.NewJSONHandler(a.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

		// The seed.
		seedDir := filepath.Join(*data, "seed")
		if err := os.MkdirAll(seedDir, 0o700); err != nil {
			return err
		}
		keyPath, rootPath, err := a.devTrust(seedDir, "dev")
		if err != nil {
			return err
		}
		signer, root, err := loadSeedTrust(keyPath, rootPath)
		if err != nil {
			return err
		}
		st, err := boltstore.Open(seedDir, 2*time.Second)
		if err != nil {
			return err
		}
		defer st.Close()
		sh, err := openHost(seedDir, root.Domain(), []string{"/ip4/127.0.0.1/tcp/0"}, "", 64, 256)
		if err != nil {
			return err
		}
		defer sh.Close()
		caAuth, err := openCA(filepath.Join(seedDir, "ca"), root.Domain())
		if err != nil {
			return err
		}
		// dev runs the mesh as production should: only enrolled peers in it.
		peerID := &seed.PeerIdentity{}
		g, err := seed.NewGossip(ctx, p2p.Config{Domain: root.Domain(), Host: sh, Logger: log, OnIdentity: peerID.HandleIdentity, Admission: peerID}, 0)
		if err != nil {
			return err
		}
		defer g.Close()
		cfg := seed.DefaultConfig()
		cfg.Domain, cfg.Epoch, cfg.Signer, cfg.Store, cfg.Logger, cfg.Publisher = root.Domain(), 1, signer, st, log, g
		cfg.Debounce, cfg.MaxDelay = 20*time.Millisecond, time.Second
		cfg.CAOverlap = devCAOverlap // a loopback domain has the next CA everywhere within a second
		cfg.TrustDomain, cfg.CA = root.Domain(), caAuth
		if err := seedControl(&cfg, keyPath, rootPath, "", filepath.Join(seedDir, "ca")); err != nil {
			return err
		}
		reg, admission, closeArtifacts, err := seedArtifacts(seedDir, root.Domain(), sh, g.Node().Admitted, log)
		if err != nil {
			return err
		}
		defer closeArtifacts()
		cfg.Artifacts = admission
		s, err := seed.New(ctx, cfg)
		if err != nil {
			return err
		}
		defer s.Close()
		peerID.Attach(s)
		admitted := make(chan struct{})
		go func() { defer close(admitted); peerID.Run(ctx, g.Node()) }()
		defer func() { stop(); <-admitted }()
		srv, err := s.Serve(seed.ServeConfig{GRPCAddr: freeIfTaken(*grpcAddr), HTTPAddr: freeIfTaken(*httpAddr), Policy: &seed.Policy{AllowAnonymous: true}, Registry: reg})
		if err != nil {
			return err
		}
		defer srv.Close()
		seedInfo := peer.AddrInfo{ID: sh.ID(), Addrs: sh.Addrs()}

		// The agents.
		var das []*devAgent
		defer func() {
			for _, d := range das {
				d.sb.Close()
				_ = d.http.Close()
				_ = d.agent.Close()
				_ = d.host.Close()
			}
		}()
		for i := range *agents {
			// dev enrols its agents itself: a join token each, as an operator would make.
			name := fmt.Sprintf("agent%d", i+1)
			tok, err := s.CreateJoinToken(ctx, "meshkit dev", name, time.Hour)
			if err != nil {
				return err
			}
			d, err := startDevAgent(ctx, filepath.Join(*data, name), root, seedInfo, *sbPort, i, log, name, tok.GetToken())
			if d != nil {
				das = append(das, d)
			}
			if err != nil {
				return err
			}
		}

		if !*noExamples {
			dir := filepath.Join(*data, "examples")
			if err := copyFS(dir, examples.Shop, "shop"); err != nil {
				return err
			}
			fs := pflag.NewFlagSet("apply", pflag.ContinueOnError)
			apply := a.apply(fs)
			if err := fs.Parse([]string{"-f", dir, "--seed", srv.GRPCAddr.String()}); err != nil {
				return err
			}
			if err := apply(fs.Args()); err != nil {
				return fmt.Errorf("apply the examples: %w", err)
			}
		}
		fmt.Fprintf(a.stdout, "\nMeshKit dev: domain %q with a seed and %d agents on loopback (Ctrl-C stops everything)\n", root.Domain(), len(das))
		fmt.Fprintf(a.stdout, "  seed admin gRPC  %s   meshkit apply -f DIR --seed %s\n", srv.GRPCAddr, srv.GRPCAddr)
		fmt.Fprintf(a.stdout, "  seed HTTP        %s   /v1/status, /metrics, OCI registry /v2/ (meshkit ext push FILE --registry %s)\n", srv.HTTPAddr, srv.HTTPAddr)
		for i, d := range das {
			fmt.Fprintf(a.stdout, "  agent %d          OmniRelay watch %s   status http://%s/status\n", i+1, d.southbound, d.status)
		}
		fmt.Fprintf(a.stdout, "  data             %s\n", *data)
		fmt.Fprintf(a.stdout, "Watch what a node receives:  meshkit watch --addr %s\n", das[0].southbound)
		<-ctx.Done()
		fmt.Fprintln(a.stdout, "shutting down")
		return nil
	}
}

func startDevAgent(ctx context.Context, dir string, root *trust.Root, seedInfo peer.AddrInfo, basePort, i int, log *slog.Logger, name, joinToken string) (*devAgent, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	h, err := openHost(dir, root.Domain(), []string{"/ip4/127.0.0.1/tcp/0"}, "", 32, 96)
	if err != nil {
		return nil, err
	}
	ag, err := node.New(ctx, node.Config{Root: root, DataDir: dir, Host: h, Bootstrap: []peer.AddrInfo{seedInfo}, SyncInterval: time.Second, Logger: log,
		NodeName: name, JoinToken: joinToken, RequirePeerCertificates: true})
	if err != nil {
		_ = h.Close()
		return nil, err
	}
	addr := "127.0.0.1:0"
	if basePort > 0 {
		addr = freeIfTaken(net.JoinHostPort("127.0.0.1", strconv.Itoa(basePort+i)))
	}
	sbln, err := net.Listen("tcp", addr)
	if err != nil {
		_ = ag.Close()
		_ = h.Close()
		return nil, err
	}
	hln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = sbln.Close()
		_ = ag.Close()
		_ = h.Close()
		return nil, err
	}
	d := &devAgent{host: h, agent: ag, sb: ag.NewSouthbound(node.SouthboundConfig{}),
		http: &http.Server{Handler: ag.Handler(), ReadHeaderTimeout: 5 * time.Second}, southbound: sbln.Addr().String(), status: hln.Addr().String()}
	go func() { _ = d.sb.Serve(sbln) }()
	go func() {
		if err := d.http.Serve(hln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("agent status server", "err", err)
		}
	}()
	return d, nil
}

// freeIfTaken returns addr when it can be listened on now, else the same host with port 0.
func freeIfTaken(addr string) string {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		host, _, _ := net.SplitHostPort(addr)
		return net.JoinHostPort(host, "0")
	}
	_ = l.Close()
	return addr
}
