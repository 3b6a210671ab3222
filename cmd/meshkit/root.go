package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/protobuf/encoding/protojson"

	"meshkit.dev/meshkit/internal/atomicfile"
	trustv1 "meshkit.dev/meshkit/proto/meshkit/trust/v1"
	"meshkit.dev/meshkit/trust"
)

// rootFlags are the flags that describe a root's keys and roles (init and rotate).
type rootFlags struct {
	rootKeys, seedKeys, caKeys listFlag
	bridges                    stringsFlag
	threshold, seedThreshold   int
	caThreshold                int
	expires, out               string
}

// stringsFlag is a repeatable flag whose values are kept whole.
type stringsFlag []string

func (s *stringsFlag) String() string     { return strings.Join(*s, " ") }
func (s *stringsFlag) Set(v string) error { *s = append(*s, v); return nil }
func (s *stringsFlag) Type() string       { return "strings" }

func (rf *rootFlags) register(fs *pflag.FlagSet) {
	fs.Var(&rf.rootKeys, "root-key", "root key file (repeatable or comma-separated); private key files sign, public ones are listed for signing later")
	fs.IntVar(&rf.threshold, "threshold", 1, "how many root keys must sign a root")
	fs.Var(&rf.seedKeys, "seed-key", "seed public key file authorised to sign bundles (repeatable)")
	fs.IntVar(&rf.seedThreshold, "seed-threshold", 1, "how many seed keys must sign a bundle")
	fs.Var(&rf.caKeys, "ca-key", "CA public key file (repeatable, optional)")
	fs.IntVar(&rf.caThreshold, "ca-threshold", 1, "how many CA keys must sign CA material")
	fs.Var(&rf.bridges, "bridge", "bridge delegation NAME:PUBFILE:NS1,NS2 (repeatable)")
	fs.StringVar(&rf.expires, "expires", "365d", "how long the root is valid (e.g. 90d, 8760h)")
	fs.StringVar(&rf.out, "out", "", "root file to write")
}

func (rf *rootFlags) spec(domain string, version uint64, now time.Time) (trust.RootSpec, []trust.Signer, error) {
	if len(rf.rootKeys) == 0 {
		return trust.RootSpec{}, nil, usagef("at least one --root-key is required")
	}
	if len(rf.seedKeys) == 0 {
		return trust.RootSpec{}, nil, usagef("at least one --seed-key is required")
	}
	dur, err := parseDuration(rf.expires)
	if err != nil {
		return trust.RootSpec{}, nil, usagef("--expires: %v", err)
	}
	rootPubs, signers, err := loadKeys(rf.rootKeys)
	if err != nil {
		return trust.RootSpec{}, nil, err
	}
	seedPubs, _, err := loadKeys(rf.seedKeys)
	if err != nil {
		return trust.RootSpec{}, nil, err
	}
	caPubs, _, err := loadKeys(rf.caKeys)
	if err != nil {
		return trust.RootSpec{}, nil, err
	}
	spec := trust.RootSpec{
		Domain: domain, Version: version, IssuedAt: now, ExpiresAt: now.Add(dur),
		RootKeys: rootPubs, RootThreshold: rf.threshold,
		SeedKeys: seedPubs, SeedThreshold: rf.seedThreshold,
		CAKeys: caPubs, CAThreshold: rf.caThreshold,
	}
	for _, b := range rf.bridges {
		parts := strings.SplitN(b, ":", 3)
		if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
			return trust.RootSpec{}, nil, usagef("--bridge %q: want NAME:PUBFILE:NS1,NS2", b)
		}
		pubs, _, err := loadKeys([]string{parts[1]})
		if err != nil {
			return trust.RootSpec{}, nil, err
		}
		spec.Bridges = append(spec.Bridges, trust.BridgeSpec{Name: parts[0], Keys: pubs, Threshold: 1, Namespaces: strings.Split(parts[2], ",")})
	}
	return spec, signers, nil
}

