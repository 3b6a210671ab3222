// Package storetest is the contract every seed.Store implementation passes: the same
// suite runs against the embedded bbolt store and against etcd.
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"meshkit.dev/meshkit/bundle"
	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
	"meshkit.dev/meshkit/seed"
)

// Suite says how to get stores of one implementation.
type Suite struct {
	// Open returns a store on fresh, empty backing storage.
	Open func(t *testing.T) seed.Store
	// Reopen closes st and opens the same backing storage again.
	Reopen func(t *testing.T, st seed.Store) seed.Store
}

// Run runs the contract against s.
func Run(t *testing.T, s Suite) {
	t.Run("Empty", func(t *testing.T) { testEmpty(t, s) })
	t.Run("ApplyDeleteReload", func(t *testing.T) { testApplyDeleteReload(t, s) })
	t.Run("AuditOutOfOrderRefusedAndNothingWritten", func(t *testing.T) { testAuditOrder(t, s) })
	t.Run("PublishReplacesLatestAndKeepsHistory", func(t *testing.T) { testPublish(t, s) })
	t.Run("DeltaChains", func(t *testing.T) { testChains(t, s) })
	t.Run("Identity", func(t *testing.T) { testIdentity(t, s) })
	t.Run("AuditPaging", func(t *testing.T) { testAuditPaging(t, s) })
}

// Cluster returns a valid resource named name.
func Cluster(name string, port uint32) *adminv1.Resource {
	objs, err := bundle.Decode("c.yaml", fmt.Appendf(nil, "apiVersion: meshkit.dev/v1alpha1\nkind: Cluster\nmetadata: {name: %s, namespace: shop}\nspec: {endpoints: [{address: a, port: %d}]}\n", name, port))
	if err != nil {
		panic(err) // a constant, valid document
	}
	r, err := seed.ResourceFromObject(objs[0])
	if err != nil {
		panic(err)
	}
	return r
}

func entry(head *adminv1.AuditEntry, action string) *adminv1.AuditEntry {
	return seed.Chain(head, &adminv1.AuditEntry{Time: timestamppb.New(time.Unix(1700000000, 0)), Actor: "suite", Action: action})
}

func load(t *testing.T, st seed.Store) *seed.Loaded {
	t.Helper()
	l, err := st.Load(context.Background())
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	return l
}

func commit(t *testing.T, st seed.Store, tx *seed.Tx) {
	t.Helper()
	if err := st.Commit(context.Background(), tx); err != nil {
		t.Fatalf("commit: %v", err)
	}
}

func names(rs []*adminv1.Resource) map[string]uint32 {
	out := map[string]uint32{}
	for _, r := range rs {
		o, err := seed.ObjectFromResource(r)
		if err != nil {
			panic(err)
		}
		out[o.Metadata.GetName()] = uint32(len(r.String())) // changes when the spec does
	}
	return out
}

func testEmpty(t *testing.T, s Suite) {
	st := s.Open(t)
	l := load(t, st)
	if l.Meta.Version != 0 || len(l.Resources) != 0 || l.AuditHead != nil || len(l.History) != 0 || len(l.Latest) != 0 || len(l.Identity) != 0 {
		t.Fatalf("a new store loads %+v", l)
	}
	if err := st.Commit(context.Background(), &seed.Tx{Puts: []*adminv1.Resource{Cluster("a", 1)}}); err == nil {
		t.Fatal("a commit without an audit entry was accepted")
	}
	if l := load(t, st); len(l.Resources) != 0 {
		t.Fatal("a refused commit wrote resources")
	}
}

func testApplyDeleteReload(t *testing.T, s Suite) {
	st := s.Open(t)
	e1 := entry(nil, "apply")
	commit(t, st, &seed.Tx{Puts: []*adminv1.Resource{Cluster("a", 1), Cluster("b", 2), Cluster("c", 3)}, Audit: e1})
	e2 := entry(e1, "apply")
	commit(t, st, &seed.Tx{Puts: []*adminv1.Resource{Cluster("b", 20000)}, Deletes: []bundle.Key{{Kind: "Cluster", Namespace: "shop", Name: "c"}}, Audit: e2})
	st = s.Reopen(t, st)
	l := load(t, st)
	got := names(l.Resources)
	want := names([]*adminv1.Resource{Cluster("a", 1), Cluster("b", 20000)})
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("resources after reopen = %v, want %v", got, want)
	}
	if !proto.Equal(l.AuditHead, e2) {
		t.Fatalf("audit head = %v, want %v", l.AuditHead, e2)
	}
}

