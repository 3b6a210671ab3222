package bundle

import (
	"errors"
	"strings"
	"testing"
	"time"

	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
)

func TestDecodeReportsEveryProblemWithItsLine(t *testing.T) {
	in := `apiVersion: meshkit.dev/v1alpha1
kind: Cluster
metadata: {name: ok, namespace: shop}
spec: {endpoints: [{address: 10.0.0.1, port: 80}], connectTimeout: 250ms}
---
apiVersion: meshkit.dev/v1alpha1
kind: Gateway
metadata: {name: gw}
spec: {}
---
apiVersion: meshkit.dev/v1alpha1
kind: Route
metadata: {name: r1}
spec: {match: {hosts: [a]}, clustr: x}
---
apiVersion: meshkit.dev/v2
kind: Route
metadata: {name: r2}
spec: {}
---
apiVersion: meshkit.dev/v1alpha1
kind: Route
metadata: {name: Bad_Name}
spec: {}
---
apiVersion: meshkit.dev/v1alpha1
kind: Route
metadata: {name: r3}
---
apiVersion: meshkit.dev/v1alpha1
kind: Cluster
metadata: {name: c2}
spec: {connectTimeout: soon}
`
	_, err := Decode("in.yaml", []byte(in))
	var errs DecodeErrors
	if !errors.As(err, &errs) || !errors.Is(err, ErrDecode) {
		t.Fatalf("err = %v, want DecodeErrors", err)
	}
	want := []struct{ src, msg string }{
		{"in.yaml:6", `kind "Gateway" is unknown`},
		{"in.yaml:11", `unknown field "clustr"`},
		{"in.yaml:16", `apiVersion "meshkit.dev/v2" is not supported`},
		{"in.yaml:21", `metadata.name "Bad_Name"`},
		{"in.yaml:26", "spec is required"},
		{"in.yaml:30", `connectTimeout: "soon" is not a non-negative duration`},
	}
	if len(errs) != len(want) {
		t.Fatalf("%d errors, want %d:\n%v", len(errs), len(want), err)
	}
	for i, w := range want {
		if errs[i].Source != w.src || !strings.Contains(errs[i].Msg, w.msg) {
			t.Errorf("error %d = %s: %s; want %s: …%s…", i, errs[i].Source, errs[i].Msg, w.src, w.msg)
		}
	}
}

func TestDecodeSyntaxErrorAndLimits(t *testing.T) {
	if _, err := Decode("x.yaml", []byte("kind: [unclosed\n")); err == nil || !strings.Contains(err.Error(), "invalid YAML") {
		t.Fatalf("err = %v", err)
	}
	big := make([]byte, MaxFileBytes+1)
	if _, err := Decode("big.yaml", big); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("oversized input: err = %v", err)
	}
	objs, err := Decode("empty.yaml", []byte("---\n---\n"))
	if err != nil || len(objs) != 0 {
		t.Fatalf("empty documents: %v, %d objects", err, len(objs))
	}
}

func TestDecodeDurationsAndDefaults(t *testing.T) {
	objs, err := Decode("c.yaml", []byte(`apiVersion: meshkit.dev/v1alpha1
kind: Cluster
metadata: {name: c, labels: {team: pay}}
spec:
  connectTimeout: 1m30s
  healthCheck: {interval: 250ms}
  endpoints: [{address: a, port: 1}]
`))
	if err != nil {
		t.Fatal(err)
	}
	spec := objs[0].Spec.(*bundlev1.ClusterSpec)
	if got := spec.GetConnectTimeout().AsDuration(); got != 90*time.Second {
		t.Errorf("connectTimeout = %v", got)
	}
	if got := spec.GetHealthCheck().GetInterval().AsDuration(); got != 250*time.Millisecond {
		t.Errorf("interval = %v", got)
	}
	if ns := objs[0].Metadata.GetNamespace(); ns != DefaultNamespace {
		t.Errorf("namespace = %q", ns)
	}
	if l := objs[0].Metadata.GetLabels(); len(l) != 1 || l[0].GetKey() != "team" {
		t.Errorf("labels = %v", l)
	}
}

func TestLoadPathExamples(t *testing.T) {
	objs, err := LoadPath("../examples/shop")
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, o := range objs {
		kinds[o.Kind]++
	}
	for _, k := range []string{KindCluster, KindRoute, KindRetryPolicy, KindAuthzPolicy} {
		if kinds[k] == 0 {
			t.Errorf("examples have no %s", k)
		}
	}
	if _, err := LoadPath("testdata/does-not-exist"); err == nil {
		t.Error("missing path accepted")
	}
}

// TestValidateMetadataNamesEveryField: name, namespace and tenant must each be one
// DNS-label-like component (they become keys, paths and OCI repository components); an
// empty tenant is allowed, an underscore or a capital is not.
func TestValidateMetadataNamesEveryField(t *testing.T) {
	for _, c := range []struct {
		md   *bundlev1.Metadata
		want string // "" = valid
	}{
		{&bundlev1.Metadata{Name: "a", Namespace: "shop"}, ""},
		{&bundlev1.Metadata{Name: "a", Namespace: "shop", Tenant: "acme-eu.1"}, ""},
		{&bundlev1.Metadata{Name: "a/b", Namespace: "shop"}, "metadata.name"},
		{&bundlev1.Metadata{Name: "a", Namespace: ""}, "metadata.namespace"},
		{&bundlev1.Metadata{Name: "a", Namespace: "shop", Tenant: "no_tenant"}, "metadata.tenant"},
		{&bundlev1.Metadata{Name: "a", Namespace: "shop", Tenant: "Acme"}, "metadata.tenant"},
		{&bundlev1.Metadata{Name: "a", Namespace: "shop", Tenant: "acme/x"}, "metadata.tenant"},
	} {
		err := ValidateMetadata(c.md)
		if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%v: got %v, want %q", c.md, err, c.want)
		}
	}
}
