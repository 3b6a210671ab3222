package seed

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"

	"meshkit.dev/meshkit/bundle"
	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
)

// MaxApplyResources bounds one Apply request.
const MaxApplyResources = 20_000

// admin is the gRPC face of a Seed; every method authorizes first.
type admin struct {
	adminv1.UnimplementedAdminServiceServer
	s *Seed
}

// AdminServer returns the Seed's admin API for a gRPC server.
func (s *Seed) AdminServer() adminv1.AdminServiceServer { return &admin{s: s} }

func (a *admin) Apply(ctx context.Context, req *adminv1.ApplyRequest) (*adminv1.ApplyResponse, error) {
	return a.s.apply(ctx, req.GetResources(), req.GetDryRun())
}

func (a *admin) Diff(ctx context.Context, req *adminv1.DiffRequest) (*adminv1.DiffResponse, error) {
	resp, err := a.s.apply(ctx, req.GetResources(), true)
	if err != nil {
		return nil, err
	}
	return &adminv1.DiffResponse{Changes: resp.GetChanges()}, nil
}

// decodeResources converts request resources, checking the caller's tenants.
func decodeResources(p *Principal, in []*adminv1.Resource) ([]*record, error) {
	if len(in) == 0 {
		return nil, refuse(ErrInvalid, "no resources given")
	}
	if len(in) > MaxApplyResources {
		return nil, refuse(ErrInvalid, "%d resources in one request, the limit is %d", len(in), MaxApplyResources)
	}
	out := make([]*record, 0, len(in))
	seen := map[string]int{}
	var errs []string
	for i, r := range in {
		rec, err := newRecord(r)
		if err != nil {
			errs = append(errs, fmt.Sprintf("resources[%d]: %v", i, err))
			continue
		}
		if !p.allows(rec.Tenant) {
			return nil, refuse(ErrForbidden, "%s may not write %s: tenant %q is not among %v", p.Name, rec.Obj.Key(), rec.Tenant, p.Tenants)
		}
		if j, dup := seen[rec.ID]; dup {
			errs = append(errs, fmt.Sprintf("resources[%d]: %s is also resources[%d]", i, rec.Obj.Key(), j))
			continue
		}
		seen[rec.ID] = i
		out = append(out, rec)
	}
	if len(errs) > 0 {
		return nil, refuse(ErrInvalid, "%d problem(s):\n  %s", len(errs), strings.Join(errs, "\n  "))
	}
	return out, nil
}

// apply validates puts against the state they produce and, unless dryRun, stores them
// with their audit entry in one transaction.
func (s *Seed) apply(ctx context.Context, in []*adminv1.Resource, dryRun bool) (*adminv1.ApplyResponse, error) {
	p, err := authorize(ctx, ScopeOperate)
	if err != nil && dryRun {
		p, err = authorize(ctx, ScopeRead) // a diff only reads
	}
	if err != nil {
		return nil, err
	}
	return s.applyAs(ctx, p, in, dryRun)
}

// Apply stores resources on behalf of the process that embeds the seed (the simulator,
// `meshkit dev`): an administrator of every tenant, audited as actor. The admin API's
// callers go through authentication and RBAC instead.
func (s *Seed) Apply(ctx context.Context, actor string, in []*adminv1.Resource) (*adminv1.ApplyResponse, error) {
	return s.applyAs(ctx, &Principal{Name: actor, Scope: ScopeAdmin, Tenants: []string{"*"}}, in, false)
}

func (s *Seed) applyAs(ctx context.Context, p *Principal, in []*adminv1.Resource, dryRun bool) (*adminv1.ApplyResponse, error) {
	puts, err := decodeResources(p, in)
	if err != nil {
		s.metrics.writes.WithLabelValues("apply", "invalid").Inc()
		return nil, err
	}
	if err := s.checkArtifacts(ctx, puts); err != nil {
		s.metrics.writes.WithLabelValues("apply", "invalid").Inc()
		return nil, err
	}
	resp, err := s.write(ctx, p, "apply", puts, nil, dryRun)
	if err != nil {
		return nil, err
	}
	return &adminv1.ApplyResponse{Changes: resp.changes, StateHash: resp.stateHash, AuditSeq: resp.auditSeq, DryRun: dryRun}, nil
}

