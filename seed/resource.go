package seed

import (
	"crypto/sha256"
	"fmt"

	"google.golang.org/protobuf/proto"

	"meshkit.dev/meshkit/bundle"
	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
)

// ResourceFromObject wraps a decoded YAML object for the admin API.
func ResourceFromObject(o bundle.Object) (*adminv1.Resource, error) {
	r := &adminv1.Resource{Metadata: o.Metadata}
	switch s := o.Spec.(type) {
	case *bundlev1.ClusterSpec:
		r.Spec = &adminv1.Resource_Cluster{Cluster: s}
	case *bundlev1.RouteSpec:
		r.Spec = &adminv1.Resource_Route{Route: s}
	case *bundlev1.AuthzPolicySpec:
		r.Spec = &adminv1.Resource_AuthzPolicy{AuthzPolicy: s}
	case *bundlev1.RetryPolicySpec:
		r.Spec = &adminv1.Resource_RetryPolicy{RetryPolicy: s}
	case *bundlev1.ExtensionSpec:
		r.Spec = &adminv1.Resource_Extension{Extension: s}
	case *bundlev1.ExtensionBindingSpec:
		r.Spec = &adminv1.Resource_ExtensionBinding{ExtensionBinding: s}
	case *bundlev1.KillSwitchSpec:
		r.Spec = &adminv1.Resource_KillSwitch{KillSwitch: s}
	case *bundlev1.ReferenceGrantSpec:
		r.Spec = &adminv1.Resource_ReferenceGrant{ReferenceGrant: s}
	default:
		return nil, fmt.Errorf("seed: %s has no admin resource form (%T)", o.Kind, o.Spec)
	}
	return r, nil
}

// ObjectFromResource unwraps an admin API resource into the form bundle validates.
func ObjectFromResource(r *adminv1.Resource) (bundle.Object, error) {
	o := bundle.Object{Metadata: r.GetMetadata()}
	switch s := r.GetSpec().(type) {
	case *adminv1.Resource_Cluster:
		o.Kind, o.Spec = bundle.KindCluster, s.Cluster
	case *adminv1.Resource_Route:
		o.Kind, o.Spec = bundle.KindRoute, s.Route
	case *adminv1.Resource_AuthzPolicy:
		o.Kind, o.Spec = bundle.KindAuthzPolicy, s.AuthzPolicy
	case *adminv1.Resource_RetryPolicy:
		o.Kind, o.Spec = bundle.KindRetryPolicy, s.RetryPolicy
	case *adminv1.Resource_Extension:
		o.Kind, o.Spec = bundle.KindExtension, s.Extension
	case *adminv1.Resource_ExtensionBinding:
		o.Kind, o.Spec = bundle.KindExtensionBinding, s.ExtensionBinding
	case *adminv1.Resource_KillSwitch:
		o.Kind, o.Spec = bundle.KindKillSwitch, s.KillSwitch
	case *adminv1.Resource_ReferenceGrant:
		o.Kind, o.Spec = bundle.KindReferenceGrant, s.ReferenceGrant
	default:
		return bundle.Object{}, fmt.Errorf("seed: resource %s/%s has no spec", r.GetMetadata().GetNamespace(), r.GetMetadata().GetName())
	}
	if o.Metadata == nil {
		return bundle.Object{}, fmt.Errorf("seed: %s resource has no metadata", o.Kind)
	}
	if o.Metadata.GetNamespace() == "" {
		o.Metadata = proto.Clone(o.Metadata).(*bundlev1.Metadata)
		o.Metadata.Namespace = bundle.DefaultNamespace
	}
	if err := bundle.ValidateMetadata(o.Metadata); err != nil {
		return bundle.Object{}, fmt.Errorf("seed: %s: %w", o.Kind, err)
	}
	return o, nil
}

// keyString is the store and memdb id of a resource: "Kind/namespace/name".
func keyString(k bundle.Key) string { return k.Kind + "/" + k.Namespace + "/" + k.Name }

// resourceHash is the SHA-256 of a resource's deterministic encoding.
func resourceHash(r *adminv1.Resource) (string, []byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
	if err != nil {
		return "", nil, fmt.Errorf("seed: encode resource: %w", err)
	}
	sum := sha256.Sum256(b)
	return fmt.Sprintf("%x", sum[:]), b, nil
}

// references lists the ids of the resources o refers to (for the memdb "refs" index).
func references(o bundle.Object) []string {
	ns := o.Metadata.GetNamespace()
	ref := func(kind, name string) string { return keyString(bundle.Key{Kind: kind, Namespace: ns, Name: name}) }
	var out []string
	switch s := o.Spec.(type) {
	case *bundlev1.RouteSpec:
		if s.GetCluster() != "" {
			out = append(out, ref(bundle.KindCluster, s.GetCluster()))
		}
		for _, wc := range s.GetWeightedClusters() {
			out = append(out, ref(bundle.KindCluster, wc.GetCluster()))
		}
		if s.GetRetryPolicy() != "" {
			out = append(out, ref(bundle.KindRetryPolicy, s.GetRetryPolicy()))
		}
	case *bundlev1.AuthzPolicySpec:
		for _, r := range s.GetRoutes() {
			out = append(out, ref(bundle.KindRoute, r))
		}
	case *bundlev1.ExtensionBindingSpec:
		out = append(out, ref(bundle.KindExtension, s.GetExtension()))
		for _, r := range s.GetRoutes() {
			out = append(out, ref(bundle.KindRoute, r))
		}
	case *bundlev1.KillSwitchSpec:
		kind := map[bundlev1.KillSwitchTarget]string{
			bundlev1.KillSwitchTarget_KILL_SWITCH_TARGET_EXTENSION:    bundle.KindExtension,
			bundlev1.KillSwitchTarget_KILL_SWITCH_TARGET_AUTHZ_POLICY: bundle.KindAuthzPolicy,
			bundlev1.KillSwitchTarget_KILL_SWITCH_TARGET_RETRY_POLICY: bundle.KindRetryPolicy,
		}[s.GetTarget()]
		if kind != "" {
			out = append(out, ref(kind, s.GetName()))
		}
	}
	return out
}