func testAuditOrder(t *testing.T, s Suite) {
	st := s.Open(t)
	e1 := entry(nil, "apply")
	commit(t, st, &seed.Tx{Puts: []*adminv1.Resource{Cluster("a", 1)}, Audit: e1})
	for name, bad := range map[string]*adminv1.AuditEntry{
		"a second seq 1":        entry(nil, "apply"),
		"a gap":                 seed.Chain(entry(e1, "apply"), &adminv1.AuditEntry{Action: "apply"}),
		"a wrong previous hash": seed.Chain(&adminv1.AuditEntry{Seq: 1, Hash: "sha256:00"}, &adminv1.AuditEntry{Action: "apply"}),
	} {
		if err := st.Commit(context.Background(), &seed.Tx{Puts: []*adminv1.Resource{Cluster("evil", 9)}, Audit: bad}); err == nil {
			t.Errorf("%s was accepted", name)
		}
	}
	l := load(t, st)
	if len(l.Resources) != 1 || !proto.Equal(l.AuditHead, e1) {
		t.Fatalf("refused commits left %d resources, head %v", len(l.Resources), l.AuditHead)
	}
	// The next entry in order still commits.
	commit(t, st, &seed.Tx{Audit: entry(e1, "apply")})
}

func testPublish(t *testing.T, s Suite) {
	st := s.Open(t)
	big := make([]byte, 2<<20+12345) // larger than one etcd request by default
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	head := entry(nil, "apply")
	commit(t, st, &seed.Tx{Puts: []*adminv1.Resource{Cluster("a", 1)}, Audit: head})
	const n = 5
	for v := uint64(1); v <= n; v++ {
		head = entry(head, "publish")
		latest := map[string]seed.Published{"core": {Snapshot: append([]byte(fmt.Sprintf("v%d", v)), big...)}, "core,ext.wasm": {Snapshot: []byte(fmt.Sprintf("small v%d", v))}}
		if v > 1 {
			latest["core"] = seed.Published{Snapshot: latest["core"].Snapshot, Delta: []byte(fmt.Sprintf("delta to v%d", v))}
		}
		commit(t, st, &seed.Tx{Audit: head, Publication: &adminv1.Publication{Epoch: 7, Version: v, AuditSeq: head.GetSeq()}, Latest: latest, Meta: &seed.Meta{Domain: "prod", Epoch: 7, Version: v}})
	}
	st = s.Reopen(t, st)
	l := load(t, st)
	if l.Meta != (seed.Meta{Domain: "prod", Epoch: 7, Version: n}) {
		t.Fatalf("meta = %+v", l.Meta)
	}
	if len(l.Latest) != 2 || !bytes.Equal(l.Latest["core"].Snapshot, append([]byte(fmt.Sprintf("v%d", n)), big...)) || string(l.Latest["core"].Delta) != fmt.Sprintf("delta to v%d", n) ||
		string(l.Latest["core,ext.wasm"].Snapshot) != fmt.Sprintf("small v%d", n) || l.Latest["core,ext.wasm"].Delta != nil {
		t.Fatalf("latest: %d variants, full snapshot %d bytes, delta %q, wasm %q", len(l.Latest), len(l.Latest["core"].Snapshot), l.Latest["core"].Delta, l.Latest["core,ext.wasm"].Snapshot)
	}
	if len(l.History) != n || l.History[0].GetVersion() != 1 || l.History[n-1].GetVersion() != n {
		t.Fatalf("history = %v", l.History)
	}
	if !proto.Equal(l.AuditHead, head) {
		t.Fatalf("audit head = %v", l.AuditHead)
	}
}

