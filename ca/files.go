package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"meshkit.dev/meshkit/internal/atomicfile"
)

// Files of a CA directory.
const (
	KeyFile   = "ca.key"    // PKCS#8, PEM, 0600
	CertFile  = "ca.pem"    // the issuing certificate
	ChainFile = "chain.pem" // its issuers up to a root (an intermediate only)
	RootsFile = "roots.pem" // the trust bundle
)

// DefaultRootLifetime is a self-managed root's lifetime.
const DefaultRootLifetime = 5 * 365 * 24 * time.Hour

// LoadOrCreate opens the CA kept in dir, or, when dir holds none, creates a self-managed
// root for td there (its key 0600). An operator's intermediate is installed by placing
// its key, certificate, chain and the upstream roots in dir before the first start.
func LoadOrCreate(dir string, td spiffeid.TrustDomain, now time.Time) (*Authority, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	// Several seeds of a domain share one CA directory and may start at once: the first
	// creates the CA under an exclusive lock, the others wait and load it.
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return nil, fmt.Errorf("ca: lock %s: %w", dir, err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) //nolint:errcheck // closing unlocks too
	if _, err := os.Stat(filepath.Join(dir, KeyFile)); errors.Is(err, fs.ErrNotExist) {
		key, cert, err := NewRoot(nil, td, now, DefaultRootLifetime)
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, err
		}
		// The certificates first: a key without them is never left as the CA.
		if err := atomicfile.WriteFile(filepath.Join(dir, CertFile), EncodePEM(cert), 0o644); err != nil {
			return nil, err
		}
		if err := atomicfile.WriteFile(filepath.Join(dir, RootsFile), EncodePEM(cert), 0o644); err != nil {
			return nil, err
		}
		if err := atomicfile.WriteFile(filepath.Join(dir, KeyFile), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return nil, err
		}
	}
	return Load(dir)
}

// Load opens the CA kept in dir. The key file must not be readable by others.
func Load(dir string) (*Authority, error) {
	kp := filepath.Join(dir, KeyFile)
	st, err := os.Stat(kp)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("ca: %s is readable by others (mode %04o); chmod 600 it", kp, st.Mode().Perm())
	}
	signer, err := readKey(kp)
	if err != nil {
		return nil, err
	}
	certs, err := readCerts(filepath.Join(dir, CertFile))
	if err != nil || len(certs) != 1 {
		return nil, fmt.Errorf("ca: %s must hold one certificate: %v", CertFile, err)
	}
	roots, err := readCerts(filepath.Join(dir, RootsFile))
	if err != nil {
		return nil, err
	}
	var chain []*x509.Certificate
	if _, err := os.Stat(filepath.Join(dir, ChainFile)); err == nil {
		if chain, err = readCerts(filepath.Join(dir, ChainFile)); err != nil {
			return nil, err
		}
	}
	return New(signer, certs[0], chain, roots, nil)
}

// LoadOrCreateKey reads a PKCS#8 PEM private key, or creates an ECDSA P-256 one there
// (0600) when the file does not exist: the key of a node's own certificate.
func LoadOrCreateKey(path string) (crypto.Signer, error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return nil, err
		}
		if err := atomicfile.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return nil, err
		}
		return k, nil
	}
	return readKey(path)
}

func readKey(path string) (crypto.Signer, error) {
	kb, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	blk, _ := pem.Decode(kb)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("ca: %s holds no PKCS#8 PEM private key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("ca: %s: %w", path, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("ca: %s: a %T cannot sign", path, k)
	}
	return signer, nil
}

func readCerts(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("ca: %s: %w", path, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("ca: %s holds no certificate", path)
	}
	return out, nil
}

// Dir keeps the generations of a domain CA: the first in Path itself (as LoadOrCreate
// makes it), each later one in a subdirectory named after it.
type Dir struct {
	Path        string
	TrustDomain spiffeid.TrustDomain
}

func (d Dir) dir(gen string) (string, error) {
	if gen == "" {
		return d.Path, nil
	}
	if !genRE.MatchString(gen) {
		return "", fmt.Errorf("ca: generation %q: want gen- and letters or digits", gen)
	}
	return filepath.Join(d.Path, gen), nil
}

var genRE = regexp.MustCompile(`^gen-[a-z0-9]{1,32}$`)

// Open loads generation gen.
func (d Dir) Open(gen string) (*Authority, error) {
	p, err := d.dir(gen)
	if err != nil {
		return nil, err
	}
	return Load(p)
}

// Create makes generation gen, a self-managed root valid from now; a generation made
// already (a step retried after a crash) is loaded instead.
func (d Dir) Create(gen string, now time.Time) (*Authority, error) {
	p, err := d.dir(gen)
	if err != nil {
		return nil, err
	}
	return LoadOrCreate(p, d.TrustDomain, now)
}
