package bundle

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"

	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
)

// APIVersion is the apiVersion of every MeshKit resource.
const APIVersion = "meshkit.dev/v1alpha1"

// DefaultNamespace is used when metadata.namespace is empty.
const DefaultNamespace = "default"

// Limits on decoded input: a resource file is configuration, not a data set.
const (
	MaxFileBytes     = 16 << 20
	MaxDocumentBytes = 1 << 20
)

// Kinds of resources, as written in YAML.
const (
	KindCluster          = "Cluster"
	KindRoute            = "Route"
	KindAuthzPolicy      = "AuthzPolicy"
	KindRetryPolicy      = "RetryPolicy"
	KindExtension        = "Extension"
	KindExtensionBinding = "ExtensionBinding"
	KindKillSwitch       = "KillSwitch"
	// KindReferenceGrant lets other tenants refer to a tenant's resources; seeds validate
	// with it and never compile it into a bundle.
	KindReferenceGrant = "ReferenceGrant"
)

// kind is one resource kind: its spec message, and how it is compiled into a bundle.
type kind struct {
	spec func() proto.Message
	// add appends a validated object of the kind to a bundle; nil for a kind that is not
	// compiled, which then says why in notCompiled.
	add func(b *bundlev1.Bundle, o Object, exts map[Key]*bundlev1.ExtensionSpec)
	// notCompiled says why a kind without add is never in a bundle.
	notCompiled string
}

// kinds is the one list of resource kinds. TestKindsHaveOneHome checks it against the
// schema: each compiled kind adds to the Bundle field whose resources have its spec, and
// every Bundle resource field has a kind.
var kinds = map[string]kind{
	KindCluster: {spec: func() proto.Message { return &bundlev1.ClusterSpec{} }, add: func(b *bundlev1.Bundle, o Object, _ map[Key]*bundlev1.ExtensionSpec) {
		b.Clusters = append(b.Clusters, &bundlev1.Cluster{Metadata: o.Metadata, Spec: o.Spec.(*bundlev1.ClusterSpec)})
	}},
	KindRoute: {spec: func() proto.Message { return &bundlev1.RouteSpec{} }, add: func(b *bundlev1.Bundle, o Object, _ map[Key]*bundlev1.ExtensionSpec) {
		b.Routes = append(b.Routes, &bundlev1.Route{Metadata: o.Metadata, Spec: o.Spec.(*bundlev1.RouteSpec)})
	}},
	KindAuthzPolicy: {spec: func() proto.Message { return &bundlev1.AuthzPolicySpec{} }, add: func(b *bundlev1.Bundle, o Object, _ map[Key]*bundlev1.ExtensionSpec) {
		b.AuthzPolicies = append(b.AuthzPolicies, &bundlev1.AuthzPolicy{Metadata: o.Metadata, Spec: o.Spec.(*bundlev1.AuthzPolicySpec)})
	}},
	KindRetryPolicy: {spec: func() proto.Message { return &bundlev1.RetryPolicySpec{} }, add: func(b *bundlev1.Bundle, o Object, _ map[Key]*bundlev1.ExtensionSpec) {
		b.RetryPolicies = append(b.RetryPolicies, &bundlev1.RetryPolicy{Metadata: o.Metadata, Spec: o.Spec.(*bundlev1.RetryPolicySpec)})
	}},
	KindExtension: {spec: func() proto.Message { return &bundlev1.ExtensionSpec{} }, notCompiled: "resolved into the ExtensionBindings that use it"},
	KindExtensionBinding: {spec: func() proto.Message { return &bundlev1.ExtensionBindingSpec{} }, add: func(b *bundlev1.Bundle, o Object, exts map[Key]*bundlev1.ExtensionSpec) {
		spec := o.Spec.(*bundlev1.ExtensionBindingSpec)
		// A node needs the artifact, not the Extension resource: resolve it here.
		ext := exts[Key{Kind: KindExtension, Namespace: o.Metadata.GetNamespace(), Name: spec.GetExtension()}]
		b.ExtensionBindings = append(b.ExtensionBindings, &bundlev1.ExtensionBinding{Metadata: o.Metadata, Spec: spec, Extension: ext})
	}},
	KindKillSwitch: {spec: func() proto.Message { return &bundlev1.KillSwitchSpec{} }, add: func(b *bundlev1.Bundle, o Object, _ map[Key]*bundlev1.ExtensionSpec) {
		b.KillSwitches = append(b.KillSwitches, &bundlev1.KillSwitch{Metadata: o.Metadata, Spec: o.Spec.(*bundlev1.KillSwitchSpec)})
	}},
	KindReferenceGrant: {spec: func() proto.Message { return &bundlev1.ReferenceGrantSpec{} }, notCompiled: "used by validation only"},
}

