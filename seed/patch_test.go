package seed_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"meshkit.dev/meshkit/bundle"
	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
	"meshkit.dev/meshkit/seed"
	"meshkit.dev/meshkit/trust"
)

// TestPatchedPublicationsAreTheWholeEncoding applies random changes of every kind (routes,
// clusters, kill switches, extensions, bindings; puts and deletes) and checks each
// publication against the truth: every variant's payload is the whole encoding of the
// state compiled afresh, and its delta is DeltaBetween the previous payload and it. The
// seed patches publications from the keys a change touched; this is what holds it to the
// whole encoding.
func TestPatchedPublicationsAreTheWholeEncoding(t *testing.T) {
	ts := open(t, "", noDebounce)
	truth := map[string]*adminv1.Resource{}
	key := func(r *adminv1.Resource) string {
		o, err := seed.ObjectFromResource(r)
		if err != nil {
			t.Fatal(err)
		}
		return o.Key().String()
	}
	apply := func(yaml string) {
		rs := resources(t, yaml)
		ts.apply(t, rs)
		for _, r := range rs {
			truth[key(r)] = r
		}
	}
	del := func(kind, name string) {
		if _, err := ts.api.Delete(adminCtx(), &adminv1.DeleteRequest{Kind: kind, Namespace: "shop", Name: name}); err != nil {
			t.Fatalf("delete %s %s: %v", kind, name, err)
		}
		delete(truth, bundle.Key{Kind: kind, Namespace: "shop", Name: name}.String())
	}
	const hdr = "apiVersion: meshkit.dev/v1alpha1\n"
	rs := append(resources(t, "../examples/shop"), resources(t, extensions)...)
	ts.apply(t, rs)
	for _, r := range rs {
		truth[key(r)] = r
	}
	version := uint64(1)
	prev := check(t, ts, truth, version, nil)
	r := rand.New(rand.NewPCG(5, 6))
	added := 0
	killed := false
	for step := range 60 {
		before := ts.Status().GetStateHash()
		switch r.IntN(7) {
		case 0:
			apply(hdr + fmt.Sprintf("kind: Route\nmetadata: {name: storefront, namespace: shop, tenant: acme}\nspec:\n  match: {hosts: [shop.example.com], pathPrefix: /}\n  cluster: frontend\n  timeout: %ds\n", 1+step))
		case 1:
			added++
			apply(hdr + fmt.Sprintf("kind: Cluster\nmetadata: {name: extra-%d, namespace: shop, tenant: acme}\nspec: {endpoints: [{address: a, port: %d}]}\n---\n", added, 1000+added) +
				hdr + fmt.Sprintf("kind: Route\nmetadata: {name: extra-%d, namespace: shop, tenant: acme}\nspec:\n  match: {hosts: [extra-%d.example.com]}\n  cluster: extra-%d\n", added, added, added))
		case 2:
			if added > 0 && truth[bundle.Key{Kind: bundle.KindRoute, Namespace: "shop", Name: fmt.Sprintf("extra-%d", added)}.String()] != nil {
				del(bundle.KindRoute, fmt.Sprintf("extra-%d", added))
			} else {
				continue
			}
		case 3:
			if killed {
				del(bundle.KindKillSwitch, "stop-fraud")
			} else {
				apply(hdr + "kind: KillSwitch\nmetadata: {name: stop-fraud, namespace: shop, tenant: acme}\nspec: {target: KILL_SWITCH_TARGET_EXTENSION, name: fraud, reason: incident}\n")
			}
			killed = !killed
		case 4:
			apply(hdr + fmt.Sprintf("kind: Extension\nmetadata: {name: waf, namespace: shop, tenant: acme}\nspec: {kind: EXTENSION_KIND_WASM, artifact: bafkreiwaf%d, abi: proxy-wasm/0.2.1, failurePolicy: FAILURE_POLICY_FAIL_OPEN}\n", step))
		case 5:
			routes := []string{"payments"}
			if r.IntN(2) == 0 {
				routes = append(routes, "inventory")
			}
			apply(hdr + fmt.Sprintf("kind: ExtensionBinding\nmetadata: {name: fraud-payments, namespace: shop, tenant: acme}\nspec: {extension: fraud, routes: [%s]}\n", strings.Join(routes, ", ")))
		case 6:
			apply(hdr + fmt.Sprintf("kind: RetryPolicy\nmetadata: {name: idempotent-fast, namespace: shop, tenant: acme}\nspec: {attempts: %d}\n", 1+r.IntN(3)))
		}
		if ts.Status().GetStateHash() == before {
			continue // the change changed nothing: nothing is published
		}
		version++
		prev = check(t, ts, truth, version, prev)
	}
	if version < 40 {
		t.Fatalf("only %d publications", version)
	}
}

