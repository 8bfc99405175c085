package config

import (
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"switchboard/cluster"
	"switchboard/gate"
	"switchboard/ldapmap"
	"switchboard/route"
	"switchboard/router"
)

// TestDefaultsArePackages loads a file that sets none of the tuned keys,
// with every optional table present, and checks that each value a package
// would also apply to a zero Options field is that package's default:
// what `switchboard check` accepts and what the server runs with cannot
// drift apart (auth_fail_delay once did: 1s here, 2s in the router).
// Each package's own test checks that its accessor returns its constant.
func TestDefaultsArePackages(t *testing.T) {
	dir := t.TempDir()
	fixtures(t, dir)
	clusterFixtures(t, dir)
	body := strings.Replace(minimal, "[map]\ntype = \"file\"\nfile = \"users.map\"\n", "", 1) + `
[ldap]
uris = ["ldap://127.0.0.1"]
base_dn = "dc=example,dc=org"
[cluster]
keyring_file = "cluster.keys"
[admin]
`
	cfg, err := load(t, dir, body)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.LDAP == nil || cfg.Cluster == nil || cfg.Admin == nil {
		t.Fatal("an optional table is missing")
	}
	tests := []struct {
		key       string
		got, want any
	}{
		{"preauth_timeout", cfg.PreauthTimeout.Duration, router.DefaultPreauthTimeout},
		{"idle_timeout", cfg.IdleTimeout.Duration, router.DefaultIdleTimeout},
		{"auth_fail_delay", cfg.AuthFailDelay.Duration, router.DefaultAuthFailDelay},
		{"max_preauth_errors", cfg.MaxPreauthErrors, router.DefaultMaxPreauthErrors},
		{"backend.dial_timeout", cfg.Backend.DialTimeout.Duration, router.DefaultDialTimeout},
		{"backend.login_timeout", cfg.Backend.LoginTimeout.Duration, router.DefaultLoginTimeout},
		{"backend.imap_port", cfg.Backend.IMAPPort, route.PortIMAP},
		{"backend.pop3_port", cfg.Backend.POP3Port, route.PortPOP3},
		{"map.cache_ttl", cfg.Map.CacheTTL.Duration, ldapmap.DefaultCacheTTL},
		{"map.negative_ttl", cfg.Map.NegativeTTL.Duration, ldapmap.DefaultNegativeTTL},
		{"ldap.filter", cfg.LDAP.Filter, ldapmap.DefaultFilter},
		{"ldap.attribute", cfg.LDAP.Attribute, ldapmap.DefaultAttribute},
		{"ldap.pool_size", cfg.LDAP.PoolSize, ldapmap.DefaultPoolSize},
		{"ldap.dial_timeout", cfg.LDAP.DialTimeout.Duration, ldapmap.DefaultDialTimeout},
		{"ldap.timeout", cfg.LDAP.Timeout.Duration, ldapmap.DefaultTimeout},
		{"limits.failure_window", cfg.Limits.FailureWindow.Duration, cluster.DefaultFailureWindow},
		{"limits.failure_delay", cfg.Limits.FailureDelay.Duration, gate.DefaultFailureDelay},
		{"cluster.bind_addr", cfg.Cluster.BindAddr, cluster.DefaultBindAddr},
		{"cluster.bind_port", cfg.Cluster.BindPort, cluster.DefaultBindPort},
		{"cluster.label", cfg.Cluster.Label, cluster.DefaultLabel},
		{"cluster.gossip_interval", cfg.Cluster.GossipInterval.Duration, cluster.DefaultGossipInterval},
		{"cluster.probe_interval", cfg.Cluster.ProbeInterval.Duration, cluster.DefaultProbeInterval},
		{"cluster.probe_timeout", cfg.Cluster.ProbeTimeout.Duration, cluster.DefaultProbeTimeout},
		{"cluster.suspicion_mult", cfg.Cluster.SuspicionMult, cluster.DefaultSuspicionMult},
		{"cluster.push_pull_interval", cfg.Cluster.PushPullInterval.Duration, cluster.DefaultPushPullInterval},
		{"cluster.tcp_timeout", cfg.Cluster.TCPTimeout.Duration, cluster.DefaultTCPTimeout},
		{"cluster.udp_buffer_size", cfg.Cluster.UDPBufferSize, cluster.DefaultUDPBufferSize},
		{"cluster.state_interval", cfg.Cluster.StateInterval.Duration, cluster.DefaultStateInterval},
		{"cluster.reconnect_interval", cfg.Cluster.ReconnectInterval.Duration, cluster.DefaultReconnectInterval},
		{"cluster.max_entries", cfg.Cluster.MaxEntries, cluster.DefaultMaxEntries},
		{"cluster.health_ttl", cfg.Cluster.HealthTTL.Duration, cluster.DefaultHealthTTL},
		{"cluster.check_interval", cfg.Cluster.CheckInterval.Duration, cluster.DefaultCheckInterval},
		{"cluster.check_timeout", cfg.Cluster.CheckTimeout.Duration, cluster.DefaultCheckTimeout},
	}
	for _, tt := range tests {
		// Untyped constants become int or time.Duration, as the fields.
		if fmt.Sprint(tt.got) != fmt.Sprint(tt.want) || reflect.TypeOf(tt.got) != reflect.TypeOf(tt.want) {
			t.Errorf("%s = %v (%T), the package's default is %v (%T)", tt.key, tt.got, tt.got, tt.want, tt.want)
		}
	}
	if cfg.AuthFailDelay.Duration != 2*time.Second {
		t.Errorf("auth_fail_delay = %v, want 2s (Dovecot's auth_failure_delay default)", cfg.AuthFailDelay.Duration)
	}

	// With backend.tls, the unwritten ports are the implicit-TLS ones.
	cfg, err = load(t, dir, strings.Replace(minimal, "[map]", "[backend]\ntls = true\n[map]", 1))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Backend.IMAPPort != route.PortIMAPS || cfg.Backend.POP3Port != route.PortPOP3S {
		t.Errorf("ports with tls = true: %d, %d; want route.PortIMAPS, route.PortPOP3S", cfg.Backend.IMAPPort, cfg.Backend.POP3Port)
	}
}

