package bundle

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
)

// Capabilities MeshKit bundles may require (MISSION.md section 3).
const (
	CapCore      = "core/v1"
	CapDSL       = "dsl/v1"
	CapExtDSL    = "feature:ext-dsl"
	CapExtWasm   = "feature:ext-wasm"
	CapExtNative = "feature:ext-native"
	CapHTTP3     = "feature:http3:conditional"
	maxResources = MaxResources
	maxRetries   = 10
)

// Header is what a bundle says about itself besides its resources.
type Header struct {
	Domain    string
	Epoch     uint64
	Version   uint64
	IssuedAt  time.Time
	ExpiresAt time.Time
	// RequiredCapabilities beyond those Build derives from the content.
	RequiredCapabilities []string
	TrustBundleRef       string
	// AuditSeq and AuditHead checkpoint the publishing seed's audit log.
	AuditSeq  uint64
	AuditHead string
}

// FieldError is one validation problem, located like kubectl does: resource and field path.
type FieldError struct {
	Key    Key
	Source string // file:line, when known
	Field  string // e.g. "spec.match.hosts[0]"
	Msg    string
}

func (e FieldError) Error() string {
	loc := e.Key.String()
	if e.Source != "" {
		loc += " (" + e.Source + ")"
	}
	if e.Field != "" {
		return loc + ": " + e.Field + ": " + e.Msg
	}
	return loc + ": " + e.Msg
}

// ErrInvalid is wrapped by every validation failure.
var ErrInvalid = errors.New("bundle: invalid resources")

// ValidationErrors lists every problem found; Build reports them all at once.
type ValidationErrors []FieldError

func (es ValidationErrors) Error() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%d validation error(s):", len(es))
	for _, e := range es {
		sb.WriteString("\n  " + e.Error())
	}
	return sb.String()
}

// Unwrap lets errors.Is match ErrInvalid.
func (es ValidationErrors) Unwrap() error { return ErrInvalid }

// Build validates objs and assembles the canonical bundle. Extensions are resolved into
// their bindings (a node needs the artifact, not the Extension resource), and the
// capabilities the content needs are added to the header's.
func Build(h Header, objs []Object) (*bundlev1.Bundle, error) {
	if err := Validate(objs); err != nil {
		return nil, err
	}
	return Assemble(h, objs), nil
}

// Assemble is Build without validation, for objects that already passed Validate as a
// whole (a seed validates every change against the state it produces). The bundle shares
// the objects' messages: clone before changing it.
func Assemble(h Header, objs []Object) *bundlev1.Bundle {
	b := &bundlev1.Bundle{Header: &bundlev1.BundleHeader{
		SchemaVersion:        SchemaVersion,
		Domain:               h.Domain,
		Epoch:                h.Epoch,
		Version:              h.Version,
		IssuedAt:             timestamppb.New(h.IssuedAt),
		ExpiresAt:            timestamppb.New(h.ExpiresAt),
		RequiredCapabilities: slices.Clone(h.RequiredCapabilities),
		TrustBundleRef:       h.TrustBundleRef,
		AuditSeq:             h.AuditSeq,
		AuditHead:            h.AuditHead,
	}}
	if err := kindsChecked(); err != nil {
		panic(err) // the kind table and the schema disagree: a build defect, which TestKindsHaveOneHome catches
	}
	exts := map[Key]*bundlev1.ExtensionSpec{}
	for _, o := range objs {
		if o.Kind == KindExtension {
			exts[o.Key()] = o.Spec.(*bundlev1.ExtensionSpec)
		}
	}
	for _, o := range objs {
		if add := kinds[o.Kind].add; add != nil { // kinds that are not compiled, or refused by Validate, are skipped
			add(b, o, exts)
		}
	}
	b.Header.RequiredCapabilities = append(b.Header.RequiredCapabilities, RequiredCapabilities(b)...)
	Canonicalize(b)
	return b
}

