package replica

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"meshkit.dev/meshkit/internal/atomicfile"
	syncv1 "meshkit.dev/meshkit/proto/meshkit/sync/v1"
	"meshkit.dev/meshkit/trust"
)

// lkgStore keeps the last-known-good bundle of each capability variant on disk in two
// slots written in turn:
//
//	DIR/<variant-id>.0.bundle, DIR/<variant-id>.1.bundle   (each a HeldBundle)
//
// A write truncates and rewrites the slot that does not hold the newest bundle, then
// fsyncs it (the files stay open between writes); the other slot keeps the previous
// bundle intact. A crash at any point leaves the slot being written empty or torn and the
// other one loadable, which is exactly what the old scheme (rename to .prev, temp file,
// fsync, rename, fsync the directory) left, in 3 system calls instead of 11
// (docs/RATIONALE.md). Nothing read back is trusted: load verifies both slots against the
// root and serves the newest that verifies.
//
// save is called by one goroutine at a time, and never concurrently with load or close.
type lkgStore struct {
	dir string
	// next is the slot the next save of a variant writes: the one not holding its newest.
	next map[string]int
	// synced lists slot files whose directory entry is known durable (created by us and
	// the directory fsynced, or found by load).
	synced map[string]bool
	open   map[string]*os.File // slot files kept open for writing: two per variant (usually 1–2)
	// closeFiles closes each slot file after its write instead (Config.LKGCloseFiles).
	closeFiles bool
}

const lkgExt = ".bundle"

func newLKGStore(dir string, closeFiles bool) (*lkgStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("replica: lkg directory: %w", err)
	}
	return &lkgStore{dir: dir, next: map[string]int{}, synced: map[string]bool{}, open: map[string]*os.File{}, closeFiles: closeFiles}, nil
}

// variantID names a variant's files: a fixed-length digest, so any variant name is safe.
func variantID(variant string) string {
	h := sha256.Sum256([]byte(variant))
	return hex.EncodeToString(h[:8])
}

func slotFile(id string, slot int) string { return fmt.Sprintf("%s.%d%s", id, slot, lkgExt) }

// save makes h the current LKG of variant.
func (s *lkgStore) save(variant string, h *Held) error {
	b, err := h.WireEncoded()
	if err != nil {
		return fmt.Errorf("replica: encode lkg: %w", err)
	}
	slot := s.next[variant]
	name := slotFile(variantID(variant), slot)
	if err := s.writeSlot(name, b); err != nil {
		return fmt.Errorf("replica: write lkg: %w", err) // the same slot is rewritten next time
	}
	s.next[variant] = 1 - slot
	return nil
}

// writeSlot replaces the content of one slot file and makes it durable. Slot files stay
// open between writes (opening one was most of a write's cost: docs/RATIONALE.md), so a
// write is truncate, write, fsync.
func (s *lkgStore) writeSlot(name string, b []byte) (err error) {
	f := s.open[name]
	if f == nil {
		if f, err = os.OpenFile(filepath.Join(s.dir, name), os.O_WRONLY|os.O_CREATE, 0o600); err != nil {
			return err
		}
		// A file this process has not written yet may predate it with looser permissions.
		if err := f.Chmod(0o600); err != nil {
			f.Close()
			return err
		}
		s.open[name] = f
	}
	defer func() {
		if err != nil || s.closeFiles { // reopened next time
			err = errors.Join(err, f.Close())
			delete(s.open, name)
		}
	}()
	// Truncating first means a crash leaves the slot short, never new bytes followed by
	// the old tail (either way it fails verification and the other slot is served).
	if err := f.Truncate(0); err != nil {
		return err
	}
	if _, err := f.WriteAt(b, 0); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if !s.synced[name] {
		if err := atomicfile.SyncDir(s.dir); err != nil { // the new entry itself
			return err
		}
		s.synced[name] = true
	}
	return nil
}

// close closes the slot files kept open; the store must not be used after.
func (s *lkgStore) close() error {
	var errs []error
	for name, f := range s.open {
		errs = append(errs, f.Close())
		delete(s.open, name)
	}
	return errors.Join(errs...)
}

