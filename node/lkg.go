package node

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"meshkit.dev/meshkit/internal/atomicfile"
	syncv1 "meshkit.dev/meshkit/proto/meshkit/sync/v1"
	"meshkit.dev/meshkit/trust"
)

// lkgStore keeps the last-known-good bundle of each capability variant on disk, one file
// per variant plus the previous generation:
//
//	DIR/<variant-id>.bundle       the newest (a HeldBundle: proof envelope + payload)
//	DIR/<variant-id>.bundle.prev  the one before
//
// A write renames the current file to .prev, then writes the new one with
// atomicfile.WriteFile (temp, fsync, rename, fsync dir). A crash at any point leaves a
// loadable current file, or no current file and the previous one. Nothing read back is
// trusted: load verifies every file against the root and falls back to .prev.
type lkgStore struct {
	dir string
}

const lkgExt = ".bundle"

func newLKGStore(dir string) (*lkgStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("node: lkg directory: %w", err)
	}
	return &lkgStore{dir: dir}, nil
}

func variantFile(variant string) string {
	h := sha256.Sum256([]byte(variant))
	return hex.EncodeToString(h[:8]) + lkgExt
}

// save makes h the current LKG of variant.
func (s *lkgStore) save(variant string, h *heldBundle) error {
	b, err := h.wireEncoded()
	if err != nil {
		return fmt.Errorf("node: encode lkg: %w", err)
	}
	cur := filepath.Join(s.dir, variantFile(variant))
	if err := os.Rename(cur, cur+".prev"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("node: keep previous lkg: %w", err)
	}
	if err := atomicfile.WriteFile(cur, b, 0o600); err != nil {
		return fmt.Errorf("node: write lkg: %w", err)
	}
	return nil
}

// loaded is one verified LKG bundle.
type loaded struct {
	vb       *trust.Verified
	held     *syncv1.HeldBundle
	modified time.Time
	file     string
}

// loadReport says what load found, for the log.
type loadReport struct {
	Loaded   []string // files served
	Refused  []string // "file: reason"
	Fallback []string // variants served from .prev
}

// load verifies every stored variant with v (which must accept expired bundles) and
// returns the newest verified copy of each; corrupt, truncated or forged files are
// reported and skipped, never returned.
func (s *lkgStore) load(v *trust.Verifier) ([]loaded, loadReport, error) {
	var rep loadReport
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, rep, fmt.Errorf("node: read lkg directory: %w", err)
	}
	seen := map[string]bool{}
	var out []loaded
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") && strings.Contains(name, ".tmp-") {
			_ = os.Remove(filepath.Join(s.dir, name)) // a write a crash interrupted
			continue
		}
		base := strings.TrimSuffix(name, ".prev")
		if !strings.HasSuffix(base, lkgExt) || seen[base] {
			continue
		}
		seen[base] = true
		var got *loaded
		for _, cand := range []string{base, base + ".prev"} {
			l, err := s.loadFile(v, cand)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				rep.Refused = append(rep.Refused, fmt.Sprintf("%s: %v", cand, err))
				continue
			}
			if variantFile(l.vb.Variant) != base {
				rep.Refused = append(rep.Refused, fmt.Sprintf("%s: holds variant %q, which belongs in %s", cand, l.vb.Variant, variantFile(l.vb.Variant)))
				continue
			}
			got = l
			if cand != base {
				rep.Fallback = append(rep.Fallback, l.vb.Variant)
			}
			break
		}
		if got != nil {
			rep.Loaded = append(rep.Loaded, got.file)
			out = append(out, *got)
		}
	}
	return out, rep, nil
}

func (s *lkgStore) loadFile(v *trust.Verifier, name string) (*loaded, error) {
	path := filepath.Join(s.dir, name)
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	hb := &syncv1.HeldBundle{}
	if err := proto.Unmarshal(b, hb); err != nil {
		return nil, fmt.Errorf("corrupt: %w", err)
	}
	vb, err := v.VerifyHeld(hb.GetProof(), hb.GetPayload())
	if err != nil {
		return nil, err
	}
	return &loaded{vb: vb, held: hb, modified: st.ModTime(), file: name}, nil
}
