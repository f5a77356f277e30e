package config

import (
	"encoding"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Example returns a complete, commented TOML configuration holding the
// defaults, generated from the schema. It parses back to Default().
func Example() string { return render(Default()) }

// render writes c as commented TOML.
func render(c Config) string {
	var b strings.Builder
	b.WriteString("# agua configuration. Every key is shown with its default value.\n")
	b.WriteString("# Generated from the schema by `agua config example`; check yours with `agua config check FILE`.\n")
	walk("", reflect.ValueOf(c), func(table, doc string) {
		fmt.Fprintf(&b, "\n%s[%s]\n", comment(doc), table)
	}, func(table, key, doc string, v reflect.Value) {
		fmt.Fprintf(&b, "%s%s = %s\n", comment(doc), key, tomlValue(v))
	})
	return b.String()
}

// Reference returns the Markdown reference of every key (docs/config.md).
func Reference() string {
	var b strings.Builder
	b.WriteString("# Configuration reference\n\n")
	b.WriteString("Generated from the schema in `internal/config` by `agua config doc`; do not edit by hand.\n")
	b.WriteString("`agua config example` prints the same as a commented TOML file.\n")
	inTable := false
	walk("", reflect.ValueOf(Default()), func(table, doc string) {
		fmt.Fprintf(&b, "\n## [%s]\n\n%s\n", table, doc)
		inTable = false
	}, func(table, key, doc string, v reflect.Value) {
		if !inTable {
			b.WriteString("\n| key | default | meaning |\n|---|---|---|\n")
			inTable = true
		}
		if table == "" && !inTable {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "| `%s` | `%s` | %s |\n", key, strings.ReplaceAll(tomlValue(v), "|", "\\|"), strings.ReplaceAll(doc, "|", "\\|"))
	})
	return b.String()
}

func comment(doc string) string {
	if doc == "" {
		return ""
	}
	return "# " + doc + "\n"
}

// walk visits scalar keys of a struct before its sub-tables, recursively.
func walk(table string, v reflect.Value, onTable func(table, doc string), onKey func(table, key, doc string, v reflect.Value)) {
	t := v.Type()
	type sub struct {
		name, doc string
		v         reflect.Value
	}
	var subs []sub
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		key, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if f.Anonymous && key == "" && f.Type.Kind() == reflect.Struct {
			walk(table, v.Field(i), onTable, onKey) // embedded: its keys are this table's
			continue
		}
		if !f.IsExported() || key == "-" || key == "" {
			continue
		}
		fv := v.Field(i)
		doc := f.Tag.Get("doc")
		if isTable(fv) {
			subs = append(subs, sub{join(table, key), doc, fv})
			continue
		}
		onKey(table, key, doc, fv)
	}
	for _, s := range subs {
		if s.v.Kind() == reflect.Map {
			keys := s.v.MapKeys()
			sort.Slice(keys, func(i, j int) bool { return fmt.Sprint(keys[i]) < fmt.Sprint(keys[j]) })
			if s.v.Type().Elem().Kind() != reflect.Struct {
				// A table of values (reputation weights): one key each,
				// documented by DocOf.
				onTable(s.name, s.doc)
				d, _ := s.v.Interface().(interface{ DocOf(string) string })
				for _, k := range keys {
					doc := ""
					if d != nil {
						doc = d.DocOf(fmt.Sprint(k))
					}
					onKey(s.name, fmt.Sprint(k), doc, s.v.MapIndex(k))
				}
				continue
			}
			for _, k := range keys {
				name := join(s.name, fmt.Sprint(k))
				doc := s.doc
				if d, ok := s.v.Interface().(interface{ DocOf(string) string }); ok && d.DocOf(fmt.Sprint(k)) != "" {
					doc = d.DocOf(fmt.Sprint(k)) // e.g. each behaviour's own threshold doc
				}
				onTable(name, doc)
				walk(name, s.v.MapIndex(k), onTable, onKey)
			}
			continue
		}
		onTable(s.name, s.doc)
		walk(s.name, s.v, onTable, onKey)
	}
}

func join(table, key string) string {
	if table == "" {
		return key
	}
	return table + "." + key
}

var textMarshaler = reflect.TypeFor[encoding.TextMarshaler]()

// isTable reports whether a field is written as its own [table].
func isTable(v reflect.Value) bool {
	if v.Type().Implements(textMarshaler) {
		return false
	}
	switch v.Kind() {
	case reflect.Struct:
		return true
	case reflect.Map:
		// Tables of tables (thresholds), and tables of values that
		// document their keys (reputation weights).
		_, documented := v.Interface().(interface{ DocOf(string) string })
		return v.Type().Elem().Kind() == reflect.Struct || documented
	}
	return false
}

func tomlValue(v reflect.Value) string {
	if v.Type().Implements(textMarshaler) {
		txt, err := v.Interface().(encoding.TextMarshaler).MarshalText()
		if err == nil {
			return strconv.Quote(string(txt))
		}
	}
	switch x := v.Interface().(type) {
	case time.Duration:
		return strconv.Quote(x.String())
	case ByteSize:
		return strconv.Quote(x.String())
	}
	switch v.Kind() {
	case reflect.String:
		return strconv.Quote(v.String())
	case reflect.Bool:
		return strconv.FormatBool(v.Bool())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.FormatInt(v.Int(), 10)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return strconv.FormatUint(v.Uint(), 10)
	case reflect.Float32, reflect.Float64:
		s := strconv.FormatFloat(v.Float(), 'f', -1, 64)
		if !strings.ContainsAny(s, ".e") {
			s += ".0"
		}
		return s
	case reflect.Slice, reflect.Array:
		parts := make([]string, v.Len())
		for i := range parts {
			parts[i] = tomlValue(v.Index(i))
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case reflect.Map:
		keys := v.MapKeys()
		sort.Slice(keys, func(i, j int) bool { return fmt.Sprint(keys[i]) < fmt.Sprint(keys[j]) })
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = strconv.Quote(fmt.Sprint(k)) + " = " + tomlValue(v.MapIndex(k))
		}
		return "{" + strings.Join(parts, ", ") + "}"
	}
	return strconv.Quote(fmt.Sprint(v.Interface()))
}
