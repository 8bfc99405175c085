package ldapmap

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"switchboard/route"
)

// writeMap writes content to a file in a test directory and returns its
// path.
func writeMap(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "users.map")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const goodMap = `# Switchboard user map
alice@example.org   imap1 imap2
Bob@Example.org     imap3   # trailing comment

@example.org        imap4
@Example.NET        imap5 imap6
*                   imap9
	carol@example.net	imap7
"x@y"@example.com   imap8
dave                imap10
`

func TestFileLookup(t *testing.T) {
	path := writeMap(t, goodMap)
	f, err := LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		user  string
		hosts []string
		line  int
	}{
		{"alice@example.org", []string{"imap1", "imap2"}, 2},
		{"ALICE@example.ORG", []string{"imap1", "imap2"}, 2},
		{"bob@example.org", []string{"imap3"}, 3},
		{"eve@example.org", []string{"imap4"}, 5},
		{"eve@EXAMPLE.net", []string{"imap5", "imap6"}, 6},
		{"carol@example.net", []string{"imap7"}, 8},
		{`"x@y"@example.com`, []string{"imap8"}, 9},
		{"dave", []string{"imap10"}, 10},
		{"mallory@elsewhere.example", []string{"imap9"}, 7},
		{"nodomain", []string{"imap9"}, 7},
	}
	for _, tt := range tests {
		t.Run(tt.user, func(t *testing.T) {
			res, err := f.Lookup(context.Background(), tt.user)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(res.Hosts, tt.hosts) {
				t.Errorf("Hosts = %q, want %q", res.Hosts, tt.hosts)
			}
			if want := path + ":" + strconv.Itoa(tt.line); res.DN != want {
				t.Errorf("DN = %q, want %q", res.DN, want)
			}
			if res.Source != "file" || res.Fetched.IsZero() {
				t.Errorf("Source %q, Fetched %v", res.Source, res.Fetched)
			}
		})
	}
}

func TestFileNoDefault(t *testing.T) {
	f, err := LoadFile(writeMap(t, "alice@example.org imap1\n@example.net imap2\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, user := range []string{"bob@example.org", "alice", "alice@example.org.evil", "", "a\x00@example.net"} {
		if _, err := f.Lookup(context.Background(), user); !errors.Is(err, route.ErrUnknownUser) {
			t.Errorf("Lookup(%q) = %v, want ErrUnknownUser", user, err)
		}
	}
}

func TestFileErrors(t *testing.T) {
	tests := []struct {
		name, content string
		want          []string // substrings of the error
	}{
		{"no host", "alice@example.org\n", []string{":1: \"alice@example.org\" has no host"}},
		{"no host after comment", "# c\n\nalice@example.org # imap1\n", []string{":3: "}},
		{"duplicate", "alice@example.org imap1\n\nALICE@example.org imap2\n", []string{":3: duplicate entry \"ALICE@example.org\" (first at line 1)"}},
		{"duplicate domain", "@example.org a\n@EXAMPLE.org b\n", []string{":2: duplicate"}},
		{"duplicate default", "* a\n* b\n", []string{":2: duplicate"}},
		{"wildcard in key", "*@example.org imap1\n", []string{":1: ", "allowed only alone"}},
		{"empty domain", "@ imap1\n", []string{":1: \"@\" is not @domain"}},
		{"double at domain", "@a@b imap1\n", []string{":1: "}},
		{"no local part", "x imap1\n@ok imap2\nfoo@ imap3\n", []string{":3: \"foo@\" is not user@domain"}},
		{"control char", "al\x01ce@example.org imap1\n", []string{":1: login name contains a control character"}},
		{"all errors", "a@b\nc@d x\nc@d y\n@ z\n", []string{":1: ", ":3: ", ":4: "}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeMap(t, tt.content)
			_, err := LoadFile(path)
			if err == nil {
				t.Fatal("LoadFile succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), path+w) && !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if !strings.Contains(err.Error(), path+":") {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
}

func TestFileMissing(t *testing.T) {
	if _, err := LoadFile(filepath.Join(t.TempDir(), "nope")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadFile = %v, want os.ErrNotExist", err)
	}
}

func TestFileReload(t *testing.T) {
	path := writeMap(t, "alice@example.org imap1\n")
	f, err := LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lookup := func() string {
		t.Helper()
		res, err := f.Lookup(context.Background(), "alice@example.org")
		if err != nil {
			t.Fatal(err)
		}
		return res.Hosts[0]
	}
	if err := os.WriteFile(path, []byte("alice@example.org imap2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := f.Reload(); err != nil {
		t.Fatal(err)
	}
	if h := lookup(); h != "imap2" {
		t.Errorf("after Reload: %s, want imap2", h)
	}
	if err := os.WriteFile(path, []byte("alice@example.org imap3\nalice@example.org imap4\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := f.Reload(); err == nil || !strings.Contains(err.Error(), path+":2:") {
		t.Errorf("Reload of a bad file = %v, want an error at line 2", err)
	}
	if h := lookup(); h != "imap2" {
		t.Errorf("after a failed Reload: %s, want the old imap2", h)
	}
	os.Remove(path)
	if err := f.Reload(); err == nil {
		t.Error("Reload of a missing file succeeded")
	}
	if h := lookup(); h != "imap2" {
		t.Errorf("after a failed Reload: %s, want the old imap2", h)
	}
}
