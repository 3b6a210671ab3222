package replica

import (
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"meshkit.dev/meshkit/bundle"
	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
	syncv1 "meshkit.dev/meshkit/proto/meshkit/sync/v1"
	"meshkit.dev/meshkit/trust"
)

// Held is the newest verified bundle of one stream. It is immutable once the core has
// installed it; readers share it.
type Held struct {
	// Verified is the bundle: PayloadType is PayloadBundle and Payload the encoded bundle;
	// Variant is its stream key.
	Verified *trust.Verified
	// Proof is the signed envelope: the bundle envelope itself, or the delta whose target
	// is Verified.Payload (the payload is then sent alongside it).
	Proof    []byte
	WithBody bool
	// At is when the core installed it (or when its last-known-good file was written).
	At time.Time
	// FromCache is set for a bundle loaded from the last-known-good files at start.
	FromCache bool
	// Seq orders installs across every stream: a later install has a larger Seq. An offer
	// made asynchronously (after artifacts are admitted) never replaces a later one.
	Seq uint64

	decodeOnce sync.Once // decoded lazily, once, for the southbound's per-resource changes
	bundle     *bundlev1.Bundle
	decodeErr  error

	encodeOnce sync.Once // WireEncoded once: every fetch served and the LKG file share it
	encoded    []byte
	encodeErr  error
}

// Key is the stream key the bundle is held under.
func (h *Held) Key() string { return h.Verified.Variant }

// Decoded returns the bundle decoded; the result is shared and must not be modified.
func (h *Held) Decoded() (*bundlev1.Bundle, error) {
	h.decodeOnce.Do(func() { h.bundle, h.decodeErr = bundle.DecodeBundle(h.Verified.Payload) })
	return h.bundle, h.decodeErr
}

// Derived returns a copy of h offering payload instead of the signed bundle, named by
// payload's own digest: what an offer policy hands the data plane when it leaves part of
// the bundle out. Each change of what is offered then has a digest of its own.
func (h *Held) Derived(payload []byte) *Held {
	vb := *h.Verified
	vb.Payload, vb.Held = payload, bundle.Hash(payload)
	return &Held{Verified: &vb, At: h.At, FromCache: h.FromCache, Seq: h.Seq}
}

// Wire is the bundle as the sync protocol carries it.
func (h *Held) Wire() *syncv1.HeldBundle {
	hb := &syncv1.HeldBundle{Proof: h.Proof}
	if h.WithBody {
		hb.Payload = h.Verified.Payload
	}
	return hb
}

// WireEncoded returns Wire() encoded; the result is shared and must not be modified. A
// held bundle is immutable, so it is encoded once however many peers fetch it.
func (h *Held) WireEncoded() ([]byte, error) {
	h.encodeOnce.Do(func() { h.encoded, h.encodeErr = proto.Marshal(h.Wire()) })
	return h.encoded, h.encodeErr
}
