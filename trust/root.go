package trust

import (
	"cmp"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	trustv1 "meshkit.dev/meshkit/proto/meshkit/trust/v1"
)

// RootSchemaVersion is the DomainRoot schema this package reads and writes.
const RootSchemaVersion = 1

var domainRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$`)

// ValidDomain checks a control-domain id: 1–63 lowercase letters, digits, '.' or '-',
// starting and ending with a letter or digit.
func ValidDomain(d string) error {
	if !domainRE.MatchString(d) {
		return fmt.Errorf("trust: domain %q is not valid: use 1-63 lowercase letters, digits, '.' or '-', starting and ending with a letter or digit", d)
	}
	return nil
}

// RootSpec describes a domain root to build.
type RootSpec struct {
	Domain        string
	Version       uint64
	IssuedAt      time.Time
	ExpiresAt     time.Time
	RootKeys      []PublicKey
	RootThreshold int
	SeedKeys      []PublicKey
	SeedThreshold int
	CAKeys        []PublicKey
	CAThreshold   int
	Bridges       []BridgeSpec
}

// BridgeSpec delegates publishing into Namespaces to a bridge's keys.
type BridgeSpec struct {
	Name       string
	Keys       []PublicKey
	Threshold  int
	Namespaces []string
}

// BuildRoot turns spec into a canonical, validated DomainRoot (keys and roles sorted).
func BuildRoot(spec RootSpec) (*trustv1.DomainRoot, error) {
	keys := map[string]PublicKey{}
	addRole := func(t trustv1.RoleType, name string, ks []PublicKey, threshold int, ns []string) *trustv1.Role {
		role := &trustv1.Role{Type: t, Name: name, Threshold: uint32(max(threshold, 0)), Namespaces: slices.Sorted(slices.Values(ns))}
		for _, k := range ks {
			keys[k.ID] = k
			role.KeyIds = append(role.KeyIds, k.ID)
		}
		slices.Sort(role.KeyIds)
		role.KeyIds = slices.Compact(role.KeyIds)
		return role
	}
	root := &trustv1.DomainRoot{
		SchemaVersion:      RootSchemaVersion,
		Domain:             spec.Domain,
		Version:            spec.Version,
		IssuedAt:           timestamppb.New(spec.IssuedAt.UTC().Truncate(time.Second)),
		ExpiresAt:          timestamppb.New(spec.ExpiresAt.UTC().Truncate(time.Second)),
		ConsistentSnapshot: true,
	}
	root.Roles = append(root.Roles,
		addRole(trustv1.RoleType_ROLE_TYPE_ROOT, "root", spec.RootKeys, spec.RootThreshold, nil),
		addRole(trustv1.RoleType_ROLE_TYPE_SEED, "seed", spec.SeedKeys, spec.SeedThreshold, nil))
	if len(spec.CAKeys) > 0 {
		root.Roles = append(root.Roles, addRole(trustv1.RoleType_ROLE_TYPE_CA, "ca", spec.CAKeys, spec.CAThreshold, nil))
	}
	for _, b := range spec.Bridges {
		root.Roles = append(root.Roles, addRole(trustv1.RoleType_ROLE_TYPE_BRIDGE, b.Name, b.Keys, b.Threshold, b.Namespaces))
	}
	slices.SortFunc(root.Roles, func(a, b *trustv1.Role) int {
		return cmp.Or(cmp.Compare(a.Type, b.Type), cmp.Compare(a.Name, b.Name))
	})
	for _, id := range slices.Sorted(maps.Keys(keys)) {
		root.Keys = append(root.Keys, &trustv1.PublicKey{KeyId: id, Algorithm: trustv1.KeyAlgorithm_KEY_ALGORITHM_ED25519, PublicKey: keys[id].Key})
	}
	if _, err := indexRoot(root); err != nil {
		return nil, err
	}
	return root, nil
}

// RootEnvelope encodes root deterministically into an unsigned envelope.
func RootEnvelope(root *trustv1.DomainRoot) (*trustv1.Envelope, error) {
	payload, err := proto.MarshalOptions{Deterministic: true}.Marshal(root)
	if err != nil {
		return nil, fmt.Errorf("trust: encode root: %w", err)
	}
	return NewEnvelope(PayloadRoot, payload), nil
}

// Root is a domain root whose signatures have been verified.
type Root struct {
	msg    *trustv1.DomainRoot
	keys   map[string]ed25519.PublicKey
	digest Digest
}

// Domain is the control domain the root governs.
func (r *Root) Domain() string { return r.msg.GetDomain() }

// Version is the root's version.
func (r *Root) Version() uint64 { return r.msg.GetVersion() }

// ExpiresAt is when the root stops being trusted.
func (r *Root) ExpiresAt() time.Time { return r.msg.GetExpiresAt().AsTime() }

// Digest is the SHA-256 of the root's payload.
func (r *Root) Digest() Digest { return r.digest }

// Proto returns a copy of the root message.
func (r *Root) Proto() *trustv1.DomainRoot { return proto.Clone(r.msg).(*trustv1.DomainRoot) }

// Roles returns the roles of type t.
func (r *Root) Roles(t trustv1.RoleType) []*trustv1.Role {
	var out []*trustv1.Role
	for _, role := range r.msg.GetRoles() {
		if role.GetType() == t {
			out = append(out, role)
		}
	}
	return out
}

// RoleKeys returns the keys of every role of type t, sorted by id.
func (r *Root) RoleKeys(t trustv1.RoleType) []PublicKey {
	var out []PublicKey
	for _, role := range r.Roles(t) {
		for _, id := range role.GetKeyIds() {
			if k, ok := r.keys[id]; ok && !slices.ContainsFunc(out, func(p PublicKey) bool { return p.ID == id }) {
				out = append(out, PublicKey{ID: id, Key: k})
			}
		}
	}
	slices.SortFunc(out, func(a, b PublicKey) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// roleOf returns the first role of type t (the ROOT role is unique by validation).
func (r *Root) roleOf(t trustv1.RoleType) *trustv1.Role {
	if roles := r.Roles(t); len(roles) > 0 {
		return roles[0]
	}
	return nil
}

// VerifyRoot verifies a root taken on trust (pinned out of band): it must be well formed
// and signed by the threshold of its own root role. Expiry is not checked here: an expired
// root freezes the Verifier, which refuses bundles with ErrRootExpired.
func VerifyRoot(b []byte) (*Root, error) {
	env, r, err := decodeRoot(b)
	if err != nil {
		return nil, err
	}
	if err := r.checkRootSignatures(env, r, "its own"); err != nil {
		return nil, err
	}
	return r, nil
}

// VerifyNext verifies a rotation from r: the next root must govern the same domain, have
// version r.Version()+1, and be signed by the root-role threshold of both r and itself.
func (r *Root) VerifyNext(b []byte) (*Root, error) {
	env, next, err := decodeRoot(b)
	if err != nil {
		return nil, err
	}
	if next.Domain() != r.Domain() {
		return nil, refuse(ErrWrongDomain, "root is for domain %q, the trusted root is for %q", next.Domain(), r.Domain())
	}
	if next.Version() != r.Version()+1 {
		return nil, refuse(ErrRootVersion, "root version %d cannot follow trusted version %d (must be %d)", next.Version(), r.Version(), r.Version()+1)
	}
	if err := next.checkRootSignatures(env, r, fmt.Sprintf("the previous (v%d)", r.Version())); err != nil {
		return nil, err
	}
	if err := next.checkRootSignatures(env, next, "its own"); err != nil {
		return nil, err
	}
	return next, nil
}

// VerifyRootChain verifies trusted with VerifyRoot and then each rotation in order.
func VerifyRootChain(trusted []byte, rotations ...[]byte) (*Root, error) {
	r, err := VerifyRoot(trusted)
	if err != nil {
		return nil, err
	}
	for i, b := range rotations {
		if r, err = r.VerifyNext(b); err != nil {
			return nil, fmt.Errorf("root rotation %d: %w", i+1, err)
		}
	}
	return r, nil
}

func (r *Root) checkRootSignatures(env *trustv1.Envelope, signerRoot *Root, which string) error {
	role := signerRoot.roleOf(trustv1.RoleType_ROLE_TYPE_ROOT)
	check := checkSignatures(env, r.digest, signerRoot.keys)
	need := int(role.GetThreshold())
	if got := check.count(role.GetKeyIds()); got < need {
		return classify(check, role.GetKeyIds(), fmt.Sprintf("root v%d has %d of the %d signatures required by %s root role", r.Version(), got, need, which))
	}
	return nil
}

// classify explains why an envelope's signatures fell short of a role's threshold.
func classify(check sigCheck, roleKeys []string, shortfall string) error {
	if len(check.bad) > 0 {
		return refuse(ErrBadSignature, "signature by key %s does not verify (%s)", shortID(check.bad[0]), shortfall)
	}
	inRole := 0
	for id := range check.valid {
		if slices.Contains(roleKeys, id) {
			inRole++
		}
	}
	if len(check.valid) > 0 && inRole == 0 {
		return refuse(ErrKeyRole, "signed only by keys outside the required role (%s)", shortfall)
	}
	if len(check.valid) == 0 && len(check.unknown) > 0 {
		return refuse(ErrUnknownKey, "signed only by unknown key %s (%s)", shortID(check.unknown[0]), shortfall)
	}
	return refuse(ErrThreshold, "%s", shortfall)
}

func decodeRoot(b []byte) (*trustv1.Envelope, *Root, error) {
	env, err := DecodeEnvelope(b, maxRootBytes)
	if err != nil {
		return nil, nil, err
	}
	if env.GetPayloadType() != PayloadRoot {
		return nil, nil, refuse(ErrPayloadType, "want %s, got %q", PayloadRoot, env.GetPayloadType())
	}
	msg := &trustv1.DomainRoot{}
	if err := proto.Unmarshal(env.GetPayload(), msg); err != nil {
		return nil, nil, refuse(ErrMalformed, "root payload: %v", err)
	}
	r, err := indexRoot(msg)
	if err != nil {
		return nil, nil, err
	}
	r.digest = sha256.Sum256(env.GetPayload())
	return env, r, nil
}

// maxRootBytes bounds a root envelope: a root lists keys and roles, never megabytes.
const maxRootBytes = 1 << 20

// indexRoot validates msg and indexes its keys.
func indexRoot(msg *trustv1.DomainRoot) (*Root, error) {
	bad := func(format string, args ...any) (*Root, error) {
		return nil, refuse(ErrMalformed, "root: "+format, args...)
	}
	if msg.GetSchemaVersion() != RootSchemaVersion {
		return bad("schema version %d, this build reads %d", msg.GetSchemaVersion(), RootSchemaVersion)
	}
	if err := ValidDomain(msg.GetDomain()); err != nil {
		return bad("%v", err)
	}
	if msg.GetVersion() < 1 {
		return bad("version must be at least 1")
	}
	if msg.GetIssuedAt() == nil || msg.GetExpiresAt() == nil {
		return bad("issued_at and expires_at are required")
	}
	if !msg.GetExpiresAt().AsTime().After(msg.GetIssuedAt().AsTime()) {
		return bad("expires_at %s is not after issued_at %s", msg.GetExpiresAt().AsTime().Format(time.RFC3339), msg.GetIssuedAt().AsTime().Format(time.RFC3339))
	}
	r := &Root{msg: msg, keys: make(map[string]ed25519.PublicKey, len(msg.GetKeys()))}
	prev := ""
	for i, k := range msg.GetKeys() {
		if k.GetAlgorithm() != trustv1.KeyAlgorithm_KEY_ALGORITHM_ED25519 {
			return bad("keys[%d]: algorithm %s is not supported", i, k.GetAlgorithm())
		}
		id, err := KeyID(k.GetPublicKey())
		if err != nil {
			return bad("keys[%d]: %v", i, err)
		}
		if id != k.GetKeyId() {
			return bad("keys[%d]: key_id %s does not match the key (%s)", i, shortID(k.GetKeyId()), shortID(id))
		}
		if i > 0 && id <= prev {
			return bad("keys must be sorted by key_id without duplicates (keys[%d])", i)
		}
		prev = id
		r.keys[id] = ed25519.PublicKey(k.GetPublicKey())
	}
	counts := map[trustv1.RoleType]int{}
	for i, role := range msg.GetRoles() {
		if i > 0 {
			p := msg.GetRoles()[i-1]
			if c := cmp.Or(cmp.Compare(p.GetType(), role.GetType()), cmp.Compare(p.GetName(), role.GetName())); c >= 0 {
				return bad("roles must be sorted by (type, name) without duplicates (roles[%d])", i)
			}
		}
		counts[role.GetType()]++
		if role.GetType() == trustv1.RoleType_ROLE_TYPE_UNSPECIFIED {
			return bad("roles[%d]: type is unspecified", i)
		}
		if role.GetName() == "" {
			return bad("roles[%d]: name is required", i)
		}
		n := len(role.GetKeyIds())
		if role.GetThreshold() < 1 || int(role.GetThreshold()) > n {
			return bad("role %q: threshold %d must be between 1 and its %d keys", role.GetName(), role.GetThreshold(), n)
		}
		for j, id := range role.GetKeyIds() {
			if _, ok := r.keys[id]; !ok {
				return bad("role %q: key %s is not in keys", role.GetName(), shortID(id))
			}
			if j > 0 && id <= role.GetKeyIds()[j-1] {
				return bad("role %q: key_ids must be sorted without duplicates", role.GetName())
			}
		}
		isBridge := role.GetType() == trustv1.RoleType_ROLE_TYPE_BRIDGE
		if isBridge && len(role.GetNamespaces()) == 0 {
			return bad("bridge role %q: at least one namespace is required", role.GetName())
		}
		if !isBridge && len(role.GetNamespaces()) > 0 {
			return bad("role %q: only bridge roles have namespaces", role.GetName())
		}
		if !slices.IsSorted(role.GetNamespaces()) {
			return bad("role %q: namespaces must be sorted", role.GetName())
		}
	}
	if counts[trustv1.RoleType_ROLE_TYPE_ROOT] != 1 {
		return bad("exactly one root role is required, found %d", counts[trustv1.RoleType_ROLE_TYPE_ROOT])
	}
	if counts[trustv1.RoleType_ROLE_TYPE_SEED] < 1 {
		return bad("at least one seed role is required")
	}
	return r, nil
}
