package bundle

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
)

var testHeader = Header{Domain: "prod", Epoch: 1, Version: 1, IssuedAt: time.Unix(1_700_000_000, 0), ExpiresAt: time.Unix(1_700_086_400, 0)}

func mustDecode(t testing.TB, yaml string) []Object {
	t.Helper()
	objs, err := Decode("t.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

const validSet = `apiVersion: meshkit.dev/v1alpha1
kind: Cluster
metadata: {name: api}
spec: {endpoints: [{address: 10.0.0.1, port: 80}]}
---
apiVersion: meshkit.dev/v1alpha1
kind: RetryPolicy
metadata: {name: rp}
spec: {attempts: 2}
---
apiVersion: meshkit.dev/v1alpha1
kind: Route
metadata: {name: api}
spec: {match: {hosts: [api.example.com], pathPrefix: /}, cluster: api, retryPolicy: rp}
---
apiVersion: meshkit.dev/v1alpha1
kind: Extension
metadata: {name: waf}
spec: {kind: EXTENSION_KIND_WASM, artifact: bafkreigh2akiscaildc, abi: proxy-wasm/0.2.1, failurePolicy: FAILURE_POLICY_FAIL_CLOSED}
---
apiVersion: meshkit.dev/v1alpha1
kind: ExtensionBinding
metadata: {name: waf-api}
spec: {extension: waf, routes: [api], canary: {percent: 10}}
---
apiVersion: meshkit.dev/v1alpha1
kind: KillSwitch
metadata: {name: stop-waf}
spec: {target: KILL_SWITCH_TARGET_EXTENSION, name: waf, reason: incident 42}
`

func TestBuildResolvesExtensionsAndCapabilities(t *testing.T) {
	b, err := Build(testHeader, mustDecode(t, validSet))
	if err != nil {
		t.Fatal(err)
	}
	if got := b.GetHeader().GetRequiredCapabilities(); strings.Join(got, ",") != "core/v1,feature:ext-wasm" {
		t.Errorf("required capabilities = %v", got)
	}
	eb := b.GetExtensionBindings()
	if len(eb) != 1 || eb[0].GetExtension().GetArtifact() != "bafkreigh2akiscaildc" || eb[0].GetExtension().GetFailurePolicy() != bundlev1.FailurePolicy_FAILURE_POLICY_FAIL_CLOSED {
		t.Fatalf("binding not resolved: %v", eb)
	}
	if Count(b) != 5 { // the Extension itself is folded into its binding
		t.Errorf("Count = %d, want 5", Count(b))
	}
}

func TestValidationListsEveryProblemWithFieldPaths(t *testing.T) {
	bad := validSet + `---
apiVersion: meshkit.dev/v1alpha1
kind: Route
metadata: {name: dangling}
spec: {match: {hosts: [x.example.com], pathPrefix: /, pathExact: /a}, cluster: missing, retryPolicy: nope}
---
apiVersion: meshkit.dev/v1alpha1
kind: Route
metadata: {name: clash}
spec: {match: {hosts: [API.example.com], pathPrefix: /}, cluster: api}
---
apiVersion: meshkit.dev/v1alpha1
kind: Cluster
metadata: {name: api}
spec: {endpoints: [{address: "", port: 70000}]}
---
apiVersion: meshkit.dev/v1alpha1
kind: ExtensionBinding
metadata: {name: orphan}
spec: {extension: ghost, routes: [nowhere], canary: {percent: 101}}
---
apiVersion: meshkit.dev/v1alpha1
kind: AuthzPolicy
metadata: {name: az}
spec: {routes: [api], rules: [{principals: [checkout]}]}
---
apiVersion: meshkit.dev/v1alpha1
kind: Route
metadata: {name: verb}
spec: {match: {hosts: [v.example.com], method: FETCH, pathPrefix: nope}, cluster: api}
`
	_, err := Build(testHeader, mustDecode(t, bad))
	var errs ValidationErrors
	if !errors.As(err, &errs) || !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v", err)
	}
	for _, want := range []string{
		`Route default/dangling (t.yaml:31): spec.match: set path_prefix or path_exact, not both`,
		`Route default/dangling (t.yaml:31): spec.cluster: Cluster "missing" does not exist in namespace "default"`,
		`Route default/dangling (t.yaml:31): spec.retryPolicy: RetryPolicy "nope" does not exist`,
		`Route default/clash (t.yaml:36): spec.match.hosts[0]: conflicts with Route default/api`,
		`Cluster default/api (t.yaml:41): metadata.name: duplicate: also declared at t.yaml:1`,
		`ExtensionBinding default/orphan (t.yaml:46): spec.extension: Extension "ghost" does not exist`,
		`spec.routes[0]: Route "nowhere" does not exist`,
		`spec.canary.percent: 101 is more than 100`,
		`AuthzPolicy default/az (t.yaml:51): spec.action: ALLOW or DENY is required`,
		`spec.rules[0].principals[0]: "checkout" is not a SPIFFE ID`,
		`spec.match.method: "FETCH" is not an HTTP method`,
		`spec.match.pathPrefix: "nope" must start with '/'`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}

func TestEncodeIsDeterministicWhateverTheOrder(t *testing.T) {
	objs, err := LoadPath("../examples/shop")
	if err != nil {
		t.Fatal(err)
	}
	objs = append(objs, mustDecode(t, strings.ReplaceAll(validSet, "{name: ", "{namespace: edge, name: "))...)
	var first []byte
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 20; i++ {
		rng.Shuffle(len(objs), func(a, b int) { objs[a], objs[b] = objs[b], objs[a] })
		h := testHeader
		h.RequiredCapabilities = []string{"dsl/v1", "core/v1", "dsl/v1"}
		b, err := Build(h, objs)
		if err != nil {
			t.Fatal(err)
		}
		payload, err := Encode(b)
		if err != nil {
			t.Fatal(err)
		}
		if first == nil {
			first = payload
			continue
		}
		if !bytes.Equal(first, payload) {
			t.Fatalf("shuffle %d encoded differently (%s vs %s)", i, Hash(first), Hash(payload))
		}
	}
	// And the canonical bytes survive a decode/encode round trip.
	b, err := DecodeBundle(first)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := Encode(b)
	if !bytes.Equal(again, first) {
		t.Fatal("decode/encode changed the bytes")
	}
}

func TestReferenceGrantSpecIsChecked(t *testing.T) {
	objs, err := Decode("grant.yaml", []byte(`apiVersion: meshkit.dev/v1alpha1
kind: ReferenceGrant
metadata: {name: g, namespace: shop, tenant: acme}
spec:
  from: [{tenant: acme, kind: Route}, {tenant: globex, kind: Cluster}]
  to: [{kind: KillSwitch}]
`))
	if err != nil {
		t.Fatal(err)
	}
	err = Validate(objs)
	for _, want := range []string{"spec.from[0].tenant", "spec.from[1].kind", "spec.to[0].kind"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("no problem reported at %s: %v", want, err)
		}
	}
}
