package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"switchboard/internal/testbed"
)

// TestLookupSlapd runs lookup against a real slapd started on a loopback
// address, over ldaps:// and over StartTLS, with the bind password read
// from a file and the server certificate verified against the test CA.
func TestLookupSlapd(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test against slapd; skipped with -short")
	}
	s, err := testbed.StartSlapd(testbed.SlapdOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("start slapd: %v", err)
	}
	t.Cleanup(func() { s.Stop() })
	if err := s.AddUsers(
		testbed.User{Mail: "alice@example.org", Password: "x", Hosts: []string{"mx2", "mx1"}},
		testbed.User{Mail: "dup@example.org", Password: "x", Hosts: []string{"mx1"}},
		testbed.User{Mail: "nohost@example.org", Password: "x"},
	); err != nil {
		t.Fatal(err)
	}
	err = s.Add(fmt.Sprintf(`dn: uid=dup2,%s
objectClass: top
objectClass: inetOrgPerson
objectClass: switchboardUser
cn: dup2
sn: dup2
uid: dup2
mail: dup@example.org
host: mx2
status: active
`, s.PeopleDN))
	if err != nil {
		t.Fatal(err)
	}

	for _, tr := range []struct{ name, uri, startTLS string }{
		{"ldaps", s.LDAPSURI, "false"},
		{"starttls", s.URI, "true"},
	} {
		t.Run(tr.name, func(t *testing.T) {
			conf := strings.Replace(fileConf, "[map]\ntype = \"file\"\nfile = \"users.map\"\n", fmt.Sprintf(`[map]
type = "ldap"

[ldap]
uris = [%q]
start_tls = %s
ca_file = %q
bind_dn = %q
bind_password_file = "ldap.secret"
base_dn = %q
`, tr.uri, tr.startTLS, s.CAFile, s.BindDN, s.PeopleDN), 1)
			path := setup(t, conf)
			mustWrite(t, filepath.Join(filepath.Dir(path), "ldap.secret"), s.BindPassword+"\n")

			if code, out, errOut := runCmd("check", "-config", path); code != 0 {
				t.Fatalf("check = %d: %s%s", code, out, errOut)
			}
			code, out, errOut := runCmd("lookup", "-config", path, "alice@example.org")
			if code != 0 {
				t.Fatalf("lookup = %d, stderr %q", code, errOut)
			}
			for _, w := range []string{
				"source:  ldap\n",
				"dn:      " + s.UserDN("alice@example.org") + "\n",
				"primary    mx2  imap 10.8.0.2:10143  pop3 10.8.0.2:10110",
				"standby 1  mx1  imap 10.8.0.1:10143  pop3 10.8.0.1:110",
			} {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if strings.Contains(out+errOut, s.BindPassword) {
				t.Error("the bind password was printed")
			}

			tests := []struct {
				user string
				code int
				want string
			}{
				{"nobody@example.org", 2, "nobody@example.org: unknown user\n"},
				{"dup@example.org", 1, "dup@example.org: ambiguous: 2 entries: "},
				{"nohost@example.org", 1, "nohost@example.org: entry has no host value: "},
			}
			for _, tt := range tests {
				code, out, errOut := runCmd("lookup", "-config", path, tt.user)
				if code != tt.code || out != "" || !strings.HasPrefix(errOut, tt.want) {
					t.Errorf("lookup %s = %d, stdout %q, stderr %q; want %d and %q", tt.user, code, out, errOut, tt.code, tt.want)
				}
			}
			// -v adds the map's own log lines.
			if _, _, errOut := runCmd("lookup", "-v", "-config", path, "dup@example.org"); !strings.Contains(errOut, "directory has more than one entry") {
				t.Errorf("lookup -v printed no log line: %q", errOut)
			}
		})
	}

	// A wrong password in the file: the directory refuses the bind.
	t.Run("bad password", func(t *testing.T) {
		conf := strings.Replace(fileConf, "[map]\ntype = \"file\"\nfile = \"users.map\"\n", fmt.Sprintf(`[map]
type = "ldap"

[ldap]
uris = [%q]
ca_file = %q
bind_dn = %q
bind_password_file = "ldap.secret"
base_dn = %q
`, s.LDAPSURI, s.CAFile, s.BindDN, s.PeopleDN), 1)
		path := setup(t, conf)
		mustWrite(t, filepath.Join(filepath.Dir(path), "ldap.secret"), "wrong-password\n")
		code, _, errOut := runCmd("lookup", "-config", path, "alice@example.org")
		if code != 1 || !strings.Contains(errOut, "alice@example.org: LDAP unavailable: ") || strings.Contains(errOut, "wrong-password") {
			t.Errorf("lookup = %d, stderr %q", code, errOut)
		}
	})
}