func (a *app) rootInit(fs *pflag.FlagSet) func(args []string) error {
	domain := fs.String("domain", "", "control domain the root governs")
	var rf rootFlags
	rf.register(fs)
	return func(args []string) error {
		if err := noArgs(args); err != nil {
			return err
		}
		if err := errors.Join(required("domain", *domain), required("out", rf.out)); err != nil {
			return usagef("%v", err)
		}
		if err := trust.ValidDomain(*domain); err != nil {
			return usagef("%v", err)
		}
		spec, signers, err := rf.spec(*domain, 1, a.now())
		if err != nil {
			return err
		}
		return a.writeRoot(spec, signers, nil, rf.out)
	}
}

func (a *app) rootRotate(fs *pflag.FlagSet) func(args []string) error {
	prevPath := fs.String("prev", "", "the root in force (its rotations already applied)")
	var signKeys listFlag
	fs.Var(&signKeys, "sign-key", "private root key of the previous root to sign with (repeatable)")
	var rf rootFlags
	rf.register(fs)
	return func(args []string) error {
		if err := noArgs(args); err != nil {
			return err
		}
		if err := errors.Join(required("prev", *prevPath), required("out", rf.out)); err != nil {
			return usagef("%v", err)
		}
		prev, err := readRoot(*prevPath)
		if err != nil {
			return err
		}
		spec, signers, err := rf.spec(prev.Domain(), prev.Version()+1, a.now())
		if err != nil {
			return err
		}
		old, err := loadSigners(signKeys)
		if err != nil {
			return err
		}
		return a.writeRoot(spec, append(signers, old...), prev, rf.out)
	}
}

// writeRoot builds, signs and writes a root, then says whether it is fully signed.
func (a *app) writeRoot(spec trust.RootSpec, signers []trust.Signer, prev *trust.Root, out string) error {
	msg, err := trust.BuildRoot(spec)
	if err != nil {
		return err
	}
	env, err := trust.RootEnvelope(msg)
	if err != nil {
		return err
	}
	if err := trust.Sign(env, signers...); err != nil {
		return err
	}
	if err := writeEnvelopeJSON(out, env, false); err != nil {
		return err
	}
	a.reportRoot(env, prev, out)
	return nil
}

func (a *app) reportRoot(env *trustv1.Envelope, prev *trust.Root, path string) {
	b, _ := trust.MarshalEnvelope(env)
	var err error
	if prev != nil {
		_, err = prev.VerifyNext(b)
	} else {
		_, err = trust.VerifyRoot(b)
	}
	if err != nil {
		fmt.Fprintf(a.stdout, "wrote %s with %d signature(s); not yet valid: %v\ncollect the missing signatures with: meshkit root sign --key KEY --in %s\n", path, len(env.GetSignatures()), err, path)
		return
	}
	fmt.Fprintf(a.stdout, "wrote %s with %d signature(s); fully signed\n", path, len(env.GetSignatures()))
}

func (a *app) rootSign(fs *pflag.FlagSet) func(args []string) error {
	var keys listFlag
	fs.Var(&keys, "key", "private key file to sign with (repeatable)")
	in := fs.String("in", "", "root file to sign")
	out := fs.String("out", "", "where to write the signed root (default: replace --in)")
	prevPath := fs.String("prev", "", "previous root, to report whether a rotation is fully signed")
	return func(args []string) error {
		if err := noArgs(args); err != nil {
			return err
		}
		if err := required("in", *in); err != nil {
			return err
		}
		if len(keys) == 0 {
			return usagef("--key is required")
		}
		if *out == "" {
			*out = *in
		}
		data, err := readFile(*in)
		if err != nil {
			return err
		}
		env, err := trust.DecodeEnvelope(data, 0)
		if err != nil {
			return err
		}
		if env.GetPayloadType() != trust.PayloadRoot {
			return fmt.Errorf("%s holds %s, not a root", *in, env.GetPayloadType())
		}
		signers, err := loadSigners(keys)
		if err != nil {
			return err
		}
		if err := trust.Sign(env, signers...); err != nil {
			return err
		}
		if err := writeEnvelopeJSON(*out, env, true); err != nil {
			return err
		}
		var prev *trust.Root
		if *prevPath != "" {
			var err error
			if prev, err = readRoot(*prevPath); err != nil {
				return err
			}
		}
		a.reportRoot(env, prev, *out)
		return nil
	}
}

