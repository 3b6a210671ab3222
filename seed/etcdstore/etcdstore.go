// Package etcdstore is the seed.Store of highly available seeds: the domain's state in
// etcd, under one prefix per domain, every Commit one etcd transaction.
//
// Every Commit is conditioned on the audit log's head being the entry the new one links
// to, so two writers can never both extend the log from the same head; a store made with
// Fenced is further conditioned on the writer's election key still existing at the
// revision it was elected with, so a deposed or paused leader cannot write at all.
//
// Large values (the signed envelopes of a publication) are stored as content-addressed
// chunks of at most ChunkBytes before the transaction that references them, so no request
// exceeds etcd's default request limit (1.5 MiB) whatever the state's size.
package etcdstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	_ "a.meshkit.dev/protoconflict" // before etcd's and libp2p's protos: see the package

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"meshkit.dev/meshkit/bundle"
	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
	"meshkit.dev/meshkit/seed"
	"meshkit.dev/meshkit/trust"
)

// ChunkBytes is the largest value the store writes in one key.
const ChunkBytes = 1 << 20

// DefaultHistory is how many publications are kept.
const DefaultHistory = 100

// ErrFenced is returned by a Commit of a Fenced store whose election key is gone or was
// replaced: this seed is no longer the leader, and nothing was written.
var ErrFenced = fmt.Errorf("%w: etcdstore: not the leader any more (the election key this seed was elected with is gone); nothing was written", seed.ErrDiverged)

// ErrConflict is returned when another writer extended the audit log first.
var ErrConflict = fmt.Errorf("%w: etcdstore: the audit log moved on under this writer (another seed wrote); nothing was written", seed.ErrDiverged)

// Prefix is where a domain's keys live.
func Prefix(domain string) string { return "/meshkit/" + domain + "/" }

// ElectionPrefix is the domain's election prefix (concurrency.Election).
func ElectionPrefix(domain string) string { return Prefix(domain) + "leader" }

// Store is an etcd-backed seed.Store.
type Store struct {
	cli     *clientv3.Client
	pfx     string
	history int
	// fenceKey and fenceRev, when set, condition every Commit on the election key
	// fenceKey having been created at fenceRev.
	fenceKey string
	fenceRev int64
}

var _ seed.Store = (*Store)(nil)

// New returns the store of domain on cli. The client stays the caller's.
func New(cli *clientv3.Client, domain string) (*Store, error) {
	if err := trust.ValidDomain(domain); err != nil {
		return nil, err
	}
	return &Store{cli: cli, pfx: Prefix(domain), history: DefaultHistory}, nil
}

// SetHistory sets how many publications are kept (minimum 1).
func (s *Store) SetHistory(n int) { s.history = max(n, 1) }

// Fenced returns a view of the store whose every Commit also requires that the election
// key key still exists with CreateRevision rev: the leader's term.
func (s *Store) Fenced(key string, rev int64) *Store {
	c := *s
	c.fenceKey, c.fenceRev = key, rev
	return &c
}

const (
	kMeta      = "meta"
	kAuditHead = "audithead"
	kRes       = "res/"
	kAudit     = "audit/"
	kHistory   = "history/"
	kLatest    = "latest/"
	kIdentity  = "identity/"
	kBlob      = "blob/"
)

func seqKey(n uint64) string { return fmt.Sprintf("%020d", n) }

type metaValue struct {
	Domain  string `json:"domain"`
	Epoch   uint64 `json:"epoch"`
	Version uint64 `json:"version"`
}

// blobRef names a chunked value: its SHA-256, size and chunk count.
type blobRef struct {
	Hash   string `json:"hash"`
	Size   int    `json:"size"`
	Chunks int    `json:"chunks"`
}

type latestValue struct {
	Snapshot blobRef   `json:"snapshot"`
	Delta    *blobRef  `json:"delta,omitempty"`
	Chain    []blobRef `json:"chain,omitempty"` // deltas stored after Snapshot, oldest first
}

func (l latestValue) refs() []blobRef {
	out := append([]blobRef{l.Snapshot}, l.Chain...)
	if l.Delta != nil {
		out = append(out, *l.Delta)
	}
	return out
}

// MaxChain bounds a stored chain read back.
const MaxChain = 1024

