package trust

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
	identityv1 "meshkit.dev/meshkit/proto/meshkit/identity/v1"
	trustv1 "meshkit.dev/meshkit/proto/meshkit/trust/v1"
)

// BundleSchemaVersion is the bundle schema this build reads.
const BundleSchemaVersion = 1

// DefaultClockSkew is how far in the future a bundle's issued_at may be.
const DefaultClockSkew = 5 * time.Minute

// Clock tells the time. Inject one in tests; nil means the system clock.
type Clock interface {
	Now() time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Config configures a Verifier.
type Config struct {
	// Root is the domain's trusted root (from VerifyRoot or VerifyRootChain). Required.
	Root *Root
	// Clock tells the time; nil means the system clock.
	Clock Clock
	// MaxEnvelopeBytes refuses larger envelopes before parsing; 0 means DefaultMaxEnvelopeBytes.
	MaxEnvelopeBytes int
	// ClockSkew tolerated for issued_at in the future; 0 means DefaultClockSkew.
	ClockSkew time.Duration
	// State is the high-water marks to start from (as saved from State()); may be empty.
	State State
	// AllowExpired accepts bundles whose validity or root has expired and flags them
	// (Verified.Expired). Only for re-verifying a last-known-good copy on load: an agent
	// keeps serving an expired LKG, reported stale, rather than nothing.
	AllowExpired bool
}

func (c *Config) validate() error {
	if c.Root == nil {
		return errors.New("trust: Config.Root is required")
	}
	if c.MaxEnvelopeBytes < 0 || c.ClockSkew < 0 {
		return errors.New("trust: Config.MaxEnvelopeBytes and Config.ClockSkew must not be negative")
	}
	if c.State.Domain != "" && c.State.Domain != c.Root.Domain() {
		return fmt.Errorf("trust: state is for domain %q, the root for %q", c.State.Domain, c.Root.Domain())
	}
	if c.State.RootVersion > c.Root.Version() {
		return refuse(ErrRootVersion, "state has seen root v%d, the given root is older (v%d); supply the rotations", c.State.RootVersion, c.Root.Version())
	}
	return nil
}

// Mark is the newest (epoch, version) accepted for one capability variant.
type Mark struct {
	Epoch   uint64 `json:"epoch"`
	Version uint64 `json:"version"`
	// Hash is the SHA-256 of the accepted bundle's payload, "sha256:<hex>".
	Hash string `json:"hash"`
}

// newer reports whether (epoch, version) is strictly greater than m.
func (m Mark) newer(epoch, version uint64) bool { return Newer(epoch, version, m.Epoch, m.Version) }

// Newer is the one order of bundles within a stream: (epoch, version) strictly after
// (heldEpoch, heldVersion). An epoch outranks every version of the epochs before it.
func Newer(epoch, version, heldEpoch, heldVersion uint64) bool {
	return epoch > heldEpoch || (epoch == heldEpoch && version > heldVersion)
}

// State is what a Verifier must remember across restarts to refuse replays.
type State struct {
	Domain      string `json:"domain"`
	RootVersion uint64 `json:"root_version"`
	// Marks by capability variant (the bundle's required capabilities joined with ",").
	Marks map[string]Mark `json:"marks"`
}

// Verified is an envelope that passed every check. Its Payload is exactly the bytes that
// were verified: decode the bundle or delta from it, never from another copy. Payload
// aliases the buffer given to Verify, which must not be modified afterwards.
type Verified struct {
	PayloadType string
	Payload     []byte
	Header      *bundlev1.BundleHeader
	Digest      Digest
	// Held is the hash of the bundle held once this is applied: Digest for a snapshot,
	// the signed target_hash for a delta. Commit records it as the mark's hash.
	Held Digest
	// Variant is the key the mark is kept under: the capability variant (the required
	// capabilities joined with ","), prefixed with Source for any stream but the seeds'.
	Variant string
	// Source names the signed stream: "" for the domain's seeds, "bridge/NAME" for a
	// bridge. Each stream has its own (epoch, version) order, so a bridge can neither
	// advance nor replace what the seeds publish.
	Source string
	// Role is the role whose keys signed (seed or bridge).
	Role *trustv1.Role
	// Delta is set when PayloadType is PayloadDelta. Its header and upserts stay encoded:
	// an agent applies them as bytes (bundle.ApplyDeltaView), and the target's hash, which
	// the signature covers, vouches for what they produce.
	Delta *bundlev1.BundleDeltaView
	// Announce is set when PayloadType is PayloadAnnounce; Held is then its snapshot hash.
	Announce *bundlev1.Announce
	// Control is set when PayloadType is PayloadControl.
	Control *identityv1.Control
	// NextRoot is the newest root a control message's rotations lead to, when newer than
	// the root in force; Commit adopts it.
	NextRoot *Root
	baseRoot uint64 // the version NextRoot was walked from
	// Expired is set when the bundle or the root has expired (only with AllowExpired).
	Expired bool
}

// Verifier decides whether envelopes of one domain may be used. It holds the domain's
// state: the trusted root and the newest (epoch, version) accepted per capability variant.
// It is safe for concurrent use.
type Verifier struct {
	clock        Clock
	maxBytes     int
	skew         time.Duration
	allowExpired bool

	mu    sync.Mutex // guards the following
	root  *Root
	marks map[string]Mark
}

// NewVerifier returns a Verifier for cfg.Root's domain.
func NewVerifier(cfg Config) (*Verifier, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	v := &Verifier{
		clock:        cfg.Clock,
		maxBytes:     cfg.MaxEnvelopeBytes,
		skew:         cfg.ClockSkew,
		allowExpired: cfg.AllowExpired,
		root:         cfg.Root,
		marks:        maps.Clone(cfg.State.Marks),
	}
	if v.clock == nil {
		v.clock = systemClock{}
	}
	if v.maxBytes == 0 {
		v.maxBytes = DefaultMaxEnvelopeBytes
	}
	if v.skew == 0 {
		v.skew = DefaultClockSkew
	}
	if v.marks == nil {
		v.marks = map[string]Mark{}
	}
	return v, nil
}

// Root returns the root in force.
func (v *Verifier) Root() *Root {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.root
}

// State returns a copy of what must be persisted to refuse replays after a restart.
func (v *Verifier) State() State {
	v.mu.Lock()
	defer v.mu.Unlock()
	return State{Domain: v.root.Domain(), RootVersion: v.root.Version(), Marks: maps.Clone(v.marks)}
}

// RotateRoot verifies b as the successor of the root in force and adopts it. As TUF does
// against fast-forward attacks, when the rotation removes any key that could sign bundles,
// the high-water marks are reset: a compromised old key may have signed an absurdly high
// version, and only the new keys' bundles can verify from now on.
func (v *Verifier) RotateRoot(b []byte) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	next, err := v.root.VerifyNext(b)
	if err != nil {
		return err
	}
	v.adoptRootLocked(next)
	return nil
}

