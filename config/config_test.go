package config

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"switchboard/route"
)

const testPassword = "s3cret-bind-pw"

// fixtures writes the files a configuration refers to into dir: a
// self-signed certificate (mail.pem, mail.key, also usable as ca.pem), a
// second pair (extra.pem, extra.key), a bind password, a map file.
func fixtures(t *testing.T, dir string) {
	t.Helper()
	for _, base := range []string{"mail", "extra"} {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber:          big.NewInt(1),
			Subject:               pkix.Name{CommonName: base + ".example.org"},
			DNSNames:              []string{base + ".example.org"},
			NotBefore:             time.Now().Add(-time.Hour),
			NotAfter:              time.Now().Add(time.Hour),
			IsCA:                  true,
			BasicConstraintsValid: true,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(dir, base+".pem"), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
		write(t, filepath.Join(dir, base+".key"), string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})))
	}
	write(t, filepath.Join(dir, "ca.pem"), read(t, filepath.Join(dir, "mail.pem")))
	write(t, filepath.Join(dir, "ldap.secret"), testPassword+"\n")
	write(t, filepath.Join(dir, "empty.secret"), "\n")
	write(t, filepath.Join(dir, "users.map"), "alice@example.org mx1 mx2\n")
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// load writes body as dir/switchboard.toml and loads it.
func load(t *testing.T, dir, body string) (*Config, error) {
	t.Helper()
	path := filepath.Join(dir, "switchboard.toml")
	write(t, path, body)
	return Load(path)
}

// example is the configuration of docs/configuration.md, with the files
// in the test directory (relative names) and a loopback LDAP.
const example = `hostname = "mail.example.org"
log_level = "info"
log_format = "text"
trusted_networks = ["127.0.0.0/8"]
preauth_timeout = "60s"
idle_timeout = "31m"
auth_fail_delay = "1s"
max_preauth_errors = 3

[tls]
cert = "mail.pem"
key = "mail.key"
  [[tls.extra]]
  cert = "extra.pem"
  key = "extra.key"

[[listen]]
name = "imaps"
protocol = "imap"
address = "0.0.0.0:993"
tls = "implicit"

[[listen]]
protocol = "imap"
address = "[::]:143"

[[listen]]
protocol = "pop3"
address = "127.0.0.1:10110"
tls = "none"
proxy_protocol = true
proxy_from = ["10.0.0.0/8", "fd00::/8"]

[backend]
tls = true
ca_file = "ca.pem"
server_name = "backend.example.org"
dial_timeout = "3s"
login_timeout = "15s"
imap_port = 143
pop3_port = 110

[hosts]
mx1 = "10.8.0.1"
mx2 = { imap = "10.8.0.2:10143", pop3 = "10.8.0.2:10110" }

[hosts.mx3]
addr = "mx3.example.org"
pop3 = "10.8.0.3:1110"

[map]
type = "ldap"
cache_ttl = "5m"
negative_ttl = "30s"
serve_stale = true

[ldap]
uris = ["ldaps://ldap1.example.org", "ldap://127.0.0.1:3389"]
start_tls = false
ca_file = "ca.pem"
bind_dn = "cn=switchboard,dc=example,dc=org"
bind_password_file = "ldap.secret"
base_dn = "ou=people,dc=example,dc=org"
filter = "(&(mail=%s)(status=active))"
attribute = "host"
pool_size = 4
dial_timeout = "2s"
timeout = "3s"
`