// Load reads the whole state at one revision.
func (s *Store) Load(ctx context.Context) (*seed.Loaded, error) {
	first, err := s.cli.Get(ctx, s.pfx+kMeta)
	if err != nil {
		return nil, fmt.Errorf("etcdstore: load: %w", err)
	}
	rev := first.Header.Revision
	out := &seed.Loaded{Latest: map[string]seed.Stored{}}
	latest := map[string]latestValue{}
	var auditHead uint64
	kvs := first.Kvs // meta, at rev
	for _, p := range []string{kAuditHead, kRes, kHistory, kIdentity, kLatest} {
		r, err := s.cli.Get(ctx, s.pfx+p, clientv3.WithPrefix(), clientv3.WithRev(rev), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
		if err != nil {
			return nil, fmt.Errorf("etcdstore: load: %w", err)
		}
		kvs = append(kvs, r.Kvs...)
	}
	for _, kv := range kvs {
		k, v := strings.TrimPrefix(string(kv.Key), s.pfx), kv.Value
		switch {
		case k == kMeta:
			var m metaValue
			if err := json.Unmarshal(v, &m); err != nil {
				return nil, fmt.Errorf("etcdstore: meta: %w", err)
			}
			out.Meta = seed.Meta{Domain: m.Domain, Epoch: m.Epoch, Version: m.Version}
		case k == kAuditHead:
			seq, _, _ := strings.Cut(string(v), " ")
			if auditHead, err = strconv.ParseUint(seq, 10, 64); err != nil {
				return nil, fmt.Errorf("etcdstore: audit head %q: %w", v, err)
			}
		case strings.HasPrefix(k, kRes):
			r := &adminv1.Resource{}
			if err := proto.Unmarshal(v, r); err != nil {
				return nil, fmt.Errorf("etcdstore: resource %s: %w", k, err)
			}
			out.Resources = append(out.Resources, r)
		case strings.HasPrefix(k, kHistory):
			p := &adminv1.Publication{}
			if err := proto.Unmarshal(v, p); err != nil {
				return nil, fmt.Errorf("etcdstore: publication %s: %w", k, err)
			}
			out.History = append(out.History, p)
		case strings.HasPrefix(k, kIdentity):
			if strings.HasPrefix(k, kIdentity+"c/") {
				continue // issued certificates are not kept in memory
			}
			r := &adminv1.IdentityRecord{}
			if err := proto.Unmarshal(v, r); err != nil {
				return nil, fmt.Errorf("etcdstore: identity %s: %w", k, err)
			}
			out.Identity = append(out.Identity, r)
		case strings.HasPrefix(k, kLatest):
			var l latestValue
			if err := json.Unmarshal(v, &l); err != nil {
				return nil, fmt.Errorf("etcdstore: %s: %w", k, err)
			}
			latest[strings.TrimPrefix(k, kLatest)] = l
		}
	}
	if auditHead > 0 {
		r, err := s.cli.Get(ctx, s.pfx+kAudit+seqKey(auditHead), clientv3.WithRev(rev))
		if err != nil {
			return nil, fmt.Errorf("etcdstore: audit head: %w", err)
		}
		if len(r.Kvs) != 1 {
			return nil, fmt.Errorf("etcdstore: audit head %d is missing", auditHead)
		}
		out.AuditHead = &adminv1.AuditEntry{}
		if err := proto.Unmarshal(r.Kvs[0].Value, out.AuditHead); err != nil {
			return nil, fmt.Errorf("etcdstore: audit head: %w", err)
		}
	}
	for variant, l := range latest {
		if out.Latest[variant], err = s.readStored(ctx, rev, variant, l); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// LoadPublished reads, at one revision, only the newest publication record and what the
// store holds of each variant: what a seed that follows serves over sync.
func (s *Store) LoadPublished(ctx context.Context) (*adminv1.Publication, map[string]seed.Stored, error) {
	hist, err := s.cli.Get(ctx, s.pfx+kHistory, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(1))
	if err != nil {
		return nil, nil, fmt.Errorf("etcdstore: load: %w", err)
	}
	if len(hist.Kvs) == 0 {
		return nil, nil, nil
	}
	rev := hist.Header.Revision
	info := &adminv1.Publication{}
	if err := proto.Unmarshal(hist.Kvs[0].Value, info); err != nil {
		return nil, nil, fmt.Errorf("etcdstore: publication: %w", err)
	}
	r, err := s.cli.Get(ctx, s.pfx+kLatest, clientv3.WithPrefix(), clientv3.WithRev(rev))
	if err != nil {
		return nil, nil, fmt.Errorf("etcdstore: load: %w", err)
	}
	out := map[string]seed.Stored{}
	for _, kv := range r.Kvs {
		var l latestValue
		if err := json.Unmarshal(kv.Value, &l); err != nil {
			return nil, nil, fmt.Errorf("etcdstore: %s: %w", kv.Key, err)
		}
		variant := strings.TrimPrefix(string(kv.Key), s.pfx+kLatest)
		if out[variant], err = s.readStored(ctx, rev, variant, l); err != nil {
			return nil, nil, err
		}
	}
	return info, out, nil
}

// readStored reads the blobs a latest value references.
func (s *Store) readStored(ctx context.Context, rev int64, variant string, l latestValue) (seed.Stored, error) {
	p := seed.Stored{}
	if len(l.Chain) > MaxChain {
		return p, fmt.Errorf("etcdstore: latest %q: a chain of %d deltas; this store writes at most %d", variant, len(l.Chain), MaxChain)
	}
	var err error
	for i, ref := range l.Chain {
		d, err := s.readBlob(ctx, rev, ref)
		if err != nil {
			return p, fmt.Errorf("etcdstore: latest %q delta %d: %w", variant, i+1, err)
		}
		p.Chain = append(p.Chain, d)
	}
	if p.Snapshot, err = s.readBlob(ctx, rev, l.Snapshot); err != nil {
		return p, fmt.Errorf("etcdstore: latest %q: %w", variant, err)
	}
	if l.Delta != nil {
		if p.Delta, err = s.readBlob(ctx, rev, *l.Delta); err != nil {
			return p, fmt.Errorf("etcdstore: latest %q: %w", variant, err)
		}
	}
	return p, nil
}

func (s *Store) blobKey(hash string, i int) string {
	return fmt.Sprintf("%s%s%s/%06d", s.pfx, kBlob, hash, i)
}

// readBlob reads and checks a chunked value.
func (s *Store) readBlob(ctx context.Context, rev int64, ref blobRef) ([]byte, error) {
	if ref.Size < 0 || ref.Chunks < 0 || ref.Chunks > ref.Size/ChunkBytes+1 {
		return nil, fmt.Errorf("blob %s: %d bytes in %d chunks is not a layout this store writes", ref.Hash, ref.Size, ref.Chunks)
	}
	r, err := s.cli.Get(ctx, fmt.Sprintf("%s%s%s/", s.pfx, kBlob, ref.Hash), clientv3.WithPrefix(), clientv3.WithRev(rev), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, err
	}
	if len(r.Kvs) != ref.Chunks {
		return nil, fmt.Errorf("blob %s: %d of %d chunks present", ref.Hash, len(r.Kvs), ref.Chunks)
	}
	out := make([]byte, 0, ref.Size)
	for _, kv := range r.Kvs {
		if len(out)+len(kv.Value) > ref.Size {
			return nil, fmt.Errorf("blob %s: longer than its %d bytes", ref.Hash, ref.Size)
		}
		out = append(out, kv.Value...)
	}
	if sum := sha256.Sum256(out); len(out) != ref.Size || hex.EncodeToString(sum[:]) != ref.Hash {
		return nil, fmt.Errorf("blob %s: content does not match its hash", ref.Hash)
	}
	return out, nil
}

// writeBlob stores b as chunks (idempotent: the keys are named by the content) and
// returns its reference. Chunks are written outside the fenced transaction, which only
// makes them reachable; a chunk no transaction references is removed by the next publish.
func (s *Store) writeBlob(ctx context.Context, b []byte) (blobRef, error) {
	sum := sha256.Sum256(b)
	ref := blobRef{Hash: hex.EncodeToString(sum[:]), Size: len(b), Chunks: (len(b) + ChunkBytes - 1) / ChunkBytes}
	for i := 0; i < ref.Chunks; i++ {
		chunk := b[i*ChunkBytes : min((i+1)*ChunkBytes, len(b))]
		if _, err := s.cli.Put(ctx, s.blobKey(ref.Hash, i), string(chunk)); err != nil {
			return blobRef{}, fmt.Errorf("etcdstore: write a chunk: %w", err)
		}
	}
	return ref, nil
}

func marshal(m proto.Message) (string, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	return string(b), err
}

// Commit writes t in one etcd transaction. It commits only if the audit head is the
// entry t.Audit links to (and, for a Fenced store, the election key is this leader's).
func (s *Store) Commit(ctx context.Context, t *seed.Tx) error {
	if t.Audit == nil {
		return errors.New("etcdstore: a commit without an audit entry is refused")
	}
	cmps := []clientv3.Cmp{}
	if s.fenceKey != "" {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(s.fenceKey), "=", s.fenceRev))
	}
	seq := t.Audit.GetSeq()
	if seq == 0 {
		return errors.New("etcdstore: audit entry 0 is not a valid sequence number")
	}
	if seq == 1 {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(s.pfx+kAuditHead), "=", 0))
	} else {
		cmps = append(cmps, clientv3.Compare(clientv3.Value(s.pfx+kAuditHead), "=", headValue(seq-1, t.Audit.GetPrevHash())))
	}
	var ops []clientv3.Op
	for _, k := range t.Deletes {
		ops = append(ops, clientv3.OpDelete(s.pfx+kRes+resourceKey(k)))
	}
	for _, r := range t.Puts {
		o, err := seed.ObjectFromResource(r)
		if err != nil {
			return err
		}
		v, err := marshal(r)
		if err != nil {
			return err
		}
		ops = append(ops, clientv3.OpPut(s.pfx+kRes+resourceKey(o.Key()), v))
	}
	av, err := marshal(t.Audit)
	if err != nil {
		return err
	}
	ops = append(ops, clientv3.OpPut(s.pfx+kAudit+seqKey(seq), av), clientv3.OpPut(s.pfx+kAuditHead, headValue(seq, t.Audit.GetHash())))
	idOps, err := s.identityOps(t.Identity)
	if err != nil {
		return err
	}
	ops = append(ops, idOps...)
	var unref []string // chunks of the envelopes this publication replaces
	if t.Publication != nil {
		pubOps, old, err := s.publicationOps(ctx, t)
		if err != nil {
			return err
		}
		ops, unref = append(ops, pubOps...), old
	}
	if t.Meta != nil {
		b, err := json.Marshal(metaValue{Domain: t.Meta.Domain, Epoch: t.Meta.Epoch, Version: t.Meta.Version})
		if err != nil {
			return err
		}
		ops = append(ops, clientv3.OpPut(s.pfx+kMeta, string(b)))
	}
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		if strings.Contains(err.Error(), "too many operations in txn request") {
			return fmt.Errorf("etcdstore: etcd refused a transaction of %d operations: raise etcd's --max-txn-ops, or apply fewer resources at once: %w", len(ops), err)
		}
		return fmt.Errorf("etcdstore: commit: %w", err)
	}
	if !resp.Succeeded {
		return s.whyFailed(ctx)
	}
	if len(unref) > 0 {
		s.dropChunks(ctx, unref)
	}
	return nil
}