func (a *app) rootVerify(fs *pflag.FlagSet) func(args []string) error {
	at := fs.String("at", "", "check expiry at this time instead of now (RFC 3339)")
	output, checkOutput := outputFlag(fs)
	return func(args []string) error {
		if err := checkOutput(); err != nil {
			return err
		}
		files := args
		if len(files) == 0 {
			return usagef("a root file is required")
		}
		now, err := a.timeFlag(*at)
		if err != nil {
			return err
		}
		root, err := loadRootChain(files[0], files[1:])
		if err != nil {
			return err
		}
		if now.After(root.ExpiresAt()) {
			return fmt.Errorf("%w: root v%d of %q expired at %s", trust.ErrRootExpired, root.Version(), root.Domain(), root.ExpiresAt().Format(time.RFC3339))
		}
		if *output == "json" {
			b, err := protojson.Marshal(root.Proto())
			if err != nil {
				return err
			}
			return a.printJSONValue(map[string]any{"ok": true, "domain": root.Domain(), "version": root.Version(),
				"expires": root.ExpiresAt().Format(time.RFC3339), "digest": fmt.Sprint(root.Digest()), "root": json.RawMessage(b)})
		}
		fmt.Fprintf(a.stdout, "OK root domain=%s version=%d expires=%s digest=%s\n", root.Domain(), root.Version(), root.ExpiresAt().Format(time.RFC3339), root.Digest())
		for _, role := range root.Proto().GetRoles() {
			ns := ""
			if len(role.GetNamespaces()) > 0 {
				ns = " namespaces=" + strings.Join(role.GetNamespaces(), ",")
			}
			fmt.Fprintf(a.stdout, "  role %-6s %-10s threshold %d of %d keys%s\n", roleLabel(role.GetType()), role.GetName(), role.GetThreshold(), len(role.GetKeyIds()), ns)
		}
		return nil
	}
}

func roleLabel(t trustv1.RoleType) string {
	return strings.ToLower(strings.TrimPrefix(t.String(), "ROLE_TYPE_"))
}

// loadRootChain reads and verifies a trusted root and its rotations.
func loadRootChain(first string, rotations []string) (*trust.Root, error) {
	roots, _, err := loadRoots(first, rotations)
	if err != nil {
		return nil, err
	}
	return roots[len(roots)-1], nil
}

// loadRoots returns every verified root of the chain, oldest first, with its file bytes.
// readRoot reads and verifies a domain root file; errors name the file.
func readRoot(path string) (*trust.Root, error) {
	b, err := readFile(path)
	if err != nil {
		return nil, err
	}
	root, err := trust.VerifyRoot(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return root, nil
}

func loadRoots(first string, rotations []string) ([]*trust.Root, [][]byte, error) {
	data, err := readFile(first)
	if err != nil {
		return nil, nil, err
	}
	root, err := trust.VerifyRoot(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", first, err)
	}
	roots, raws := []*trust.Root{root}, [][]byte{data}
	for _, p := range rotations {
		data, err := readFile(p)
		if err != nil {
			return nil, nil, err
		}
		if root, err = root.VerifyNext(data); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", p, err)
		}
		roots, raws = append(roots, root), append(raws, data)
	}
	return roots, raws, nil
}

func (a *app) timeFlag(v string) (time.Time, error) {
	if v == "" {
		return a.now(), nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, usagef("%q is not an RFC 3339 time (e.g. 2026-01-02T15:04:05Z)", v)
	}
	return t, nil
}

// readFile reads a file no larger than the envelope limit.
func readFile(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Size() > trust.DefaultMaxEnvelopeBytes {
		return nil, fmt.Errorf("%w: %s is %d bytes, the limit is %d", trust.ErrOversized, path, st.Size(), trust.DefaultMaxEnvelopeBytes)
	}
	return os.ReadFile(path)
}

// writeEnvelopeJSON writes env as JSON; replace allows overwriting an existing file.
func writeEnvelopeJSON(path string, env *trustv1.Envelope, replace bool) error {
	data, err := trust.EnvelopeJSON(env)
	if err != nil {
		return err
	}
	return writeOut(path, data, replace)
}

func writeOut(path string, data []byte, replace bool) error {
	if !replace {
		if _, err := os.Stat(path); err == nil {
			return fmt.Errorf("%s exists; refusing to overwrite it", path)
		}
	}
	return atomicfile.WriteFile(path, data, 0o644)
}