func TestLoadExample(t *testing.T) {
	dir := t.TempDir()
	fixtures(t, dir)
	cfg, err := load(t, dir, example)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Hostname != "mail.example.org" || cfg.IdleTimeout.Duration != 31*time.Minute {
		t.Errorf("top level: %+v", cfg)
	}
	if got := cfg.TLS.Pairs(); len(got) != 2 || got[1].Key != filepath.Join(dir, "extra.key") {
		t.Errorf("TLS pairs = %+v (relative names resolve against the config's directory)", got)
	}
	wantListen := Listeners{
		{Name: "imaps", Protocol: "imap", Address: "0.0.0.0:993", TLS: TLSImplicit},
		{Name: "imap-143", Protocol: "imap", Address: "[::]:143", TLS: TLSStartTLS},
		{Name: "pop3-10110", Protocol: "pop3", Address: "127.0.0.1:10110", TLS: TLSNone, ProxyProtocol: true, ProxyFrom: []string{"10.0.0.0/8", "fd00::/8"}},
	}
	if fmt.Sprint(cfg.Listen) != fmt.Sprint(wantListen) {
		t.Errorf("Listen =\n%+v\nwant\n%+v", cfg.Listen, wantListen)
	}
	if got := cfg.Listen[2].ProxyNets(); len(got) != 2 || got[1].String() != "fd00::/8" {
		t.Errorf("ProxyNets = %v", got)
	}
	if got := cfg.TrustedNets(); len(got) != 1 || got[0].String() != "127.0.0.0/8" {
		t.Errorf("TrustedNets = %v", got)
	}
	hm := cfg.HostMap()
	for _, tt := range []struct{ host, proto, want string }{
		{"mx1", route.IMAP, "10.8.0.1:143"},
		{"mx1", route.POP3, "10.8.0.1:110"},
		{"mx2", route.IMAP, "10.8.0.2:10143"},
		{"mx2", route.POP3, "10.8.0.2:10110"},
		{"mx3", route.IMAP, "mx3.example.org:143"},
		{"mx3", route.POP3, "10.8.0.3:1110"},
		{"mx9.example.org", route.IMAP, "mx9.example.org:143"},
	} {
		if got := hm.Resolve(tt.host, tt.proto); got != tt.want {
			t.Errorf("Resolve(%s, %s) = %s, want %s", tt.host, tt.proto, got, tt.want)
		}
	}
	if cfg.LDAP == nil || string(cfg.LDAP.BindPassword) != testPassword {
		t.Errorf("bind password not read, or its newline not trimmed")
	}
	if cfg.Map.CacheTTL.Duration != 5*time.Minute || !cfg.Map.ServeStale {
		t.Errorf("Map = %+v", cfg.Map)
	}
	want := filepath.Join(dir, "switchboard.toml") + `:29: listen[2].address: listen tcp: address already in use`
	if got := cfg.ErrorAt("listen[2].address", errors.New("listen tcp: address already in use")).Error(); got != want {
		t.Errorf("ErrorAt = %s, want %s", got, want)
	}
}

// TestDefaults loads the least a file can say and checks Default fills
// the rest, and that absent tables stay nil.
func TestDefaults(t *testing.T) {
	dir := t.TempDir()
	fixtures(t, dir)
	cfg, err := load(t, dir, `
[[listen]]
protocol = "pop3"
address = "127.0.0.1:1110"
tls = "none"

[map]
type = "file"
file = "users.map"
`)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TLS != nil || cfg.LDAP != nil {
		t.Errorf("absent tables are not nil: tls %v, ldap %v", cfg.TLS, cfg.LDAP)
	}
	def := Default()
	if cfg.Hostname != def.Hostname || cfg.Hostname == "" {
		t.Errorf("hostname = %q", cfg.Hostname)
	}
	if cfg.PreauthTimeout.Duration != 60*time.Second || cfg.IdleTimeout.Duration != 31*time.Minute ||
		cfg.AuthFailDelay.Duration != 2*time.Second || cfg.MaxPreauthErrors != 3 {
		t.Errorf("timeouts: %v %v %v %d", cfg.PreauthTimeout, cfg.IdleTimeout, cfg.AuthFailDelay, cfg.MaxPreauthErrors)
	}
	if got := cfg.TrustedNets(); len(got) != 2 {
		t.Errorf("TrustedNets = %v", got)
	}
	if cfg.Backend.DialTimeout.Duration != 3*time.Second || cfg.Backend.LoginTimeout.Duration != 15*time.Second ||
		cfg.Backend.IMAPPort != 143 || cfg.Backend.POP3Port != 110 || cfg.Backend.TLS {
		t.Errorf("Backend = %+v", cfg.Backend)
	}
	if cfg.Listen[0].Name != "pop3-1110" {
		t.Errorf("listener name = %q", cfg.Listen[0].Name)
	}
	if cfg.Map.File != filepath.Join(dir, "users.map") {
		t.Errorf("map file = %q", cfg.Map.File)
	}
	var buf bytes.Buffer
	log, flush := cfg.Logger(&buf)
	log.Debug("hidden")
	log.Info("shown")
	if buf.Len() != 0 {
		t.Errorf("an info line was written before the flush interval: %q", buf.String())
	}
	flush()
	if strings.Contains(buf.String(), "hidden") || !strings.Contains(buf.String(), "shown") {
		t.Errorf("logger at info wrote %q", buf.String())
	}
	// log_flush_interval = "0s" writes every line at once.
	buf.Reset()
	cfg.LogFlushInterval = D(0)
	log, _ = cfg.Logger(&buf)
	log.Info("now")
	if !strings.Contains(buf.String(), "now") {
		t.Errorf("unbatched logger wrote %q", buf.String())
	}
}