// NewSpec returns an empty spec message of kind, or ok=false for a kind that is not.
func NewSpec(kind string) (spec proto.Message, ok bool) {
	k, ok := kinds[kind]
	if !ok {
		return nil, false
	}
	return k.spec(), true
}

// kindBySpec inverts kinds: the kind of each spec message.
var kindBySpec = func() map[protoreflect.FullName]string {
	m := make(map[protoreflect.FullName]string, len(kinds))
	for name, k := range kinds {
		m[k.spec().ProtoReflect().Descriptor().FullName()] = name
	}
	return m
}()

// KindOf returns the kind whose spec message spec is, or ok=false.
func KindOf(spec proto.Message) (kind string, ok bool) {
	kind, ok = kindBySpec[spec.ProtoReflect().Descriptor().FullName()]
	return kind, ok
}

// Kinds lists the resource kinds, sorted.
func Kinds() []string {
	return slices.Sorted(maps.Keys(kinds))
}

// Object is one decoded resource.
type Object struct {
	Kind     string
	Metadata *bundlev1.Metadata
	Spec     proto.Message
	// Source is "file:line" of the document, for error messages.
	Source string
}

// Key identifies the object within a bundle.
func (o Object) Key() Key {
	return Key{Kind: o.Kind, Namespace: o.Metadata.GetNamespace(), Name: o.Metadata.GetName()}
}

// Key identifies a resource: kind, namespace and name.
type Key struct{ Kind, Namespace, Name string }

func (k Key) String() string { return k.Kind + " " + k.Namespace + "/" + k.Name }

// DecodeError is a problem with one YAML document.
type DecodeError struct {
	Source string // file:line
	Msg    string
}

func (e *DecodeError) Error() string { return e.Source + ": " + e.Msg }

// ErrDecode is wrapped by every error of Decode.
var ErrDecode = errors.New("bundle: cannot decode resources")

// DecodeErrors collects every DecodeError of a decode.
type DecodeErrors []*DecodeError

func (es DecodeErrors) Error() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%d problem(s) decoding resources:", len(es))
	for _, e := range es {
		sb.WriteString("\n  " + e.Error())
	}
	return sb.String()
}

// Unwrap lets errors.Is match ErrDecode.
func (es DecodeErrors) Unwrap() error { return ErrDecode }