// RequiredCapabilities returns what a node must support to use b's content.
func RequiredCapabilities(b *bundlev1.Bundle) []string {
	caps := []string{CapCore}
	for _, eb := range b.GetExtensionBindings() {
		switch eb.GetExtension().GetKind() {
		case bundlev1.ExtensionKind_EXTENSION_KIND_WASM:
			caps = append(caps, CapExtWasm)
		case bundlev1.ExtensionKind_EXTENSION_KIND_DSL:
			caps = append(caps, CapExtDSL, CapDSL)
		case bundlev1.ExtensionKind_EXTENSION_KIND_NATIVE:
			caps = append(caps, CapExtNative)
		}
	}
	slices.Sort(caps)
	return slices.Compact(caps)
}

// MaxResources is the most resources one desired state may hold.
const MaxResources = 100_000

// Validate checks every object and the references between them, returning all problems.
func Validate(objs []Object) error {
	if len(objs) > maxResources {
		return ValidationErrors{{Msg: fmt.Sprintf("%d resources, the limit is %d", len(objs), maxResources)}}
	}
	w := &mapWorld{seen: make(map[Key]Object, len(objs)), grants: map[grantScope][]*bundlev1.ReferenceGrantSpec{}, byMatch: map[string]Object{}}
	v := &validator{w: w}
	unique := make([]Object, 0, len(objs))
	for _, o := range objs {
		if prev, dup := w.seen[o.Key()]; dup {
			v.add(o, "metadata.name", "duplicate: also declared at %s", prev.Source)
			continue
		}
		w.seen[o.Key()] = o
		unique = append(unique, o)
		if g, ok := o.Spec.(*bundlev1.ReferenceGrantSpec); ok {
			scope := grantScope{namespace: o.Metadata.GetNamespace(), tenant: o.Metadata.GetTenant()}
			w.grants[scope] = append(w.grants[scope], g)
		}
	}
	return v.check(unique)
}

// World is the rest of a desired state, as validating some of its objects needs it.
type World interface {
	// Object returns the object with key k.
	Object(k Key) (Object, bool)
	// Grants returns the ReferenceGrants of tenant in namespace.
	Grants(namespace, tenant string) []*bundlev1.ReferenceGrantSpec
	// RouteByMatch returns a route other than self that claims match (RouteMatches).
	RouteByMatch(match string, self Key) (Object, bool)
}

// ValidateIn checks objs, which w already holds, against the rest of w: what a change
// needs checked when everything else in w was valid before it. The caller passes the
// objects the change puts and every object that refers to one it puts or deletes; a change
// to a ReferenceGrant can affect any cross-tenant reference of its namespace, so a caller
// validates such a change with Validate. Problems are the ones Validate reports for these
// objects, except that a match two routes claim is reported on each of them.
func ValidateIn(w World, objs []Object) error {
	return (&validator{w: w, claimed: true}).check(objs)
}

// check validates objs and returns every problem found.
func (v *validator) check(objs []Object) error {
	for _, o := range objs {
		v.object(o)
	}
	if len(v.errs) > 0 {
		return v.errs
	}
	return nil
}

// mapWorld is the World of a whole state being validated at once; routes claim their
// matches in validation order, so the second claimer of a match is the one refused.
type mapWorld struct {
	seen    map[Key]Object
	grants  map[grantScope][]*bundlev1.ReferenceGrantSpec
	byMatch map[string]Object
}

func (w *mapWorld) Object(k Key) (Object, bool) { o, ok := w.seen[k]; return o, ok }

func (w *mapWorld) Grants(namespace, tenant string) []*bundlev1.ReferenceGrantSpec {
	return w.grants[grantScope{namespace: namespace, tenant: tenant}]
}

func (w *mapWorld) RouteByMatch(match string, self Key) (Object, bool) {
	o, ok := w.byMatch[match]
	if ok && o.Key() == self {
		return Object{}, false
	}
	return o, ok
}

func (v *validator) object(o Object) {
	switch spec := o.Spec.(type) {
	case *bundlev1.ClusterSpec:
		v.cluster(o, spec)
	case *bundlev1.RouteSpec:
		v.route(o, spec)
	case *bundlev1.AuthzPolicySpec:
		v.authz(o, spec)
	case *bundlev1.RetryPolicySpec:
		if spec.GetAttempts() > maxRetries {
			v.add(o, "spec.attempts", "%d is more than the limit of %d", spec.GetAttempts(), maxRetries)
		}
	case *bundlev1.ExtensionSpec:
		v.extension(o, spec)
	case *bundlev1.ExtensionBindingSpec:
		v.binding(o, spec)
	case *bundlev1.KillSwitchSpec:
		v.killSwitch(o, spec)
	case *bundlev1.ReferenceGrantSpec:
		v.referenceGrant(o, spec)
	default:
		v.add(o, "kind", "kind %s has no validation in this build", o.Kind) // fail closed
	}
}

