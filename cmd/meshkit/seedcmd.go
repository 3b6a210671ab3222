package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/spf13/pflag"
	clientv3 "go.etcd.io/etcd/client/v3"

	"meshkit.dev/meshkit/internal/atomicfile"
	"meshkit.dev/meshkit/p2p"
	trustv1 "meshkit.dev/meshkit/proto/meshkit/trust/v1"
	"meshkit.dev/meshkit/seed"
	"meshkit.dev/meshkit/seed/boltstore"
	"meshkit.dev/meshkit/seed/election"
	"meshkit.dev/meshkit/seed/etcdstore"
	"meshkit.dev/meshkit/trust"
)

func (a *app) seed(fs *pflag.FlagSet) func(args []string) error {
	data := fs.String("data", "", "data directory (created if missing)")
	domain := fs.String("domain", "", "control domain (default: the root's, or \"dev\" with generated dev trust)")
	keyPath := fs.String("key", "", "seed private key (default: generate dev trust material in DATA/trust)")
	rootPath := fs.String("root", "", "domain root (root.json) whose seed role holds --key")
	epoch := fs.Uint64("epoch", 1, "this seed's term; bundles carry it")
	grpcAddr := fs.String("grpc-addr", "127.0.0.1:17400", "admin gRPC listen address")
	httpAddr := fs.String("http-addr", "127.0.0.1:17480", "REST, /healthz, /readyz and /metrics listen address")
	policyPath := fs.String("policy", "", "RBAC policy file (default: an admin token in DATA/admin.token)")
	dev := fs.Bool("dev", false, "embedded dev mode: anonymous callers are admins; loopback addresses only")
	tlsCert := fs.String("tls-cert", "", "serve TLS with this certificate (PEM)")
	tlsKey := fs.String("tls-key", "", "private key of --tls-cert")
	clientCA := fs.String("client-ca", "", "verify client certificates against these CAs (mTLS)")
	tlsFromCA := fs.Bool("tls-from-ca", false, "serve the admin API with TLS from the domain CA (spiffe://TRUST-DOMAIN/seed, renewed at half life) and verify client certificates against the domain's trust bundle (operators': meshkit cert issue); clients verify the seed with DATA/ca/roots.pem")
	var tlsNames listFlag
	fs.Var(&tlsNames, "tls-name", "a DNS name or IP address of the seed for --tls-from-ca (repeatable; default the host name, localhost and 127.0.0.1)")
	debounce := fs.Duration("debounce", 100*time.Millisecond, "publish after this long without changes")
	ttl := fs.Duration("bundle-ttl", 24*time.Hour, "bundle validity; republished after half of it")
	var p2pListen listFlag
	fs.Var(&p2pListen, "p2p-listen", "gossip listen multiaddr, agents bootstrap here (repeatable; default /ip4/127.0.0.1/tcp/17410 with --dev, else /ip4/0.0.0.0/tcp/17410; \"off\" publishes nowhere)")
	secretFile := fs.String("network-secret-file", "", "the domain's network secret: only peers holding it can connect")
	caRoleKey := fs.String("ca-role-key", "", "the key of the root's CA role: signs the control stream (root rotations, trust bundle, revocations); default KEYDIR/"+caRoleKeyFile+" when present")
	caDir := fs.String("ca-dir", "", "the domain CA's key and certificates (default DATA/ca; a self-managed root is created there on first start, or place an operator's intermediate there: docs/identity.md)")
	trustDomain := fs.String("trust-domain", "", "SPIFFE trust domain of issued certificates (default: the domain)")
	requireCerts := fs.Bool("require-peer-certificates", false, "keep the gossip mesh, sync and reports to peers that show a certificate of the domain (agents enrolled with join tokens)")
	storeKind := fs.String("store", "bolt", "where the domain's state lives: bolt (embedded, DATA/seed.db, one seed) or etcd (several seeds per domain, one leader: docs/ha.md)")
	var etcdEndpoints listFlag
	fs.Var(&etcdEndpoints, "etcd-endpoints", "etcd client URLs for --store etcd (repeatable or comma-separated)")
	etcdCA := fs.String("etcd-ca", "", "verify etcd's TLS certificate against this CA (enables TLS to etcd)")
	etcdCert := fs.String("etcd-cert", "", "client certificate for etcd (mTLS)")
	etcdKey := fs.String("etcd-key", "", "private key of --etcd-cert")
	seedID := fs.String("seed-id", "", "this seed's name in the domain's election (default: the host name)")
	advertise := fs.String("advertise-admin", "", "the admin gRPC address other seeds send clients to when this seed leads (default --grpc-addr)")
	leaseTTL := fs.Duration("lease-ttl", election.DefaultTTL, "the leader's etcd lease: a leader that stops renewing it is replaced this long after (whole seconds)")
	inlineMax := fs.Int("inline-max", seed.DefaultInlineMax, "largest signed message flooded on gossip (bytes, at most 61440); larger bundles are announced and fetched by hash hop by hop: fewer bytes per agent, one more round trip per hop (docs/p2p.md)")
	return func(args []string) error {
		if err := noArgs(args); err != nil {
			return err
		}
		if err := required("data", *data); err != nil {
			return err
		}
		if (*keyPath == "") != (*rootPath == "") {
			return usagef("give both --key and --root, or neither for generated dev trust material")
		}
		if *dev {
			for _, addr := range []string{*grpcAddr, *httpAddr} {
				if !loopback(addr) {
					return usagef("--dev allows anonymous admins, so it only listens on loopback; %s is not", addr)
				}
			}
		}
		if err := os.MkdirAll(*data, 0o700); err != nil {
			return err
		}
		log := slog.New(slog.NewJSONHandler(a.stderr, nil))
		if *keyPath == "" {
			var err error
			if *keyPath, *rootPath, err = a.devTrust(*data, cmpOr(*domain, "dev")); err != nil {
				return err
			}
		}
		signer, root, err := loadSeedTrust(*keyPath, *rootPath)
		if err != nil {
			return err
		}
		if *domain != "" && *domain != root.Domain() {
			return fmt.Errorf("--domain %q but the root is for %q", *domain, root.Domain())
		}
		pol, err := a.policy(*data, *policyPath)
		if err != nil {
			return err
		}
		pol.AllowAnonymous = *dev
		tlsCfg, err := serverTLS(*tlsCert, *tlsKey, *clientCA)
		if err != nil {
			return err
		}
		if *tlsFromCA && tlsCfg != nil {
			return usagef("--tls-from-ca serves the domain CA's certificate: give it, or --tls-cert and --tls-key, not both")
		}
		var st seed.Store
		var es *etcdstore.Store
		var etcdCli *clientv3.Client
		switch *storeKind {
		case "bolt":
			bs, err := boltstore.Open(*data, 2*time.Second)
			if err != nil {
				return err
			}
			defer bs.Close()
			st = bs
		case "etcd":
			if fs.Changed("epoch") {
				return usagef("--epoch is for --store bolt: with etcd the epoch is the leader's election revision, higher for every new leader")
			}
			if *tlsFromCA {
				return usagef("--tls-from-ca needs the CA, which only the leader runs: give --tls-cert and --tls-key with --store etcd")
			}
			if etcdCli, err = etcdClient(etcdEndpoints, *etcdCA, *etcdCert, *etcdKey); err != nil {
				return err
			}
			defer etcdCli.Close()
			if es, err = etcdstore.New(etcdCli, root.Domain()); err != nil {
				return err
			}
		default:
			return usagef("--store is bolt or etcd, not %q", *storeKind)
		}
		cfg := seed.DefaultConfig()
		cfg.Domain, cfg.Epoch, cfg.Signer, cfg.Store, cfg.Logger = root.Domain(), *epoch, signer, st, log
		cfg.CheckpointKeys = root.RoleKeys(trustv1.RoleType_ROLE_TYPE_SEED) // a rotated seed still checks what its predecessor signed
		cfg.Debounce, cfg.MaxDelay, cfg.BundleTTL = *debounce, max(*debounce, time.Second), *ttl
		cfg.TrustDomain = cmpOr(*trustDomain, root.Domain())
		if cfg.CA, err = openCA(cmpOr(*caDir, filepath.Join(*data, "ca")), cfg.TrustDomain); err != nil {
			return err
		}
		if err := seedControl(&cfg, *keyPath, *rootPath, *caRoleKey, cmpOr(*caDir, filepath.Join(*data, "ca"))); err != nil {
			return err
		}
		peerID := &seed.PeerIdentity{}
		var allow func(peer.ID) bool // content served to admitted peers only, with --require-peer-certificates
		ctx, stop := signal.NotifyContext(a.ctx, os.Interrupt, syscall.SIGTERM)
		defer stop()
		if *policyPath != "" {
			watchCtx, stopWatch := context.WithCancel(ctx)
			watched := make(chan struct{})
			go func() { defer close(watched); watchPolicy(watchCtx, *policyPath, pol, log) }()
			defer func() { stopWatch(); <-watched }()
		}
		if len(p2pListen) == 0 {
			p2pListen = listFlag{"/ip4/0.0.0.0/tcp/17410"}
			if *dev {
				p2pListen = listFlag{"/ip4/127.0.0.1/tcp/17410"}
			}
		}
		var seedHost host.Host
		if len(p2pListen) != 1 || p2pListen[0] != "off" {
			h, err := openHost(*data, root.Domain(), p2pListen, *secretFile, 64, 256)
			if err != nil {
				return err
			}
			defer h.Close()
			seedHost = h
			if *inlineMax < 1024 || *inlineMax > 60<<10 {
				return usagef("--inline-max must be between 1024 and 61440 bytes")
			}
			pcfg := p2p.Config{Domain: root.Domain(), Host: h, Logger: log, OnIdentity: peerID.HandleIdentity, PeersFile: filepath.Join(*data, "peers.json")}
			if *requireCerts {
				pcfg.Admission = peerID
			}
			g, err := seed.NewGossip(ctx, pcfg, *inlineMax)
			if err != nil {
				return err
			}
			allow = g.Node().Admitted
			defer g.Close()
			cfg.Publisher = g
			ep, err := writeEndpoint(*data, h, "")
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "seed p2p (agents bootstrap here): %s\n", strings.Join(ep.Addrs, " "))
		}
		reg, admission, closeArtifacts, err := seedArtifacts(*data, root.Domain(), seedHost, allow, log)
		if err != nil {
			return err
		}
		defer closeArtifacts()
		cfg.Artifacts = admission
		if es != nil {
			name := *seedID
			if name == "" {
				if name, err = os.Hostname(); err != nil {
					return err
				}
			}
			var node *p2p.Node
			if g, ok := cfg.Publisher.(*seed.Gossip); ok {
				node = g.Node()
			}
			return a.runHA(ctx, haConfig{
				seed: cfg, store: es, client: etcdCli, id: name, advertise: cmpOr(*advertise, *grpcAddr), ttl: *leaseTTL,
				serve:  seed.ServeConfig{GRPCAddr: *grpcAddr, HTTPAddr: *httpAddr, Policy: pol, TLS: tlsCfg, Registry: reg},
				peerID: peerID, requireCerts: *requireCerts, node: node, log: log,
			})
		}
		s, err := seed.New(ctx, cfg)
		if err != nil {
			return err
		}
		defer s.Close()
		peerID.Attach(s)
		if *requireCerts && cfg.Publisher != nil {
			admitted := make(chan struct{})
			go func() { defer close(admitted); peerID.Run(ctx, cfg.Publisher.(*seed.Gossip).Node()) }()
			defer func() { stop(); <-admitted }()
		}
		switch {
		case *tlsFromCA:
			if tlsCfg, err = adminTLSFromCA(s, tlsNames); err != nil {
				return err
			}
		case tlsCfg != nil && tlsCfg.ClientCAs != nil:
			tlsCfg.VerifyPeerCertificate = s.VerifyClientCertificate // the domain may have revoked a client
		}
		srv, err := s.Serve(seed.ServeConfig{GRPCAddr: *grpcAddr, HTTPAddr: *httpAddr, Policy: pol, TLS: tlsCfg, Registry: reg})
		if err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "seed for domain %q (epoch %d) serving admin gRPC on %s and HTTP on %s\n", root.Domain(), *epoch, srv.GRPCAddr, srv.HTTPAddr)
		<-ctx.Done()
		fmt.Fprintln(a.stdout, "shutting down")
		return srv.Close()
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// devTrust creates (once) a root key, a seed key and a root for domain in DATA/trust.
func (a *app) devTrust(data, domain string) (keyPath, rootPath string, err error) {
	dir := filepath.Join(data, "trust")
	keyPath, rootPath = filepath.Join(dir, "seed.key"), filepath.Join(dir, "root.json")
	if _, err := os.Stat(rootPath); err == nil {
		return keyPath, rootPath, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", err
	}
	rootKey, err := trust.GenerateKey(nil)
	if err != nil {
		return "", "", err
	}
	seedKey, err := trust.GenerateKey(nil)
	if err != nil {
		return "", "", err
	}
	caRoleKey, err := trust.GenerateKey(nil)
	if err != nil {
		return "", "", err
	}
	for p, k := range map[string]*trust.PrivateKey{filepath.Join(dir, "root.key"): rootKey, keyPath: seedKey, filepath.Join(dir, caRoleKeyFile): caRoleKey} {
		if err := trust.WriteKeyFiles(p, k); err != nil {
			return "", "", err
		}
	}
	now := a.now()
	msg, err := trust.BuildRoot(trust.RootSpec{Domain: domain, Version: 1, IssuedAt: now, ExpiresAt: now.Add(365 * 24 * time.Hour),
		RootKeys: []trust.PublicKey{rootKey.Public()}, RootThreshold: 1, SeedKeys: []trust.PublicKey{seedKey.Public()}, SeedThreshold: 1,
		CAKeys: []trust.PublicKey{caRoleKey.Public()}, CAThreshold: 1})
	if err != nil {
		return "", "", err
	}
	env, err := trust.RootEnvelope(msg)
	if err != nil {
		return "", "", err
	}
	if err := trust.Sign(env, rootKey); err != nil {
		return "", "", err
	}
	if err := writeEnvelopeJSON(rootPath, env, false); err != nil {
		return "", "", err
	}
	fmt.Fprintf(a.stdout, "generated dev trust material for domain %q in %s (root.json, root.key, seed.key, %s); use real keys in production\n", domain, dir, caRoleKeyFile)
	return keyPath, rootPath, nil
}

