package bundle

import (
	"google.golang.org/protobuf/proto"

	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
)

// FailurePolicy is a binding's failure policy, else its extension's, else fail-closed: an
// extension that cannot run must not silently stop protecting a route.
func FailurePolicy(eb *bundlev1.ExtensionBinding) bundlev1.FailurePolicy {
	if p := eb.GetSpec().GetFailurePolicy(); p != bundlev1.FailurePolicy_FAILURE_POLICY_UNSPECIFIED {
		return p
	}
	if p := eb.GetExtension().GetFailurePolicy(); p != bundlev1.FailurePolicy_FAILURE_POLICY_UNSPECIFIED {
		return p
	}
	return bundlev1.FailurePolicy_FAILURE_POLICY_FAIL_CLOSED
}

// DropExtensions removes from b every extension binding for which why returns a reason,
// honouring its failure policy: a fail-open binding just disappears; a fail-closed one
// also makes each of its routes refuse traffic, with the reason. Routes are copied before
// they change (b's messages may be shared); b itself is modified. It returns how many
// bindings were dropped.
func DropExtensions(b *bundlev1.Bundle, why func(*bundlev1.ExtensionBinding) string) int {
	refuse := map[string]string{} // namespace/route -> reason
	kept := make([]*bundlev1.ExtensionBinding, 0, len(b.GetExtensionBindings()))
	for _, eb := range b.GetExtensionBindings() {
		reason := why(eb)
		if reason == "" {
			kept = append(kept, eb)
			continue
		}
		if FailurePolicy(eb) == bundlev1.FailurePolicy_FAILURE_POLICY_FAIL_CLOSED {
			for _, r := range eb.GetSpec().GetRoutes() {
				refuse[eb.GetMetadata().GetNamespace()+"/"+r] = reason
			}
		}
	}
	dropped := len(b.GetExtensionBindings()) - len(kept)
	b.ExtensionBindings = kept
	for i, r := range b.GetRoutes() {
		if reason, ok := refuse[r.GetMetadata().GetNamespace()+"/"+r.GetMetadata().GetName()]; ok {
			c := &bundlev1.Route{Metadata: r.GetMetadata(), Spec: proto.Clone(r.GetSpec()).(*bundlev1.RouteSpec)}
			c.Spec.Refuse, c.Spec.RefuseReason = true, reason
			b.Routes[i] = c
		}
	}
	return dropped
}