// TestDocsStateDefaults checks the Default column of docs/configuration.md
// against Default(): every default written there as a TOML value (in
// backquotes, first in its cell) is the value Load fills in. Defaults in
// words ("required", "the machine's host name") and those of array
// elements are not checked.
func TestDocsStateDefaults(t *testing.T) {
	data, err := os.ReadFile(docsPath)
	if err != nil {
		t.Fatal(err)
	}
	def := reflect.ValueOf(Default()).Elem()
	checked := 0
	for path, cell := range docDefaults(string(data)) {
		field, ok := fieldAt(def, path)
		if !ok {
			continue // an array element's key
		}
		var doc struct{ V toml.Primitive }
		md, err := toml.Decode("V = "+cell, &doc)
		if err != nil {
			t.Errorf("docs: %s: default %s is not a TOML value: %v", path, cell, err)
			continue
		}
		want := reflect.New(field.Type())
		if err := md.PrimitiveDecode(doc.V, want.Interface()); err != nil {
			t.Errorf("docs: %s: default %s does not decode as the key: %v", path, cell, err)
			continue
		}
		w, g := want.Elem().Interface(), field.Interface()
		if d, ok := w.(Duration); ok {
			w, g = d.Duration, g.(Duration).Duration
		}
		if !reflect.DeepEqual(w, g) && !(reflect.ValueOf(w).Kind() == reflect.Slice && reflect.ValueOf(w).Len() == 0 && reflect.ValueOf(g).Len() == 0) {
			t.Errorf("docs: %s: the default is documented as %s, but it is %v", path, cell, g)
		}
		checked++
	}
	if checked < 50 {
		t.Errorf("only %d documented defaults checked; the parsing is broken", checked)
	}
}

// docDefaults returns, for each key row of the reference, the first
// backquoted text of its Default column if the cell starts with it.
func docDefaults(doc string) map[string]string {
	out := make(map[string]string)
	section := "?"
	for _, line := range strings.Split(doc, "\n") {
		if strings.HasPrefix(line, "#") {
			section = "?"
			if m := docHeading.FindStringSubmatch(line); m != nil {
				section = m[1]
			} else if strings.Contains(strings.ToLower(line), "top level") {
				section = ""
			}
			continue
		}
		m := docRow.FindStringSubmatch(line)
		if m == nil || section == "?" {
			continue
		}
		cells := strings.Split(line, "|")
		if len(cells) < 5 {
			continue
		}
		cell := strings.TrimSpace(cells[3])
		if !strings.HasPrefix(cell, "`") {
			continue
		}
		end := strings.IndexByte(cell[1:], '`')
		if end < 0 {
			continue
		}
		out[join(section, m[1])] = cell[1 : end+1]
	}
	return out
}

// fieldAt finds the field of a dotted key path in v, through pointers,
// or reports false (an array element, a map entry, a nil table).
func fieldAt(v reflect.Value, path string) (reflect.Value, bool) {
	for _, name := range strings.Split(path, ".") {
		for v.Kind() == reflect.Pointer {
			if v.IsNil() {
				return reflect.Value{}, false
			}
			v = v.Elem()
		}
		if v.Kind() != reflect.Struct {
			return reflect.Value{}, false
		}
		found := false
		for i := range v.NumField() {
			if tomlName(v.Type().Field(i)) == name {
				v, found = v.Field(i), true
				break
			}
		}
		if !found {
			return reflect.Value{}, false
		}
	}
	return v, true
}