// loadSeedTrust loads the seed key and the root, refusing a key the root does not
// delegate bundles to: the seed would publish bundles every agent refuses.
func loadSeedTrust(keyPath, rootPath string) (trust.Signer, *trust.Root, error) {
	kf, err := trust.LoadKeyFile(keyPath)
	if err != nil {
		return nil, nil, err
	}
	if kf.Private == nil {
		return nil, nil, fmt.Errorf("%s is a public key; the seed needs its private key", keyPath)
	}
	root, err := readRoot(rootPath)
	if err != nil {
		return nil, nil, err
	}
	for _, role := range root.Roles(trustv1.RoleType_ROLE_TYPE_SEED) {
		if slices.Contains(role.GetKeyIds(), kf.Private.KeyID()) {
			return kf.Private, root, nil
		}
	}
	return nil, nil, fmt.Errorf("seed key %s is not in the seed role of %s: agents would refuse every bundle", kf.Private.KeyID()[:12], rootPath)
}

// policy loads the RBAC policy, or creates DATA/admin.token (0600) once and grants it admin.
func (a *app) policy(data, path string) (*seed.Policy, error) {
	if path != "" {
		return seed.LoadPolicy(path)
	}
	tokPath := filepath.Join(data, "admin.token")
	tok, err := os.ReadFile(tokPath)
	if errors.Is(err, os.ErrNotExist) {
		raw := make([]byte, 32)
		if _, err := rand.Read(raw); err != nil {
			return nil, err
		}
		tok = []byte(hex.EncodeToString(raw))
		if err := atomicfile.WriteFile(tokPath, append(tok, '\n'), 0o600); err != nil {
			return nil, err
		}
		fmt.Fprintf(a.stdout, "created an admin token in %s (use --token-file %s)\n", tokPath, tokPath)
	} else if err != nil {
		return nil, err
	}
	return &seed.Policy{Principals: []seed.PolicyEntry{{
		Name: "admin-token", TokenSHA256: seed.HashToken(strings.TrimSpace(string(tok))), Scopes: []string{"mesh.admin"}, Tenants: []string{"*"},
	}}}, nil
}

