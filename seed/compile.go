package seed

import (
	"fmt"
	"reflect"
	"slices"

	"google.golang.org/protobuf/proto"

	"meshkit.dev/meshkit/bundle"
	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
	"meshkit.dev/meshkit/trust"
)

// featureOf is the capability a node needs to run an extension of a kind.
var featureOf = map[bundlev1.ExtensionKind]string{
	bundlev1.ExtensionKind_EXTENSION_KIND_WASM:   bundle.CapExtWasm,
	bundlev1.ExtensionKind_EXTENSION_KIND_DSL:    bundle.CapExtDSL,
	bundlev1.ExtensionKind_EXTENSION_KIND_NATIVE: bundle.CapExtNative,
}

// Compile turns validated desired state into one bundle per capability variant, full
// variant first. Kill switches apply to every variant. A variant for nodes lacking some
// extension features drops fail-open bindings that need them and makes the routes of
// fail-closed ones refuse traffic with an explicit reason. Every variant's
// required_capabilities differ, so each is its own verification stream.
//
// The variants share the stored objects' messages; whatever compilation changes (a route
// that must refuse traffic, a retry reference to a killed policy) is copied first, so the
// stored state is never modified and unchanged resources keep their identity from one
// compilation to the next, which lets deltas skip comparing them field by field.
func Compile(h bundle.Header, objs []bundle.Object) []*bundlev1.Bundle {
	full := bundle.Assemble(h, objs)
	applyKillSwitches(full)
	var features []string
	for _, eb := range full.GetExtensionBindings() {
		if f := featureOf[eb.GetExtension().GetKind()]; f != "" && !slices.Contains(features, f) {
			features = append(features, f)
		}
	}
	slices.Sort(features)
	var out []*bundlev1.Bundle
	// Each subset of features, from all of them (the full bundle) down to none.
	for mask := (1 << len(features)) - 1; mask >= 0; mask-- {
		var missing []string
		for i, f := range features {
			if mask&(1<<i) == 0 {
				missing = append(missing, f)
			}
		}
		v := shallowCopy(full)
		downLevel(v, missing)
		v.Header.RequiredCapabilities = append(slices.Clone(h.RequiredCapabilities), bundle.RequiredCapabilities(v)...)
		if len(missing) > 0 {
			bundle.Canonicalize(v)
		} else {
			// Assemble made full canonical, and kill switches only drop or replace
			// resources in place: the lists are in order, only the header needs sorting.
			bundle.CanonicalizeHeader(v)
		}
		out = append(out, v)
	}
	return out
}

// downLevel removes what needs a missing feature: fail-open bindings disappear, and
// fail-closed ones take their routes down explicitly.
func downLevel(b *bundlev1.Bundle, missing []string) {
	if len(missing) == 0 {
		return
	}
	bundle.DropExtensions(b, func(eb *bundlev1.ExtensionBinding) string {
		need := featureOf[eb.GetExtension().GetKind()]
		if !slices.Contains(missing, need) {
			return ""
		}
		return fmt.Sprintf("extension %q (fail-closed) needs %s, which this node does not support", eb.GetSpec().GetExtension(), need)
	})
}

// applyKillSwitches disables what the kill switches name: the bindings of a killed
// extension, a killed authz policy, a killed retry policy (and routes' references to it).
// The kill switches stay in the bundle so nodes and operators can see them.
func applyKillSwitches(b *bundlev1.Bundle) {
	killed := map[string]bool{}
	for _, ks := range b.GetKillSwitches() {
		killed[ks.GetSpec().GetTarget().String()+"/"+ks.GetMetadata().GetNamespace()+"/"+ks.GetSpec().GetName()] = true
	}
	if len(killed) == 0 {
		return
	}
	is := func(t bundlev1.KillSwitchTarget, ns, name string) bool { return killed[t.String()+"/"+ns+"/"+name] }
	b.ExtensionBindings = slices.DeleteFunc(b.ExtensionBindings, func(eb *bundlev1.ExtensionBinding) bool {
		return is(bundlev1.KillSwitchTarget_KILL_SWITCH_TARGET_EXTENSION, eb.GetMetadata().GetNamespace(), eb.GetSpec().GetExtension())
	})
	b.AuthzPolicies = slices.DeleteFunc(b.AuthzPolicies, func(p *bundlev1.AuthzPolicy) bool {
		return is(bundlev1.KillSwitchTarget_KILL_SWITCH_TARGET_AUTHZ_POLICY, p.GetMetadata().GetNamespace(), p.GetMetadata().GetName())
	})
	b.RetryPolicies = slices.DeleteFunc(b.RetryPolicies, func(p *bundlev1.RetryPolicy) bool {
		return is(bundlev1.KillSwitchTarget_KILL_SWITCH_TARGET_RETRY_POLICY, p.GetMetadata().GetNamespace(), p.GetMetadata().GetName())
	})
	for i, r := range b.GetRoutes() {
		if rp := r.GetSpec().GetRetryPolicy(); rp != "" && is(bundlev1.KillSwitchTarget_KILL_SWITCH_TARGET_RETRY_POLICY, r.GetMetadata().GetNamespace(), rp) {
			r = withSpecCopy(r)
			r.Spec.RetryPolicy = ""
			b.Routes[i] = r
		}
	}
}

// shallowCopy copies the header and every resource list, sharing the resources. It walks
// the Bundle's fields, so a list added to the schema is copied like the others, and each
// list costs one copy of its pointers (walking the lists element by element through
// protoreflect cost a 10k-route publish 3 ms per variant).
func shallowCopy(b *bundlev1.Bundle) *bundlev1.Bundle {
	out := &bundlev1.Bundle{}
	src, dst := reflect.ValueOf(b).Elem(), reflect.ValueOf(out).Elem()
	for i := range src.NumField() {
		f := src.Field(i)
		if !src.Type().Field(i).IsExported() || f.IsZero() {
			continue // the message's internal state, or an unset field
		}
		switch f.Kind() {
		case reflect.Slice:
			n := reflect.MakeSlice(f.Type(), f.Len(), f.Len())
			reflect.Copy(n, f)
			dst.Field(i).Set(n)
		case reflect.Pointer:
			dst.Field(i).Set(reflect.ValueOf(proto.Clone(f.Interface().(proto.Message))))
		default:
			dst.Field(i).Set(f)
		}
	}
	return out
}

// withSpecCopy returns a route whose spec may be changed without touching r's.
func withSpecCopy(r *bundlev1.Route) *bundlev1.Route {
	return &bundlev1.Route{Metadata: r.GetMetadata(), Spec: proto.Clone(r.GetSpec()).(*bundlev1.RouteSpec)}
}

// variantKey is the verifier's key for a bundle's capability variant (the seeds' stream).
func variantKey(b *bundlev1.Bundle) string {
	return trust.VariantKey("", b.GetHeader().GetRequiredCapabilities())
}