// loadReport says what load found, for the log.
type loadReport struct {
	Loaded   []string // files served
	Refused  []string // "file: reason"
	Fallback []string // variants served from the older slot because the other was refused
}

// load verifies every stored slot with v (which must accept expired bundles) and returns
// the newest verified copy of each variant; corrupt, truncated or forged files are
// reported and skipped, never returned. It also decides which slot each variant's next
// save overwrites: the one not served.
func (s *lkgStore) load(v *trust.Verifier) ([]Loaded, loadReport, error) {
	var rep loadReport
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, rep, fmt.Errorf("replica: read lkg directory: %w", err)
	}
	ids := map[string]bool{}
	var order []string
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") && strings.Contains(name, ".tmp-") {
			_ = os.Remove(filepath.Join(s.dir, name)) // left by the earlier temp-and-rename scheme
			continue
		}
		id, slot, ok := parseSlotFile(name)
		if !ok {
			continue
		}
		s.synced[slotFile(id, slot)] = true
		if !ids[id] {
			ids[id] = true
			order = append(order, id)
		}
	}
	// The control stream first: the root rotations it carries are adopted before the
	// bundles signed by rotated keys are checked.
	control := variantID(trust.ControlVariant)
	slices.SortStableFunc(order, func(a, b string) int { return cmpBool(b == control, a == control) })
	var out []Loaded
	for _, id := range order {
		var best *Loaded
		bestSlot, refused := 0, false
		for slot := range 2 {
			name := slotFile(id, slot)
			l, err := s.loadFile(v, name)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err == nil && variantID(l.Verified.Variant) != id {
				err = fmt.Errorf("holds variant %q, which belongs in %s", l.Verified.Variant, slotFile(variantID(l.Verified.Variant), slot))
			}
			if err != nil {
				rep.Refused = append(rep.Refused, fmt.Sprintf("%s: %v", name, err))
				refused = true
				continue
			}
			if best == nil || newerLoaded(l, best) {
				best, bestSlot = l, slot
			}
		}
		if best == nil {
			continue
		}
		if best.Verified.NextRoot != nil {
			if err := v.Commit(best.Verified); err != nil {
				rep.Refused = append(rep.Refused, fmt.Sprintf("%s: %v", best.File, err))
				continue
			}
		}
		s.next[best.Verified.Variant] = 1 - bestSlot
		rep.Loaded = append(rep.Loaded, best.File)
		if refused {
			rep.Fallback = append(rep.Fallback, best.Verified.Variant)
		}
		out = append(out, *best)
	}
	return out, rep, nil
}

// newerLoaded orders two verified copies of one variant by (epoch, version), then by
// modification time.
func newerLoaded(a, b *Loaded) bool {
	ah, bh := a.Verified.Header, b.Verified.Header
	if ah.GetEpoch() != bh.GetEpoch() || ah.GetVersion() != bh.GetVersion() {
		return trust.Newer(ah.GetEpoch(), ah.GetVersion(), bh.GetEpoch(), bh.GetVersion())
	}
	return a.Modified.After(b.Modified)
}

// parseSlotFile splits "<id>.<slot>.bundle".
func parseSlotFile(name string) (id string, slot int, ok bool) {
	base, found := strings.CutSuffix(name, lkgExt)
	if !found || len(base) < 3 || base[len(base)-2] != '.' {
		return "", 0, false
	}
	switch base[len(base)-1] {
	case '0':
		slot = 0
	case '1':
		slot = 1
	default:
		return "", 0, false
	}
	id = base[:len(base)-2]
	if len(id) != 16 {
		return "", 0, false
	}
	if _, err := hex.DecodeString(id); err != nil {
		return "", 0, false
	}
	return id, slot, true
}

func (s *lkgStore) loadFile(v *trust.Verifier, name string) (*Loaded, error) {
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
	return &Loaded{Verified: vb, Held: hb, Modified: st.ModTime(), File: name}, nil
}
