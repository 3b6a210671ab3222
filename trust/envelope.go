package trust

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	trustv1 "meshkit.dev/meshkit/proto/meshkit/trust/v1"
)

// Payload types of the envelopes MeshKit distributes.
const (
	PayloadRoot   = "application/vnd.meshkit.root.v1+protobuf"
	PayloadBundle = "application/vnd.meshkit.bundle.v1+protobuf"
	PayloadDelta  = "application/vnd.meshkit.delta.v1+protobuf"
	// PayloadAnnounce names a bundle by hash, for bundles too large to flood.
	PayloadAnnounce = "application/vnd.meshkit.announce.v1+protobuf"
)

// Limits on envelopes, checked before anything else is parsed.
const (
	// DefaultMaxEnvelopeBytes bounds an encoded envelope unless configured otherwise.
	DefaultMaxEnvelopeBytes = 32 << 20
	// MaxSignatures bounds the signatures of one envelope, so a hostile envelope cannot
	// make a verifier spend unbounded time on Ed25519.
	MaxSignatures  = 16
	maxPayloadType = 128
)

// signatureContext separates MeshKit signatures from every other use of the same keys.
const signatureContext = "meshkit-envelope-v1\n"

// Digest is the SHA-256 of an envelope's payload: the content hash of a bundle.
type Digest [sha256.Size]byte

// String renders the digest as "sha256:<hex>".
func (d Digest) String() string { return fmt.Sprintf("sha256:%x", d[:]) }

// SignedMessage is the exact byte string a signature covers:
//
//	"meshkit-envelope-v1\n" || payload_type || "\n" || SHA-256(payload)
//
// Signing the digest rather than the payload lets one SHA-256 pass serve both content
// addressing and signing (see docs/RATIONALE.md). payload_type never contains "\n".
func SignedMessage(payloadType string, digest Digest) []byte {
	msg := make([]byte, 0, len(signatureContext)+len(payloadType)+1+len(digest))
	msg = append(msg, signatureContext...)
	msg = append(msg, payloadType...)
	msg = append(msg, '\n')
	return append(msg, digest[:]...)
}

// NewEnvelope wraps payload, unsigned.
func NewEnvelope(payloadType string, payload []byte) *trustv1.Envelope {
	return &trustv1.Envelope{PayloadType: payloadType, Payload: payload}
}

// Sign adds each signer's signature to env, replacing an earlier one by the same key.
func Sign(env *trustv1.Envelope, signers ...Signer) error {
	if err := checkPayloadType(env.GetPayloadType()); err != nil {
		return err
	}
	msg := SignedMessage(env.GetPayloadType(), sha256.Sum256(env.GetPayload()))
	for _, s := range signers {
		sig, err := s.SignMessage(msg)
		if err != nil {
			return fmt.Errorf("trust: sign with %s: %w", s.KeyID(), err)
		}
		kept := env.Signatures[:0]
		for _, old := range env.Signatures {
			if old.GetKeyId() != s.KeyID() {
				kept = append(kept, old)
			}
		}
		env.Signatures = append(kept, &trustv1.Signature{KeyId: s.KeyID(), Sig: sig})
	}
	if len(env.Signatures) > MaxSignatures {
		return fmt.Errorf("trust: envelope would carry %d signatures, at most %d are allowed", len(env.Signatures), MaxSignatures)
	}
	return nil
}

func checkPayloadType(t string) error {
	if t == "" || len(t) > maxPayloadType {
		return refuse(ErrMalformed, "payload type must be 1 to %d bytes, got %d", maxPayloadType, len(t))
	}
	for i := 0; i < len(t); i++ {
		if c := t[i]; c < 0x21 || c > 0x7e {
			return refuse(ErrMalformed, "payload type has byte 0x%02x at %d; only printable ASCII is allowed", c, i)
		}
	}
	return nil
}

// SignedBy reports whether env carries a valid signature by k over its payload type and
// payload.
func SignedBy(env *trustv1.Envelope, k PublicKey) bool {
	msg := SignedMessage(env.GetPayloadType(), sha256.Sum256(env.GetPayload()))
	for _, sig := range env.GetSignatures() {
		if sig.GetKeyId() == k.ID && ed25519.Verify(k.Key, msg, sig.GetSig()) {
			return true
		}
	}
	return false
}

// MarshalEnvelope encodes env deterministically.
func MarshalEnvelope(env *trustv1.Envelope) ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(env)
}