type validator struct {
	w World
	// claimed: the World already holds every route's matches (ValidateIn); otherwise
	// routes claim theirs in a mapWorld as they are validated.
	claimed bool
	errs    ValidationErrors
}

type grantScope struct{ namespace, tenant string }

func (v *validator) add(o Object, field, format string, args ...any) {
	v.errs = append(v.errs, FieldError{Key: o.Key(), Source: o.Source, Field: field, Msg: fmt.Sprintf(format, args...)})
}

// ref checks that a resource of kind named name exists in o's namespace and belongs to
// o's tenant, or that its tenant grants o's tenant and kind the reference: references
// resolve by namespace, and a namespace can hold several tenants' resources.
func (v *validator) ref(o Object, field, kind, name string) {
	if name == "" {
		return
	}
	ns := o.Metadata.GetNamespace()
	target, ok := v.w.Object(Key{Kind: kind, Namespace: ns, Name: name})
	if !ok {
		v.add(o, field, "%s %q does not exist in namespace %q", kind, name, ns)
		return
	}
	from, to := o.Metadata.GetTenant(), target.Metadata.GetTenant()
	if from != to && !v.granted(o, target) {
		v.add(o, field, "%s %q belongs to tenant %q, and %s of tenant %q may not refer to it: tenant %q can allow it with a ReferenceGrant in namespace %q",
			kind, name, to, o.Kind, from, to, ns)
	}
}

// granted reports whether a ReferenceGrant of target's tenant in its namespace lets o's
// tenant and kind refer to target.
func (v *validator) granted(o, target Object) bool {
	for _, g := range v.w.Grants(target.Metadata.GetNamespace(), target.Metadata.GetTenant()) {
		from := slices.ContainsFunc(g.GetFrom(), func(f *bundlev1.ReferenceGrantFrom) bool {
			return f.GetTenant() == o.Metadata.GetTenant() && f.GetKind() == o.Kind
		})
		to := slices.ContainsFunc(g.GetTo(), func(t *bundlev1.ReferenceGrantTo) bool {
			return t.GetKind() == target.Kind && (t.GetName() == "" || t.GetName() == target.Metadata.GetName())
		})
		if from && to {
			return true
		}
	}
	return false
}

// referringKinds are the kinds whose specs name other resources, and referableKinds the
// kinds they name: what a ReferenceGrant can speak of.
var (
	referringKinds = []string{KindRoute, KindAuthzPolicy, KindExtensionBinding, KindKillSwitch}
	referableKinds = []string{KindCluster, KindRetryPolicy, KindRoute, KindExtension, KindAuthzPolicy}
)

func (v *validator) referenceGrant(o Object, s *bundlev1.ReferenceGrantSpec) {
	if len(s.GetFrom()) == 0 || len(s.GetTo()) == 0 {
		v.add(o, "spec", "from and to are both required")
	}
	for i, f := range s.GetFrom() {
		if f.GetTenant() == "" || f.GetTenant() == o.Metadata.GetTenant() {
			v.add(o, fmt.Sprintf("spec.from[%d].tenant", i), "another tenant is required (a tenant's own resources need no grant)")
		}
		if !slices.Contains(referringKinds, f.GetKind()) {
			v.add(o, fmt.Sprintf("spec.from[%d].kind", i), "%q refers to nothing (one of %s)", f.GetKind(), strings.Join(referringKinds, ", "))
		}
	}
	for i, t := range s.GetTo() {
		if !slices.Contains(referableKinds, t.GetKind()) {
			v.add(o, fmt.Sprintf("spec.to[%d].kind", i), "%q cannot be referred to (one of %s)", t.GetKind(), strings.Join(referableKinds, ", "))
		}
	}
}