// check waits for version, then compares each variant with the state compiled afresh.
// It returns the payloads by variant, for the next delta.
func check(t *testing.T, ts *testSeed, truth map[string]*adminv1.Resource, version uint64, prev map[string][]byte) map[string][]byte {
	t.Helper()
	pub := ts.waitPublished(t, version)
	if pub.Info.GetVersion() != version {
		t.Fatalf("published v%d, want v%d", pub.Info.GetVersion(), version)
	}
	var objs []bundle.Object
	for _, k := range slices.Sorted(mapsKeys(truth)) {
		o, err := seed.ObjectFromResource(truth[k])
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, o)
	}
	out := map[string][]byte{}
	for _, pv := range pub.Variants {
		env, err := trust.DecodeEnvelope(pv.Snapshot, 0)
		if err != nil {
			t.Fatal(err)
		}
		got, err := bundle.DecodeBundle(env.GetPayload())
		if err != nil {
			t.Fatal(err)
		}
		h := got.GetHeader()
		caps := strings.Join(h.GetRequiredCapabilities(), ",")
		var want []byte
		for _, v := range seed.Compile(bundle.Header{Domain: h.GetDomain(), Epoch: h.GetEpoch(), Version: h.GetVersion(), IssuedAt: h.GetIssuedAt().AsTime(),
			ExpiresAt: h.GetExpiresAt().AsTime(), TrustBundleRef: h.GetTrustBundleRef(), AuditSeq: h.GetAuditSeq(), AuditHead: h.GetAuditHead()}, objs) {
			if strings.Join(v.GetHeader().GetRequiredCapabilities(), ",") == caps {
				if want, _, err = bundle.EncodeWithLayout(v); err != nil {
					t.Fatal(err)
				}
			}
		}
		if !bytes.Equal(env.GetPayload(), want) {
			t.Fatalf("v%d variant %s: the published payload (%d bytes) is not the state compiled afresh (%d bytes)", version, caps, len(env.GetPayload()), len(want))
		}
		out[caps] = want
		if base, ok := prev[caps]; ok {
			baseB, err := bundle.DecodeBundle(base)
			if err != nil {
				t.Fatal(err)
			}
			d, err := bundle.DeltaBetween(baseB, bundle.Hash(base), got, bundle.Hash(want))
			if err != nil {
				t.Fatal(err)
			}
			wantDelta, _ := bundle.EncodeDelta(d)
			denv, err := trust.DecodeEnvelope(pv.Delta, 0)
			if err != nil {
				t.Fatalf("v%d variant %s: no delta: %v", version, caps, err)
			}
			if !bytes.Equal(denv.GetPayload(), wantDelta) {
				t.Fatalf("v%d variant %s: the delta is not DeltaBetween's", version, caps)
			}
		}
	}
	return out
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// TestRestartRebuildsTheNewestVersionFromStoredDeltas: small changes are stored as deltas
// after the last snapshot; a restarted seed rebuilds the newest version from them, serves
// the very envelope it published before, and its next delta applies on it. A stored delta
// altered behind the seed's back refuses the start.
func TestRestartRebuildsTheNewestVersionFromStoredDeltas(t *testing.T) {
	dir := t.TempDir()
	ts := open(t, dir, noDebounce)
	var rs []*adminv1.Resource
	for i := range 200 { // a bundle big enough that a one-route delta is a small part of it
		rs = append(rs, route(i, time.Second))
	}
	rs = append(rs, scaleResources()[:40]...)
	ts.apply(t, rs)
	ts.waitPublished(t, 1)
	for v := uint64(2); v <= 4; v++ {
		ts.apply(t, []*adminv1.Resource{route(int(v), time.Duration(v)*time.Second)})
		ts.waitPublished(t, v)
	}
	before, err := ts.api.GetBundle(adminCtx(), &adminv1.GetBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := ts.store.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for key, st := range loaded.Latest {
		if len(st.Chain) != 3 {
			t.Fatalf("variant %q: %d stored deltas after the snapshot, want 3 (v2..v4)", key, len(st.Chain))
		}
	}
	ts.close()

	ts = open(t, dir, noDebounce)
	after, err := ts.api.GetBundle(adminCtx(), &adminv1.GetBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if after.GetVersion() != 4 || !bytes.Equal(after.GetEnvelope(), before.GetEnvelope()) {
		t.Fatalf("after the restart the seed serves v%d (same envelope: %t), want v4's envelope", after.GetVersion(), bytes.Equal(after.GetEnvelope(), before.GetEnvelope()))
	}
	ts.apply(t, []*adminv1.Resource{route(7, 9*time.Second)})
	pub := ts.waitPublished(t, 5)
	v := verifierFor(t, "prod")
	vb, err := v.Verify(after.GetEnvelope())
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Commit(vb); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(pub.Variants[0].Delta); err != nil {
		t.Fatalf("v5's delta does not apply on the rebuilt v4: %v", err)
	}
	ts.close()

	// Alter the newest stored delta: the seed refuses to start on it.
	db, err := bolt.Open(filepath.Join(dir, "seed.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		c := tx.Bucket([]byte("chain")).Cursor()
		k, v := c.Last()
		if k == nil {
			return errors.New("no stored delta")
		}
		w := slices.Clone(v)
		w[len(w)/2] ^= 1
		return tx.Bucket([]byte("chain")).Put(k, w)
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := startErr(t, dir); !errors.Is(err, seed.ErrAuditChain) {
		t.Fatalf("a seed started on an altered stored delta: %v", err)
	}
}
