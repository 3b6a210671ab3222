package seed

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"slices"

	"google.golang.org/protobuf/proto"

	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
	"meshkit.dev/meshkit/trust"
)

// ErrAuditChain is wrapped when the audit log does not verify.
var ErrAuditChain = errors.New("seed: audit chain broken")

// entryHash is the hex SHA-256 of e's deterministic encoding with its hash field empty.
func entryHash(e *adminv1.AuditEntry) string {
	c := proto.Clone(e).(*adminv1.AuditEntry)
	c.Hash = ""
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	if err != nil {
		panic(fmt.Sprintf("seed: encode audit entry: %v", err)) // a valid message always encodes
	}
	sum := sha256.Sum256(b)
	return fmt.Sprintf("sha256:%x", sum[:])
}

// chain links e after head (nil for the first entry) and seals it.
func chain(head, e *adminv1.AuditEntry) *adminv1.AuditEntry {
	e.Seq, e.PrevHash = 1, ""
	if head != nil {
		e.Seq, e.PrevHash = head.GetSeq()+1, head.GetHash()
	}
	e.Hash = entryHash(e)
	return e
}

// VerifyChain checks that entries form one unbroken chain from seq 1: consecutive seqs,
// each prev_hash the previous entry's hash, each hash recomputed from the entry's content.
// It returns the head.
func VerifyChain(entries []*adminv1.AuditEntry) (*adminv1.AuditEntry, error) {
	var prev *adminv1.AuditEntry
	for i, e := range entries {
		wantSeq, wantPrev := uint64(i+1), ""
		if prev != nil {
			wantPrev = prev.GetHash()
		}
		switch {
		case e.GetSeq() != wantSeq:
			return nil, fmt.Errorf("%w: entry %d has seq %d", ErrAuditChain, wantSeq, e.GetSeq())
		case e.GetPrevHash() != wantPrev:
			return nil, fmt.Errorf("%w: entry %d does not link to entry %d", ErrAuditChain, e.GetSeq(), wantSeq-1)
		case entryHash(e) != e.GetHash():
			return nil, fmt.Errorf("%w: entry %d was altered (its hash does not match its content)", ErrAuditChain, e.GetSeq())
		}
		prev = e
	}
	return prev, nil
}

// checkCheckpoints checks the audit log against the checkpoints that the newest published
// bundles carry (BundleHeader.audit_seq and audit_head): each names an entry the log must
// still hold, unchanged. A log cut back to before the last publish, or rewritten, fails
// here even when it is a valid chain on its own. When keys are given, each bundle must also
// be signed by one of them, so the checkpoints themselves cannot have been edited.
func checkCheckpoints(entries []*adminv1.AuditEntry, latest map[string]Stored, keys []trust.PublicKey) error {
	for _, key := range slices.Sorted(maps.Keys(latest)) {
		st := latest[key]
		for i, raw := range append([][]byte{st.Snapshot}, st.Chain...) {
			what := fmt.Sprintf("stored bundle %q", key)
			if i > 0 {
				what = fmt.Sprintf("stored delta %d of %q", i, key)
			}
			if err := checkpoint(entries, raw, what, keys); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkpoint checks one stored envelope (a bundle or a delta: both carry the header as
// field 1) against the log.
func checkpoint(entries []*adminv1.AuditEntry, raw []byte, what string, keys []trust.PublicKey) error {
	env, err := trust.DecodeEnvelope(raw, 0)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrAuditChain, what, err)
	}
	if len(keys) > 0 && !slices.ContainsFunc(keys, func(k trust.PublicKey) bool { return trust.SignedBy(env, k) }) {
		return fmt.Errorf("%w: %s is not signed by this seed's key or its root's seed role", ErrAuditChain, what)
	}
	view := &bundlev1.HeaderView{}
	if err := (proto.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(env.GetPayload(), view); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrAuditChain, what, err)
	}
	h := view.GetHeader()
	seq := h.GetAuditSeq()
	switch {
	case seq == 0:
		return nil // compiled from an empty log
	case seq > uint64(len(entries)):
		return fmt.Errorf("%w: the log ends at entry %d, but published version %d checkpointed entry %d: entries were removed", ErrAuditChain, len(entries), h.GetVersion(), seq)
	case entries[seq-1].GetHash() != h.GetAuditHead():
		return fmt.Errorf("%w: entry %d is not the one published version %d checkpointed", ErrAuditChain, seq, h.GetVersion())
	}
	return nil
}

// Chain links e after head (nil for the first entry) and seals it, as the seed does
// before every Commit; store implementations and their tests use it.
func Chain(head, e *adminv1.AuditEntry) *adminv1.AuditEntry { return chain(head, e) }
