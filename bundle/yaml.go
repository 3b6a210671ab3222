package bundle

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// EncodeYAML writes objects as the YAML documents LoadPath reads, in one canonical form:
// apiVersion, kind, metadata (name, namespace, tenant, region, then labels as a map),
// spec with fields in schema order under their JSON names and durations as Go writes
// them ("500ms", "1m30s"); unset fields are left out. Decoding what it writes gives the
// same objects, and encoding those again gives the same bytes, so `meshkit get -o yaml`
// output applies back with no change.
func EncodeYAML(w io.Writer, objs []Object) error {
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	for _, o := range objs {
		doc, err := objectNode(o)
		if err != nil {
			return err
		}
		if err := enc.Encode(doc); err != nil {
			return err
		}
	}
	return enc.Close()
}

func objectNode(o Object) (*yaml.Node, error) {
	md := o.Metadata
	meta := mapping()
	for _, kv := range [][2]string{{"name", md.GetName()}, {"namespace", md.GetNamespace()}, {"tenant", md.GetTenant()}, {"region", md.GetRegion()}} {
		if kv[1] != "" {
			meta.Content = append(meta.Content, str(kv[0]), str(kv[1]))
		}
	}
	if len(md.GetLabels()) > 0 {
		labels := mapping()
		for _, l := range md.GetLabels() {
			labels.Content = append(labels.Content, str(l.GetKey()), str(l.GetValue()))
		}
		meta.Content = append(meta.Content, str("labels"), labels)
	}
	js, err := protojson.Marshal(o.Spec)
	if err != nil {
		return nil, fmt.Errorf("%s %s/%s: %w", o.Kind, md.GetNamespace(), md.GetName(), err)
	}
	dec := json.NewDecoder(strings.NewReader(string(js)))
	dec.UseNumber()
	spec, err := jsonNode(dec, o.Spec.ProtoReflect().Descriptor(), nil)
	if err != nil {
		return nil, fmt.Errorf("%s %s/%s: %w", o.Kind, md.GetNamespace(), md.GetName(), err)
	}
	doc := mapping()
	doc.Content = append(doc.Content, str("apiVersion"), str(APIVersion), str("kind"), str(o.Kind), str("metadata"), meta, str("spec"), spec)
	return doc, nil
}

func mapping() *yaml.Node { return &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"} }

func str(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s} }

// jsonNode reads the next JSON value from dec as a YAML node, keeping the order of object
// keys. md is the message the value encodes (nil for a map, list or well-known type),
// fd the field it is the value of (nil at the top): a Duration field's "1.500s" becomes
// "1.5s".
func jsonNode(dec *json.Decoder, md protoreflect.MessageDescriptor, fd protoreflect.FieldDescriptor) (*yaml.Node, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			n := mapping()
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				key, ok := kt.(string)
				if !ok {
					return nil, errors.New("bundle: a JSON object key is not a string")
				}
				var childMD protoreflect.MessageDescriptor
				var childFD protoreflect.FieldDescriptor
				switch {
				case fd != nil && fd.IsMap():
					childFD = fd.MapValue()
				case md != nil:
					childFD = md.Fields().ByJSONName(key)
				}
				if childFD != nil && childFD.Message() != nil && !childFD.IsMap() {
					childMD = childFD.Message()
				}
				v, err := jsonNode(dec, childMD, childFD)
				if err != nil {
					return nil, err
				}
				n.Content = append(n.Content, str(key), v)
			}
			_, err := dec.Token() // '}'
			return n, err
		case '[':
			n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
			for dec.More() {
				v, err := jsonNode(dec, md, fd) // the elements are the field's values
				if err != nil {
					return nil, err
				}
				n.Content = append(n.Content, v)
			}
			_, err := dec.Token() // ']'
			return n, err
		}
	case string:
		if fd != nil && fd.Message() != nil && fd.Message().FullName() == durationName {
			d, err := time.ParseDuration(t)
			if err != nil {
				return nil, fmt.Errorf("bundle: duration %q: %w", t, err)
			}
			return str(d.String()), nil
		}
		return str(t), nil
	case json.Number:
		tag := "!!int"
		if strings.ContainsAny(string(t), ".eE") {
			tag = "!!float"
		}
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: string(t)}, nil
	case bool:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: fmt.Sprint(t)}, nil
	case nil:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}, nil
	}
	return nil, fmt.Errorf("bundle: unexpected JSON token %v", tok)
}
