package config

import (
	"bufio"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"raftgres/raftstore"
)

// TestConfigurationReferenceMatchesSchema keeps docs/configuration.md
// true: every key of the config file (File, by its yaml tags) and of the
// dynamic configuration (raftstore.ConfigDoc, by its json tags: what
// edit-config and /config take) has its row, and every row names a key
// that exists.
func TestConfigurationReferenceMatchesSchema(t *testing.T) {
	static, dynamic := docKeys(t, "../docs/configuration.md")
	compareKeys(t, "local settings", schemaKeys(reflect.TypeOf(File{}), "yaml"), static)
	compareKeys(t, "dynamic settings", schemaKeys(reflect.TypeOf(raftstore.ConfigDoc{}), "json"), dynamic)
}

func compareKeys(t *testing.T, table string, schema, doc []string) {
	t.Helper()
	for _, k := range schema {
		if !slices.Contains(doc, k) {
			t.Errorf("%s: key %s has no row in docs/configuration.md", table, k)
		}
	}
	for _, k := range doc {
		if !slices.Contains(schema, k) {
			t.Errorf("%s: docs/configuration.md documents %s, which the schema does not have", table, k)
		}
	}
}

// docKeys reads the first cell of every table row of the reference: the
// rows before "## Dynamic settings" are the config file's.
func docKeys(t *testing.T, path string) (static, dynamic []string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	inDynamic := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "## ") {
			inDynamic = strings.HasPrefix(line, "## Dynamic settings")
			continue
		}
		rest, ok := strings.CutPrefix(line, "| `")
		if !ok {
			continue
		}
		key, _, ok := strings.Cut(rest, "`")
		if !ok {
			continue
		}
		if inDynamic {
			dynamic = append(dynamic, key)
		} else {
			static = append(static, key)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(static) == 0 || len(dynamic) == 0 {
		t.Fatalf("%s: no rows found (%d local, %d dynamic): has the table format changed?", path, len(static), len(dynamic))
	}
	return static, dynamic
}

// schemaKeys lists the dotted paths of typ's fields by their tag: a
// struct is a section with keys below it, a map's values are under
// "name.*", anything else (and a type that decodes itself) is a leaf.
func schemaKeys(typ reflect.Type, tag string) []string {
	var keys []string
	var walk func(reflect.Type, string)
	walk = func(typ reflect.Type, prefix string) {
		for typ.Kind() == reflect.Pointer {
			typ = typ.Elem()
		}
		for i := range typ.NumField() {
			f := typ.Field(i)
			name, opts, _ := strings.Cut(f.Tag.Get(tag), ",")
			if name == "-" || !f.IsExported() {
				continue
			}
			if strings.Contains(opts, "inline") {
				walk(f.Type, prefix)
				continue
			}
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			path := prefix + name
			keys = append(keys, path)
			descend(f.Type, path, walk, &keys)
		}
	}
	walk(typ, "")
	return keys
}

func descend(typ reflect.Type, path string, walk func(reflect.Type, string), keys *[]string) {
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	if decodesItself(typ) {
		return
	}
	switch typ.Kind() {
	case reflect.Struct:
		walk(typ, path+".")
	case reflect.Map:
		*keys = append(*keys, path+".*")
		descend(typ.Elem(), path+".*", walk, keys)
	}
}

func decodesItself(typ reflect.Type) bool {
	p := reflect.PointerTo(typ)
	for _, m := range []string{"UnmarshalYAML", "UnmarshalJSON", "UnmarshalText"} {
		if _, ok := p.MethodByName(m); ok {
			return true
		}
	}
	return typ.PkgPath() == "time"
}
