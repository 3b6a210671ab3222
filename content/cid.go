package content

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
	"github.com/opencontainers/go-digest"
)

// ErrDigestMismatch reports bytes that do not hash to the CID they were fetched or
// stored under.
var ErrDigestMismatch = errors.New("content: digest mismatch")

// ErrNotFound reports a CID the store does not hold.
var ErrNotFound = errors.New("content: not found")

// ErrTooLarge reports a blob over a size limit (the store's, or a manifest's).
var ErrTooLarge = errors.New("content: too large")

// Sum returns the CIDv1 (raw codec, sha2-256 multihash) of data.
func Sum(data []byte) cid.Cid {
	s := sha256.Sum256(data)
	return fromSHA256(s[:])
}

func fromSHA256(sum []byte) cid.Cid {
	m, err := mh.Encode(sum, mh.SHA2_256)
	if err != nil {
		panic(err) // a 32-byte sha2-256 digest always encodes
	}
	return cid.NewCidV1(cid.Raw, m)
}

// Parse reads a CID as the store accepts it: CIDv1, raw or any codec, sha2-256. Other
// hash functions are refused: the store, the OCI registry and peers address by sha256.
func Parse(s string) (cid.Cid, error) {
	c, err := cid.Decode(s)
	if err != nil {
		return cid.Undef, fmt.Errorf("content: cid %q: %w", s, err)
	}
	if _, err := sha256Of(c); err != nil {
		return cid.Undef, err
	}
	return c, nil
}

// sha256Of returns the sha2-256 digest a CID names.
func sha256Of(c cid.Cid) ([]byte, error) {
	if !c.Defined() {
		return nil, errors.New("content: undefined cid")
	}
	d, err := mh.Decode(c.Hash())
	if err != nil {
		return nil, fmt.Errorf("content: cid %s: %w", c, err)
	}
	if d.Code != mh.SHA2_256 || len(d.Digest) != sha256.Size {
		return nil, fmt.Errorf("content: cid %s uses %s; only sha2-256 is accepted", c, mh.Codes[d.Code])
	}
	return d.Digest, nil
}

// Digest is the OCI digest ("sha256:<hex>") of the bytes a CID names: OCI digests and
// CIDs map one to one.
func Digest(c cid.Cid) (digest.Digest, error) {
	sum, err := sha256Of(c)
	if err != nil {
		return "", err
	}
	return digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(sum)), nil
}

// FromDigest is the CIDv1 (raw) of an OCI sha256 digest.
func FromDigest(d digest.Digest) (cid.Cid, error) {
	if err := d.Validate(); err != nil {
		return cid.Undef, fmt.Errorf("content: digest %q: %w", d, err)
	}
	if d.Algorithm() != digest.SHA256 {
		return cid.Undef, fmt.Errorf("content: digest %q: only sha256 is accepted", d)
	}
	sum, err := hex.DecodeString(d.Encoded())
	if err != nil {
		return cid.Undef, fmt.Errorf("content: digest %q: %w", d, err)
	}
	return fromSHA256(sum), nil
}
