package trust

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
)

// MaxKeyFileBytes bounds what LoadKeyFile reads; a key file is a few hundred bytes.
const MaxKeyFileBytes = 16 << 10

const (
	pemPrivate  = "PRIVATE KEY"
	pemPublic   = "PUBLIC KEY"
	pemKeyIDHdr = "Key-Id"
)

// PublicKey is an Ed25519 verification key with its id.
type PublicKey struct {
	// ID is the lowercase hex SHA-256 of the PKIX DER encoding of Key.
	ID  string
	Key ed25519.PublicKey
}

// PrivateKey is an Ed25519 signing key. It never prints its secret: String, GoString
// and LogValue show only the key id.
type PrivateKey struct {
	pub PublicKey
	key ed25519.PrivateKey
}

// Signer signs the messages of envelopes. PrivateKey implements it; an HSM or KMS can too.
type Signer interface {
	// KeyID is the id of the verification key.
	KeyID() string
	// SignMessage returns the signature of msg.
	SignMessage(msg []byte) ([]byte, error)
}

var _ Signer = (*PrivateKey)(nil)

// KeyID computes the id of an Ed25519 public key: hex SHA-256 of its PKIX DER encoding.
func KeyID(pub ed25519.PublicKey) (string, error) {
	if len(pub) != ed25519.PublicKeySize {
		return "", fmt.Errorf("trust: ed25519 public key must be %d bytes, got %d", ed25519.PublicKeySize, len(pub))
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("trust: encode public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

// NewPublicKey wraps a raw Ed25519 public key with its id.
func NewPublicKey(raw []byte) (PublicKey, error) {
	id, err := KeyID(raw)
	if err != nil {
		return PublicKey{}, err
	}
	return PublicKey{ID: id, Key: append(ed25519.PublicKey(nil), raw...)}, nil
}

// GenerateKey makes a new Ed25519 key from rand (crypto/rand when nil).
func GenerateKey(r io.Reader) (*PrivateKey, error) {
	if r == nil {
		r = rand.Reader
	}
	pub, priv, err := ed25519.GenerateKey(r)
	if err != nil {
		return nil, fmt.Errorf("trust: generate key: %w", err)
	}
	return newPrivateKey(priv, pub)
}

func newPrivateKey(priv ed25519.PrivateKey, pub ed25519.PublicKey) (*PrivateKey, error) {
	p, err := NewPublicKey(pub)
	if err != nil {
		return nil, err
	}
	return &PrivateKey{pub: p, key: priv}, nil
}

// KeyID returns the id of the key's public half.
func (k *PrivateKey) KeyID() string { return k.pub.ID }

// Public returns the verification key.
func (k *PrivateKey) Public() PublicKey { return k.pub }

// SignMessage signs msg with Ed25519.
func (k *PrivateKey) SignMessage(msg []byte) ([]byte, error) {
	return k.key.Sign(nil, msg, crypto.Hash(0))
}

// String shows the key id only.
func (k *PrivateKey) String() string { return "trust.PrivateKey(" + k.pub.ID + ")" }

// GoString shows the key id only, so %#v cannot leak the secret.
func (k *PrivateKey) GoString() string { return k.String() }

// LogValue shows the key id only, so slog cannot leak the secret.
func (k *PrivateKey) LogValue() slog.Value {
	return slog.GroupValue(slog.String("key_id", k.pub.ID))
}

// MarshalPrivatePEM encodes the key as PKCS#8 PEM with a Key-Id header.
func (k *PrivateKey) MarshalPrivatePEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k.key)
	if err != nil {
		return nil, fmt.Errorf("trust: encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivate, Headers: map[string]string{pemKeyIDHdr: k.pub.ID}, Bytes: der}), nil
}

// MarshalPEM encodes the public key as PKIX PEM with a Key-Id header.
func (p PublicKey) MarshalPEM() ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(p.Key)
	if err != nil {
		return nil, fmt.Errorf("trust: encode public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPublic, Headers: map[string]string{pemKeyIDHdr: p.ID}, Bytes: der}), nil
}

// KeyFile is what a key file holds: always a public key, and the private key when the
// file is a private key file.
type KeyFile struct {
	Public  PublicKey
	Private *PrivateKey // nil for a public key file
}

// ParseKeyPEM decodes a private (PKCS#8) or public (PKIX) Ed25519 PEM key. A Key-Id
// header, when present, must match the key.
func ParseKeyPEM(data []byte) (KeyFile, error) {
	if len(data) > MaxKeyFileBytes {
		return KeyFile{}, fmt.Errorf("trust: key file is %d bytes, more than %d", len(data), MaxKeyFileBytes)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return KeyFile{}, errors.New("trust: no PEM block in key file")
	}
	var kf KeyFile
	switch block.Type {
	case pemPrivate:
		parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return KeyFile{}, fmt.Errorf("trust: parse private key: %w", err)
		}
		priv, ok := parsed.(ed25519.PrivateKey)
		if !ok {
			return KeyFile{}, fmt.Errorf("trust: private key is %T, want Ed25519", parsed)
		}
		k, err := newPrivateKey(priv, priv.Public().(ed25519.PublicKey))
		if err != nil {
			return KeyFile{}, err
		}
		kf = KeyFile{Public: k.pub, Private: k}
	case pemPublic:
		parsed, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return KeyFile{}, fmt.Errorf("trust: parse public key: %w", err)
		}
		pub, ok := parsed.(ed25519.PublicKey)
		if !ok {
			return KeyFile{}, fmt.Errorf("trust: public key is %T, want Ed25519", parsed)
		}
		p, err := NewPublicKey(pub)
		if err != nil {
			return KeyFile{}, err
		}
		kf = KeyFile{Public: p}
	default:
		return KeyFile{}, fmt.Errorf("trust: PEM block is %q, want %q or %q", block.Type, pemPrivate, pemPublic)
	}
	if id, ok := block.Headers[pemKeyIDHdr]; ok && id != kf.Public.ID {
		return KeyFile{}, fmt.Errorf("trust: key file says Key-Id %s but the key's id is %s", id, kf.Public.ID)
	}
	return kf, nil
}

// LoadKeyFile reads a key file. A private key file readable by group or others is
// refused, as ssh does, so a leaked permission is noticed rather than silently used.
func LoadKeyFile(path string) (KeyFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return KeyFile{}, fmt.Errorf("trust: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return KeyFile{}, fmt.Errorf("trust: %w", err)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxKeyFileBytes+1))
	if err != nil {
		return KeyFile{}, fmt.Errorf("trust: read %s: %w", path, err)
	}
	kf, err := ParseKeyPEM(data)
	if err != nil {
		return KeyFile{}, fmt.Errorf("%w (in %s)", err, path)
	}
	if kf.Private != nil && st.Mode().Perm()&0o077 != 0 {
		return KeyFile{}, fmt.Errorf("trust: private key file %s has mode %04o; it must not be readable by group or others (chmod 600)", path, st.Mode().Perm())
	}
	return kf, nil
}

// WriteKeyFiles writes the private key to path with mode 0600 and the public key to
// path+".pub" with mode 0644. It refuses to overwrite an existing file.
func WriteKeyFiles(path string, k *PrivateKey) error {
	privPEM, err := k.MarshalPrivatePEM()
	if err != nil {
		return err
	}
	pubPEM, err := k.pub.MarshalPEM()
	if err != nil {
		return err
	}
	if err := writeNew(path, privPEM, 0o600); err != nil {
		return err
	}
	if err := writeNew(path+".pub", pubPEM, 0o644); err != nil {
		_ = os.Remove(path)
		return err
	}
	return nil
}

// writeNew creates path exclusively with perm, writes data and syncs it.
func writeNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("trust: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("trust: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("trust: sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("trust: close %s: %w", path, err)
	}
	return nil
}
