package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"text/tabwriter"

	"path/filepath"
	"time"

	"github.com/spf13/pflag"

	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"meshkit.dev/meshkit/ca"
	"meshkit.dev/meshkit/seed"
)

// openCA opens the domain CA kept in dir, creating a self-managed root for the trust
// domain on first use.
func openCA(dir, trustDomain string) (*ca.Authority, error) {
	td, err := spiffeid.TrustDomainFromString(trustDomain)
	if err != nil {
		return nil, usagef("--trust-domain %q: %v", trustDomain, err)
	}
	return ca.LoadOrCreate(filepath.Clean(dir), td, time.Now())
}

// tokenCreate makes a single-use join token that enrols one agent as a node.
func (a *app) tokenCreate(fs *pflag.FlagSet) func(args []string) error {
	nodeName := fs.String("node", "", "the node the token enrols (the agent's --node-name)")
	ttl := fs.Duration("ttl", seed.DefaultJoinTokenTTL, "how long the token may be used")
	var c clientFlags
	c.register(fs, "text, json")
	return func(args []string) error {
		if err := required("node", *nodeName); err != nil {
			return err
		}
		s, err := c.openNoArgs(args, "text", "json")
		if err != nil {
			return err
		}
		defer s.close()
		resp, err := s.CreateJoinToken(s.ctx, &adminv1.CreateJoinTokenRequest{Node: *nodeName, TtlSeconds: uint64(ttl.Seconds())})
		if err != nil {
			return rpcError(err)
		}
		if c.output == "json" {
			return a.printJSON(resp)
		}
		fmt.Fprintln(a.stdout, resp.GetToken())
		fmt.Fprintf(a.stderr, "enrols %s (%s) once, until %s; give it to the agent: --node-name %s --join-token-file FILE\n",
			*nodeName, resp.GetSpiffeId(), resp.GetExpiresAt().AsTime().UTC().Format(time.RFC3339), *nodeName)
		return nil
	}
}

// caExpiry is one dated piece of the domain's trust.
type caExpiry struct {
	What     string    `json:"what"`
	Subject  string    `json:"subject"`
	NotAfter time.Time `json:"not_after"`
	Left     string    `json:"left"`
	Warning  bool      `json:"warning"`
}

// caStatus lists the expiry of every piece of a domain's trust a seed holds: the domain
// root (with --root), the CA's roots, its chain and its own certificate. It exits 1 when
// one expires within --warn, so a cron job or a CI check catches it in time.
func (a *app) caStatus(fs *pflag.FlagSet) func(args []string) error {
	caDir := fs.String("ca-dir", "", "the seed's CA directory (DATA/ca)")
	rootPath := fs.String("root", "", "the domain root (root.json), to include its expiry")
	warn := fs.Duration("warn", 30*24*time.Hour, "warn, and exit 1, when anything expires within this")
	output, checkOutput := outputFlag(fs)
	return func(args []string) error {
		if err := noArgs(args); err != nil {
			return err
		}
		if err := checkOutput(); err != nil {
			return err
		}
		if err := required("ca-dir", *caDir); err != nil {
			return err
		}
		now := a.now()
		var rows []caExpiry
		add := func(what, subject string, notAfter time.Time) {
			left := notAfter.Sub(now)
			rows = append(rows, caExpiry{What: what, Subject: subject, NotAfter: notAfter.UTC(), Left: left.Truncate(time.Minute).String(), Warning: left < *warn})
		}
		if *rootPath != "" {
			root, err := readRoot(*rootPath)
			if err != nil {
				return err
			}
			add(fmt.Sprintf("domain root v%d", root.Version()), root.Domain(), root.ExpiresAt())
		}
		// Every generation the seed made rotating its CA is in a gen-… directory of its own.
		gens, err := filepath.Glob(filepath.Join(*caDir, "gen-*"))
		if err != nil {
			return err
		}
		for _, dir := range append([]string{*caDir}, gens...) {
			label := ""
			if dir != *caDir {
				label = " (" + filepath.Base(dir) + ")"
			}
			for _, f := range []struct{ file, what string }{{ca.RootsFile, "trust bundle root"}, {ca.ChainFile, "CA chain"}, {ca.CertFile, "issuing CA"}} {
				b, err := os.ReadFile(filepath.Join(dir, f.file))
				if errors.Is(err, os.ErrNotExist) && f.file == ca.ChainFile {
					continue
				}
				if err != nil {
					return err
				}
				for rest := b; ; {
					var blk *pem.Block
					if blk, rest = pem.Decode(rest); blk == nil {
						break
					}
					c, err := x509.ParseCertificate(blk.Bytes)
					if err != nil {
						return fmt.Errorf("%s: %w", filepath.Join(dir, f.file), err)
					}
					add(f.what+label, c.Subject.String(), c.NotAfter)
				}
			}
		}
		warned := false
		for _, r := range rows {
			warned = warned || r.Warning
		}
		if *output == "json" {
			if err := a.printJSONValue(rows); err != nil {
				return err
			}
		} else {
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "WHAT\tSUBJECT\tEXPIRES\tLEFT\t")
			for _, r := range rows {
				flag := ""
				if r.Warning {
					flag = "WARNING: within " + warn.String()
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.What, r.Subject, r.NotAfter.Format(time.RFC3339), r.Left, flag)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
		}
		if warned {
			return &exitError{code: exitFail, err: fmt.Errorf("something expires within %s", *warn)}
		}
		return nil
	}
}

// caRoleKeyFile is the CA role's key beside the seed key in generated dev trust material.
const caRoleKeyFile = "ca-role.key"

// seedControl configures the seed's control stream: the root it starts from, the CA
// role's key (caRoleKey, or KEYDIR/ca-role.key when present), the standby seed keys in
// the seed key's directory, and the CA generations in caDir.
func seedControl(cfg *seed.Config, keyPath, rootPath, caRoleKey, caDir string) error {
	rb, err := readFile(rootPath)
	if err != nil {
		return err
	}
	cfg.Root = rb
	cfg.KeyDir = filepath.Dir(keyPath)
	if caRoleKey == "" {
		if p := filepath.Join(cfg.KeyDir, caRoleKeyFile); fileExists(p) {
			caRoleKey = p
		}
	}
	if caRoleKey != "" {
		signers, err := loadSigners([]string{caRoleKey})
		if err != nil {
			return err
		}
		cfg.CASigner = signers[0]
	}
	standby, err := filepath.Glob(filepath.Join(cfg.KeyDir, seed.StandbyKeyPrefix+"*.key"))
	if err != nil {
		return err
	}
	if cfg.StandbyKeys, err = loadSigners(standby); err != nil {
		return err
	}
	td, err := spiffeid.TrustDomainFromString(cmpOr(cfg.TrustDomain, cfg.Domain))
	if err != nil {
		return err
	}
	cfg.CAGenerations = ca.Dir{Path: caDir, TrustDomain: td}
	return nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// adminTLSFromCA is the admin API's TLS with the domain's own certificates for names (DNS
// names and IP addresses; default the host name, localhost and 127.0.0.1).
func adminTLSFromCA(s *seed.Seed, names []string) (*tls.Config, error) {
	if len(names) == 0 {
		names = []string{"localhost", "127.0.0.1"}
		if h, err := os.Hostname(); err == nil && h != "" {
			names = append(names, strings.ToLower(h))
		}
	}
	var dns []string
	var ips []net.IP
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, n)
		}
	}
	return s.AdminTLS(dns, ips)
}
