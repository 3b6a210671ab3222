package bundle

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
)

// scanWorld is the simplest World: a scan of a whole state.
type scanWorld []Object

func (w scanWorld) Object(k Key) (Object, bool) {
	for _, o := range w {
		if o.Key() == k {
			return o, true
		}
	}
	return Object{}, false
}

func (w scanWorld) Grants(ns, tenant string) []*bundlev1.ReferenceGrantSpec {
	var out []*bundlev1.ReferenceGrantSpec
	for _, o := range w {
		if g, ok := o.Spec.(*bundlev1.ReferenceGrantSpec); ok && o.Metadata.GetNamespace() == ns && o.Metadata.GetTenant() == tenant {
			out = append(out, g)
		}
	}
	return out
}

func (w scanWorld) RouteByMatch(match string, self Key) (Object, bool) {
	for _, o := range w {
		if r, ok := o.Spec.(*bundlev1.RouteSpec); ok && o.Key() != self && slices.Contains(RouteMatches(r), match) {
			return o, true
		}
	}
	return Object{}, false
}

type gen struct{ r *rand.Rand }

func (g gen) pick(s ...string) string { return s[g.r.IntN(len(s))] }

func (g gen) meta(name string) *bundlev1.Metadata {
	return &bundlev1.Metadata{Name: name, Namespace: g.pick("a", "b"), Tenant: g.pick("", "t1", "t2")}
}

func (g gen) object() Object {
	switch g.r.IntN(3) {
	case 0:
		return Object{Kind: KindCluster, Metadata: g.meta(g.pick("c0", "c1", "c2", "c3")), Spec: &bundlev1.ClusterSpec{Endpoints: []*bundlev1.Endpoint{{Address: "a", Port: 80}}}}
	case 1:
		return Object{Kind: KindRetryPolicy, Metadata: g.meta(g.pick("r0", "r1")), Spec: &bundlev1.RetryPolicySpec{Attempts: uint32(g.r.IntN(3))}}
	}
	spec := &bundlev1.RouteSpec{
		Match:   &bundlev1.RouteMatch{Hosts: []string{g.pick("h0", "h1", "h2")}, PathPrefix: g.pick("/", "/x")},
		Cluster: g.pick("c0", "c1", "c2", "c3"),
	}
	if g.r.IntN(3) == 0 {
		spec.RetryPolicy = g.pick("r0", "r1")
	}
	return Object{Kind: KindRoute, Metadata: g.meta(g.pick("rt0", "rt1", "rt2", "rt3", "rt4", "rt5")), Spec: spec}
}

// valid returns the largest prefix-free valid state it can make of objs: objects with
// problems are dropped until none is left.
func valid(objs []Object) []Object {
	for {
		err := Validate(objs)
		if err == nil {
			return objs
		}
		var verrs ValidationErrors
		if !errors.As(err, &verrs) {
			panic(err)
		}
		bad := map[Key]bool{}
		for _, e := range verrs {
			bad[e.Key] = true
		}
		objs = slices.DeleteFunc(objs, func(o Object) bool { return bad[o.Key()] })
	}
}

func dedup(objs []Object) []Object {
	seen := map[Key]bool{}
	return slices.DeleteFunc(objs, func(o Object) bool { d := seen[o.Key()]; seen[o.Key()] = true; return d })
}

// TestValidateInAgreesWithValidate: for random valid states and random changes (puts and
// deletes, grants fixed), validating the put objects and the referrers of everything the
// change touches gives the same verdict as validating the whole new state.
func TestValidateInAgreesWithValidate(t *testing.T) {
	grant := Object{Kind: KindReferenceGrant, Metadata: &bundlev1.Metadata{Name: "g", Namespace: "a", Tenant: "t1"},
		Spec: &bundlev1.ReferenceGrantSpec{From: []*bundlev1.ReferenceGrantFrom{{Tenant: "t2", Kind: KindRoute}}, To: []*bundlev1.ReferenceGrantTo{{Kind: KindCluster}}}}
	agreeValid, agreeInvalid := 0, 0
	for seed := range uint64(3000) {
		g := gen{rand.New(rand.NewPCG(seed, 7))}
		var objs []Object
		for range 4 + g.r.IntN(20) {
			objs = append(objs, g.object())
		}
		before := valid(append([]Object{grant}, dedup(objs)...))
		var puts []Object
		for range 1 + g.r.IntN(3) {
			puts = append(puts, g.object())
		}
		puts = dedup(puts)
		deleted := map[Key]bool{}
		for range g.r.IntN(3) {
			if o := before[g.r.IntN(len(before))]; o.Kind != KindReferenceGrant {
				deleted[o.Key()] = true
			}
		}
		byKey := map[Key]Object{}
		var order []Key
		for _, o := range before {
			if !deleted[o.Key()] {
				byKey[o.Key()] = o
				order = append(order, o.Key())
			}
		}
		for _, p := range puts {
			if _, ok := byKey[p.Key()]; !ok {
				order = append(order, p.Key())
			}
			byKey[p.Key()] = p
			delete(deleted, p.Key())
		}
		after := make([]Object, len(order))
		for i, k := range order {
			after[i] = byKey[k]
		}
		touched := map[Key]bool{}
		for _, p := range puts {
			touched[p.Key()] = true
		}
		for k := range deleted {
			touched[k] = true
		}
		check := slices.Clone(puts)
		for _, o := range after {
			if !touched[o.Key()] && slices.ContainsFunc(References(o), func(k Key) bool { return touched[k] }) {
				check = append(check, o)
			}
		}
		full := Validate(after) == nil
		inc := ValidateIn(scanWorld(after), check) == nil
		if full != inc {
			t.Fatalf("seed %d: Validate says valid=%t, ValidateIn valid=%t\nbefore %v\nputs %v\ndeleted %v\n%v\n%v", seed, full, inc, keys(before), keys(puts), deleted,
				Validate(after), ValidateIn(scanWorld(after), check))
		}
		if full {
			agreeValid++
		} else {
			agreeInvalid++
		}
	}
	if agreeValid < 300 || agreeInvalid < 300 {
		t.Fatalf("the generator is lopsided: %d valid and %d invalid changes", agreeValid, agreeInvalid)
	}
}

func keys(objs []Object) []string {
	var out []string
	for _, o := range objs {
		out = append(out, fmt.Sprintf("%s(%s)", o.Key(), o.Metadata.GetTenant()))
	}
	return out
}
