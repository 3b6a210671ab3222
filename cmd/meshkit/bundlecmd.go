package main

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"meshkit.dev/meshkit/bundle"
	"meshkit.dev/meshkit/internal/atomicfile"
	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
	trustv1 "meshkit.dev/meshkit/proto/meshkit/trust/v1"
	"meshkit.dev/meshkit/trust"
)

func (a *app) bundleBuild(fs *pflag.FlagSet) func(args []string) error {
	from := fs.StringP("filename", "f", "", "YAML resource file or directory")
	domain := fs.String("domain", "", "control domain")
	epoch := fs.Uint64("epoch", 1, "term of the publishing seed")
	version := fs.Uint64("version", 0, "bundle version, increasing with every publish (>= 1)")
	expires := fs.String("expires", "24h", "how long the bundle is valid")
	issuedAt := fs.String("issued-at", "", "issue time, RFC 3339 (default now)")
	trustBundle := fs.String("trust-bundle", "", "PEM trust bundle to reference by hash")
	var caps listFlag
	fs.Var(&caps, "require", "extra capability a node must advertise (repeatable)")
	out := fs.String("out", "", "unsigned bundle file to write")
	return func(args []string) error {
		if err := noArgs(args); err != nil {
			return err
		}
		if err := errors.Join(required("filename", *from), required("domain", *domain), required("out", *out)); err != nil {
			return usagef("%v", err)
		}
		if *version == 0 {
			return usagef("--version is required and must be at least 1")
		}
		if err := trust.ValidDomain(*domain); err != nil {
			return usagef("%v", err)
		}
		dur, err := parseDuration(*expires)
		if err != nil {
			return usagef("--expires: %v", err)
		}
		issued, err := a.timeFlag(*issuedAt)
		if err != nil {
			return err
		}
		issued = issued.UTC().Truncate(time.Second)
		ref := ""
		if *trustBundle != "" {
			pem, err := readFile(*trustBundle)
			if err != nil {
				return err
			}
			ref = fmt.Sprintf("sha256:%x", sha256.Sum256(pem))
		}
		objs, err := bundle.LoadPath(*from)
		if err != nil {
			return err
		}
		b, err := bundle.Build(bundle.Header{
			Domain: *domain, Epoch: *epoch, Version: *version, IssuedAt: issued, ExpiresAt: issued.Add(dur),
			RequiredCapabilities: caps, TrustBundleRef: ref,
		}, objs)
		if err != nil {
			return err
		}
		payload, err := bundle.Encode(b)
		if err != nil {
			return err
		}
		data, err := trust.MarshalEnvelope(trust.NewEnvelope(trust.PayloadBundle, payload))
		if err != nil {
			return err
		}
		if err := atomicfile.WriteFile(*out, data, 0o644); err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "built %s: domain=%s epoch=%d version=%d resources=%d bytes=%d hash=%s requires=%s (unsigned)\n",
			*out, *domain, *epoch, *version, bundle.Count(b), len(payload), bundle.Hash(payload), strings.Join(b.GetHeader().GetRequiredCapabilities(), ","))
		return nil
	}
}

func (a *app) bundleSign(fs *pflag.FlagSet) func(args []string) error {
	var keys listFlag
	fs.Var(&keys, "key", "private key file to sign with (repeatable)")
	in := fs.String("in", "", "bundle or delta file to sign")
	out := fs.String("out", "", "signed file to write")
	return func(args []string) error {
		if err := noArgs(args); err != nil {
			return err
		}
		if err := errors.Join(required("in", *in), required("out", *out)); err != nil {
			return usagef("%v", err)
		}
		if len(keys) == 0 {
			return usagef("--key is required")
		}
		env, err := readEnvelope(*in)
		if err != nil {
			return err
		}
		if pt := env.GetPayloadType(); pt != trust.PayloadBundle && pt != trust.PayloadDelta {
			return fmt.Errorf("%s holds %s, not a bundle or delta", *in, pt)
		}
		signers, err := loadSigners(keys)
		if err != nil {
			return err
		}
		if err := trust.Sign(env, signers...); err != nil {
			return err
		}
		data, err := trust.MarshalEnvelope(env)
		if err != nil {
			return err
		}
		if err := atomicfile.WriteFile(*out, data, 0o644); err != nil {
			return err
		}
		ids := make([]string, 0, len(env.GetSignatures()))
		for _, s := range env.GetSignatures() {
			ids = append(ids, s.GetKeyId()[:12])
		}
		fmt.Fprintf(a.stdout, "signed %s: hash=%s signatures=%s\n", *out, bundle.Hash(env.GetPayload()), strings.Join(ids, ","))
		return nil
	}
}