// checkArtifacts asks Config.Artifacts about every Extension of puts that is new or
// changed, outside the write lock (an admission can take a second), and refuses them all
// with their reasons.
func (s *Seed) checkArtifacts(ctx context.Context, puts []*record) error {
	if s.cfg.Artifacts == nil {
		return nil
	}
	snap := s.snapshot()
	var errs []string
	for _, r := range puts {
		ext, ok := r.Obj.Spec.(*bundlev1.ExtensionSpec)
		if !ok {
			continue
		}
		if old := snap.get(r.ID); old != nil && old.Hash == r.Hash {
			continue
		}
		if err := s.cfg.Artifacts.CheckArtifact(ctx, ext); err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", r.Obj.Key(), err))
		}
	}
	if len(errs) > 0 {
		return refuse(ErrInvalid, "%d extension(s) refused:\n  %s", len(errs), strings.Join(errs, "\n  "))
	}
	return nil
}

func (a *admin) Delete(ctx context.Context, req *adminv1.DeleteRequest) (*adminv1.DeleteResponse, error) {
	s := a.s
	p, err := authorize(ctx, ScopeOperate)
	if err != nil {
		return nil, err
	}
	key := bundle.Key{Kind: req.GetKind(), Namespace: cmpOr(req.GetNamespace(), bundle.DefaultNamespace), Name: req.GetName()}
	rec := s.snapshot().get(keyString(key))
	if rec == nil {
		return nil, refuse(ErrNotFound, "%s does not exist", key)
	}
	if !p.allows(rec.Tenant) {
		return nil, refuse(ErrForbidden, "%s may not delete %s: tenant %q is not among %v", p.Name, key, rec.Tenant, p.Tenants)
	}
	resp, err := s.write(ctx, p, "delete", nil, []bundle.Key{key}, req.GetDryRun())
	if err != nil {
		return nil, err
	}
	return &adminv1.DeleteResponse{Changes: resp.changes, StateHash: resp.stateHash, AuditSeq: resp.auditSeq}, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

type writeResult struct {
	changes   []*adminv1.Change
	stateHash string
	auditSeq  uint64
}

// write is the one path that changes desired state: candidate = current ± change,
// validation, then (unless dry run) one store transaction with the audit entry, then
// memdb, then a signal to the publish loop. Writers are serialized by s.mu.
//
// A small change (at most incrementalMax resources, no ReferenceGrant) is validated in
// place: the resources it puts and those referring to anything it touches, against the
// rest of the state through the memdb indexes (bundle.ValidateIn, which a property test
// holds to Validate's verdicts). Anything else validates the whole candidate state.
func (s *Seed) write(ctx context.Context, p *Principal, op string, puts []*record, deletes []bundle.Key, dryRun bool) (*writeResult, error) {
	if s.cfg.ReadOnly && !dryRun {
		return nil, s.notLeader()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	snap := s.snapshot()
	ov := overlay{snap: snap, puts: map[string]*record{}, deleted: map[string]bool{}}
	var changedPuts []*record
	var subjects []string
	grants := false
	for _, r := range puts {
		old := ov.get(r.ID)
		// The incoming tenant was checked against p when the request was decoded; the
		// record it replaces belongs to its own tenant, which p must also hold, or any
		// operator could take over another tenant's resource by naming it.
		if old != nil && !p.allows(old.Tenant) {
			s.metrics.writes.WithLabelValues(op, "denied").Inc()
			return nil, refuse(ErrForbidden, "%s may not replace %s: it belongs to tenant %q, which is not among %v",
				p.Name, r.Obj.Key(), old.Tenant, p.Tenants)
		}
		if old != nil && old.Hash == r.Hash {
			continue // unchanged
		}
		changedPuts = append(changedPuts, r)
		ov.puts[r.ID] = r
		delete(ov.deleted, r.ID)
		subjects = append(subjects, r.Obj.Key().String())
		grants = grants || r.Kind == bundle.KindReferenceGrant || (old != nil && old.Kind == bundle.KindReferenceGrant)
	}
	for _, k := range deletes {
		id := keyString(k)
		old := ov.get(id)
		if old == nil {
			return nil, refuse(ErrNotFound, "%s does not exist", k)
		}
		if refs := slices.DeleteFunc(snap.referrers(id), func(ref string) bool {
			return slices.ContainsFunc(deletes, func(d bundle.Key) bool { return keyString(d) == ref })
		}); len(refs) > 0 {
			s.metrics.writes.WithLabelValues(op, "invalid").Inc()
			return nil, refuse(ErrConflict, "%s is still referenced by %s; change or delete those first", k, strings.Join(refs, ", "))
		}
		delete(ov.puts, id)
		ov.deleted[id] = true
		subjects = append(subjects, k.String())
		grants = grants || old.Kind == bundle.KindReferenceGrant
	}
	if len(subjects) == 0 {
		return &writeResult{stateHash: s.stateHash}, nil
	}
	var current, candidate []*record // the whole states, for a full validation or a dry run
	var err error
	if dryRun || grants || len(ov.puts)+len(ov.deleted) > incrementalMax {
		current = s.order
		candidate = make([]*record, 0, len(current)+len(ov.puts))
		for _, r := range current {
			if ov.deleted[r.ID] {
				continue
			}
			if p, ok := ov.puts[r.ID]; ok {
				r = p
			}
			candidate = append(candidate, r)
		}
		for id, r := range ov.puts {
			if snap.get(id) == nil {
				candidate = append(candidate, r)
			}
		}
		slices.SortFunc(candidate, func(a, b *record) int { return strings.Compare(a.ID, b.ID) })
		err = bundle.Validate(objects(candidate))
	} else {
		err = bundle.ValidateIn(ov, s.toCheck(ov))
	}
	afterOrder, after := ov.apply(s.order)
	count := len(afterOrder)
	if err == nil && count > bundle.MaxResources {
		err = fmt.Errorf("%d resources, the limit is %d", count, bundle.MaxResources)
	}
	if err != nil {
		s.metrics.validationFailures.Inc()
		s.metrics.writes.WithLabelValues(op, "invalid").Inc()
		var verrs bundle.ValidationErrors
		if errors.As(err, &verrs) {
			return nil, refuse(ErrInvalid, "%s", verrs.Error())
		}
		return nil, refuse(ErrInvalid, "%s", err.Error())
	}
	res := &writeResult{stateHash: after}
	if dryRun {
		res.changes = s.compiledDiff(p, current, candidate)
		return res, nil
	}
	before := map[string]*record{}
	for id := range ov.puts {
		if r := snap.get(id); r != nil {
			before[id] = r
		}
	}
	for id := range ov.deleted {
		if r := snap.get(id); r != nil {
			before[id] = r
		}
	}
	res.changes = resourceChanges(changedPuts, deletes, before)
	entry := chain(s.auditHead, &adminv1.AuditEntry{
		Time: timestamppb.New(s.cfg.Clock.Now()), Actor: p.Name, Action: op, Subjects: subjects,
		BeforeHash: s.stateHash, AfterHash: after,
	})
	tx := &Tx{Deletes: deletes, Audit: entry}
	for _, r := range changedPuts {
		tx.Puts = append(tx.Puts, r.Res)
	}
	if err := s.cfg.Store.Commit(ctx, tx); err != nil {
		s.metrics.writes.WithLabelValues(op, "error").Inc()
		return nil, refuse(ErrUnavailable, "storing the change failed, nothing was changed: %v", err)
	}
	txn := s.db.Txn(true)
	for _, r := range changedPuts {
		if err := txn.Insert(tableResources, r); err != nil {
			txn.Abort()
			return nil, refuse(ErrInternal, "memdb: %v", err) // unreachable with a fixed schema
		}
	}
	for _, k := range deletes {
		if _, err := txn.DeleteAll(tableResources, "id", keyString(k)); err != nil {
			txn.Abort()
			return nil, refuse(ErrInternal, "memdb: %v", err)
		}
	}
	txn.Commit()
	s.auditHead, s.stateHash, s.count, s.order = entry, after, count, afterOrder
	for _, r := range changedPuts {
		s.markChanged(r.Obj.Key())
	}
	for _, k := range deletes {
		s.markChanged(k)
	}
	if s.pending.IsZero() {
		s.pending = s.cfg.Clock.Now()
	}
	s.metrics.resources.Set(float64(count))
	s.metrics.writes.WithLabelValues(op, "ok").Inc()
	s.signal()
	res.auditSeq = entry.GetSeq()
	return res, nil
}

// notLeader is the refusal of a write to a ReadOnly view.
func (s *Seed) notLeader() error {
	if s.cfg.Leadership != nil {
		if l := s.cfg.Leadership(); l.GetLeaderId() != "" {
			return refuse(ErrUnavailable, "this seed does not lead its domain; the leader is %s at %s (meshkit clients retry there)", l.GetLeaderId(), l.GetLeaderAdmin())
		}
	}
	return refuse(ErrUnavailable, "this seed does not lead its domain, and no seed leads it now (an election is under way); retry shortly")
}

// markChanged records that k's resource changed since the newest publication; s.mu is held.
func (s *Seed) markChanged(k bundle.Key) {
	switch k.Kind {
	case bundle.KindExtension, bundle.KindExtensionBinding, bundle.KindKillSwitch:
		s.changedAll = true // they change how other resources compile
	}
	s.changed[k] = true
}

// incrementalMax is the largest change validated in place rather than as a whole state.
const incrementalMax = 256

// toCheck is what a small change needs validated: the resources it puts, and every
// resource referring to one it puts or deletes (a changed tenant or a removal can break a
// reference that was valid).
func (s *Seed) toCheck(ov overlay) []bundle.Object {
	var out []bundle.Object
	seen := map[string]bool{}
	for id, r := range ov.puts {
		seen[id] = true
		out = append(out, r.Obj)
	}
	touched := slices.Collect(maps.Keys(ov.puts))
	for id := range ov.deleted {
		touched = append(touched, id)
	}
	for _, id := range touched {
		for _, ref := range ov.snap.referrers(id) {
			if r := ov.get(ref); r != nil && !seen[ref] {
				seen[ref] = true
				out = append(out, r.Obj)
			}
		}
	}
	return out
}

// resourceChanges lists what a write changed, resource by resource.
func resourceChanges(puts []*record, deletes []bundle.Key, before map[string]*record) []*adminv1.Change {
	var out []*adminv1.Change
	for _, r := range puts {
		op := "+"
		if _, ok := before[r.ID]; ok {
			op = "~"
		}
		k := r.Obj.Key()
		out = append(out, &adminv1.Change{Op: op, Kind: k.Kind, Namespace: k.Namespace, Name: k.Name})
	}
	for _, k := range deletes {
		out = append(out, &adminv1.Change{Op: "-", Kind: k.Kind, Namespace: k.Namespace, Name: k.Name})
	}
	return out
}

// compiledDiff shows how the full compiled bundle would change, field by field, for the
// resources of p's tenants: a dry run shows no other tenant's fields.
func (s *Seed) compiledDiff(p *Principal, before, after []*record) []*adminv1.Change {
	hdr := bundle.Header{Domain: s.cfg.Domain}
	a := Compile(hdr, objects(before))[0]
	b := Compile(hdr, objects(after))[0]
	_, changes := bundle.Diff(a, b)
	tenant := map[string]string{}
	for _, recs := range [][]*record{before, after} {
		for _, r := range recs {
			tenant[r.ID] = r.Tenant
		}
	}
	out := make([]*adminv1.Change, 0, len(changes))
	for _, c := range changes {
		if t, ok := tenant[keyString(c.Key)]; ok && !p.allows(t) {
			continue
		}
		out = append(out, &adminv1.Change{Op: c.Op, Kind: c.Key.Kind, Namespace: c.Key.Namespace, Name: c.Key.Name, Diff: c.Diff})
	}
	return out
}

func (a *admin) Get(ctx context.Context, req *adminv1.GetRequest) (*adminv1.GetResponse, error) {
	p, err := authorize(ctx, ScopeRead)
	if err != nil {
		return nil, err
	}
	key := bundle.Key{Kind: req.GetKind(), Namespace: cmpOr(req.GetNamespace(), bundle.DefaultNamespace), Name: req.GetName()}
	rec := a.s.snapshot().get(keyString(key))
	if rec == nil || !p.allows(rec.Tenant) {
		return nil, refuse(ErrNotFound, "%s does not exist", key)
	}
	return &adminv1.GetResponse{Resource: rec.Res}, nil
}

func (a *admin) List(ctx context.Context, req *adminv1.ListRequest) (*adminv1.ListResponse, error) {
	p, err := authorize(ctx, ScopeRead)
	if err != nil {
		return nil, err
	}
	snap := a.s.snapshot()
	index, arg := "id", []any{}
	switch {
	case req.GetKind() != "":
		index, arg = "kind", []any{req.GetKind()}
	case req.GetTenant() != "":
		index, arg = "tenant", []any{req.GetTenant()}
	}
	it, err := snap.txn.Get(tableResources, index, arg...)
	if err != nil {
		return nil, refuse(ErrInternal, "memdb: %v", err)
	}
	resp := &adminv1.ListResponse{}
	var recs []*record
	for obj := it.Next(); obj != nil; obj = it.Next() {
		r := obj.(*record)
		if (req.GetNamespace() != "" && r.Namespace != req.GetNamespace()) || (req.GetTenant() != "" && r.Tenant != req.GetTenant()) ||
			(req.GetKind() != "" && r.Kind != req.GetKind()) || !p.allows(r.Tenant) {
			continue
		}
		recs = append(recs, r)
	}
	slices.SortFunc(recs, func(x, y *record) int { return strings.Compare(x.ID, y.ID) })
	for _, r := range recs {
		resp.Resources = append(resp.Resources, r.Res)
	}
	return resp, nil
}

func (a *admin) History(ctx context.Context, req *adminv1.HistoryRequest) (*adminv1.HistoryResponse, error) {
	p, err := authorize(ctx, ScopeRead)
	if err != nil {
		return nil, err
	}
	a.s.mu.Lock()
	defer a.s.mu.Unlock()
	limit := int(req.GetLimit())
	if limit <= 0 {
		limit = 20
	}
	resp := &adminv1.HistoryResponse{}
	for i := len(a.s.history) - 1; i >= 0 && len(resp.Publications) < limit; i-- {
		pub := a.s.history[i]
		if !p.allTenants() {
			// The variants' hashes and sizes describe every tenant's configuration.
			pub = &adminv1.Publication{Epoch: pub.GetEpoch(), Version: pub.GetVersion(), PublishedAt: pub.GetPublishedAt(), AuditSeq: pub.GetAuditSeq()}
		}
		resp.Publications = append(resp.Publications, pub)
	}
	return resp, nil
}

func (a *admin) Status(ctx context.Context, _ *adminv1.StatusRequest) (*adminv1.StatusResponse, error) {
	p, err := authorize(ctx, ScopeRead)
	if err != nil {
		return nil, err
	}
	st := a.s.Status()
	if !p.allTenants() {
		a.s.tenantView(p, st)
	}
	return st, nil
}

// tenantView narrows a status to what p's tenants may see: their resources' count, and
// the agents' verdicts on their extensions' artifacts only. NACK counts stay (they say how
// many data planes refused a version), their error text goes: it names other tenants'
// resources as often as p's. The publisher's error is the operators'.
func (s *Seed) tenantView(p *Principal, st *adminv1.StatusResponse) {
	var count uint64
	mine := map[string]bool{}
	for _, r := range s.snapshot().records() {
		if !p.allows(r.Tenant) {
			continue
		}
		count++
		if e, ok := r.Obj.Spec.(*bundlev1.ExtensionSpec); ok {
			mine[e.GetArtifact()] = true
		}
	}
	st.Resources, st.LastError = count, ""
	for _, n := range st.GetNacks() {
		n.LastError = ""
	}
	st.Extensions = slices.DeleteFunc(st.Extensions, func(e *adminv1.ExtensionSummary) bool { return !mine[e.GetArtifact()] })
}

// Status reports the publish state (also used by /readyz).
func (s *Seed) Status() *adminv1.StatusResponse {
	s.mu.Lock()
	defer s.mu.Unlock()
	resp := &adminv1.StatusResponse{
		Domain: s.cfg.Domain, Epoch: s.cfg.Epoch, Version: s.meta.Version, Pending: !s.pending.IsZero(),
		Resources: uint64(s.count), StateHash: s.stateHash,
	}
	if !s.pubAt.IsZero() {
		resp.LastPublishedAt = timestamppb.New(s.pubAt)
	}
	if s.lastErr != nil {
		resp.LastError = s.lastErr.Error()
	}
	if r, ok := s.pub.(NodeReporter); ok {
		resp.ReportingNodes, resp.Nacks = r.NodeReports(s.cfg.Clock.Now())
	}
	if r, ok := s.pub.(ExtensionReporter); ok {
		resp.Extensions = r.ExtensionReports(s.cfg.Clock.Now())
	}
	if r, ok := s.pub.(ServingReporter); ok {
		resp.Serving = r.ServingReports(s.cfg.Clock.Now())
	}
	for _, cv := range s.compiled {
		resp.PublishedAuditSeq = max(resp.PublishedAuditSeq, cv.Bundle.GetHeader().GetAuditSeq())
	}
	if s.cfg.Leadership != nil {
		resp.Leadership = s.cfg.Leadership()
	}
	return resp
}

func (a *admin) Audit(ctx context.Context, req *adminv1.AuditRequest) (*adminv1.AuditResponse, error) {
	if _, err := authorizeAll(ctx, ScopeAdmin, "the audit log records every tenant's changes"); err != nil {
		return nil, err
	}
	limit := int(req.GetLimit())
	if limit <= 0 || limit > 10_000 {
		limit = 1000
	}
	entries, err := a.s.cfg.Store.Audit(ctx, req.GetAfterSeq(), limit)
	if err != nil {
		return nil, refuse(ErrUnavailable, "%v", err)
	}
	return &adminv1.AuditResponse{Entries: entries}, nil
}

func (a *admin) VerifyAudit(ctx context.Context, _ *adminv1.VerifyAuditRequest) (*adminv1.VerifyAuditResponse, error) {
	if _, err := authorizeAll(ctx, ScopeAdmin, "the audit log records every tenant's changes"); err != nil {
		return nil, err
	}
	a.s.mu.Lock() // no write may land between reading the log and the state
	defer a.s.mu.Unlock()
	resp, err := VerifyStore(ctx, a.s.cfg.Store)
	if err != nil {
		return nil, refuse(ErrCorrupt, "%s", err.Error())
	}
	return resp, nil
}

// VerifyStore verifies the whole audit chain of a store and checks that the stored desired
// state is the one its newest entry recorded. `meshkit audit verify --data DIR` runs it on
// a stopped seed's files.
func VerifyStore(ctx context.Context, st Store) (*adminv1.VerifyAuditResponse, error) {
	entries, err := st.Audit(ctx, 0, 0)
	if err != nil {
		return nil, err
	}
	head, err := VerifyChain(entries)
	if err != nil {
		return nil, err
	}
	loaded, err := st.Load(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkCheckpoints(entries, loaded.Latest, nil); err != nil {
		return nil, err
	}
	var recs []*record
	for _, r := range loaded.Resources {
		rec, err := newRecord(r)
		if err != nil {
			return nil, err
		}
		recs = append(recs, rec)
	}
	slices.SortFunc(recs, func(x, y *record) int { return strings.Compare(x.ID, y.ID) })
	state := stateHash(recs)
	resp := &adminv1.VerifyAuditResponse{Entries: uint64(len(entries)), StateHash: state}
	if head == nil {
		if len(recs) > 0 {
			return nil, fmt.Errorf("%w: %d resources are stored but the audit log is empty", ErrAuditChain, len(recs))
		}
		return resp, nil
	}
	if head.GetAfterHash() != state {
		return nil, fmt.Errorf("%w: stored state %s is not the state %s entry %d recorded", ErrAuditChain, state, head.GetAfterHash(), head.GetSeq())
	}
	resp.HeadHash = head.GetHash()
	return resp, nil
}

func (a *admin) GetBundle(ctx context.Context, req *adminv1.GetBundleRequest) (*adminv1.GetBundleResponse, error) {
	if _, err := authorizeAll(ctx, ScopeRead, "a signed bundle holds every tenant's resources and cannot be cut down without breaking its signature; `meshkit get` lists your tenants' resources"); err != nil {
		return nil, err
	}
	s := a.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.latest) == 0 {
		return nil, refuse(ErrConflict, "nothing has been published yet")
	}
	key := pickVariant(s.latest, s.compiled, req.GetCapabilities())
	if key == "" {
		return nil, refuse(ErrConflict, "no published variant fits capabilities %v", req.GetCapabilities())
	}
	p := s.latest[key]
	env := p.Snapshot
	if req.GetDelta() {
		if p.Delta == nil {
			return nil, refuse(ErrNotFound, "the newest version has no delta for this variant (it is the first of its kind)")
		}
		env = p.Delta
	}
	h := s.compiled[key].Bundle.GetHeader()
	return &adminv1.GetBundleResponse{Envelope: env, Epoch: h.GetEpoch(), Version: h.GetVersion(), RequiredCapabilities: h.GetRequiredCapabilities()}, nil
}