// minimal is a valid configuration that the bad cases below break one
// key at a time. Its line numbers matter to the expectations.
const minimal = `hostname = "mail.example.org"
[tls]
cert = "mail.pem"
key = "mail.key"

[[listen]]
protocol = "imap"
address = "127.0.0.1:1143"

[map]
type = "file"
file = "users.map"
`

func TestMinimalIsValid(t *testing.T) {
	dir := t.TempDir()
	fixtures(t, dir)
	if _, err := load(t, dir, minimal); err != nil {
		t.Fatal(err)
	}
}

func TestBad(t *testing.T) {
	const f = "switchboard.toml"
	// ldapOK is an [ldap] table that passes, for cases breaking one key.
	ldapOK := func(change ...string) string {
		kv := []string{
			`uris = ["ldaps://ldap.example.org"]`,
			`bind_dn = "cn=sb,dc=example,dc=org"`,
			`bind_password_file = "ldap.secret"`,
			`base_dn = "ou=people,dc=example,dc=org"`,
		}
		for _, c := range change {
			k, _, _ := strings.Cut(c, " =")
			replaced := false
			for i := range kv {
				if strings.HasPrefix(kv[i], k+" =") {
					kv[i], replaced = c, true
				}
			}
			if !replaced {
				kv = append(kv, c)
			}
		}
		return "[[listen]]\nprotocol = \"imap\"\naddress = \"127.0.0.1:143\"\ntls = \"none\"\n[map]\ntype = \"ldap\"\n[ldap]\n" + strings.Join(kv, "\n") + "\n"
	}
	tests := []struct {
		name string
		body string
		want []string // each error's exact "file:line: key: " prefix, or more of it
	}{
		{"syntax error keeps line and column", "hostname = \"x\"\nlog_level = \n", []string{f + ":2:13: log_level: expected value"}},
		{"wrong type", "max_preauth_errors = \"three\"\n" + minimal, []string{f + ":1: max_preauth_errors: wrong type: a string, but an integer is needed"}},
		{"wrong type in array element", strings.Replace(minimal, "[map]", "[[listen]]\nprotocol = 7\n[map]", 1),
			[]string{f + ":11: listen[1].protocol: wrong type: an integer, but a string is needed"}},
		{"table for an array of tables", "[listen]\nprotocol = \"imap\"\n", []string{f + ":1: listen: wrong type: a table, but an array is needed"}},
		{"string for a table", "hostname = \"x\"\ntls = \"yes\"\n", []string{f + ":2: tls: wrong type: a string, but a table is needed"}},
		{"float for an integer", "max_preauth_errors = 1.5\n", []string{f + ":1: max_preauth_errors: wrong type: a float, but an integer is needed"}},
		{"unknown top key", "colour = \"blue\"\n" + minimal, []string{f + ":1: colour: unknown key"}},
		{"unknown table reported once", minimal + "[clusters]\nnodes = 3\nkey = \"x\"\n", []string{f + ":13: clusters: unknown key"}},
		{"unknown key in second listener", minimal + "[[listen]]\nprotocol = \"pop3\"\naddress = \":110\"\nport = 110\n",
			[]string{f + ":16: listen[1].port: unknown key"}},
		{"unknown key in inline table", strings.Replace(minimal, "[map]", "[backend]\n[map]", 1) + "[hosts]\nmx1 = { imap = \"a\", smtp = \"b\" }\n",
			[]string{f + ":15: hosts.mx1.smtp: unknown key"}},
		{"missing port", strings.Replace(minimal, `"127.0.0.1:1143"`, `"0.0.0.0"`, 1),
			[]string{f + `:8: listen[0].address: missing port in address "0.0.0.0"`}},
		{"port out of range", strings.Replace(minimal, `"127.0.0.1:1143"`, `"127.0.0.1:70000"`, 1),
			[]string{f + `:8: listen[0].address: port "70000"`}},
		{"no listener", strings.Replace(minimal, "[[listen]]\nprotocol = \"imap\"\naddress = \"127.0.0.1:1143\"\n", "", 1),
			[]string{f + ":1: listen: at least one"}},
		{"listener without protocol and address", strings.Replace(minimal, "protocol = \"imap\"\naddress = \"127.0.0.1:1143\"\n", "name = \"x\"\n", 1),
			[]string{f + ":6: listen[0].protocol: required", f + ":6: listen[0].address: required"}},
		{"bad enums", "log_level = \"loud\"\n" + strings.Replace(minimal, "protocol = \"imap\"", "protocol = \"smtp\"\ntls = \"maybe\"", 1),
			[]string{f + `:1: log_level: "loud" is not debug, info, warn or error`, f + `:8: listen[0].protocol: "smtp" is not imap or pop3`, f + `:9: listen[0].tls: "maybe" is not`}},
		{"duplicate name and address", minimal + "[[listen]]\nname = \"imap-1143\"\nprotocol = \"imap\"\naddress = \"127.0.0.1:1143\"\n",
			[]string{f + `:14: listen[1].name: "imap-1143" is already used by listen[0]`, f + `:16: listen[1].address: "127.0.0.1:1143" is already used by listen[0]`}},
		{"starttls without tls table", strings.Replace(minimal, "[tls]\ncert = \"mail.pem\"\nkey = \"mail.key\"\n", "", 1),
			[]string{f + `:3: listen[0].tls: "starttls" needs a [tls] table`}},
		{"proxy_protocol without proxy_from", strings.Replace(minimal, "[map]", "proxy_protocol = true\n[map]", 1),
			[]string{f + ":6: listen[0].proxy_from: required with proxy_protocol = true"}},
		{"bad proxy_from", strings.Replace(minimal, "[map]", "proxy_protocol = true\nproxy_from = [\"10.0.0.0/8\",\n  \"10.0.0.1/8\", \"10.1.2.3\"]\n[map]", 1),
			[]string{f + `:11: listen[0].proxy_from[1]: "10.0.0.1/8" has host bits set; did you mean 10.0.0.0/8?`, f + `:11: listen[0].proxy_from[2]: "10.1.2.3" is an address`}},
		{"bad trusted network", "trusted_networks = [\"127.0.0.0/8\", \"lan\"]\n" + minimal, []string{f + `:1: trusted_networks[1]: "lan" is not a network`}},
		{"bad durations", "preauth_timeout = \"60\"\nidle_timeout = \"10m\"\nauth_fail_delay = \"-1s\"\n" + minimal + "[backend]\ndial_timeout = \"0s\"\n",
			[]string{
				f + `:1: preauth_timeout: "60" is not a duration`,
				f + `:2: idle_timeout: 10m0s is too short: RFC 9051 section 5.4 requires at least 30m`,
				f + `:3: auth_fail_delay: must be positive`,
				f + `:17: backend.dial_timeout: must be positive`,
			}},
		{"tls files missing", strings.Replace(minimal, `"mail.pem"`, `"nope.pem"`, 1), []string{f + ":3: tls.cert: cannot read "}},
		{"tls key does not match", strings.Replace(minimal, `"mail.key"`, `"extra.key"`, 1), []string{f + ":4: tls.key: "}},
		{"tls key required", strings.Replace(minimal, "key = \"mail.key\"\n", "", 1), []string{f + ":2: tls.key: required"}},
		{"tls extra broken", strings.Replace(minimal, "[[listen]]", "[[tls.extra]]\ncert = \"extra.pem\"\nkey = \"mail.key\"\n[[listen]]", 1),
			[]string{f + ":8: tls.extra[0].key: mail.key with extra.pem: "}},
		{"map file missing", strings.Replace(minimal, "file = \"users.map\"\n", "", 1), []string{f + `:11: map.file: required when map.type = "file"`}},
		{"map file unreadable", strings.Replace(minimal, "users.map", "gone.map", 1), []string{f + ":12: map.file: cannot read "}},
		{"bad map type", strings.Replace(minimal, `type = "file"`, `type = "sql"`, 1), []string{f + `:11: map.type: "sql" is not ldap or file`}},
		{"ldap table missing", strings.Replace(minimal, "type = \"file\"\nfile = \"users.map\"\n", "type = \"ldap\"\n", 1),
			[]string{f + `:11: ldap: an [ldap] table is required when map.type = "ldap"`}},
		{"ldap ok", ldapOK(), nil},
		{"ldap uri scheme", ldapOK(`uris = ["http://ldap.example.org", "ldaps://"]`),
			[]string{f + `:8: ldap.uris[0]: "http://ldap.example.org": scheme must be ldap or ldaps`, f + `:8: ldap.uris[1]: "ldaps://": no host`}},
		{"ldap uri with DN", ldapOK(`uris = ["ldaps://ldap.example.org/dc=example,dc=org"]`), []string{f + ":8: ldap.uris[0]: "}},
		{"ldap plaintext remote", ldapOK(`uris = ["ldap://ldap.example.org"]`), []string{f + `:8: ldap.uris[0]: "ldap://ldap.example.org": plaintext LDAP`}},
		{"ldap starttls with ldaps", ldapOK(`start_tls = true`), []string{f + ":8: ldap.uris[0]: \"ldaps://ldap.example.org\": start_tls with ldaps://"}},
		{"ldap filter without verb", ldapOK(`filter = "(mail=alice)"`), []string{f + `:12: ldap.filter: "(mail=alice)" has no %s`}},
		{"ldap filter does not compile", ldapOK(`filter = "(&(mail=%s)"`), []string{f + `:12: ldap.filter: "(&(mail=%s)" does not compile`}},
		{"ldap filter unknown verb", ldapOK(`filter = "(uid=%x)"`), []string{f + `:12: ldap.filter: "(uid=%x)": unknown %x`}},
		{"ldap password file missing", ldapOK(`bind_password_file = "nope.secret"`), []string{f + ":10: ldap.bind_password_file: cannot read nope.secret: no such file"}},
		{"ldap password empty", ldapOK(`bind_password_file = "empty.secret"`), []string{f + ":10: ldap.bind_password_file: empty.secret is empty"}},
		{"ldap password required", ldapOK(`bind_password_file = ""`), []string{f + ":9: ldap.bind_password_file: required with bind_dn"}},
		{"ldap password without bind_dn", ldapOK(`bind_dn = ""`), []string{f + ":10: ldap.bind_password_file: set without bind_dn"}},
		{"ldap base_dn bad, attribute bad, pool 0", ldapOK(`base_dn = "people"`, `attribute = "ho st"`, `pool_size = 0`),
			[]string{f + `:11: ldap.base_dn: "people" is not a DN`, f + `:12: ldap.attribute: "ho st" is not an attribute name`, f + `:13: ldap.pool_size: must be 1-64, not 0`}},
		{"ldap ca file missing", ldapOK(`ca_file = "nope.pem"`), []string{f + ":12: ldap.ca_file: cannot read "}},
		{"ldap missing uris and base", "[[listen]]\nprotocol = \"imap\"\naddress = \"127.0.0.1:143\"\ntls = \"none\"\n[ldap]\nfilter = \"(uid=%u)\"\n",
			[]string{f + ":5: ldap.uris: at least one", f + ":5: ldap.base_dn: required"}},
		{"backend ca without tls", strings.Replace(minimal, "[map]", "[backend]\nca_file = \"ca.pem\"\nimap_port = 0\n[map]", 1),
			[]string{f + ":11: backend.ca_file: set, but backend.tls is false", f + ":12: backend.imap_port: 0 is not a port"}},
		{"backend ca not PEM", strings.Replace(minimal, "[map]", "[backend]\ntls = true\nca_file = \"users.map\"\n[map]", 1),
			[]string{f + ":12: backend.ca_file: users.map holds no PEM certificate"}},
		{"hosts", minimal + "[hosts]\nmx1 = \"10.0.0.1:143\"\nmx2 = { imap = \"mx2:99999\" }\nmx3 = {}\nmx4 = 4\n\"bad host\" = \"a b\"\n",
			[]string{
				f + `:14: hosts.mx1: "10.0.0.1:143" has a port`,
				f + `:15: hosts.mx2.imap: port "99999"`,
				f + `:16: hosts.mx3: needs addr, imap or pop3`,
				f + `:17: hosts.mx4: must be a string or a table`,
				f + `:18: hosts."bad host": "a b" is not a host name`,
			}},
		{"bad hostname", "hostname = \"mail example\"\n" + minimal[len("hostname = \"mail.example.org\"\n"):], []string{f + `:1: hostname: "mail example" is not a host name`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			fixtures(t, dir)
			_, err := load(t, dir, tt.body)
			checkErrors(t, dir, err, tt.want)
		})
	}
}

