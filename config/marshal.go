package config

import (
	"bytes"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"raftgres/internal/conf"
)

// Marshal writes f as a config file that Load reads back into the same
// File: passwords and the token in clear (a config file is where they
// live; conf.Secret's own encoding redacts them), durations as Go
// durations, empty keys left out. The demo and the tests build their
// configs with it.
func Marshal(f *File) ([]byte, error) {
	n, err := node(reflect.ValueOf(f).Elem())
	if err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(n); err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	return out.Bytes(), nil
}

var (
	secretType    = reflect.TypeFor[conf.Secret]()
	durationType  = reflect.TypeFor[conf.Duration]()
	marshalerType = reflect.TypeFor[yaml.Marshaler]()
)

// node is v as a YAML node, nil when v is empty (omitted).
func node(v reflect.Value) (*yaml.Node, error) {
	if v.IsZero() {
		return nil, nil
	}
	return value(v)
}

// value is v as a YAML node, even when v is its type's zero value (a
// pointer's target: synchronous_mode: false is not the default).
func value(v reflect.Value) (*yaml.Node, error) {
	switch {
	case v.Type() == secretType:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v.Interface().(conf.Secret).Reveal()}, nil
	case v.Type() == durationType:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v.Interface().(conf.Duration).String()}, nil
	case v.Type().Implements(marshalerType):
		var n yaml.Node
		err := n.Encode(v.Interface())
		return &n, err
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return nil, nil
		}
		return value(v.Elem())
	case reflect.Struct:
		m := &yaml.Node{Kind: yaml.MappingNode}
		for i := range v.NumField() {
			key, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("yaml"), ",")
			if key == "-" {
				continue
			}
			c, err := node(v.Field(i))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", key, err)
			}
			if c != nil {
				m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: key}, c)
			}
		}
		if len(m.Content) == 0 {
			return nil, nil
		}
		return m, nil
	case reflect.Map:
		m := &yaml.Node{Kind: yaml.MappingNode, Style: yaml.FlowStyle}
		keys := v.MapKeys()
		slices.SortFunc(keys, func(a, b reflect.Value) int { return strings.Compare(a.String(), b.String()) })
		for _, k := range keys {
			c, err := node(v.MapIndex(k))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", k.String(), err)
			}
			if c == nil {
				c = &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: ""}
			}
			m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: k.String()}, c)
		}
		return m, nil
	case reflect.Slice:
		s := &yaml.Node{Kind: yaml.SequenceNode}
		for i := range v.Len() {
			c, err := node(v.Index(i))
			if err != nil {
				return nil, err
			}
			if c == nil {
				c = &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: ""}
			}
			s.Content = append(s.Content, c)
		}
		return s, nil
	case reflect.String:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v.String()}, nil
	}
	var n yaml.Node
	err := n.Encode(v.Interface())
	return &n, err
}
