package replica

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"meshkit.dev/meshkit/bundle"
	"meshkit.dev/meshkit/p2p"
	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
	identityv1 "meshkit.dev/meshkit/proto/meshkit/identity/v1"
	syncv1 "meshkit.dev/meshkit/proto/meshkit/sync/v1"
	"meshkit.dev/meshkit/trust"
)

// t0 is the scripts' start time; bundles are valid from t0-1m to t0+24h.
var t0 = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// script is the state of one message-sequence script (testdata/*.txt): a domain whose
// root delegates to a seed key and to the bridge "edge" (namespace "edge"), named
// envelopes, the core under test and what it wrote as last-known-good.
type script struct {
	t                     *testing.T
	root                  *trust.Root
	seed, bridge, strange *trust.PrivateKey
	// The root key signs rotations, the CA key control messages; seed2 is the key a
	// rotation hands the seed role to.
	rootKey, ca, seed2 *trust.PrivateKey
	roots              map[string][]byte // rotation name → signed root
	now                time.Time
	core               *Core

	msgs     map[string][]byte             // name → signed envelope
	payloads map[string][]byte             // snapshot name → encoded bundle
	names    map[trust.Digest]string       // payload hash → snapshot name, for printing
	disk     map[string]*syncv1.HeldBundle // stream → last written
	sources  map[string]string             // snapshot name → the stream's source
}

