package publish

import (
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

// Seal encodes and signs v as a snapshot and an announce and, when prev (the variant's
// previous version) is given, the delta from it.
func (s *Sealer) Seal(v *bundlev1.Bundle, prev *Compiled) (Variant, *Compiled, error) {
	key := trust.VariantKey("", v.GetHeader().GetRequiredCapabilities())
	enc := s.encoders[key]
	if enc == nil {
		enc = &bundle.Encoder{}
		s.encoders[key] = enc
	}
	payload, err := enc.Encode(v)
	if err != nil {
		return Variant{}, nil, err
	}
	snap, err := s.seal(trust.PayloadBundle, payload)
	if err != nil {
		return Variant{}, nil, err
	}
	pv := Variant{RequiredCapabilities: v.GetHeader().GetRequiredCapabilities(), Snapshot: snap}
	ph := bundle.Hash(payload)
	ap, err := proto.MarshalOptions{Deterministic: true}.Marshal(&bundlev1.Announce{Header: v.GetHeader(), SnapshotHash: ph[:], SnapshotSize: uint64(len(payload))})
	if err != nil {
		return Variant{}, nil, err
	}
	if pv.Announce, err = s.seal(trust.PayloadAnnounce, ap); err != nil {
		return Variant{}, nil, err
	}
	if prev != nil {
		d, err := bundle.DeltaBetween(prev.Bundle, bundle.Hash(prev.Payload), v, ph)
		if err != nil {
			return Variant{}, nil, err
		}
		dp, err := bundle.EncodeDelta(d)
		if err != nil {
			return Variant{}, nil, err
		}
		if pv.Delta, err = s.seal(trust.PayloadDelta, dp); err != nil {
			return Variant{}, nil, err
		}
	}
	return pv, &Compiled{Bundle: v, Payload: payload}, nil
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