func (v *validator) cluster(o Object, s *bundlev1.ClusterSpec) {
	if len(s.GetEndpoints()) == 0 {
		v.add(o, "spec.endpoints", "at least one endpoint is required")
	}
	for i, ep := range s.GetEndpoints() {
		if ep.GetAddress() == "" {
			v.add(o, fmt.Sprintf("spec.endpoints[%d].address", i), "required")
		}
		if ep.GetPort() == 0 || ep.GetPort() > 65535 {
			v.add(o, fmt.Sprintf("spec.endpoints[%d].port", i), "%d is not a port (1-65535)", ep.GetPort())
		}
	}
}

func (v *validator) route(o Object, s *bundlev1.RouteSpec) {
	m := s.GetMatch()
	if len(m.GetHosts()) == 0 {
		v.add(o, "spec.match.hosts", "at least one host is required")
	}
	if m.GetPathPrefix() != "" && m.GetPathExact() != "" {
		v.add(o, "spec.match", "set path_prefix or path_exact, not both")
	}
	for _, p := range [][2]string{{"spec.match.pathPrefix", m.GetPathPrefix()}, {"spec.match.pathExact", m.GetPathExact()}} {
		if p[1] != "" && !strings.HasPrefix(p[1], "/") {
			v.add(o, p[0], "%q must start with '/'", p[1])
		}
	}
	if meth := m.GetMethod(); meth != "" && !slices.Contains(httpMethods, meth) {
		v.add(o, "spec.match.method", "%q is not an HTTP method (%s)", meth, strings.Join(httpMethods, ", "))
	}
	switch {
	case s.GetCluster() != "" && len(s.GetWeightedClusters()) > 0:
		v.add(o, "spec", "set cluster or weightedClusters, not both")
	case s.GetCluster() == "" && len(s.GetWeightedClusters()) == 0 && !s.GetRefuse():
		v.add(o, "spec.cluster", "a cluster or weightedClusters is required")
	}
	v.ref(o, "spec.cluster", KindCluster, s.GetCluster())
	total := uint32(0)
	for i, wc := range s.GetWeightedClusters() {
		v.ref(o, fmt.Sprintf("spec.weightedClusters[%d].cluster", i), KindCluster, wc.GetCluster())
		total += wc.GetWeight()
	}
	if len(s.GetWeightedClusters()) > 0 && total == 0 {
		v.add(o, "spec.weightedClusters", "weights sum to zero")
	}
	v.ref(o, "spec.retryPolicy", KindRetryPolicy, s.GetRetryPolicy())
	for i, host := range m.GetHosts() {
		if host == "" {
			v.add(o, fmt.Sprintf("spec.match.hosts[%d]", i), "empty host")
			continue
		}
		key := matchKey(host, m)
		if prev, clash := v.w.RouteByMatch(key, o.Key()); clash {
			v.add(o, fmt.Sprintf("spec.match.hosts[%d]", i), "conflicts with %s (%s): same host, path and method", prev.Key(), prev.Source)
			continue
		}
		if !v.claimed {
			v.w.(*mapWorld).byMatch[key] = o
		}
	}
}

func matchKey(host string, m *bundlev1.RouteMatch) string {
	path := m.GetPathExact()
	if path == "" {
		path = "prefix:" + m.GetPathPrefix()
	}
	return strings.ToLower(host) + " " + path + " " + m.GetMethod() + " " + headerKey(m.GetHeaders())
}

// RouteMatches returns the matches a route claims, one per non-empty host: no two routes
// of a state may claim the same.
func RouteMatches(s *bundlev1.RouteSpec) []string {
	var out []string
	for _, host := range s.GetMatch().GetHosts() {
		if host != "" {
			out = append(out, matchKey(host, s.GetMatch()))
		}
	}
	return out
}

var httpMethods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace}