func headValue(seq uint64, hash string) string { return strconv.FormatUint(seq, 10) + " " + hash }

// whyFailed tells a fenced-out writer from one that lost a race on the audit log.
func (s *Store) whyFailed(ctx context.Context) error {
	if s.fenceKey != "" {
		r, err := s.cli.Get(ctx, s.fenceKey)
		if err != nil || len(r.Kvs) == 0 || r.Kvs[0].CreateRevision != s.fenceRev {
			return ErrFenced
		}
	}
	return ErrConflict
}

// dropChunks deletes chunks no longer referenced, fenced like a commit so a deposed
// leader cannot remove what the new one just wrote. A failure only leaves garbage.
func (s *Store) dropChunks(ctx context.Context, hashes []string) {
	var ops []clientv3.Op
	for _, h := range hashes {
		ops = append(ops, clientv3.OpDelete(fmt.Sprintf("%s%s%s/", s.pfx, kBlob, h), clientv3.WithPrefix()))
	}
	txn := s.cli.Txn(ctx)
	if s.fenceKey != "" {
		txn = txn.If(clientv3.Compare(clientv3.CreateRevision(s.fenceKey), "=", s.fenceRev))
	}
	_, _ = txn.Then(ops...).Commit()
}

func resourceKey(k bundle.Key) string { return k.Kind + "/" + k.Namespace + "/" + k.Name }

