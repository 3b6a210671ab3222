package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/spf13/pflag"
	"google.golang.org/grpc/credentials"

	"meshkit.dev/meshkit/internal/atomicfile"
	"meshkit.dev/meshkit/node"
	"meshkit.dev/meshkit/p2p"
)

// openHost builds the libp2p host with the identity kept in DATA/p2p.key.
func openHost(data, domain string, listen []string, secretFile string, low, high int) (host.Host, error) {
	key, err := p2p.LoadOrCreateIdentity(filepath.Join(data, "p2p.key"))
	if err != nil {
		return nil, err
	}
	var secret []byte
	if secretFile != "" {
		st, err := os.Stat(secretFile)
		if err != nil {
			return nil, err
		}
		if st.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("network secret %s has mode %04o; it must not be readable by group or others (chmod 600)", secretFile, st.Mode().Perm())
		}
		if secret, err = os.ReadFile(secretFile); err != nil {
			return nil, err
		}
		secret = []byte(strings.TrimSpace(string(secret)))
		if len(secret) < 16 {
			return nil, fmt.Errorf("network secret %s is shorter than 16 bytes", secretFile)
		}
	}
	return p2p.NewHost(p2p.HostConfig{Identity: key, ListenAddrs: listen, Domain: domain, NetworkSecret: secret, ConnLow: low, ConnHigh: high})
}

// parseBootstrap turns "/ip4/…/tcp/…/p2p/<id>" multiaddrs into peers.
func parseBootstrap(addrs []string) ([]peer.AddrInfo, error) {
	var mas []ma.Multiaddr
	for _, s := range addrs {
		m, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, usagef("--bootstrap %q: %v", s, err)
		}
		mas = append(mas, m)
	}
	infos, err := peer.AddrInfosFromP2pAddrs(mas...)
	if err != nil {
		return nil, usagef("--bootstrap: %v (each address must end in /p2p/<peer id>)", err)
	}
	return infos, nil
}

// endpoint is what an agent or seed writes to DATA/p2p.json once it listens, so scripts
// and other processes can find it.
type endpoint struct {
	PeerID   string   `json:"peer_id"`
	Addrs    []string `json:"addrs"`
	HTTPAddr string   `json:"http_addr,omitempty"`
}

func writeEndpoint(data string, h host.Host, httpAddr string) (endpoint, error) {
	addrs, err := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()})
	if err != nil {
		return endpoint{}, err
	}
	ep := endpoint{PeerID: h.ID().String(), HTTPAddr: httpAddr}
	for _, a := range addrs {
		ep.Addrs = append(ep.Addrs, a.String())
	}
	b, err := json.MarshalIndent(ep, "", "  ")
	if err != nil {
		return endpoint{}, err
	}
	return ep, atomicfile.WriteFile(filepath.Join(data, "p2p.json"), append(b, '\n'), 0o644)
}

// Default ports, one set per role so a seed and an agent run on one host as they are:
// a seed listens on 17400 (admin gRPC), 17480 (HTTP) and 17410 (p2p); an agent on 17411
// (p2p), 17481 (HTTP) and 17421 (southbound).
const agentP2PDefault = "/ip4/0.0.0.0/tcp/17411"