func serverTLS(certPath, keyPath, caPath string) (*tls.Config, error) {
	if certPath == "" && keyPath == "" {
		if caPath != "" {
			return nil, usagef("--client-ca needs --tls-cert and --tls-key")
		}
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if caPath != "" {
		pem, err := os.ReadFile(caPath)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificates", caPath)
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.VerifyClientCertIfGiven
	}
	return cfg, nil
}

// seedLong is `meshkit seed --help`'s description: what a production seed needs, and the
// --policy file format.
const seedLong = `Run a seed: the admin API (gRPC and REST), validation, signed publishing over gossip,
and the OCI registry on the HTTP port.

Production: give --key and --root (the domain root whose seed role holds the key) and
--policy; the seed then creates no trust material of its own. Without --key and --root it
generates dev trust material in DATA/trust; without --policy it writes an admin token to
DATA/admin.token (0600) and grants it mesh.admin.

The --policy file maps credentials to principals (examples/policy.yaml):

  principals:
    - name: ci                      # shown in the audit log
      tokenSHA256: 9f86d081…        # hex SHA-256 of a bearer token: meshkit policy add prints both
      scopes: [mesh.operate]        # mesh.read < mesh.operate (apply, delete, push) < mesh.admin
      tenants: [acme]               # the tenants it may read and change; "*" for all
    - name: platform-admin
      subject: spiffe://prod.example/ops/admin   # a client certificate: URI SAN, or CommonName
      scopes: [mesh.admin]
      tenants: ["*"]

Each principal has exactly one of tokenSHA256 and subject. The seed rereads the file when
it changes (checked every 2 s, and at once on SIGHUP) and keeps the policy it has when the
new file does not validate, logging why.`
