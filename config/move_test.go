package config

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestMove(t *testing.T) {
	dir := t.TempDir()
	fixtures(t, dir)
	write(t, filepath.Join(dir, "move.secret"), "mover-password\n")
	write(t, filepath.Join(dir, "doveadm.secret"), "doveadm-password\n")
	base := strings.Replace(minimal, "[map]\ntype = \"file\"\nfile = \"users.map\"\n", "", 1) + `
[ldap]
uris = ["ldap://127.0.0.1"]
base_dn = "dc=example,dc=org"

[hosts]
mx1 = "127.0.0.11"
mx2 = { imap = "127.0.0.12:143" }
`
	tests := []struct {
		name  string
		table string
		want  []string // substrings of the error; none for valid
	}{
		{"valid", `
[move]
bind_dn = "cn=mover,dc=example,dc=org"
bind_password_file = "move.secret"
doveadm_password_file = "doveadm.secret"
`, nil},
		{"missing keys", `
[move]
hold_value = "mx1"
`, []string{"move.bind_dn: required", "move.bind_password_file: required", "move.doveadm_password_file: required", `move.hold_value: "mx1" is a backend`}},
		{"remote api without tls", `
[move]
bind_dn = "cn=mover,dc=example,dc=org"
bind_password_file = "move.secret"
doveadm_password_file = "doveadm.secret"
[move.backends]
mx3 = { http = "10.0.0.13:8080", tcp = "10.0.0.13:2425" }
`, []string{"move.doveadm_ca_file: required: the doveadm API of mx3"}},
		{"bad values", `
[move]
bind_dn = "not a dn"
bind_password_file = "missing.secret"
doveadm_password_file = "doveadm.secret"
hold_attribute = "-x"
settle = "2"
doveadm_http_port = 0
[move.backends]
mx1 = { http = "nohost" }
`, []string{"move.bind_dn:", "move.bind_password_file: cannot read", "move.hold_attribute:", "move.settle:", "move.doveadm_http_port:", "move.backends.mx1.http:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := load(t, dir, base+tt.table)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if cfg.Move.BindPassword != "mover-password" || cfg.Move.DoveadmPassword != "doveadm-password" {
					t.Error("secrets not read")
				}
				for name, want := range map[string][2]string{
					"mx1": {"127.0.0.11:8080", "127.0.0.11:2425"},
					"mx2": {"127.0.0.12:8080", "127.0.0.12:2425"},
				} {
					if h, tcp := cfg.DoveadmAddrs(name); h != want[0] || tcp != want[1] {
						t.Errorf("DoveadmAddrs(%s) = %s, %s; want %v", name, h, tcp, want)
					}
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}