func key(t *testing.T, seed byte) *trust.PrivateKey {
	t.Helper()
	k, err := trust.GenerateKey(strings.NewReader(strings.Repeat(string([]byte{seed, 7}), 32)))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newScript(t *testing.T) *script {
	s := &script{t: t, seed: key(t, 1), bridge: key(t, 2), strange: key(t, 3), rootKey: key(t, 4), ca: key(t, 5), seed2: key(t, 6), now: t0,
		msgs: map[string][]byte{}, payloads: map[string][]byte{}, names: map[trust.Digest]string{}, disk: map[string]*syncv1.HeldBundle{}, sources: map[string]string{},
		roots: map[string][]byte{}}
	var err error
	if s.root, err = trust.VerifyRoot(s.signedRoot(1, s.seed.Public())); err != nil {
		t.Fatal(err)
	}
	s.restart()
	return s
}

func (s *script) restart() {
	c, err := NewCore(CoreConfig{Root: s.root})
	if err != nil {
		s.t.Fatal(err)
	}
	s.core = c
}

// signedRoot is version v of the domain's root, its seed role held by seedKeys.
func (s *script) signedRoot(v uint64, seedKeys ...trust.PublicKey) []byte {
	msg, err := trust.BuildRoot(trust.RootSpec{
		Domain: "prod", Version: v, IssuedAt: t0.Add(-time.Hour), ExpiresAt: t0.Add(365 * 24 * time.Hour),
		RootKeys: []trust.PublicKey{s.rootKey.Public()}, RootThreshold: 1,
		SeedKeys: seedKeys, SeedThreshold: 1,
		CAKeys: []trust.PublicKey{s.ca.Public()}, CAThreshold: 1,
		Bridges: []trust.BridgeSpec{{Name: "edge", Keys: []trust.PublicKey{s.bridge.Public()}, Threshold: 1, Namespaces: []string{"edge"}}},
	})
	if err != nil {
		s.t.Fatal(err)
	}
	env, err := trust.RootEnvelope(msg)
	if err != nil {
		s.t.Fatal(err)
	}
	return s.seal(trust.PayloadRoot, env.GetPayload(), s.rootKey)
}

func (s *script) seal(payloadType string, payload []byte, signers ...trust.Signer) []byte {
	env := trust.NewEnvelope(payloadType, payload)
	if err := trust.Sign(env, signers...); err != nil {
		s.t.Fatal(err)
	}
	b, err := trust.MarshalEnvelope(env)
	if err != nil {
		s.t.Fatal(err)
	}
	return b
}

func (s *script) signer(td *datadriven.TestData, def string) []trust.Signer {
	name := def
	if td.HasArg("signer") {
		td.ScanArgs(s.t, "signer", &name)
	}
	switch name {
	case "seed":
		return []trust.Signer{s.seed}
	case "seed2":
		return []trust.Signer{s.seed2}
	case "both":
		return []trust.Signer{s.seed, s.seed2}
	case "bridge":
		return []trust.Signer{s.bridge}
	case "strange":
		return []trust.Signer{s.strange}
	}
	s.t.Fatalf("%s: unknown signer %q", td.Pos, name)
	return nil
}

func arg(td *datadriven.TestData, name, def string) string {
	for _, a := range td.CmdArgs {
		if a.Key == name {
			return strings.Join(a.Vals, ",")
		}
	}
	return def
}

func uintArg(t *testing.T, td *datadriven.TestData, name string, def uint64) uint64 {
	v := arg(td, name, "")
	if v == "" {
		return def
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		t.Fatalf("%s: %s=%q: %v", td.Pos, name, v, err)
	}
	return n
}

func (s *script) msg(td *datadriven.TestData, name string) []byte {
	b, ok := s.msgs[name]
	if !ok {
		s.t.Fatalf("%s: no envelope named %q", td.Pos, name)
	}
	return b
}

func (s *script) want(td *datadriven.TestData, name string) Want {
	p, ok := s.payloads[name]
	if !ok {
		s.t.Fatalf("%s: no snapshot named %q", td.Pos, name)
	}
	view := &bundlev1.HeaderView{}
	if err := proto.Unmarshal(p, view); err != nil {
		s.t.Fatal(err)
	}
	return Want{Hash: bundle.Hash(p), Epoch: view.GetHeader().GetEpoch(), Version: view.GetHeader().GetVersion(), Size: uint64(len(p))}
}

func peers(v string) []peer.ID {
	var out []peer.ID
	for _, p := range strings.Split(v, ",") {
		if p != "" {
			out = append(out, peer.ID(p))
		}
	}
	return out
}

func (s *script) name(d trust.Digest) string {
	if n, ok := s.names[d]; ok {
		return n
	}
	return d.String()[:15]
}

func (s *script) print(out []Output) string {
	var b strings.Builder
	for _, o := range out {
		switch o := o.(type) {
		case Verdict:
			fmt.Fprintf(&b, "verdict %s\n", map[p2p.Verdict]string{p2p.Accept: "accept", p2p.Ignore: "ignore", p2p.Reject: "reject"}[o.Verdict])
		case Fetch:
			fmt.Fprintf(&b, "fetch %s from %s via %s\n", s.name(o.Want.Hash), string(o.From), o.Via)
		case Accepted:
			fmt.Fprintf(&b, "accepted %s via %s\n", s.name(o.Held.Verified.Held), o.Via)
		case Refused:
			fmt.Fprintf(&b, "refused from %q via %s: %s\n", string(o.From), o.Via, o.Reason)
		case Offer:
			h := o.Held
			fmt.Fprintf(&b, "offer %s stream %q (epoch %d, v%d) seq %d\n", s.name(h.Verified.Held), h.Key(), h.Verified.Header.GetEpoch(), h.Verified.Header.GetVersion(), h.Seq)
		case Persist:
			h := s.core.Current(o.Key)
			s.disk[o.Key] = h.Wire()
			fmt.Fprintf(&b, "persist stream %q\n", o.Key)
		case Relay:
			fmt.Fprintf(&b, "relay %s\n", s.proofName(o.Proof))
		case SyncWith:
			fmt.Fprintf(&b, "sync-with %s\n", string(o.Peer))
		case AskHeads:
			fmt.Fprintf(&b, "ask-heads %v\n", ids(o.Peers))
		case Ban:
			fmt.Fprintf(&b, "ban %s for %s\n", string(o.Peer), o.For)
		case RoundDone:
			fmt.Fprintf(&b, "round-done adopted %d\n", o.Adopted)
		default:
			s.t.Fatalf("unprinted output %T", o)
		}
	}
	return b.String()
}

func ids(ps []peer.ID) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, string(p))
	}
	return out
}

func (s *script) proofName(p []byte) string {
	for n, m := range s.msgs {
		if slices.Equal(m, p) {
			return n
		}
	}
	return "?"
}

func (s *script) state() string {
	var b strings.Builder
	for _, h := range s.core.Streams() {
		fmt.Fprintf(&b, "held %q %s (epoch %d, v%d) seq %d from-lkg %v\n", h.Key(), s.name(h.Verified.Held), h.Verified.Header.GetEpoch(), h.Verified.Header.GetVersion(), h.Seq, h.FromCache)
	}
	acc, rej := s.core.Counts()
	fmt.Fprintf(&b, "accepted %v\nrejected %v\n", sorted(acc), sorted(rej))
	var banned []string
	for p := range s.core.bans.until {
		if s.core.bans.banned(p, s.now) {
			banned = append(banned, string(p))
		}
	}
	if len(banned) > 0 {
		slices.Sort(banned)
		fmt.Fprintf(&b, "banned %v\n", banned)
	}
	return b.String()
}

func sorted(m map[string]uint64) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(parts)
	return "[" + strings.Join(parts, " ") + "]"
}