func headerKey(hs []*bundlev1.HeaderMatch) string {
	var parts []string
	for _, h := range hs {
		parts = append(parts, fmt.Sprintf("%s=%s|%s|%t", strings.ToLower(h.GetName()), h.GetExact(), h.GetPrefix(), h.GetPresent()))
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

func (v *validator) authz(o Object, s *bundlev1.AuthzPolicySpec) {
	if s.GetAction() == bundlev1.AuthzAction_AUTHZ_ACTION_UNSPECIFIED {
		v.add(o, "spec.action", "ALLOW or DENY is required")
	}
	for i, r := range s.GetRoutes() {
		v.ref(o, fmt.Sprintf("spec.routes[%d]", i), KindRoute, r)
	}
	for i, rule := range s.GetRules() {
		for j, p := range rule.GetPrincipals() {
			if !strings.HasPrefix(p, "spiffe://") {
				v.add(o, fmt.Sprintf("spec.rules[%d].principals[%d]", i, j), "%q is not a SPIFFE ID (spiffe://...)", p)
			}
		}
	}
}

func (v *validator) extension(o Object, s *bundlev1.ExtensionSpec) {
	if s.GetKind() == bundlev1.ExtensionKind_EXTENSION_KIND_UNSPECIFIED {
		v.add(o, "spec.kind", "WASM, DSL or NATIVE is required")
	}
	if s.GetArtifact() == "" {
		v.add(o, "spec.artifact", "the artifact's content id is required")
	}
	if s.GetAbi() == "" {
		v.add(o, "spec.abi", "required, e.g. proxy-wasm/0.2.1 or dsl/v1")
	}
}

func (v *validator) binding(o Object, s *bundlev1.ExtensionBindingSpec) {
	if s.GetExtension() == "" {
		v.add(o, "spec.extension", "required")
	}
	v.ref(o, "spec.extension", KindExtension, s.GetExtension())
	if len(s.GetRoutes()) == 0 {
		v.add(o, "spec.routes", "at least one route is required")
	}
	for i, r := range s.GetRoutes() {
		v.ref(o, fmt.Sprintf("spec.routes[%d]", i), KindRoute, r)
	}
	if p := s.GetCanary().GetPercent(); p > 100 {
		v.add(o, "spec.canary.percent", "%d is more than 100", p)
	}
}

func (v *validator) killSwitch(o Object, s *bundlev1.KillSwitchSpec) {
	kind := map[bundlev1.KillSwitchTarget]string{
		bundlev1.KillSwitchTarget_KILL_SWITCH_TARGET_EXTENSION:    KindExtension,
		bundlev1.KillSwitchTarget_KILL_SWITCH_TARGET_AUTHZ_POLICY: KindAuthzPolicy,
		bundlev1.KillSwitchTarget_KILL_SWITCH_TARGET_RETRY_POLICY: KindRetryPolicy,
	}[s.GetTarget()]
	if kind == "" {
		v.add(o, "spec.target", "EXTENSION, AUTHZ_POLICY or RETRY_POLICY is required")
		return
	}
	if s.GetName() == "" {
		v.add(o, "spec.name", "required")
	}
	v.ref(o, "spec.name", kind, s.GetName())
}

// References returns the keys of the resources o's spec names (in o's namespace).
func References(o Object) []Key {
	ns := o.Metadata.GetNamespace()
	ref := func(kind, name string) Key { return Key{Kind: kind, Namespace: ns, Name: name} }
	var out []Key
	switch s := o.Spec.(type) {
	case *bundlev1.RouteSpec:
		if s.GetCluster() != "" {
			out = append(out, ref(KindCluster, s.GetCluster()))
		}
		for _, wc := range s.GetWeightedClusters() {
			out = append(out, ref(KindCluster, wc.GetCluster()))
		}
		if s.GetRetryPolicy() != "" {
			out = append(out, ref(KindRetryPolicy, s.GetRetryPolicy()))
		}
	case *bundlev1.AuthzPolicySpec:
		for _, r := range s.GetRoutes() {
			out = append(out, ref(KindRoute, r))
		}
	case *bundlev1.ExtensionBindingSpec:
		out = append(out, ref(KindExtension, s.GetExtension()))
		for _, r := range s.GetRoutes() {
			out = append(out, ref(KindRoute, r))
		}
	case *bundlev1.KillSwitchSpec:
		kind := map[bundlev1.KillSwitchTarget]string{
			bundlev1.KillSwitchTarget_KILL_SWITCH_TARGET_EXTENSION:    KindExtension,
			bundlev1.KillSwitchTarget_KILL_SWITCH_TARGET_AUTHZ_POLICY: KindAuthzPolicy,
			bundlev1.KillSwitchTarget_KILL_SWITCH_TARGET_RETRY_POLICY: KindRetryPolicy,
		}[s.GetTarget()]
		if kind != "" {
			out = append(out, ref(kind, s.GetName()))
		}
	}
	return out
}
