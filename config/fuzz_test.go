package config

import (
	"testing"

	"github.com/BurntSushi/toml"
)

// FuzzScanKeys checks the key scanner on any text: it must not panic,
// and on text the TOML library accepts it must find every key the library
// reports.
func FuzzScanKeys(f *testing.F) {
	f.Add(example)
	f.Add(minimal)
	f.Add("a = \"\"\"x\n[y]\n\"\"\"\nb = 1\n")
	f.Add("[[a.b]]\nc = [1,\n2]\n[a]\n")
	f.Add("'q.k' = { x = [ { y = 1 } ] }\n")
	f.Fuzz(func(t *testing.T, data string) {
		var v map[string]any
		md, err := toml.Decode(data, &v)
		k := scanKeys(data) // must not panic, valid or not
		if err != nil {
			return
		}
		for _, key := range md.Keys() {
			found := false
			for _, kl := range k.order {
				if unindexed(kl.path) == key.String() {
					found = true
					break
				}
			}
			if !found {
				t.Errorf("key %s not found by the scanner", key)
			}
		}
	})
}