func (a *app) agent(fs *pflag.FlagSet) func(args []string) error {
	data := fs.String("data", "", "data directory: last-known-good bundles, p2p identity (created if missing)")
	rootPath := fs.String("root", "", "the domain's root (root.json)")
	domain := fs.String("domain", "", "control domain (must match the root's; default the root's)")
	var bootstrap, listen, caps listFlag
	fs.Var(&bootstrap, "bootstrap", "peer to join through, /ip4/…/tcp/…/p2p/ID (repeatable; seeds and agents alike)")
	fs.Var(&listen, "listen", "p2p listen multiaddr (repeatable; default "+agentP2PDefault+"; seeds default to port 17410, so a seed and an agent share a host as they are)")
	fs.Var(&caps, "capabilities", "capabilities of the local data plane (default: all, the full variant)")
	secretFile := fs.String("network-secret-file", "", "the domain's network secret: only peers holding it can connect")
	httpAddr := fs.String("http-addr", "127.0.0.1:17481", "/healthz, /readyz, /status and /metrics listen address")
	staleAfter := fs.Duration("stale-after", node.DefaultStaleAfter, "report stale after this long without a new bundle")
	syncInterval := fs.Duration("sync-interval", node.DefaultSyncInterval, "anti-entropy period")
	sbAddr := fs.String("southbound-addr", node.DefaultSouthboundAddr, "OmniRelay ControlPlaneWatch and meshkit.southbound.v1 (h2c unless --southbound-tls-*); unix:///PATH for a socket; \"off\" to disable")
	sbCert := fs.String("southbound-tls-cert", "", "serve the southbound over TLS with this certificate (PEM)")
	sbKey := fs.String("southbound-tls-key", "", "private key of --southbound-tls-cert")
	sbCA := fs.String("southbound-client-ca", "", "require client certificates signed by these CAs (mTLS)")
	nodeName := fs.String("node-name", "", "the node this agent is to the domain CA: its data plane's certificates name it (default: the host name)")
	joinTokenFile := fs.String("join-token-file", "", "a join token (meshkit token create) to enrol with once; also read from $MESHKIT_JOIN_TOKEN")
	requireCerts := fs.Bool("require-peer-certificates", false, "keep the gossip mesh, sync and content to peers that show a certificate of the domain; the agent shows its own once enrolled")
	connLow := fs.Int("conn-low", 32, "connection manager low watermark")
	connHigh := fs.Int("conn-high", 96, "connection manager high watermark")
	return func(args []string) error {
		if err := noArgs(args); err != nil {
			return err
		}
		if err := required("data", *data); err != nil {
			return err
		}
		if err := required("root", *rootPath); err != nil {
			return err
		}
		peers, err := parseBootstrap(bootstrap)
		if err != nil {
			return err
		}
		root, err := readRoot(*rootPath)
		if err != nil {
			return err
		}
		if *domain != "" && *domain != root.Domain() {
			return fmt.Errorf("--domain %q but the root is for %q", *domain, root.Domain())
		}
		if len(listen) == 0 {
			listen = listFlag{agentP2PDefault}
		}
		if err := os.MkdirAll(*data, 0o700); err != nil {
			return err
		}
		log := slog.New(slog.NewJSONHandler(a.stderr, nil))
		h, err := openHost(*data, root.Domain(), listen, *secretFile, *connLow, *connHigh)
		if err != nil {
			return err
		}
		defer h.Close()
		ctx, stop := signal.NotifyContext(a.ctx, os.Interrupt, syscall.SIGTERM)
		defer stop()
		var capList []string
		if len(caps) > 0 {
			capList = caps
		}
		joinToken := os.Getenv("MESHKIT_JOIN_TOKEN")
		if *joinTokenFile != "" {
			b, err := readFile(*joinTokenFile)
			if err != nil {
				return err
			}
			joinToken = strings.TrimSpace(string(b))
		}
		if *nodeName == "" {
			if *nodeName, err = os.Hostname(); err != nil {
				return err
			}
			*nodeName = strings.ToLower(*nodeName)
		}
		ag, err := node.New(ctx, node.Config{
			Root: root, DataDir: *data, Host: h, Bootstrap: peers, Capabilities: capList,
			StaleAfter: *staleAfter, SyncInterval: *syncInterval, Logger: log,
			NodeName: *nodeName, JoinToken: joinToken, RequirePeerCertificates: *requireCerts,
		})
		if err != nil {
			return err
		}
		defer ag.Close()
		ln, err := net.Listen("tcp", *httpAddr)
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: ag.Handler(), ReadHeaderTimeout: 5 * time.Second}
		done := make(chan error, 2)
		go func() { done <- srv.Serve(ln) }()
		sbWhere := "off"
		if *sbAddr != "off" {
			sb, where, err := serveSouthbound(ag, *sbAddr, *sbCert, *sbKey, *sbCA, done)
			if err != nil {
				return err
			}
			defer sb.Close()
			sbWhere = where
		}
		ep, err := writeEndpoint(*data, h, ln.Addr().String())
		if err != nil {
			return err
		}
		cur, ok := ag.Current()
		serving := "nothing yet (waiting for peers)"
		if ok {
			serving = fmt.Sprintf("last-known-good v%d (epoch %d)", cur.Version, cur.Epoch)
		}
		fmt.Fprintf(a.stdout, "agent %s of domain %q serving %s\n  p2p: %s\n  http: %s\n  southbound (OmniRelay ControlPlaneWatch, meshkit.southbound.v1): %s\n",
			ep.PeerID, root.Domain(), serving, strings.Join(ep.Addrs, " "), ep.HTTPAddr, sbWhere)
		select {
		case <-ctx.Done():
		case err := <-done:
			return fmt.Errorf("serve: %w", err)
		}
		fmt.Fprintln(a.stdout, "shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	}
}

func (a *app) agentStatus(fs *pflag.FlagSet) func(args []string) error {
	addr := fs.String("addr", cmpOr(os.Getenv("MESHKIT_AGENT"), "127.0.0.1:17481"), "the agent's --http-addr (env MESHKIT_AGENT)")
	output := fs.StringP("output", "o", "text", "output format: text or json")
	return func(args []string) error {
		if err := noArgs(args); err != nil {
			return err
		}
		if *output != "text" && *output != "json" {
			return usagef("--output must be one of text, json")
		}
		ctx, cancel := context.WithTimeout(a.ctx, 10*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+*addr+"/status", nil)
		if err != nil {
			return usagef("--addr %q: %v", *addr, err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return fmt.Errorf("agent at %s: %w", *addr, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("agent at %s: %s", *addr, resp.Status)
		}
		if *output == "json" {
			_, err := a.stdout.Write(body)
			return err
		}
		var st node.Status
		if err := json.Unmarshal(body, &st); err != nil {
			return fmt.Errorf("agent at %s: %w", *addr, err)
		}
		fmt.Fprintf(a.stdout, "domain:   %s\npeer:     %s\npeers:    %d\n", st.Domain, st.PeerID, st.Peers)
		if st.Serving.Version == 0 {
			fmt.Fprintln(a.stdout, "serving:  nothing")
		} else {
			fmt.Fprintf(a.stdout, "serving:  v%d (epoch %d) %s, expires %s\n", st.Serving.Version, st.Serving.Epoch, st.Serving.Hash, st.Serving.ExpiresAt.Format(time.RFC3339))
		}
		state := "fresh"
		if st.Stale {
			state = "STALE: " + st.StaleReason
		}
		fmt.Fprintf(a.stdout, "state:    %s\naccepted: %s\nrejected: %s\ntraffic:  %d B in, %d B out\n", state, counts(st.Accepted), counts(st.Rejected), st.BytesIn, st.BytesOut)
		return nil
	}
}

// counts renders {"gossip": 2, "sync": 1} as "gossip=2 sync=1", or "none".
func counts(m map[string]uint64) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}

// serveSouthbound listens on addr (host:port or unix:///path) and serves the agent's
// data-plane APIs; Serve's result goes to done.
func serveSouthbound(ag *node.Agent, addr, certPath, keyPath, caPath string, done chan<- error) (*node.Southbound, string, error) {
	tlsCfg, err := serverTLS(certPath, keyPath, caPath)
	if err != nil {
		return nil, "", err
	}
	var cfg node.SouthboundConfig
	if tlsCfg != nil {
		if tlsCfg.ClientCAs != nil {
			tlsCfg.ClientAuth = tls.RequireAndVerifyClientCert        // the data plane's identity is its certificate
			tlsCfg.VerifyPeerCertificate = ag.VerifyClientCertificate // and the domain may have revoked it
		}
		cfg.TLS = credentials.NewTLS(tlsCfg)
	}
	var ln net.Listener
	if path, ok := strings.CutPrefix(addr, "unix://"); ok {
		_ = os.Remove(path) // a socket left by a previous run
		ln, err = net.Listen("unix", path)
	} else {
		ln, err = net.Listen("tcp", addr)
	}
	if err != nil {
		return nil, "", err
	}
	sb := ag.NewSouthbound(cfg)
	go func() { done <- sb.Serve(ln) }()
	where := ln.Addr().String()
	if ln.Addr().Network() == "unix" {
		where = "unix://" + where
	}
	if tlsCfg == nil {
		where += " (h2c)"
	}
	return sb, where, nil
}