// DecodeEnvelope parses an envelope from untrusted bytes, refusing inputs larger than
// maxBytes before parsing them. It accepts the binary encoding and, for files written
// by people and tools, the protojson encoding (first non-space byte '{'). In the binary
// form the payload aliases b (no copy): b must not be modified while the envelope is used.
func DecodeEnvelope(b []byte, maxBytes int) (*trustv1.Envelope, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxEnvelopeBytes
	}
	if len(b) > maxBytes {
		return nil, refuse(ErrOversized, "envelope is %d bytes, the limit is %d", len(b), maxBytes)
	}
	env := &trustv1.Envelope{}
	var err error
	if trimmed := bytes.TrimLeft(b, " \t\r\n"); len(trimmed) > 0 && trimmed[0] == '{' {
		if err := protojson.Unmarshal(b, env); err != nil {
			return nil, refuse(ErrMalformed, "envelope JSON: %v", err)
		}
	} else if env, err = decodeEnvelopeBinary(b); err != nil {
		return nil, refuse(ErrMalformed, "envelope: %v", err)
	}
	if err := checkPayloadType(env.GetPayloadType()); err != nil {
		return nil, err
	}
	if n := len(env.GetSignatures()); n > MaxSignatures {
		return nil, refuse(ErrMalformed, "envelope carries %d signatures, at most %d are allowed", n, MaxSignatures)
	}
	return env, nil
}

// decodeEnvelopeBinary decodes the binary Envelope with protobuf's protowire primitives so
// that the payload aliases b: proto.Unmarshal would copy it, and on a 64 KiB bundle that
// copy and its garbage are a sixth of verification time. It follows proto.Unmarshal's
// semantics (last occurrence of a scalar wins, unknown fields and mismatched wire types
// skipped); FuzzEnvelopeDecodersAgree checks that the two agree on every input.
func decodeEnvelopeBinary(b []byte) (*trustv1.Envelope, error) {
	env := &trustv1.Envelope{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		if num > protowire.MaxValidNumber {
			return nil, fmt.Errorf("field number %d is out of range", num)
		}
		b = b[n:]
		if typ != protowire.BytesType || num < 1 || num > 3 {
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return nil, protowire.ParseError(m)
			}
			b = b[m:]
			continue
		}
		v, m := protowire.ConsumeBytes(b)
		if m < 0 {
			return nil, protowire.ParseError(m)
		}
		b = b[m:]
		switch num {
		case 1:
			if !utf8.Valid(v) {
				return nil, errors.New("payload_type is not valid UTF-8")
			}
			env.PayloadType = string(v)
		case 2:
			env.Payload = v[:len(v):len(v)] // capped: an append by the caller cannot overwrite b
		case 3:
			sig := &trustv1.Signature{}
			if err := proto.Unmarshal(v, sig); err != nil {
				return nil, err
			}
			env.Signatures = append(env.Signatures, sig)
		}
	}
	return env, nil
}

// EnvelopeJSON renders env as indented protojson, the format of root files. protojson
// varies its whitespace on purpose; re-indenting makes the file bytes stable.
func EnvelopeJSON(env *trustv1.Envelope) ([]byte, error) {
	b, err := protojson.Marshal(env)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return nil, err
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

// sigCheck is the outcome of checking an envelope's signatures against a key set.
type sigCheck struct {
	valid   map[string]bool // distinct key ids whose signature verified
	bad     []string        // known key ids whose signature did not verify
	unknown []string        // key ids not in the key set
}

// checkSignatures verifies every signature of env whose key is in keys, once per
// distinct key id (a key that signs twice counts once; a duplicate is not re-verified).
func checkSignatures(env *trustv1.Envelope, digest Digest, keys map[string]ed25519.PublicKey) sigCheck {
	msg := SignedMessage(env.GetPayloadType(), digest)
	res := sigCheck{valid: make(map[string]bool, len(env.GetSignatures()))}
	seen := make(map[string]bool, len(env.GetSignatures()))
	for _, s := range env.GetSignatures() {
		id := s.GetKeyId()
		if seen[id] {
			continue
		}
		seen[id] = true
		pub, ok := keys[id]
		if !ok {
			res.unknown = append(res.unknown, id)
			continue
		}
		if len(s.GetSig()) == ed25519.SignatureSize && ed25519.Verify(pub, msg, s.GetSig()) {
			res.valid[id] = true
		} else {
			res.bad = append(res.bad, id)
		}
	}
	return res
}

// count returns how many of ids signed validly.
func (c sigCheck) count(ids []string) int {
	n := 0
	for _, id := range ids {
		if c.valid[id] {
			n++
		}
	}
	return n
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