// LoadPath decodes every *.yaml / *.yml file under path (a file or a directory, walked in
// lexical order).
func LoadPath(path string) ([]Object, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	var files []string
	if !st.IsDir() {
		files = []string{path}
	} else {
		err = filepath.WalkDir(path, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if ext := filepath.Ext(p); !d.IsDir() && (ext == ".yaml" || ext == ".yml") {
				files = append(files, p)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("bundle: %w", err)
		}
		if len(files) == 0 {
			return nil, fmt.Errorf("bundle: no .yaml or .yml files under %s", path)
		}
	}
	var objs []Object
	var errs DecodeErrors
	for _, f := range files {
		data, err := readLimited(f, MaxFileBytes)
		if err != nil {
			return nil, err
		}
		got, err := Decode(f, data)
		var de DecodeErrors
		if errors.As(err, &de) {
			errs = append(errs, de...)
		} else if err != nil {
			return nil, err
		}
		objs = append(objs, got...)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return objs, nil
}

func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("bundle: read %s: %w", path, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("bundle: %s is larger than %d bytes", path, limit)
	}
	return data, nil
}

// Decode parses a multi-document YAML stream of resources. name is used in error
// messages. Every document is checked and every problem reported, with its line.
func Decode(name string, data []byte) ([]Object, error) {
	if len(data) > MaxFileBytes {
		return nil, DecodeErrors{{Source: name, Msg: fmt.Sprintf("input is %d bytes, the limit is %d", len(data), MaxFileBytes)}}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var objs []Object
	var errs DecodeErrors
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			errs = append(errs, &DecodeError{Source: name, Msg: "invalid YAML: " + err.Error()})
			break // the decoder cannot resynchronise after a syntax error
		}
		if len(doc.Content) == 0 || (doc.Content[0].Kind == yaml.ScalarNode && doc.Content[0].Tag == "!!null") {
			continue // empty document, e.g. a trailing "---"
		}
		src := fmt.Sprintf("%s:%d", name, doc.Content[0].Line)
		obj, err := decodeDocument(&doc)
		if err != nil {
			errs = append(errs, &DecodeError{Source: src, Msg: err.Error()})
			continue
		}
		obj.Source = src
		objs = append(objs, obj)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return objs, nil
}

type rawObject struct {
	APIVersion string          `json:"apiVersion"`
	Kind       string          `json:"kind"`
	Metadata   rawMetadata     `json:"metadata"`
	Spec       json.RawMessage `json:"spec"`
}

type rawMetadata struct {
	Name      string            `json:"name"`
	Namespace string            `json:"namespace"`
	Tenant    string            `json:"tenant"`
	Region    string            `json:"region"`
	Labels    map[string]string `json:"labels"`
}

var (
	nameRE  = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$`)
	labelRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$`)
)

func decodeDocument(doc *yaml.Node) (Object, error) {
	var generic any
	if err := doc.Decode(&generic); err != nil {
		return Object{}, err
	}
	js, err := json.Marshal(generic)
	if err != nil {
		return Object{}, fmt.Errorf("document cannot be expressed as JSON: %v", err)
	}
	if len(js) > MaxDocumentBytes {
		return Object{}, fmt.Errorf("document is %d bytes as JSON, the limit is %d", len(js), MaxDocumentBytes)
	}
	var raw rawObject
	d := json.NewDecoder(bytes.NewReader(js))
	d.DisallowUnknownFields()
	if err := d.Decode(&raw); err != nil {
		return Object{}, fmt.Errorf("resource: %v (allowed top-level fields: apiVersion, kind, metadata, spec; metadata: name, namespace, tenant, region, labels)", err)
	}
	if raw.APIVersion != APIVersion {
		return Object{}, fmt.Errorf("apiVersion %q is not supported, use %q", raw.APIVersion, APIVersion)
	}
	spec, ok := NewSpec(raw.Kind)
	if !ok {
		return Object{}, fmt.Errorf("kind %q is unknown; known kinds: %s", raw.Kind, strings.Join(Kinds(), ", "))
	}
	md, err := decodeMetadata(raw.Metadata)
	if err != nil {
		return Object{}, fmt.Errorf("%s: %v", raw.Kind, err)
	}
	if len(raw.Spec) == 0 || string(raw.Spec) == "null" {
		return Object{}, fmt.Errorf("%s %s/%s: spec is required", raw.Kind, md.Namespace, md.Name)
	}
	specJSON, err := normalizeDurations(spec.ProtoReflect().Descriptor(), raw.Spec)
	if err != nil {
		return Object{}, fmt.Errorf("%s %s/%s: spec: %v", raw.Kind, md.Namespace, md.Name, err)
	}
	if err := protojson.Unmarshal(specJSON, spec); err != nil {
		return Object{}, fmt.Errorf("%s %s/%s: spec: %v", raw.Kind, md.Namespace, md.Name, err)
	}
	return Object{Kind: raw.Kind, Metadata: md, Spec: spec}, nil
}

