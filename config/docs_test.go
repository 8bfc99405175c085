package config

import (
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

const docsPath = "../docs/configuration.md"

// structKeys returns every key the configuration accepts, as dotted paths
// without indices, and every table. A map of tables ([hosts]) documents
// its entries' keys under the map's own table.
func structKeys(t reflect.Type, path string, keys, tables map[string]bool) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	for i := range t.NumField() {
		f := t.Field(i)
		name := tomlName(f)
		if name == "" {
			continue
		}
		p := join(path, name)
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case ft == reflect.TypeFor[Duration]():
			keys[p] = true
		case ft.Kind() == reflect.Struct:
			tables[p] = true
			structKeys(ft, p, keys, tables)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			tables[p] = true
			structKeys(ft.Elem(), p, keys, tables)
		case ft.Kind() == reflect.Map && ft.Elem().Kind() == reflect.Struct:
			tables[p] = true
			structKeys(ft.Elem(), p, keys, tables)
		default:
			keys[p] = true
		}
	}
}

var (
	docHeading = regexp.MustCompile("^#+ .*`\\[\\[?([a-z0-9_.]+)\\]\\]?`")
	docRow     = regexp.MustCompile("^\\| `([a-z0-9_]+)` \\|")
)

// docKeys reads the key tables of the reference: a heading naming a
// table (`[ldap]`, `[[listen]]`) or "Top level" starts a section, and
// each table row starting with a key in backquotes documents it.
func docKeys(t *testing.T, doc string) (keys, tables map[string]bool) {
	keys, tables = map[string]bool{}, map[string]bool{}
	section := "?"
	for _, line := range strings.Split(doc, "\n") {
		if strings.HasPrefix(line, "#") {
			section = "?"
			if m := docHeading.FindStringSubmatch(line); m != nil {
				section = m[1]
				tables[section] = true
			} else if strings.Contains(strings.ToLower(line), "top level") {
				section = ""
			}
			continue
		}
		if m := docRow.FindStringSubmatch(line); m != nil {
			if section == "?" {
				t.Errorf("docs: key %q documented outside a key section", m[1])
				continue
			}
			p := join(section, m[1])
			if keys[p] {
				t.Errorf("docs: %s documented twice", p)
			}
			keys[p] = true
		}
	}
	return keys, tables
}

// TestDocsCoverEveryKey checks docs/configuration.md against the
// structs: every key and table the file accepts is documented, and the
// docs document nothing else.
func TestDocsCoverEveryKey(t *testing.T) {
	data, err := os.ReadFile(docsPath)
	if err != nil {
		t.Fatal(err)
	}
	wantKeys, wantTables := map[string]bool{}, map[string]bool{}
	structKeys(reflect.TypeFor[Config](), "", wantKeys, wantTables)
	gotKeys, gotTables := docKeys(t, string(data))

	// An array of tables is also a row of its parent table.
	for tbl := range wantTables {
		if strings.Contains(tbl, ".") {
			wantKeys[tbl] = true
		}
	}
	compare(t, "key", wantKeys, gotKeys)
	compare(t, "table", wantTables, gotTables)
	if len(wantKeys) < 40 {
		t.Errorf("only %d keys found in the structs; the walk is broken", len(wantKeys))
	}
}

func compare(t *testing.T, what string, want, got map[string]bool) {
	t.Helper()
	var missing, extra []string
	for k := range want {
		if !got[k] {
			missing = append(missing, k)
		}
	}
	for k := range got {
		if !want[k] {
			extra = append(extra, k)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	for _, k := range missing {
		t.Errorf("%s %s is not documented in %s", what, k, docsPath)
	}
	for _, k := range extra {
		t.Errorf("%s %s is documented in %s but the configuration has no such %s", what, k, docsPath, what)
	}
}

// TestDocsExampleDecodes checks that the TOML blocks of the reference
// use only keys that exist, with values of the right types.
func TestDocsExampleDecodes(t *testing.T) {
	data, err := os.ReadFile(docsPath)
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```toml\n(.*?)```").FindAllStringSubmatch(string(data), -1)
	if len(blocks) == 0 {
		t.Fatal("no toml blocks")
	}
	for i, b := range blocks {
		cfg := Default()
		md, err := toml.Decode(b[1], cfg)
		if err != nil {
			t.Errorf("block %d: %v", i, err)
			continue
		}
		if u := md.Undecoded(); len(u) > 0 {
			t.Errorf("block %d: unknown keys %v", i, u)
		}
		c := &checker{file: "block", keys: scanKeys(b[1])}
		checkDurations(c, reflect.ValueOf(cfg).Elem(), "")
		if err := c.err(); err != nil {
			t.Errorf("block %d: %v", i, err)
		}
	}
}