// TestAllProblemsAtOnce checks that one pass reports problems from every
// table, sorted by line.
func TestAllProblemsAtOnce(t *testing.T) {
	dir := t.TempDir()
	fixtures(t, dir)
	_, err := load(t, dir, `log_format = "xml"
[[listen]]
protocol = "imap"
address = "nowhere"
tls = "none"
[map]
type = "file"
file = "gone.map"
[ldap]
uris = ["ldaps://ldap.example.org"]
base_dn = "dc=example,dc=org"
bind_password_file = "ldap.secret"
[hosts]
mx1 = "bad host"
`)
	if err == nil {
		t.Fatal("no error")
	}
	var lines []int
	for _, line := range strings.Split(err.Error(), "\n") {
		var n int
		rest := strings.TrimPrefix(line, filepath.Join(dir, "switchboard.toml")+":")
		if _, serr := fmt.Sscanf(rest, "%d:", &n); serr != nil {
			t.Fatalf("line %q has no file:line prefix", line)
		}
		lines = append(lines, n)
	}
	if want := []int{1, 4, 8, 12, 14}; fmt.Sprint(lines) != fmt.Sprint(want) {
		t.Errorf("lines = %v, want %v:\n%v", lines, want, err)
	}
	var e *Error
	if !errors.As(err, &e) || e.Line != 1 || e.Key != "log_format" {
		t.Errorf("errors.As first = %+v", e)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "none.toml"))
	if err == nil || !strings.HasSuffix(err.Error(), "none.toml: no such file or directory") {
		t.Errorf("err = %v", err)
	}
}