// testChains stores some publications as deltas alone: the store keeps the last snapshot
// and the deltas after it, restarts the chain at the next snapshot, refuses a delta with
// no snapshot under it, and drops a variant no longer published.
func testChains(t *testing.T, s Suite) {
	st := s.Open(t)
	head := entry(nil, "apply")
	commit(t, st, &seed.Tx{Audit: head})
	publish := func(v uint64, latest map[string]seed.Published) error {
		e := entry(head, "publish")
		err := st.Commit(context.Background(), &seed.Tx{Audit: e, Publication: &adminv1.Publication{Epoch: 1, Version: v, AuditSeq: e.GetSeq()}, Latest: latest, Meta: &seed.Meta{Domain: "prod", Epoch: 1, Version: v}})
		if err == nil {
			head = e
		}
		return err
	}
	b := func(s string) []byte { return []byte(s) }
	if err := publish(1, map[string]seed.Published{"core": {Delta: b("d1")}}); err == nil {
		t.Fatal("a delta with no snapshot under it was stored")
	}
	steps := []map[string]seed.Published{
		{"core": {Snapshot: b("s1")}, "core,ext.wasm": {Snapshot: b("w1")}},
		{"core": {Delta: b("d2")}, "core,ext.wasm": {Snapshot: b("w2"), Delta: b("wd2")}},
		{"core": {Delta: b("d3")}, "core,ext.wasm": {Delta: b("wd3")}},
	}
	for i, l := range steps {
		if err := publish(uint64(i+1), l); err != nil {
			t.Fatalf("publish %d: %v", i+1, err)
		}
	}
	st = s.Reopen(t, st)
	l := load(t, st)
	got := func(v seed.Stored) string {
		out := fmt.Sprintf("%s|%s|", v.Snapshot, v.Delta)
		for _, d := range v.Chain {
			out += string(d) + ","
		}
		return out
	}
	if len(l.Latest) != 2 || got(l.Latest["core"]) != "s1||d2,d3," || got(l.Latest["core,ext.wasm"]) != "w2|wd2|wd3," {
		t.Fatalf("after chains: core %q, wasm %q (%d variants)", got(l.Latest["core"]), got(l.Latest["core,ext.wasm"]), len(l.Latest))
	}
	// A snapshot restarts the chain; a variant not given is dropped.
	if err := publish(4, map[string]seed.Published{"core": {Snapshot: b("s4"), Delta: b("d4")}}); err != nil {
		t.Fatal(err)
	}
	if err := publish(5, map[string]seed.Published{"core": {Delta: b("d5")}}); err != nil {
		t.Fatal(err)
	}
	l = load(t, s.Reopen(t, st))
	if len(l.Latest) != 1 || got(l.Latest["core"]) != "s4|d4|d5," {
		t.Fatalf("after a new snapshot: core %q (%d variants)", got(l.Latest["core"]), len(l.Latest))
	}
	if err := publish(6, map[string]seed.Published{"core,ext.wasm": {Delta: b("wd6")}}); err == nil {
		t.Fatal("a delta onto a dropped variant was stored")
	}
}

func testIdentity(t *testing.T, s Suite) {
	st := s.Open(t)
	tok := func(node string) *adminv1.IdentityRecord {
		return &adminv1.IdentityRecord{Record: &adminv1.IdentityRecord_JoinToken{JoinToken: &adminv1.JoinToken{Sha256: "abc", Node: node}}}
	}
	cert := &adminv1.IdentityRecord{Record: &adminv1.IdentityRecord_Issued{Issued: &adminv1.IssuedCertificate{Serial: "01", Node: "n"}}}
	e1 := entry(nil, "token")
	commit(t, st, &seed.Tx{Audit: e1, Identity: []*adminv1.IdentityRecord{tok("first"), cert}})
	commit(t, st, &seed.Tx{Audit: entry(e1, "token"), Identity: []*adminv1.IdentityRecord{tok("second")}})
	l := load(t, s.Reopen(t, st))
	if len(l.Identity) != 1 || l.Identity[0].GetJoinToken().GetNode() != "second" {
		t.Fatalf("identity = %v; want the replaced token only (issued certificates are not loaded)", l.Identity)
	}
}

func testAuditPaging(t *testing.T, s Suite) {
	st := s.Open(t)
	var head *adminv1.AuditEntry
	for range 25 {
		head = entry(head, "apply")
		commit(t, st, &seed.Tx{Audit: head})
	}
	all, err := st.Audit(context.Background(), 0, 0)
	if err != nil || len(all) != 25 {
		t.Fatalf("audit = %d entries, %v", len(all), err)
	}
	if _, err := seed.VerifyChain(all); err != nil {
		t.Fatal(err)
	}
	page, err := st.Audit(context.Background(), 10, 5)
	if err != nil || len(page) != 5 || page[0].GetSeq() != 11 || page[4].GetSeq() != 15 {
		t.Fatalf("page after 10, limit 5 = %v, %v", page, err)
	}
	if rest, _ := st.Audit(context.Background(), 25, 0); len(rest) != 0 {
		t.Fatalf("after the head: %v", rest)
	}
}
