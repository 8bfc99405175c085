package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// setup writes a configuration with a file map into a new directory and
// returns its path.
func setup(t *testing.T, conf string) string {
	t.Helper()
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "users.map"), `# test map
alice@example.org   mx1 mx2
bob@example.org     mail9.example.net:2143
@example.net        mx2
`)
	path := filepath.Join(dir, "switchboard.toml")
	mustWrite(t, path, conf)
	return path
}

func mustWrite(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

const fileConf = `hostname = "proxy.example.org"

[[listen]]
protocol = "imap"
address = "127.0.0.1:1143"
tls = "none"

[backend]
imap_port = 10143

[hosts]
mx1 = "10.8.0.1"
mx2 = { imap = "10.8.0.2:10143", pop3 = "10.8.0.2:10110" }

[map]
type = "file"
file = "users.map"
`

// runCmd runs the command line and returns its status and output.
func runCmd(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

func TestCheckOK(t *testing.T) {
	path := setup(t, fileConf)
	code, out, errOut := runCmd("check", "-config", path)
	if code != 0 || out != path+": ok\n" {
		t.Fatalf("check = %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestCheckReportsEveryProblem(t *testing.T) {
	conf := strings.Replace(fileConf, `address = "127.0.0.1:1143"`, `address = "127.0.0.1"`, 1)
	conf = strings.Replace(conf, `imap_port = 10143`, `imap_port = 10143
login_timeout = "15"`, 1)
	path := setup(t, conf)
	code, out, errOut := runCmd("check", "-config", path)
	if code != 1 || out != "" {
		t.Fatalf("check = %d, stdout %q", code, out)
	}
	want := []string{
		path + `:5: listen[0].address: missing port in address "127.0.0.1"`,
		path + `:10: backend.login_timeout: "15" is not a duration`,
	}
	lines := strings.Split(strings.TrimSuffix(errOut, "\n"), "\n")
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want), errOut)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d = %q, want prefix %q", i, lines[i], w)
		}
	}
}

func TestCheckMapFile(t *testing.T) {
	path := setup(t, fileConf)
	mustWrite(t, filepath.Join(filepath.Dir(path), "users.map"), "alice@example.org\nbob@example.org mx1\nbob@example.org mx2\n")
	code, _, errOut := runCmd("check", "-config", path)
	if code != 1 || !strings.Contains(errOut, "users.map:1: ") || !strings.Contains(errOut, "users.map:3: duplicate") {
		t.Fatalf("check = %d, stderr:\n%s", code, errOut)
	}
}

func TestLookup(t *testing.T) {
	path := setup(t, fileConf)
	tests := []struct {
		user string
		want []string
	}{
		{"alice@example.org", []string{
			"source:  file",
			"line:    " + filepath.Join(filepath.Dir(path), "users.map") + ":2",
			"primary    mx1  imap 10.8.0.1:10143  pop3 10.8.0.1:110",
			"standby 1  mx2  imap 10.8.0.2:10143  pop3 10.8.0.2:10110",
			"backend: plaintext",
		}},
		{"Bob@Example.org", []string{"primary  mail9.example.net:2143  imap mail9.example.net:2143  pop3 mail9.example.net:2143"}},
		{"carol@example.net", []string{"primary  mx2  imap 10.8.0.2:10143"}},
	}
	for _, tt := range tests {
		t.Run(tt.user, func(t *testing.T) {
			// Flags may also come after the user.
			code, out, errOut := runCmd("lookup", tt.user, "-config", path)
			if code != 0 {
				t.Fatalf("lookup = %d, stderr %q", code, errOut)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

func TestLookupUnknownUser(t *testing.T) {
	path := setup(t, fileConf)
	code, out, errOut := runCmd("lookup", "-config", path, "mallory@example.com")
	if code != 2 || out != "" || errOut != "mallory@example.com: unknown user\n" {
		t.Fatalf("lookup = %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// TestLookupLDAPUnavailable points the LDAP map at a loopback port where
// nothing listens: the lookup fails with status 1 and says why.
func TestLookupLDAPUnavailable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	conf := strings.Replace(fileConf, "[map]\ntype = \"file\"\nfile = \"users.map\"\n", `[map]
type = "ldap"

[ldap]
uris = ["ldap://`+addr+`"]
base_dn = "dc=example,dc=org"
dial_timeout = "1s"
`, 1)
	path := setup(t, conf)
	if code, out, errOut := runCmd("check", "-config", path); code != 0 {
		t.Fatalf("check = %d, %s%s", code, out, errOut)
	}
	code, _, errOut := runCmd("lookup", "-config", path, "alice@example.org")
	if code != 1 || !strings.Contains(errOut, "alice@example.org: LDAP unavailable: ") {
		t.Fatalf("lookup = %d, stderr %q", code, errOut)
	}
}

func TestUsage(t *testing.T) {
	tests := []struct {
		args []string
		code int
		want string
	}{
		{nil, 1, "usage: switchboard <command>"},
		{[]string{"frobnicate"}, 1, `unknown command "frobnicate"`},
		{[]string{"help"}, 0, "usage: switchboard <command>"},
		{[]string{"version"}, 0, "switchboard "},
		{[]string{"lookup", "-config", "x.toml"}, 1, "missing argument"},
		{[]string{"check", "extra"}, 1, `unexpected argument "extra"`},
		{[]string{"check", "-nope"}, 1, "flag provided but not defined"},
		{[]string{"check", "-h"}, 0, "usage: switchboard check"},
		{[]string{"check", "-config", "/nonexistent/switchboard.toml"}, 1, "/nonexistent/switchboard.toml: no such file or directory"},
	}
	for _, tt := range tests {
		code, out, errOut := runCmd(tt.args...)
		if code != tt.code || !strings.Contains(out+errOut, tt.want) {
			t.Errorf("%q = %d, output %q; want %d and %q", tt.args, code, out+errOut, tt.code, tt.want)
		}
	}
}
