package seed_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

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