func (s *Store) identityOps(recs []*adminv1.IdentityRecord) ([]clientv3.Op, error) {
	var ops []clientv3.Op
	for _, r := range recs {
		key, err := seed.IdentityKey(r)
		if err != nil {
			return nil, fmt.Errorf("etcdstore: %w", err)
		}
		v, err := marshal(r)
		if err != nil {
			return nil, err
		}
		ops = append(ops, clientv3.OpPut(s.pfx+kIdentity+key, v))
	}
	return ops, nil
}

// publicationOps writes the envelopes' chunks and returns the transaction's operations:
// the publication in the history (dropping the oldest beyond the limit), and the new
// latest references replacing the old. old lists the chunks only the old ones used.
func (s *Store) publicationOps(ctx context.Context, t *seed.Tx) (ops []clientv3.Op, old []string, err error) {
	pv, err := marshal(t.Publication)
	if err != nil {
		return nil, nil, err
	}
	v := t.Publication.GetVersion()
	ops = append(ops, clientv3.OpPut(s.pfx+kHistory+seqKey(v), pv))
	if v > uint64(s.history) {
		ops = append(ops, clientv3.OpDelete(s.pfx+kHistory, clientv3.WithRange(s.pfx+kHistory+seqKey(v-uint64(s.history)+1))))
	}
	prev, err := s.cli.Get(ctx, s.pfx+kLatest, clientv3.WithPrefix())
	if err != nil {
		return nil, nil, fmt.Errorf("etcdstore: read latest: %w", err)
	}
	kept := map[string]bool{}
	prevOf := map[string]latestValue{}
	for _, kv := range prev.Kvs {
		var l latestValue
		if json.Unmarshal(kv.Value, &l) == nil {
			prevOf[strings.TrimPrefix(string(kv.Key), s.pfx+kLatest)] = l
		}
	}
	for variant, p := range t.Latest {
		var l latestValue
		if p.Snapshot == nil { // append the delta to the variant's chain
			old, ok := prevOf[variant]
			if !ok {
				return nil, nil, fmt.Errorf("etcdstore: variant %q: a delta without a stored snapshot to apply it to", variant)
			}
			if len(old.Chain) >= MaxChain {
				return nil, nil, fmt.Errorf("etcdstore: variant %q: the chain already holds %d deltas; store a snapshot", variant, len(old.Chain))
			}
			d, err := s.writeBlob(ctx, p.Delta)
			if err != nil {
				return nil, nil, err
			}
			l = old
			l.Chain = append(slices.Clone(old.Chain), d)
		} else {
			if l.Snapshot, err = s.writeBlob(ctx, p.Snapshot); err != nil {
				return nil, nil, err
			}
			if p.Delta != nil {
				d, err := s.writeBlob(ctx, p.Delta)
				if err != nil {
					return nil, nil, err
				}
				l.Delta = &d
			}
		}
		for _, ref := range l.refs() {
			kept[ref.Hash] = true
		}
		b, err := json.Marshal(l)
		if err != nil {
			return nil, nil, err
		}
		ops = append(ops, clientv3.OpPut(s.pfx+kLatest+variant, string(b)))
	}
	for _, kv := range prev.Kvs {
		if _, ok := t.Latest[strings.TrimPrefix(string(kv.Key), s.pfx+kLatest)]; !ok {
			ops = append(ops, clientv3.OpDelete(string(kv.Key))) // a variant no longer published
		}
		var l latestValue
		if json.Unmarshal(kv.Value, &l) != nil {
			continue
		}
		for _, ref := range l.refs() {
			if !kept[ref.Hash] {
				old = append(old, ref.Hash)
			}
		}
	}
	return ops, old, nil
}

// Audit returns up to limit entries with seq > afterSeq.
func (s *Store) Audit(ctx context.Context, afterSeq uint64, limit int) ([]*adminv1.AuditEntry, error) {
	opts := []clientv3.OpOption{clientv3.WithRange(clientv3.GetPrefixRangeEnd(s.pfx + kAudit)), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)}
	if limit > 0 {
		opts = append(opts, clientv3.WithLimit(int64(limit)))
	}
	r, err := s.cli.Get(ctx, s.pfx+kAudit+seqKey(afterSeq+1), opts...)
	if err != nil {
		return nil, fmt.Errorf("etcdstore: audit: %w", err)
	}
	out := make([]*adminv1.AuditEntry, 0, len(r.Kvs))
	for _, kv := range r.Kvs {
		e := &adminv1.AuditEntry{}
		if err := proto.Unmarshal(kv.Value, e); err != nil {
			return nil, fmt.Errorf("etcdstore: audit entry %s: %w", kv.Key, err)
		}
		out = append(out, e)
	}
	return out, nil
}

// Close does nothing: the client belongs to the caller.
func (s *Store) Close() error { return nil }