func (s *script) run(t *testing.T, td *datadriven.TestData) string {
	switch td.Cmd {
	case "bundle":
		// bundle NAME version=N [epoch=E] [caps=a,b] [ns=NS] [signer=seed|bridge|strange] [routes=N]
		name := td.CmdArgs[0].Key
		hdr := &bundlev1.BundleHeader{
			SchemaVersion: 1, Domain: arg(td, "domain", "prod"), Epoch: uintArg(t, td, "epoch", 1), Version: uintArg(t, td, "version", 1),
			IssuedAt: timestamppb.New(t0.Add(-time.Minute)), ExpiresAt: timestamppb.New(t0.Add(24 * time.Hour)),
		}
		if caps := arg(td, "caps", ""); caps != "" {
			hdr.RequiredCapabilities = strings.Split(caps, ",")
		}
		b := &bundlev1.Bundle{Header: hdr}
		ns := arg(td, "ns", "shop")
		for i := range uintArg(t, td, "routes", 2) {
			b.Routes = append(b.Routes, &bundlev1.Route{
				Metadata: &bundlev1.Metadata{Name: fmt.Sprintf("r%d-v%d", i, hdr.GetVersion()), Namespace: ns},
				Spec:     &bundlev1.RouteSpec{Cluster: "api", Match: &bundlev1.RouteMatch{Hosts: []string{fmt.Sprintf("r%d.%s.example", i, ns)}}},
			})
		}
		p, err := bundle.Encode(b)
		if err != nil {
			t.Fatal(err)
		}
		s.payloads[name], s.names[bundle.Hash(p)] = p, name
		s.msgs[name] = s.seal(trust.PayloadBundle, p, s.signer(td, "seed")...)
		if arg(td, "signer", "") == "bridge" {
			s.sources[name] = "bridge/edge"
		}
		return ""
	case "delta":
		// delta NAME from=BASE to=TARGET [base-as=OTHER] (base-as signs a delta from BASE
		// that claims OTHER as its base: a mix-and-match)
		name := td.CmdArgs[0].Key
		base, target := s.payloads[arg(td, "from", "")], s.payloads[arg(td, "to", "")]
		d, err := bundle.NewDelta(base, target)
		if err != nil {
			t.Fatal(err)
		}
		if other := arg(td, "base-as", ""); other != "" {
			h := bundle.Hash(s.payloads[other])
			d.BaseHash = h[:]
		}
		p, err := bundle.EncodeDelta(d)
		if err != nil {
			t.Fatal(err)
		}
		s.msgs[name] = s.seal(trust.PayloadDelta, p, s.signer(td, "seed")...)
		return ""
	case "announce":
		// announce NAME of=SNAPSHOT
		name := td.CmdArgs[0].Key
		p := s.payloads[arg(td, "of", "")]
		view := &bundlev1.HeaderView{}
		if err := proto.Unmarshal(p, view); err != nil {
			t.Fatal(err)
		}
		h := bundle.Hash(p)
		a, err := proto.Marshal(&bundlev1.Announce{Header: view.GetHeader(), SnapshotHash: h[:], SnapshotSize: uint64(len(p))})
		if err != nil {
			t.Fatal(err)
		}
		s.msgs[name] = s.seal(trust.PayloadAnnounce, a, s.signer(td, "seed")...)
		return ""
	case "rotate":
		// rotate NAME version=N seeds=seed|seed2|both: root version N, signed by the root key
		var keys []trust.PublicKey
		for _, k := range s.signer(td, "seed") {
			keys = append(keys, k.(*trust.PrivateKey).Public())
		}
		if arg(td, "seeds", "") != "" {
			keys = nil
			for _, n := range strings.Split(arg(td, "seeds", ""), ",") {
				keys = append(keys, map[string]*trust.PrivateKey{"seed": s.seed, "seed2": s.seed2}[n].Public())
			}
		}
		s.roots[td.CmdArgs[0].Key] = s.signedRoot(uintArg(t, td, "version", 2), keys...)
		return ""
	case "control":
		// control NAME version=N [roots=R1,R2]: a control message signed by the CA role
		var roots [][]byte
		if r := arg(td, "roots", ""); r != "" {
			for _, n := range strings.Split(r, ",") {
				roots = append(roots, s.roots[n])
			}
		}
		p, err := proto.Marshal(&identityv1.Control{
			Header: &bundlev1.BundleHeader{SchemaVersion: 1, Domain: "prod", Epoch: 1, Version: uintArg(t, td, "version", 1),
				IssuedAt: timestamppb.New(t0.Add(-time.Minute)), ExpiresAt: timestamppb.New(t0.Add(24 * time.Hour))},
			Roots: roots,
		})
		if err != nil {
			t.Fatal(err)
		}
		name := td.CmdArgs[0].Key
		s.payloads[name], s.names[bundle.Hash(p)] = p, name
		s.msgs[name] = s.seal(trust.PayloadControl, p, s.ca)
		return ""
	case "raw":
		// raw NAME: the input's bytes as a message
		s.msgs[td.CmdArgs[0].Key] = []byte(td.Input)
		return ""
	case "gossip":
		// gossip MSG from=PEER
		return s.print(s.core.Step(Gossip{At: s.now, From: peer.ID(arg(td, "from", "p1")), Data: s.msg(td, td.CmdArgs[0].Key)}))
	case "fetched":
		// fetched want=SNAPSHOT body=MSG from=PEER via=sync|gossip [payload=SNAPSHOT]
		hb := &syncv1.HeldBundle{Proof: s.msg(td, arg(td, "body", ""))}
		if p := arg(td, "payload", ""); p != "" {
			hb.Payload = s.payloads[p]
		}
		return s.print(s.core.Step(Fetched{At: s.now, From: peer.ID(arg(td, "from", "p1")), Via: Via(arg(td, "via", "sync")),
			Want: s.want(td, arg(td, "want", "")), Held: hb}))
	case "fetch-failed":
		// fetch-failed want=SNAPSHOT from=PEER err=not-found|timeout
		err := fmt.Errorf("timeout")
		if arg(td, "err", "") == "not-found" {
			err = p2p.ErrNotFound
		}
		return s.print(s.core.Step(FetchFailed{At: s.now, From: peer.ID(arg(td, "from", "p1")), Want: s.want(td, arg(td, "want", "")), Err: err}))
	case "sync-round":
		// sync-round peers=a,b,c [bootstrap=c] [all]
		return s.print(s.core.Step(SyncRound{At: s.now, Peers: peers(arg(td, "peers", "")), Bootstrap: peers(arg(td, "bootstrap", "")), All: td.HasArg("all")}))
	case "heads":
		// heads PEER=SNAPSHOT[,SNAPSHOT] ... (a snapshot name prefixed with "bad-" claims
		// a hash of the wrong length)
		var answers []Answer
		for _, a := range td.CmdArgs {
			ans := Answer{From: peer.ID(a.Key)}
			for _, n := range a.Vals {
				bad := strings.HasPrefix(n, "bad-")
				w := s.want(td, strings.TrimPrefix(n, "bad-"))
				view := &bundlev1.HeaderView{}
				if err := proto.Unmarshal(s.payloads[strings.TrimPrefix(n, "bad-")], view); err != nil {
					t.Fatal(err)
				}
				hash := w.Hash[:]
				if bad {
					hash = hash[:7]
				}
				source := s.sources[strings.TrimPrefix(n, "bad-")]
				ans.Heads = append(ans.Heads, &syncv1.Head{Epoch: w.Epoch, Version: w.Version, Hash: hash, Size: w.Size,
					RequiredCapabilities: view.GetHeader().GetRequiredCapabilities(), Source: source})
			}
			answers = append(answers, ans)
		}
		return s.print(s.core.Step(Heads{At: s.now, Answers: answers}))
	case "restart":
		// restart: a new core loads what the old one persisted, verified as at start.
		lenient, err := trust.NewVerifier(trust.Config{Root: s.root, Clock: fixedClock(s.now), AllowExpired: true})
		if err != nil {
			t.Fatal(err)
		}
		var items []Loaded
		for _, k := range slices.Sorted(maps.Keys(s.disk)) {
			hb := s.disk[k]
			vb, err := lenient.VerifyHeld(hb.GetProof(), hb.GetPayload())
			if err != nil {
				t.Fatalf("%s: persisted %q does not verify: %v", td.Pos, k, err)
			}
			items = append(items, Loaded{Verified: vb, Held: hb, Modified: s.now, File: k})
		}
		s.restart()
		return s.print(s.core.Step(Load{At: s.now, Items: items}))
	case "advance":
		d, err := time.ParseDuration(td.CmdArgs[0].Key)
		if err != nil {
			t.Fatal(err)
		}
		s.now = s.now.Add(d)
		return ""
	case "state":
		return s.state()
	}
	t.Fatalf("%s: unknown command %q", td.Pos, td.Cmd)
	return ""
}

type fixedClock time.Time

func (c fixedClock) Now() time.Time { return time.Time(c) }

// TestCore replays the message-sequence scripts in testdata/core: each input stepped
// into a core and the decisions it returns (rewrite with -rewrite after a deliberate
// change, then read the diff).
func TestCore(t *testing.T) {
	datadriven.Walk(t, "testdata/core", func(t *testing.T, path string) {
		s := newScript(t)
		datadriven.RunTest(t, path, func(t *testing.T, td *datadriven.TestData) string { return s.run(t, td) })
	})
}