func (v *Verifier) adoptRootLocked(next *Root) {
	if removed := publishingKeys(v.root).Difference(publishingKeys(next)); len(removed) > 0 {
		v.marks = map[string]Mark{}
	}
	v.root = next
}

type keySet map[string]bool

func (s keySet) Difference(o keySet) keySet {
	out := keySet{}
	for k := range s {
		if !o[k] {
			out[k] = true
		}
	}
	return out
}

func publishingKeys(r *Root) keySet {
	s := keySet{}
	for _, role := range r.msg.GetRoles() {
		switch role.GetType() {
		case trustv1.RoleType_ROLE_TYPE_SEED, trustv1.RoleType_ROLE_TYPE_BRIDGE, trustv1.RoleType_ROLE_TYPE_CA:
			for _, id := range role.GetKeyIds() {
				s[id] = true
			}
		}
	}
	return s
}

// Verify checks a bundle or delta envelope against the root in force and the marks held,
// without changing them: call Commit once the content is applied. Checks run in this
// order: size, encoding, payload type, signatures (key, role, threshold), header, domain,
// root expiry, validity window, (epoch, version) order, and for deltas the base.
func (v *Verifier) Verify(b []byte) (*Verified, error) {
	return v.verify(b, modeApply)
}

// VerifyAnnounce checks a signed announce as Verify checks a bundle: signatures, header,
// domain, validity and order against the marks held. Verified.Announce says what to fetch;
// the fetched bundle must still pass Verify or VerifyHeld, and the hashes must match.
// An announce is never committed.
func (v *Verifier) VerifyAnnounce(b []byte) (*Verified, error) {
	return v.verify(b, modeAnnounce)
}