func (a *app) bundleVerify(fs *pflag.FlagSet) func(args []string) error {
	rootPath := fs.String("root", "", "trusted domain root")
	var updates listFlag
	fs.Var(&updates, "root-update", "root rotation to apply in order (repeatable)")
	statePath := fs.String("state", "", "file remembering the newest accepted (epoch, version); replays and rollbacks are refused")
	at := fs.String("at", "", "verify as of this time instead of now (RFC 3339)")
	output, checkOutput := outputFlag(fs)
	return func(args []string) error {
		if err := checkOutput(); err != nil {
			return err
		}
		files := args
		if err := required("root", *rootPath); err != nil {
			return err
		}
		if len(files) != 1 {
			return usagef("exactly one bundle file is required, got %d", len(files))
		}
		now, err := a.timeFlag(*at)
		if err != nil {
			return err
		}
		roots, raws, err := loadRoots(*rootPath, updates)
		if err != nil {
			return err
		}
		var state trust.State
		if *statePath != "" {
			if state, err = loadState(*statePath); err != nil {
				return err
			}
		}
		v, err := newVerifierAt(roots, raws, state, fixedClock(now))
		if err != nil {
			return err
		}
		data, err := readFile(files[0])
		if err != nil {
			return err
		}
		vb, err := v.Verify(data)
		if err != nil {
			return err
		}
		if err := v.Commit(vb); err != nil {
			return err
		}
		if *statePath != "" {
			if err := saveState(*statePath, v.State()); err != nil {
				return err
			}
		}
		h := vb.Header
		if *output == "json" {
			return a.printJSONValue(map[string]any{"ok": true, "kind": kindOf(vb.PayloadType), "domain": h.GetDomain(), "epoch": h.GetEpoch(),
				"version": h.GetVersion(), "hash": vb.Digest.String(), "role": roleLabel(vb.Role.GetType()), "signer": vb.Role.GetName(),
				"expires": h.GetExpiresAt().AsTime().Format(time.RFC3339)})
		}
		fmt.Fprintf(a.stdout, "OK %s domain=%s epoch=%d version=%d hash=%s signed-by=%s/%s expires=%s\n",
			kindOf(vb.PayloadType), h.GetDomain(), h.GetEpoch(), h.GetVersion(), vb.Digest,
			roleLabel(vb.Role.GetType()), vb.Role.GetName(), h.GetExpiresAt().AsTime().Format(time.RFC3339))
		return nil
	}
}

// newVerifierAt starts a verifier at the root the state last saw, then applies the
// remaining rotations so that a key rotation resets the marks as TUF does.
func newVerifierAt(roots []*trust.Root, raws [][]byte, state trust.State, clock trust.Clock) (*trust.Verifier, error) {
	start := 0
	for i, r := range roots {
		if r.Version() == state.RootVersion {
			start = i
		}
	}
	if state.RootVersion > roots[len(roots)-1].Version() {
		return nil, fmt.Errorf("%w: state has seen root v%d; supply its rotations with --root-update", trust.ErrRootVersion, state.RootVersion)
	}
	v, err := trust.NewVerifier(trust.Config{Root: roots[start], Clock: clock, State: state})
	if err != nil {
		return nil, err
	}
	for _, raw := range raws[start+1:] {
		if err := v.RotateRoot(raw); err != nil {
			return nil, err
		}
	}
	return v, nil
}

type fixedClock time.Time

func (c fixedClock) Now() time.Time { return time.Time(c) }

func kindOf(payloadType string) string {
	switch payloadType {
	case trust.PayloadBundle:
		return "bundle"
	case trust.PayloadDelta:
		return "delta"
	case trust.PayloadRoot:
		return "root"
	}
	return payloadType
}

func loadState(path string) (trust.State, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return trust.State{}, nil
	}
	if err != nil {
		return trust.State{}, err
	}
	var s trust.State
	if err := json.Unmarshal(data, &s); err != nil {
		return trust.State{}, fmt.Errorf("state file %s is corrupt: %v", path, err)
	}
	return s, nil
}

func saveState(path string, s trust.State) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, append(data, '\n'), 0o644)
}

