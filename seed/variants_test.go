package seed_test

import (
	"strings"
	"testing"

	"meshkit.dev/meshkit/bundle"
	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
	"meshkit.dev/meshkit/trust"
)

const extensions = `apiVersion: meshkit.dev/v1alpha1
kind: Extension
metadata: {name: waf, namespace: shop, tenant: acme}
spec: {kind: EXTENSION_KIND_WASM, artifact: bafkreiwaf, abi: proxy-wasm/0.2.1, failurePolicy: FAILURE_POLICY_FAIL_OPEN}
---
apiVersion: meshkit.dev/v1alpha1
kind: ExtensionBinding
metadata: {name: waf-storefront, namespace: shop, tenant: acme}
spec: {extension: waf, routes: [storefront]}
---
apiVersion: meshkit.dev/v1alpha1
kind: Extension
metadata: {name: fraud, namespace: shop, tenant: acme}
spec: {kind: EXTENSION_KIND_DSL, artifact: bafkreifraud, abi: dsl/v1, failurePolicy: FAILURE_POLICY_FAIL_CLOSED}
---
apiVersion: meshkit.dev/v1alpha1
kind: ExtensionBinding
metadata: {name: fraud-payments, namespace: shop, tenant: acme}
spec: {extension: fraud, routes: [payments]}
`

// TestDownLevelledVariants: a node without feature:ext-wasm loses the fail-open WAF but
// keeps the route; a node without feature:ext-dsl gets the payments route refusing traffic
// because its fraud check is fail-closed.
func TestDownLevelledVariants(t *testing.T) {
	ts := open(t, "")
	ts.apply(t, append(resources(t, "../examples/shop"), resources(t, extensions)...))
	pub := ts.waitPublished(t, 1)
	byCaps := map[string]*bundlev1.Bundle{}
	for _, pv := range pub.Variants {
		env, err := trust.DecodeEnvelope(pv.Snapshot, 0)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := bundle.DecodeBundle(env.GetPayload())
		byCaps[strings.Join(b.GetHeader().GetRequiredCapabilities(), ",")] = b
	}
	full := "core/v1,dsl/v1,feature:ext-dsl,feature:ext-wasm"
	want := []string{full, "core/v1,dsl/v1,feature:ext-dsl", "core/v1,feature:ext-wasm", "core/v1"}
	if len(byCaps) != len(want) {
		t.Fatalf("variants %v, want %v", keysOf(byCaps), want)
	}
	for _, w := range want {
		if byCaps[w] == nil {
			t.Fatalf("no variant %q among %v", w, keysOf(byCaps))
		}
	}
	if strings.Join(pub.Variants[0].RequiredCapabilities, ",") != full {
		t.Errorf("first variant is %v, want the full one", pub.Variants[0].RequiredCapabilities)
	}
	route := func(b *bundlev1.Bundle, name string) *bundlev1.Route {
		for _, r := range b.GetRoutes() {
			if r.GetMetadata().GetName() == name {
				return r
			}
		}
		t.Fatalf("route %s missing", name)
		return nil
	}
	bindings := func(b *bundlev1.Bundle) (names []string) {
		for _, eb := range b.GetExtensionBindings() {
			names = append(names, eb.GetMetadata().GetName())
		}
		return names
	}
	if got := bindings(byCaps[full]); len(got) != 2 || route(byCaps[full], "payments").GetSpec().GetRefuse() {
		t.Errorf("full variant: bindings %v, payments refused %v", got, route(byCaps[full], "payments").GetSpec().GetRefuse())
	}
	noWasm := byCaps["core/v1,dsl/v1,feature:ext-dsl"]
	if got := bindings(noWasm); len(got) != 1 || got[0] != "fraud-payments" || route(noWasm, "storefront").GetSpec().GetRefuse() {
		t.Errorf("without ext-wasm: bindings %v; the fail-open WAF must be dropped and storefront kept serving", got)
	}
	noDSL := byCaps["core/v1,feature:ext-wasm"]
	pay := route(noDSL, "payments")
	if !pay.GetSpec().GetRefuse() || !strings.Contains(pay.GetSpec().GetRefuseReason(), "feature:ext-dsl") {
		t.Errorf("without ext-dsl: payments refuse=%v reason=%q; the fail-closed check must take the route down", pay.GetSpec().GetRefuse(), pay.GetSpec().GetRefuseReason())
	}
	if route(noDSL, "storefront").GetSpec().GetRefuse() {
		t.Error("without ext-dsl: storefront refused, but only payments uses the DSL extension")
	}
	core := byCaps["core/v1"]
	if len(bindings(core)) != 0 || !route(core, "payments").GetSpec().GetRefuse() || route(core, "storefront").GetSpec().GetRefuse() {
		t.Errorf("core only: bindings %v", bindings(core))
	}
	// Every variant verifies on its own, even at the same (epoch, version).
	v := verifierFor(t, "prod")
	for _, pv := range pub.Variants {
		vb, err := v.Verify(pv.Snapshot)
		if err != nil {
			t.Fatalf("variant %v: %v", pv.RequiredCapabilities, err)
		}
		if err := v.Commit(vb); err != nil {
			t.Fatal(err)
		}
	}
}

func TestKillSwitchDisablesTheExtensionEverywhere(t *testing.T) {
	ts := open(t, "")
	ts.apply(t, append(resources(t, "../examples/shop"), resources(t, extensions)...))
	ts.waitPublished(t, 1)
	ts.apply(t, resources(t, `apiVersion: meshkit.dev/v1alpha1
kind: KillSwitch
metadata: {name: stop-fraud, namespace: shop, tenant: acme}
spec: {target: KILL_SWITCH_TARGET_EXTENSION, name: fraud, reason: "incident 42: false positives"}
`))
	pub := ts.waitPublished(t, 2)
	for _, pv := range pub.Variants {
		env, _ := trust.DecodeEnvelope(pv.Snapshot, 0)
		b, _ := bundle.DecodeBundle(env.GetPayload())
		for _, eb := range b.GetExtensionBindings() {
			if eb.GetSpec().GetExtension() == "fraud" {
				t.Fatalf("variant %v still binds the killed extension", pv.RequiredCapabilities)
			}
		}
		for _, r := range b.GetRoutes() {
			if r.GetSpec().GetRefuse() {
				t.Fatalf("variant %v refuses %s although the extension was killed, not failed", pv.RequiredCapabilities, r.GetMetadata().GetName())
			}
		}
		if len(b.GetKillSwitches()) != 1 {
			t.Fatalf("kill switch not carried in variant %v", pv.RequiredCapabilities)
		}
	}
}

func keysOf[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
