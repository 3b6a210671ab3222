package trust

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	identityv1 "meshkit.dev/meshkit/proto/meshkit/identity/v1"
	trustv1 "meshkit.dev/meshkit/proto/meshkit/trust/v1"
)

// PayloadControl is the domain's trust material (identityv1.Control): the root
// rotations, the CA trust bundle and the revocations, signed by the root's CA role.
const PayloadControl = "application/vnd.meshkit.control.v1+protobuf"

// ControlSource names the control stream; its variant key is ControlVariant.
const ControlSource = "control"

// ControlVariant is the key of the control stream's mark.
var ControlVariant = VariantKey(ControlSource, nil)

// Limits on a control message, checked while it is decoded.
const (
	// MaxControlRoots bounds the root rotations one control message carries.
	MaxControlRoots = 64
	// MaxRevocations bounds the revocation list.
	MaxRevocations = 65536
	// MaxTrustBundleBytes bounds the PEM trust bundle.
	MaxTrustBundleBytes = 256 << 10
)

// controlRoot decodes a control payload and walks its root rotations from root: it
// returns the message and the newest root it leads to (root itself when it carries
// nothing newer). Each rotation must verify after the one before it (TUF: signed by the
// previous version's root role and by its own); those at or below root's version are
// skipped. A chain that starts above root's next version is refused: this verifier slept
// through more rotations than the domain still carries, and needs a newer root file.
func controlRoot(payload []byte, root *Root) (*identityv1.Control, *Root, error) {
	ctl := &identityv1.Control{}
	if err := proto.Unmarshal(payload, ctl); err != nil {
		return nil, nil, refuse(ErrMalformed, "control: %v", err)
	}
	if n := len(ctl.GetRoots()); n > MaxControlRoots {
		return nil, nil, refuse(ErrOversized, "control carries %d root versions; at most %d", n, MaxControlRoots)
	}
	if n := len(ctl.GetRevocations()); n > MaxRevocations {
		return nil, nil, refuse(ErrOversized, "control carries %d revocations; at most %d", n, MaxRevocations)
	}
	if n := len(ctl.GetTrustBundle()); n > MaxTrustBundleBytes {
		return nil, nil, refuse(ErrOversized, "control trust bundle of %d bytes; at most %d", n, MaxTrustBundleBytes)
	}
	cur := root
	for i, rb := range ctl.GetRoots() {
		_, r, err := decodeRoot(rb)
		if err != nil {
			return nil, nil, fmt.Errorf("control root %d: %w", i, err)
		}
		if r.Version() <= cur.Version() {
			continue
		}
		if r.Version() > cur.Version()+1 {
			return nil, nil, refuse(ErrRootVersion, "control's root chain jumps from v%d to v%d; this verifier trusts v%d and cannot walk to it (give it a newer --root)",
				cur.Version(), r.Version(), root.Version())
		}
		if cur, err = cur.VerifyNext(rb); err != nil {
			return nil, nil, fmt.Errorf("control root v%d: %w", r.Version(), err)
		}
	}
	return ctl, cur, nil
}

// caRole finds the CA role whose threshold env's signatures meet.
func caRole(env *trustv1.Envelope, digest Digest, root *Root) (*trustv1.Role, error) {
	if len(env.GetSignatures()) == 0 {
		return nil, refuse(ErrThreshold, "envelope is not signed")
	}
	role := root.roleOf(trustv1.RoleType_ROLE_TYPE_CA)
	if role == nil {
		return nil, refuse(ErrKeyRole, "root v%d of %q delegates no CA role: it signs no control messages", root.Version(), root.Domain())
	}
	check := checkSignatures(env, digest, root.keys)
	got, need := check.count(role.GetKeyIds()), int(role.GetThreshold())
	if got >= need {
		return role, nil
	}
	return nil, classify(check, role.GetKeyIds(), fmt.Sprintf("%d of the %d signatures role %q requires", got, need, role.GetName()))
}
