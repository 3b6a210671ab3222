package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"meshkit.dev/meshkit/internal/atomicfile"
	"meshkit.dev/meshkit/seed"
)

// policyAdd creates a principal with a new bearer token: the token is printed once and
// only its SHA-256 is kept, in the policy file (--policy) or in the entry printed.
func (a *app) policyAdd(fs *pflag.FlagSet) func(args []string) error {
	name := fs.String("name", "", "principal name, shown in the audit log")
	scope := fs.String("scope", "", "mesh.read, mesh.operate (apply, delete, push) or mesh.admin")
	var tenants listFlag
	fs.Var(&tenants, "tenant", "tenant the principal may read and change (repeatable; \"*\" for all)")
	path := fs.String("policy", "", "policy file to add the principal to (created if missing, rewritten without its comments); without it the entry is printed")
	return func(args []string) error {
		if err := noArgs(args); err != nil {
			return err
		}
		if err := errors.Join(required("name", *name), required("scope", *scope)); err != nil {
			return err
		}
		if len(tenants) == 0 {
			return usagef("--tenant is required (\"*\" for every tenant)")
		}
		raw := make([]byte, 32)
		if _, err := rand.Read(raw); err != nil {
			return err
		}
		token := hex.EncodeToString(raw)
		entry := seed.PolicyEntry{Name: *name, TokenSHA256: seed.HashToken(token), Scopes: []string{*scope}, Tenants: tenants}
		pol := &seed.Policy{}
		if *path != "" {
			if _, err := os.Stat(*path); err == nil {
				if pol, err = seed.LoadPolicy(*path); err != nil {
					return err
				}
			} else if !errors.Is(err, os.ErrNotExist) {
				return err
			}
			if slices.ContainsFunc(pol.Principals, func(e seed.PolicyEntry) bool { return e.Name == *name }) {
				return fmt.Errorf("%s already has a principal named %q: choose another --name, or remove it from the file first", *path, *name)
			}
		}
		pol.Principals = append(pol.Principals, entry)
		if err := pol.Check(); err != nil {
			return usagef("%v", err)
		}
		var buf bytes.Buffer
		enc := yaml.NewEncoder(&buf)
		enc.SetIndent(2)
		if err := enc.Encode(struct {
			Principals []seed.PolicyEntry `yaml:"principals"`
		}{pol.Principals}); err != nil {
			return err
		}
		out := buf.Bytes()
		fmt.Fprintf(a.stdout, "token (shown once; keep it in a secret store): %s\n", token)
		if *path == "" {
			fmt.Fprintf(a.stdout, "policy entry (add it under principals: in the seed's --policy file):\n%s", out)
			return nil
		}
		if err := atomicfile.WriteFile(*path, out, 0o600); err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "added principal %q (%s on %v) to %s; a running seed picks it up within %s, or at once on SIGHUP\n", *name, *scope, []string(tenants), *path, policyPoll)
		return nil
	}
}

// policyPoll is how often a seed checks its --policy file for changes.
const policyPoll = 2 * time.Second

// watchPolicy rereads path into pol whenever its content changes (checked every
// policyPoll) and at once on SIGHUP, until ctx ends. A file that does not load leaves the
// policy as it was, and says why.
func watchPolicy(ctx context.Context, path string, pol *seed.Policy, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	t := time.NewTicker(policyPoll)
	defer t.Stop()
	seen := fileSum(path)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-hup:
			seen = [32]byte{} // reread even if unchanged
		}
		sum := fileSum(path)
		if sum == seen {
			continue
		}
		seen = sum
		next, err := seed.LoadPolicy(path)
		if err != nil {
			log.Warn("policy not reloaded; the seed keeps the policy it has", "file", path, "err", err)
			continue
		}
		pol.Reload(next)
		log.Info("policy reloaded", "file", path, "principals", pol.Len())
	}
}

func fileSum(path string) [32]byte {
	b, err := os.ReadFile(path)
	if err != nil {
		return [32]byte{1} // unreadable: differs from any content, so a fix is noticed
	}
	return sha256.Sum256(b)
}