func readEnvelope(path string) (*trustv1.Envelope, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	env, err := trust.DecodeEnvelope(data, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return env, nil
}

// inspection is the JSON form of `bundle inspect`.
type inspection struct {
	File        string          `json:"file"`
	PayloadType string          `json:"payload_type"`
	Hash        string          `json:"hash"`
	Bytes       int             `json:"bytes"`
	Signatures  []string        `json:"signatures"`
	Content     json.RawMessage `json:"content"`
}

func (a *app) bundleInspect(fs *pflag.FlagSet) func(args []string) error {
	output := fs.StringP("output", "o", "text", "text or json")
	return func(args []string) error {
		files := args
		if len(files) != 1 {
			return usagef("exactly one file is required")
		}
		if *output != "text" && *output != "json" {
			return usagef("--output must be one of text, json")
		}
		env, err := readEnvelope(files[0])
		if err != nil {
			return err
		}
		content, err := decodeContent(env)
		if err != nil {
			return err
		}
		ins := inspection{File: files[0], PayloadType: env.GetPayloadType(), Hash: bundle.Hash(env.GetPayload()).String(), Bytes: len(env.GetPayload()), Signatures: []string{}}
		for _, s := range env.GetSignatures() {
			ins.Signatures = append(ins.Signatures, s.GetKeyId())
		}
		if *output == "json" {
			if ins.Content, err = protojson.Marshal(content); err != nil {
				return err
			}
			enc := json.NewEncoder(a.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(ins)
		}
		fmt.Fprintf(a.stdout, "file:       %s\ntype:       %s\nhash:       %s\nbytes:      %d\nsignatures: %d\n", ins.File, kindOf(ins.PayloadType), ins.Hash, ins.Bytes, len(ins.Signatures))
		for _, id := range ins.Signatures {
			fmt.Fprintf(a.stdout, "  key %s\n", id)
		}
		switch c := content.(type) {
		case *bundlev1.Bundle:
			a.printHeader(c.GetHeader())
			fmt.Fprintf(a.stdout, "resources:  %d\n", bundle.Count(c))
			bundle.Each(c, func(k bundle.Key, _ proto.Message) { fmt.Fprintf(a.stdout, "  %s\n", k) })
		case *bundlev1.BundleDelta:
			a.printHeader(c.GetHeader())
			fmt.Fprintf(a.stdout, "base:       epoch %d version %d sha256:%x\nupserts:    %d\nremovals:   %d\n", c.GetBaseEpoch(), c.GetBaseVersion(), c.GetBaseHash(), len(c.GetUpserts()), len(c.GetRemovals()))
		case *trustv1.DomainRoot:
			fmt.Fprintf(a.stdout, "domain:     %s\nversion:    %d\nexpires:    %s\nkeys:       %d\nroles:      %d\n", c.GetDomain(), c.GetVersion(), c.GetExpiresAt().AsTime().Format(time.RFC3339), len(c.GetKeys()), len(c.GetRoles()))
		}
		return nil
	}
}

func (a *app) printHeader(h *bundlev1.BundleHeader) {
	fmt.Fprintf(a.stdout, "domain:     %s\nepoch:      %d\nversion:    %d\nissued:     %s\nexpires:    %s\nrequires:   %s\n",
		h.GetDomain(), h.GetEpoch(), h.GetVersion(), h.GetIssuedAt().AsTime().Format(time.RFC3339), h.GetExpiresAt().AsTime().Format(time.RFC3339), strings.Join(h.GetRequiredCapabilities(), ","))
	if h.GetTrustBundleRef() != "" {
		fmt.Fprintf(a.stdout, "trust:      %s\n", h.GetTrustBundleRef())
	}
}

// decodeContent decodes an envelope's payload by its type.
func decodeContent(env *trustv1.Envelope) (proto.Message, error) {
	var m proto.Message
	switch env.GetPayloadType() {
	case trust.PayloadBundle:
		m = &bundlev1.Bundle{}
	case trust.PayloadDelta:
		m = &bundlev1.BundleDelta{}
	case trust.PayloadRoot:
		m = &trustv1.DomainRoot{}
	default:
		return nil, fmt.Errorf("%w: %q", trust.ErrPayloadType, env.GetPayloadType())
	}
	if err := proto.Unmarshal(env.GetPayload(), m); err != nil {
		return nil, fmt.Errorf("%w: %s payload: %v", trust.ErrMalformed, kindOf(env.GetPayloadType()), err)
	}
	return m, nil
}

func (a *app) bundleDiff(fs *pflag.FlagSet) func(args []string) error {
	output, checkOutput := outputFlag(fs)
	return func(args []string) error {
		if err := checkOutput(); err != nil {
			return err
		}
		files := args
		if len(files) != 2 {
			return usagef("two bundle files are required")
		}
		var bs [2]*bundlev1.Bundle
		for i, f := range files {
			env, err := readEnvelope(f)
			if err != nil {
				return err
			}
			if env.GetPayloadType() != trust.PayloadBundle {
				return fmt.Errorf("%s holds a %s, not a bundle", f, kindOf(env.GetPayloadType()))
			}
			if bs[i], err = bundle.DecodeBundle(env.GetPayload()); err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
		}
		header, changes := bundle.Diff(bs[0], bs[1])
		if *output == "json" {
			type change struct {
				Op, Kind, Namespace, Name, Diff string
			}
			out := struct {
				Header  string   `json:"header,omitempty"`
				Changes []change `json:"changes"`
			}{Header: header, Changes: []change{}}
			for _, c := range changes {
				out.Changes = append(out.Changes, change{c.Op, c.Key.Kind, c.Key.Namespace, c.Key.Name, c.Diff})
			}
			return a.printJSONValue(out)
		}
		if header == "" && len(changes) == 0 {
			fmt.Fprintln(a.stdout, "no differences")
			return nil
		}
		if header != "" {
			fmt.Fprintf(a.stdout, "~ header\n%s", indent(header))
		}
		for _, c := range changes {
			fmt.Fprintf(a.stdout, "%s %s\n", c.Op, c.Key)
			if c.Diff != "" {
				fmt.Fprint(a.stdout, indent(c.Diff))
			}
		}
		return nil
	}
}

func indent(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = "    " + l
	}
	return strings.Join(lines, "\n") + "\n"
}