// TestSecretRedacted checks that the bind password never shows, whatever
// prints the configuration.
func TestSecretRedacted(t *testing.T) {
	dir := t.TempDir()
	fixtures(t, dir)
	cfg, err := load(t, dir, example)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
		fmt.Fprintf(&out, verb+"\n", cfg.LDAP)
		fmt.Fprintf(&out, verb+"\n", cfg.LDAP.BindPassword)
	}
	slog.New(slog.NewJSONHandler(&out, nil)).Info("config", "ldap", cfg.LDAP, "pw", cfg.LDAP.BindPassword)
	slog.New(slog.NewTextHandler(&out, nil)).Info("config", "ldap", *cfg.LDAP, "pw", cfg.LDAP.BindPassword)
	j, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	out.Write(j)
	if err := toml.NewEncoder(&out).Encode(cfg); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), testPassword) {
		t.Fatalf("password printed:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "***") {
		t.Error("no *** in the output")
	}
}

// TestBackendTLSPorts: with backend.tls, ports left out of the file are
// the implicit-TLS ones, and ports written stay as written.
func TestBackendTLSPorts(t *testing.T) {
	dir := t.TempDir()
	fixtures(t, dir)
	cfg, err := load(t, dir, strings.Replace(minimal, "[map]", "[backend]\ntls = true\n[map]", 1))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Backend.IMAPPort != 993 || cfg.Backend.POP3Port != 995 {
		t.Fatalf("ports with tls = true: %d, %d; want 993, 995", cfg.Backend.IMAPPort, cfg.Backend.POP3Port)
	}
	cfg, err = load(t, dir, strings.Replace(minimal, "[map]", "[backend]\ntls = true\nimap_port = 10993\n[map]", 1))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Backend.IMAPPort != 10993 || cfg.Backend.POP3Port != 995 {
		t.Fatalf("ports with tls = true and imap_port set: %d, %d; want 10993, 995", cfg.Backend.IMAPPort, cfg.Backend.POP3Port)
	}
	cfg, err = load(t, dir, minimal)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Backend.IMAPPort != 143 || cfg.Backend.POP3Port != 110 {
		t.Fatalf("plaintext ports: %d, %d; want 143, 110", cfg.Backend.IMAPPort, cfg.Backend.POP3Port)
	}
}

// checkErrors checks that err, loaded from dir, is exactly the errors whose
// prefixes are want, one per line (dir shown as "DIR"); none if want is
// empty.
func checkErrors(t *testing.T, dir string, err error, want []string) {
	t.Helper()
	if len(want) == 0 {
		if err != nil {
			t.Fatalf("unexpected error:\n%v", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("no error, want %q", want)
	}
	got := strings.Split(strings.ReplaceAll(err.Error(), dir+string(filepath.Separator), ""), "\n")
	for i := range got {
		got[i] = strings.ReplaceAll(got[i], dir, "DIR")
	}
	if len(got) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%s\nwant prefixes:\n%s", len(got), len(want), strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for i, w := range want {
		if !strings.HasPrefix(got[i], w) {
			t.Errorf("error %d:\n got %s\nwant %s…", i, got[i], w)
		}
	}
}