func decodeMetadata(raw rawMetadata) (*bundlev1.Metadata, error) {
	md := &bundlev1.Metadata{Name: raw.Name, Namespace: raw.Namespace, Tenant: raw.Tenant, Region: raw.Region}
	if md.Namespace == "" {
		md.Namespace = DefaultNamespace
	}
	if err := ValidateMetadata(md); err != nil {
		return nil, err
	}
	for _, k := range slices.Sorted(maps.Keys(raw.Labels)) {
		if !labelRE.MatchString(k) || len(raw.Labels[k]) > 253 {
			return nil, fmt.Errorf("metadata.labels[%q]: keys are 1-63 letters, digits, '.', '_', '/' or '-', values at most 253 bytes", k)
		}
		md.Labels = append(md.Labels, &bundlev1.Label{Key: k, Value: raw.Labels[k]})
	}
	return md, nil
}

// ValidateMetadata checks the names of a resource, however it arrived (a file or the
// admin API): name, namespace and tenant are DNS-label-like, so each is one component of
// a key, a path and an OCI repository name ("TENANT/NAMESPACE/NAME").
func ValidateMetadata(md *bundlev1.Metadata) error {
	if !nameRE.MatchString(md.GetName()) {
		return fmt.Errorf("metadata.name %q must be 1-63 lowercase letters, digits, '.' or '-'", md.GetName())
	}
	if !nameRE.MatchString(md.GetNamespace()) {
		return fmt.Errorf("metadata.namespace %q must be 1-63 lowercase letters, digits, '.' or '-'", md.GetNamespace())
	}
	if md.GetTenant() != "" && !nameRE.MatchString(md.GetTenant()) {
		return fmt.Errorf("metadata.tenant %q must be empty or 1-63 lowercase letters, digits, '.' or '-'", md.GetTenant())
	}
	return nil
}

var durationName = (&durationpb.Duration{}).ProtoReflect().Descriptor().FullName()

// normalizeDurations rewrites Go-style durations ("500ms", "1m30s") of Duration fields into
// the seconds form protojson reads ("0.500s"), walking the message descriptor so only
// fields typed google.protobuf.Duration are touched.
func normalizeDurations(md protoreflect.MessageDescriptor, spec json.RawMessage) ([]byte, error) {
	var v any
	if err := json.Unmarshal(spec, &v); err != nil {
		return nil, err
	}
	if err := walkDurations(md, v, ""); err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

func walkDurations(md protoreflect.MessageDescriptor, v any, path string) error {
	obj, ok := v.(map[string]any)
	if !ok {
		return nil // protojson reports the type mismatch with its own message
	}
	for _, name := range slices.Sorted(maps.Keys(obj)) {
		val := obj[name]
		fd := md.Fields().ByJSONName(name)
		if fd == nil {
			fd = md.Fields().ByName(protoreflect.Name(name))
		}
		if fd == nil || fd.Message() == nil {
			continue
		}
		fieldPath := path + name
		visit := func(item any, set func(any)) error {
			if fd.Message().FullName() != durationName {
				return walkDurations(fd.Message(), item, fieldPath+".")
			}
			s, ok := item.(string)
			if !ok {
				return nil
			}
			d, err := time.ParseDuration(s)
			if err != nil || d < 0 {
				return fmt.Errorf("%s: %q is not a non-negative duration (e.g. 250ms, 1.5s, 2m)", fieldPath, s)
			}
			set(fmt.Sprintf("%d.%09ds", d/time.Second, d%time.Second))
			return nil
		}
		if list, ok := val.([]any); ok && fd.IsList() {
			for i := range list {
				if err := visit(list[i], func(x any) { list[i] = x }); err != nil {
					return err
				}
			}
			continue
		}
		if err := visit(val, func(x any) { obj[name] = x }); err != nil {
			return err
		}
	}
	return nil
}