// VerifyHeld checks a bundle held by a peer or on disk: proof is either the signed bundle
// envelope (payload then nil) or a signed delta envelope whose target_hash must be the
// SHA-256 of payload. The delta's base is not checked: the delta is only the signed
// statement that payload is the bundle at its (epoch, version). The result is a snapshot
// (PayloadType PayloadBundle, Payload the bundle) that Commit accepts as Verify's.
func (v *Verifier) VerifyHeld(proof, payload []byte) (*Verified, error) {
	vb, err := v.verify(proof, modeHeld)
	if err != nil {
		return nil, err
	}
	if vb.PayloadType == PayloadBundle || vb.PayloadType == PayloadControl {
		if payload != nil && !bytes.Equal(payload, vb.Payload) {
			return nil, refuse(ErrHashMismatch, "a bundle envelope proves only its own payload")
		}
		return vb, nil
	}
	if got := Digest(sha256.Sum256(payload)); got != vb.Held {
		return nil, refuse(ErrHashMismatch, "payload hashes to %s, the signed delta's target is %s", got, vb.Held)
	}
	view := &bundlev1.HeaderView{}
	if err := (proto.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(payload, view); err != nil {
		return nil, refuse(ErrMalformed, "held bundle header: %v", err)
	}
	if !proto.Equal(view.GetHeader(), vb.Header) {
		return nil, refuse(ErrMalformed, "held bundle header differs from its proof's")
	}
	out := &Verified{PayloadType: PayloadBundle, Payload: payload, Header: vb.Header, Digest: vb.Held, Held: vb.Held, Variant: vb.Variant, Source: vb.Source, Role: vb.Role, Expired: vb.Expired}
	if out.Role.GetType() == trustv1.RoleType_ROLE_TYPE_BRIDGE {
		if err := checkNamespaces(out, out.Role); err != nil {
			return nil, err
		}
	}
	return out, nil
}

type verifyMode int

const (
	modeApply    verifyMode = iota // bundle, or delta onto the held base
	modeAnnounce                   // announce only
	modeHeld                       // bundle, or delta as a proof of its target
)

func (v *Verifier) verify(b []byte, mode verifyMode) (*Verified, error) {
	v.mu.Lock()
	root, marks := v.root, v.marks
	v.mu.Unlock()

	env, err := DecodeEnvelope(b, v.maxBytes)
	if err != nil {
		return nil, err
	}
	pt := env.GetPayloadType()
	switch {
	case mode == modeAnnounce && pt != PayloadAnnounce:
		return nil, refuse(ErrPayloadType, "%q is not an announce", pt)
	case mode != modeAnnounce && pt != PayloadBundle && pt != PayloadDelta && pt != PayloadControl:
		return nil, refuse(ErrPayloadType, "%q is neither a bundle, a delta nor a control message", pt)
	}
	out := &Verified{PayloadType: pt, Payload: env.GetPayload(), Digest: sha256.Sum256(env.GetPayload())}
	if pt == PayloadControl {
		// The roots it carries come first: the signature is checked against the newest,
		// so a message signed by a rotated CA key verifies on an agent that slept through
		// the rotation.
		next := root
		if out.Control, next, err = controlRoot(out.Payload, root); err != nil {
			return nil, err
		}
		if next != root {
			out.NextRoot, out.baseRoot = next, root.Version()
			root = next
		}
		out.Role, err = caRole(env, out.Digest, root)
	} else {
		out.Role, err = signingRole(env, out.Digest, root)
	}
	if err != nil {
		return nil, err
	}
	view := &bundlev1.HeaderView{}
	if err := (proto.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(out.Payload, view); err != nil {
		return nil, refuse(ErrMalformed, "bundle header: %v", err)
	}
	h := view.GetHeader()
	if err := checkHeader(h); err != nil {
		return nil, err
	}
	out.Header = h
	if pt == PayloadControl && len(h.GetRequiredCapabilities()) > 0 {
		return nil, refuse(ErrMalformed, "a control message requires no capabilities")
	}
	out.Source = SourceOf(out.Role)
	out.Variant = VariantKey(out.Source, h.GetRequiredCapabilities())
	if h.GetDomain() != root.Domain() {
		return nil, refuse(ErrWrongDomain, "bundle is for domain %q, this verifier trusts %q", h.GetDomain(), root.Domain())
	}
	now := v.clock.Now()
	if now.After(root.ExpiresAt()) {
		if !v.allowExpired {
			return nil, refuse(ErrRootExpired, "root v%d of %q expired at %s; rotate the root", root.Version(), root.Domain(), root.ExpiresAt().Format(time.RFC3339))
		}
		out.Expired = true
	}
	if exp := h.GetExpiresAt().AsTime(); now.After(exp) {
		if !v.allowExpired {
			return nil, refuse(ErrExpired, "bundle v%d expired at %s", h.GetVersion(), exp.Format(time.RFC3339))
		}
		out.Expired = true
	}
	if iss := h.GetIssuedAt().AsTime(); iss.After(now.Add(v.skew)) {
		return nil, refuse(ErrNotYetValid, "bundle v%d is issued at %s, more than %s ahead of this clock", h.GetVersion(), iss.Format(time.RFC3339), v.skew)
	}
	held, have := marks[out.Variant]
	if err := checkOrder(held, have, h); err != nil {
		return nil, err
	}
	out.Held = out.Digest
	switch pt {
	case PayloadAnnounce:
		a := &bundlev1.Announce{}
		if err := proto.Unmarshal(out.Payload, a); err != nil {
			return nil, refuse(ErrMalformed, "announce: %v", err)
		}
		if len(a.GetSnapshotHash()) != sha256.Size {
			return nil, refuse(ErrMalformed, "announce snapshot_hash must be %d bytes", sha256.Size)
		}
		out.Announce = a
		out.Held = Digest(a.GetSnapshotHash())
		return out, nil
	case PayloadDelta:
		if out.Delta, err = decodeDelta(out.Payload); err != nil {
			return nil, err
		}
		out.Held = Digest(out.Delta.GetTargetHash())
		if mode == modeHeld {
			return out, nil // namespaces are checked on the target bundle by VerifyHeld
		}
	}
	// What a bridge signed is checked before its base: a delta outside the bridge's
	// namespaces is a refusal of the sender whatever this verifier holds.
	if out.Role.GetType() == trustv1.RoleType_ROLE_TYPE_BRIDGE {
		if err := checkNamespaces(out, out.Role); err != nil {
			return nil, err
		}
	}
	if out.Delta != nil && mode == modeApply {
		if err := checkBase(out.Delta, held, have); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// SourceOf names the stream a signing role publishes: "" for a seed role, "bridge/NAME"
// for a bridge role, ControlSource for the CA role.
func SourceOf(role *trustv1.Role) string {
	switch role.GetType() {
	case trustv1.RoleType_ROLE_TYPE_BRIDGE:
		return "bridge/" + role.GetName()
	case trustv1.RoleType_ROLE_TYPE_CA:
		return ControlSource
	}
	return ""
}

// VariantKey is the key of a stream's capability variant: the capabilities joined with
// ",", after "SOURCE|" for any source but the seeds'. The seeds' keys stay the bare
// capability list, as stored marks and last-known-good copies name them.
func VariantKey(source string, caps []string) string {
	key := strings.Join(caps, ",")
	if source != "" {
		key = source + "|" + key
	}
	return key
}

// Commit advances the mark of vb's variant. It refuses, with ErrReplay or ErrRollback,
// when another bundle at or above vb's (epoch, version) was committed since Verify.
func (v *Verifier) Commit(vb *Verified) error {
	if vb.PayloadType == PayloadAnnounce {
		return errors.New("trust: an announce is not committed; commit the bundle it announces")
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	held, have := v.marks[vb.Variant]
	if err := checkOrder(held, have, vb.Header); err != nil {
		return err
	}
	if vb.NextRoot != nil && vb.NextRoot.Version() > v.root.Version() {
		if vb.baseRoot != v.root.Version() {
			return refuse(ErrRootVersion, "control was verified from root v%d, root v%d is in force now", vb.baseRoot, v.root.Version())
		}
		v.adoptRootLocked(vb.NextRoot)
		held, have = v.marks[vb.Variant]
		if err := checkOrder(held, have, vb.Header); err != nil {
			return err
		}
	}
	marks := maps.Clone(v.marks) // Verify reads the map without the lock: never mutate it
	marks[vb.Variant] = Mark{Epoch: vb.Header.GetEpoch(), Version: vb.Header.GetVersion(), Hash: vb.Held.String()}
	v.marks = marks
	return nil
}

func checkOrder(held Mark, have bool, h *bundlev1.BundleHeader) error {
	if !have || held.newer(h.GetEpoch(), h.GetVersion()) {
		return nil
	}
	if held.Epoch == h.GetEpoch() && held.Version == h.GetVersion() {
		return refuse(ErrReplay, "(epoch %d, version %d) is already held", h.GetEpoch(), h.GetVersion())
	}
	return refuse(ErrRollback, "(epoch %d, version %d) is older than held (epoch %d, version %d)", h.GetEpoch(), h.GetVersion(), held.Epoch, held.Version)
}

// signingRole finds the seed or bridge role whose threshold env's signatures meet.
func signingRole(env *trustv1.Envelope, digest Digest, root *Root) (*trustv1.Role, error) {
	if len(env.GetSignatures()) == 0 {
		return nil, refuse(ErrThreshold, "envelope is not signed")
	}
	check := checkSignatures(env, digest, root.keys)
	var eligible []string
	var best string
	hasValid := false
	for _, t := range []trustv1.RoleType{trustv1.RoleType_ROLE_TYPE_SEED, trustv1.RoleType_ROLE_TYPE_BRIDGE} {
		for _, role := range root.Roles(t) {
			got, need := check.count(role.GetKeyIds()), int(role.GetThreshold())
			if got >= need {
				return role, nil
			}
			eligible = append(eligible, role.GetKeyIds()...)
			if best == "" || (got > 0 && !hasValid) {
				best = fmt.Sprintf("%d of the %d signatures role %q requires", got, need, role.GetName())
				hasValid = got > 0
			}
		}
	}
	return nil, classify(check, eligible, best)
}

func checkHeader(h *bundlev1.BundleHeader) error {
	if h == nil {
		return refuse(ErrMalformed, "bundle has no header")
	}
	if h.GetSchemaVersion() != BundleSchemaVersion {
		return refuse(ErrMalformed, "bundle schema version %d, this build reads %d", h.GetSchemaVersion(), BundleSchemaVersion)
	}
	if h.GetIssuedAt() == nil || h.GetExpiresAt() == nil {
		return refuse(ErrMalformed, "bundle must have issued_at and expires_at")
	}
	if err := h.GetIssuedAt().CheckValid(); err != nil {
		return refuse(ErrMalformed, "issued_at: %v", err)
	}
	if err := h.GetExpiresAt().CheckValid(); err != nil {
		return refuse(ErrMalformed, "expires_at: %v", err)
	}
	if h.GetVersion() == 0 {
		return refuse(ErrMalformed, "bundle version must be at least 1")
	}
	caps := h.GetRequiredCapabilities()
	for i, c := range caps {
		if c == "" || strings.ContainsRune(c, ',') || (i > 0 && c <= caps[i-1]) {
			return refuse(ErrMalformed, "required_capabilities must be sorted, unique, non-empty and without ','")
		}
	}
	return nil
}

func decodeDelta(payload []byte) (*bundlev1.BundleDeltaView, error) {
	d := &bundlev1.BundleDeltaView{}
	if err := proto.Unmarshal(payload, d); err != nil {
		return nil, refuse(ErrMalformed, "delta: %v", err)
	}
	if len(d.GetBaseHash()) != sha256.Size || len(d.GetTargetHash()) != sha256.Size {
		return nil, refuse(ErrMalformed, "delta base_hash and target_hash must be %d bytes", sha256.Size)
	}
	return d, nil
}

// checkBase refuses a delta whose base is not the bundle held of its stream and variant.
func checkBase(d *bundlev1.BundleDeltaView, held Mark, have bool) error {
	if !have {
		return refuse(ErrBaseMismatch, "delta from (epoch %d, version %d) but no bundle of this variant is held; fetch a snapshot", d.GetBaseEpoch(), d.GetBaseVersion())
	}
	base := Digest(d.GetBaseHash())
	if held.Epoch != d.GetBaseEpoch() || held.Version != d.GetBaseVersion() || held.Hash != base.String() {
		return refuse(ErrBaseMismatch, "delta base (epoch %d, version %d, %s) is not the held bundle (epoch %d, version %d, %s)",
			d.GetBaseEpoch(), d.GetBaseVersion(), base, held.Epoch, held.Version, held.Hash)
	}
	return nil
}

// checkNamespaces refuses a bridge-signed bundle or delta that touches any namespace
// outside the bridge role's delegation.
func checkNamespaces(vb *Verified, role *trustv1.Role) error {
	allowed := role.GetNamespaces()
	check := func(kind, ns, name string) error {
		if !slices.Contains(allowed, ns) {
			return refuse(ErrNamespace, "bridge %q may publish into %v, but %s %s/%s is in namespace %q", role.GetName(), allowed, kind, ns, name, ns)
		}
		return nil
	}
	if vb.Delta != nil {
		for i, raw := range vb.Delta.GetUpserts() {
			r := &bundlev1.Resource{}
			if err := proto.Unmarshal(raw, r); err != nil {
				return refuse(ErrMalformed, "delta upsert %d: %v", i, err)
			}
			kind, md, err := resourceOf(r.ProtoReflect())
			if err != nil {
				return refuse(ErrNamespace, "delta upsert %d: %v", i, err)
			}
			if err := check("upsert of "+kind, md.GetNamespace(), md.GetName()); err != nil {
				return err
			}
		}
		for _, k := range vb.Delta.GetRemovals() {
			if err := check("removal of "+k.GetKind(), k.GetNamespace(), k.GetName()); err != nil {
				return err
			}
		}
		return nil
	}
	b := &bundlev1.Bundle{}
	if err := proto.Unmarshal(vb.Payload, b); err != nil {
		return refuse(ErrMalformed, "bundle: %v", err)
	}
	return eachResource(b.ProtoReflect(), func(kind string, md *bundlev1.Metadata) error {
		return check(kind, md.GetNamespace(), md.GetName())
	})
}

var metadataName = (&bundlev1.Metadata{}).ProtoReflect().Descriptor().FullName()

// metadataField is the metadata field of a resource message, or nil for a message that is
// not a resource.
func metadataField(md protoreflect.MessageDescriptor) protoreflect.FieldDescriptor {
	f := md.Fields().ByName("metadata")
	if f == nil || f.Message() == nil || f.Message().FullName() != metadataName || f.IsList() {
		return nil
	}
	return f
}

// eachResource calls f with the kind and metadata of every resource of a bundle, found
// through the schema rather than a list of kinds, so a kind added to the schema is
// checked without a change here. It fails closed: a field this build's schema does not
// know (a newer kind), or a field that is neither the header nor a list of resources, is
// refused, since what cannot be seen cannot be checked.
func eachResource(b protoreflect.Message, f func(kind string, md *bundlev1.Metadata) error) error {
	if len(b.GetUnknown()) > 0 {
		return refuse(ErrNamespace, "the bundle holds fields this verifier's schema does not know (a newer resource kind?); they cannot be checked")
	}
	var err error
	b.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Name() == "header" {
			return true
		}
		if !fd.IsList() || fd.Message() == nil || metadataField(fd.Message()) == nil {
			err = refuse(ErrNamespace, "bundle field %s is not a list of resources; it cannot be checked", fd.Name())
			return false
		}
		mf, kind := metadataField(fd.Message()), string(fd.Message().Name())
		list := v.List()
		for i := range list.Len() {
			r := list.Get(i).Message()
			if len(r.GetUnknown()) > 0 {
				err = refuse(ErrNamespace, "a %s holds fields this verifier's schema does not know; it cannot be checked", kind)
				return false
			}
			if err = f(kind, r.Get(mf).Message().Interface().(*bundlev1.Metadata)); err != nil {
				return false
			}
		}
		return true
	})
	return err
}

// resourceOf returns the kind and metadata of a wrapped resource (a delta's upsert),
// refusing a kind this build's schema does not know.
func resourceOf(r protoreflect.Message) (string, *bundlev1.Metadata, error) {
	if len(r.GetUnknown()) > 0 {
		return "", nil, errors.New("the resource is of a kind this verifier's schema does not know")
	}
	od := r.Descriptor().Oneofs().ByName("kind")
	fd := r.WhichOneof(od)
	if fd == nil || fd.Message() == nil || metadataField(fd.Message()) == nil {
		return "", nil, errors.New("the resource has no kind this verifier knows")
	}
	m := r.Get(fd).Message()
	if len(m.GetUnknown()) > 0 {
		return "", nil, fmt.Errorf("a %s holds fields this verifier's schema does not know", fd.Message().Name())
	}
	return string(fd.Message().Name()), m.Get(metadataField(fd.Message())).Message().Interface().(*bundlev1.Metadata), nil
}
