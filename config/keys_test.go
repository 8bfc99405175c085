package config

import (
	"testing"
)

func TestScanKeys(t *testing.T) {
	const data = `# comment [not.a.table]
top = 1 # trailing [comment]
"quoted.key" = 'lit'
dotted.sub = "x = y"
multi = """
fake = 1
[fake]
"""
arr = [
  "a = b",   # [x]
  { k = 1 },
  [1, 2],
]
after = 2

[ tbl ]
a = '''
[[nope]]'''
b = "esc \" [q]"

[[arr2]]
x = 1
[arr2.sub]
y = 2
[[arr2]]
x = 3
  [[arr2.inner]]
  z = 4
  [[arr2.inner]]
  z = 5
[tbl.deeper]
w = { in = 1 }
`
	k := scanKeys(data)
	want := map[string]int{
		"top":                 2,
		`"quoted.key"`:        3,
		"dotted":              4,
		"dotted.sub":          4,
		"multi":               5,
		"arr":                 9,
		"after":               14,
		"tbl":                 16,
		"tbl.a":               17,
		"tbl.b":               19,
		"arr2":                21,
		"arr2[0]":             21,
		"arr2[0].x":           22,
		"arr2[0].sub":         23,
		"arr2[0].sub.y":       24,
		"arr2[1]":             25,
		"arr2[1].x":           26,
		"arr2[1].inner[0]":    27,
		"arr2[1].inner[0].z":  28,
		"arr2[1].inner[1].z":  30,
		"tbl.deeper.w":        32,
		"tbl.deeper.w.in":     32, // inside an inline table: the key's line
		"arr2[1].inner[1].no": 29, // not written: the nearest ancestor's
		"missing":             1,
	}
	for path, line := range want {
		if got := k.line(path); got != line {
			t.Errorf("line(%s) = %d, want %d", path, got, line)
		}
	}
	for _, bad := range []string{"fake", "nope", "k", "x"} {
		if k.has(bad) {
			t.Errorf("%q found inside a string or an array", bad)
		}
	}
}

func TestPaths(t *testing.T) {
	tests := []struct{ path, parent, unindexed string }{
		{"listen[1].address", "listen[1]", "listen.address"},
		{"listen[1]", "listen", "listen"},
		{"listen", "", "listen"},
		{`hosts."a.b[1]".imap`, `hosts."a.b[1]"`, `hosts."a.b[1]".imap`},
		{`hosts."a.b"`, "hosts", `hosts."a.b"`},
		{"tls.extra[0].cert", "tls.extra[0]", "tls.extra.cert"},
	}
	for _, tt := range tests {
		if got := parent(tt.path); got != tt.parent {
			t.Errorf("parent(%s) = %s, want %s", tt.path, got, tt.parent)
		}
		if got := unindexed(tt.path); got != tt.unindexed {
			t.Errorf("unindexed(%s) = %s, want %s", tt.path, got, tt.unindexed)
		}
	}
	if got := join("hosts", "a b"); got != `hosts."a b"` {
		t.Errorf("join = %s", got)
	}
}
