package publish

import (
	"errors"
	"slices"
	"sync"

	"google.golang.org/protobuf/proto"

	"meshkit.dev/meshkit/bundle"
	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
	"meshkit.dev/meshkit/trust"
)

// Publication is one published version with its signed envelopes.
type Publication struct {
	Info     *adminv1.Publication
	Variants []Variant // full variant first
}

// Variant is one capability variant of a publication.
type Variant struct {
	RequiredCapabilities []string
	Snapshot             []byte // signed bundle envelope
	Delta                []byte // signed delta envelope from the previous version, or nil
	// Announce is a signed announce of Snapshot (its header, payload hash and size): what
	// peers gossip instead of a bundle too large to flood.
	Announce []byte
}

// Compiled is a variant's newest bundle and its encoding: the base of the next delta.
type Compiled struct {
	Bundle  *bundlev1.Bundle
	Payload []byte
	// Hash is bundle.Hash(Payload); zero means not computed yet.
	Hash bundle.Digest
	// Layout locates Payload's resources, so the next version can be patched from it;
	// nil (a bundle loaded from a store) means the next one is encoded whole.
	Layout *bundle.Layout
}

func (c *Compiled) hash() bundle.Digest {
	if c.Hash == (bundle.Digest{}) {
		c.Hash = bundle.Hash(c.Payload)
	}
	return c.Hash
}

// Sealer signs the versions of one stream. It keeps an encoder per variant, whose cache
// of encoded resources makes a version that changes one resource cost about that much.
// Not safe for concurrent use: one publisher seals at a time.
type Sealer struct {
	encoders map[string]*bundle.Encoder

	mu      sync.Mutex // guards signers: a root rotation changes them while a seal runs
	signers []trust.Signer
}

// NewSealer signs with signer (the stream's role key).
func NewSealer(signer trust.Signer) *Sealer {
	return &Sealer{signers: []trust.Signer{signer}, encoders: map[string]*bundle.Encoder{}}
}

// SetSigners makes the next seals carry a signature by each of signers: during a seed
// key rotation, the old key and the new one both sign, so agents on either root verify.
func (s *Sealer) SetSigners(signers ...trust.Signer) {
	if len(signers) == 0 {
		return
	}
	s.mu.Lock()
	s.signers = slices.Clone(signers)
	s.mu.Unlock()
}

// Seal encodes v, signs it, and signs the delta from prev when there is one. With changed
// (the keys whose resources may differ from prev's; nil when unknown) and prev's layout,
// v is patched from prev: only the changed resources are encoded and the delta comes from
// them, byte for byte what encoding and diffing the whole bundle give (bundle.Patch).
func (s *Sealer) Seal(v *bundlev1.Bundle, prev *Compiled, changed map[bundle.Key]bool) (Variant, *Compiled, error) {
	key := trust.VariantKey("", v.GetHeader().GetRequiredCapabilities())
	var payload []byte
	var layout *bundle.Layout
	var ph bundle.Digest
	var d *bundlev1.BundleDelta
	if prev != nil && prev.Layout != nil && changed != nil {
		p, err := bundle.Patch(prev.Bundle, prev.Payload, prev.hash(), prev.Layout, v, changed)
		switch {
		case err == nil:
			payload, layout, ph, d = p.Payload, p.Layout, p.Hash, p.Delta
		case !errors.Is(err, bundle.ErrPatchMismatch):
			return Variant{}, nil, err
		}
	}
	if payload == nil {
		enc := s.encoders[key]
		if enc == nil {
			enc = &bundle.Encoder{}
			s.encoders[key] = enc
		}
		var err error
		if payload, layout, err = enc.EncodeLayout(v); err != nil {
			return Variant{}, nil, err
		}
		ph = bundle.Hash(payload)
		if prev != nil {
			if d, err = bundle.DeltaBetween(prev.Bundle, prev.hash(), v, ph); err != nil {
				return Variant{}, nil, err
			}
		}
	}
	snap, err := s.seal(trust.PayloadBundle, payload)
	if err != nil {
		return Variant{}, nil, err
	}
	pv := Variant{RequiredCapabilities: v.GetHeader().GetRequiredCapabilities(), Snapshot: snap}
	ap, err := proto.MarshalOptions{Deterministic: true}.Marshal(&bundlev1.Announce{Header: v.GetHeader(), SnapshotHash: ph[:], SnapshotSize: uint64(len(payload))})
	if err != nil {
		return Variant{}, nil, err
	}
	if pv.Announce, err = s.seal(trust.PayloadAnnounce, ap); err != nil {
		return Variant{}, nil, err
	}
	if d != nil {
		dp, err := bundle.EncodeDelta(d)
		if err != nil {
			return Variant{}, nil, err
		}
		if pv.Delta, err = s.seal(trust.PayloadDelta, dp); err != nil {
			return Variant{}, nil, err
		}
	}
	return pv, &Compiled{Bundle: v, Payload: payload, Hash: ph, Layout: layout}, nil
}

// SealBundle signs an encoded bundle (a snapshot rebuilt from stored deltas).
func (s *Sealer) SealBundle(payload []byte) ([]byte, error) {
	return s.seal(trust.PayloadBundle, payload)
}

func (s *Sealer) seal(payloadType string, payload []byte) ([]byte, error) {
	env := trust.NewEnvelope(payloadType, payload)
	s.mu.Lock()
	signers := s.signers
	s.mu.Unlock()
	if err := trust.Sign(env, signers...); err != nil {
		return nil, err
	}
	return trust.MarshalEnvelope(env)
}
