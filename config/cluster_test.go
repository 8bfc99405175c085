package config

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	testToken     = "admin-token-0123456789abcdef"
	testReadToken = "admin-read-token-0123456789"
)

// clusterFixtures adds a keyring (two keys) and an admin token to dir.
func clusterFixtures(t *testing.T, dir string) (keys [][]byte) {
	t.Helper()
	k1 := bytes.Repeat([]byte{1}, 32)
	k2 := bytes.Repeat([]byte{2}, 16)
	write(t, filepath.Join(dir, "cluster.keys"), "# primary first\n"+base64.StdEncoding.EncodeToString(k1)+"\n\n"+base64.StdEncoding.EncodeToString(k2)+"\n")
	write(t, filepath.Join(dir, "admin.token"), testToken+"\n")
	write(t, filepath.Join(dir, "read.token"), testReadToken+"\n")
	write(t, filepath.Join(dir, "short.token"), "abc\n")
	write(t, filepath.Join(dir, "space.token"), "has a space in it, sixteen+\n")
	write(t, filepath.Join(dir, "badb64.keys"), "not base64!\n")
	write(t, filepath.Join(dir, "short.keys"), base64.StdEncoding.EncodeToString([]byte("short"))+"\n")
	write(t, filepath.Join(dir, "dup.keys"), base64.StdEncoding.EncodeToString(k1)+"\n"+base64.StdEncoding.EncodeToString(k1)+"\n")
	write(t, filepath.Join(dir, "empty.keys"), "# nothing\n")
	return [][]byte{k1, k2}
}

func TestClusterAdminLimits(t *testing.T) {
	dir := t.TempDir()
	fixtures(t, dir)
	keys := clusterFixtures(t, dir)
	cfg, err := load(t, dir, minimal+`drain_grace = "5s"
[limits]
imap_sessions_per_user = 0
failures_before_refuse = 0

[cluster]
node_name = "proxy1"
bind_addr = "10.8.0.11"
peers = ["10.8.0.11", "proxy2.example.org:7947", "[fd00::3]:7946"]
keyring_file = "cluster.keys"

[admin]
address = "10.8.0.11:8025"
token_file = "admin.token"
`)
	if err == nil {
		// drain_grace was written below [map], so it is map.drain_grace.
		t.Fatal("drain_grace under [map] accepted")
	}
	if !strings.Contains(err.Error(), "map.drain_grace: unknown key") {
		t.Fatalf("err = %v", err)
	}

	cfg, err = load(t, dir, "drain_grace = \"5s\"\n"+minimal+`
[limits]
imap_sessions_per_user = 0
failures_before_refuse = 0

[cluster]
node_name = "proxy1"
bind_addr = "10.8.0.11"
peers = ["10.8.0.11", "proxy2.example.org:7947", "[fd00::3]:7946"]
keyring_file = "cluster.keys"

[admin]
address = "10.8.0.11:8025"
token_file = "admin.token"
read_token_file = "read.token"
host_names = ["proxy1.vpn.example.org"]
pprof = true
`)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DrainGrace.Duration != 5*time.Second {
		t.Errorf("drain_grace = %v", cfg.DrainGrace)
	}
	l := cfg.Limits
	if l.IMAPSessionsPerUser != 0 || l.POP3SessionsPerUser != 10 || l.FailuresBeforeDelay != 5 || l.FailuresBeforeRefuse != 0 ||
		l.FailureWindow.Duration != 15*time.Minute || l.FailureDelay.Duration != 2*time.Second {
		t.Errorf("limits = %+v", l)
	}
	cl := cfg.Cluster
	if cl == nil {
		t.Fatal("no cluster table")
	}
	if cl.NodeName != "proxy1" || cl.BindAddr != "10.8.0.11" || cl.BindPort != 7946 || cl.AdvertisePort != 0 ||
		len(cl.Peers) != 3 || cl.Label != "switchboard" || cl.CheckInterval.Duration != time.Second {
		t.Errorf("cluster = %+v", cl)
	}
	if len(cl.Keys) != 2 || string(cl.Keys[0]) != string(keys[0]) || string(cl.Keys[1]) != string(keys[1]) {
		t.Errorf("keys not read in order")
	}
	if cfg.Admin == nil || cfg.Admin.Address != "10.8.0.11:8025" || string(cfg.Admin.Token) != testToken ||
		string(cfg.Admin.ReadToken) != testReadToken || !cfg.Admin.Pprof || len(cfg.Admin.HostNames) != 1 {
		t.Errorf("admin = %+v", cfg.Admin)
	}

	// Secrets never print.
	var out bytes.Buffer
	fmt.Fprintf(&out, "%v %+v %#v %v %+v\n", cl, cl, cl.Keys, cfg.Admin, cfg.Admin)
	slog.New(slog.NewTextHandler(&out, nil)).Info("config", "cluster", *cl, "admin", *cfg.Admin)
	j, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	out.Write(j)
	for _, secret := range []string{testToken, testReadToken, string(keys[0]), base64.StdEncoding.EncodeToString(keys[0])} {
		if strings.Contains(out.String(), secret) {
			t.Fatalf("secret printed:\n%s", out.String())
		}
	}

	// Absent tables stay nil; limits keep their defaults.
	cfg, err = load(t, dir, minimal)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cluster != nil || cfg.Admin != nil {
		t.Errorf("absent tables are not nil: %v %v", cfg.Cluster, cfg.Admin)
	}
	if cfg.DrainGrace.Duration != 30*time.Second || cfg.Limits.IMAPSessionsPerUser != 50 || cfg.Limits.FailuresBeforeRefuse != 20 {
		t.Errorf("defaults: drain %v, limits %+v", cfg.DrainGrace, cfg.Limits)
	}

	// An [admin] table without keys listens on loopback, without tokens
	// (control off, reads open to loopback peers) and without profiler.
	cfg, err = load(t, dir, minimal+"[admin]\n")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Admin == nil || cfg.Admin.Address != "127.0.0.1:8025" || cfg.Admin.Token != "" || cfg.Admin.ReadToken != "" || cfg.Admin.Pprof {
		t.Errorf("admin defaults = %+v", cfg.Admin)
	}
}

func TestClusterBad(t *testing.T) {
	const f = "switchboard.toml"
	// minimal has 12 lines; the tables below start on line 13.
	tests := []struct {
		name string
		body string
		want []string
	}{
		{"keyring required", "[cluster]\nnode_name = \"a\"\n",
			[]string{f + ":13: cluster.keyring_file: required: gossip must be encrypted"}},
		{"insecure allowed", "[cluster]\nallow_insecure = true\n", nil},
		{"keyring missing", "[cluster]\nkeyring_file = \"gone.keys\"\n",
			[]string{f + ":14: cluster.keyring_file: cannot read gone.keys: no such file"}},
		{"keyring not base64", "[cluster]\nkeyring_file = \"badb64.keys\"\n",
			[]string{f + ":14: cluster.keyring_file: badb64.keys line 1: not base64"}},
		{"keyring key length", "[cluster]\nkeyring_file = \"short.keys\"\n",
			[]string{f + ":14: cluster.keyring_file: short.keys line 1: the key is 5 bytes"}},
		{"keyring duplicate", "[cluster]\nkeyring_file = \"dup.keys\"\n",
			[]string{f + ":14: cluster.keyring_file: dup.keys line 2: the same key"}},
		{"keyring empty", "[cluster]\nkeyring_file = \"empty.keys\"\n",
			[]string{f + ":14: cluster.keyring_file: empty.keys holds no key"}},
		{"addresses and ports", "[cluster]\nallow_insecure = true\nnode_name = \"a b\"\nbind_addr = \"vpn0\"\nbind_port = 0\nadvertise_addr = \"0.0.0.0\"\nadvertise_port = 70000\npeers = [\"ok.example.org\", \"bad host:1\", \"10.0.0.1:0\"]\n",
			[]string{
				f + `:15: cluster.node_name: "a b": no spaces`,
				f + `:16: cluster.bind_addr: "vpn0" is not an IP address`,
				f + `:17: cluster.bind_port: 0 is not a port`,
				f + `:18: cluster.advertise_addr: "0.0.0.0" cannot be dialled`,
				f + `:19: cluster.advertise_port: 70000 is not a port`,
				f + `:20: cluster.peers[1]: "bad host" is not a host name`,
				f + `:20: cluster.peers[2]: port "0"`,
			}},
		{"tuning", "[cluster]\nallow_insecure = true\nlabel = \"\"\nprobe_interval = \"1s\"\nprobe_timeout = \"2s\"\nsuspicion_mult = 0\nudp_buffer_size = 100\ngossip_interval = \"0s\"\n",
			[]string{
				f + `:15: cluster.label: must be 1 to 255 bytes`,
				f + `:17: cluster.probe_timeout: 2s must be shorter than probe_interval (1s)`,
				f + `:18: cluster.suspicion_mult: must be at least 1`,
				f + `:19: cluster.udp_buffer_size: must be 512 to 65507`,
				f + `:20: cluster.gossip_interval: must be positive`,
			}},
		{"health ttl too short", "[cluster]\nallow_insecure = true\nhealth_ttl = \"2s\"\n",
			[]string{f + ":15: cluster.health_ttl: 2s must be longer than check_interval plus check_timeout (2s)"}},
		{"admin on the network without token", "[admin]\naddress = \"0.0.0.0:8025\"\n",
			[]string{f + `:14: admin.read_token_file: required (or token_file): "0.0.0.0:8025" is not a loopback address`}},
		{"admin on all addresses without token", "[admin]\naddress = \":8025\"\n",
			[]string{f + `:14: admin.read_token_file: required (or token_file): ":8025" is not a loopback address`}},
		{"admin on the network with a read token", "[admin]\naddress = \"10.0.0.1:8025\"\nread_token_file = \"read.token\"\n", nil},
		{"admin read token is the control token", "[admin]\ntoken_file = \"admin.token\"\nread_token_file = \"admin.token\"\n",
			[]string{f + ":15: admin.read_token_file: holds the control token of token_file"}},
		{"admin read token short", "[admin]\nread_token_file = \"short.token\"\n",
			[]string{f + ":14: admin.read_token_file: the token in short.token is shorter than 16 characters"}},
		{"admin host names", "[admin]\nhost_names = [\"admin.example.org\", \"bad name\", \"\"]\npprof = true\n",
			[]string{
				f + `:14: admin.host_names[1]: "bad name" is not a host name`,
				f + `:14: admin.host_names[2]: empty host name`,
			}},
		{"admin on localhost and ::1", "[admin]\naddress = \"[::1]:8025\"\n", nil},
		{"admin on the network with token", "[admin]\naddress = \"10.0.0.1:8025\"\ntoken_file = \"admin.token\"\n", nil},
		{"admin bad address", "[admin]\naddress = \"127.0.0.1\"\n",
			[]string{f + `:14: admin.address: missing port in address "127.0.0.1"`}},
		{"admin token short", "[admin]\ntoken_file = \"short.token\"\n",
			[]string{f + ":14: admin.token_file: the token in short.token is shorter than 16 characters"}},
		{"admin token with space", "[admin]\ntoken_file = \"space.token\"\n",
			[]string{f + ":14: admin.token_file: the token in space.token has characters"}},
		{"admin token file missing", "[admin]\ntoken_file = \"gone.token\"\n",
			[]string{f + ":14: admin.token_file: cannot read gone.token"}},
		{"limits", "[limits]\nimap_sessions_per_user = -1\nfailures_before_delay = 10\nfailures_before_refuse = 10\nfailure_window = \"15\"\n",
			[]string{
				f + ":14: limits.imap_sessions_per_user: must be 0 (off) or more, not -1",
				f + ":16: limits.failures_before_refuse: 10 must be more than failures_before_delay (10)",
				f + `:17: limits.failure_window: "15" is not a duration`,
			}},
		{"limits refuse off", "[limits]\nfailures_before_delay = 10\nfailures_before_refuse = 0\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			fixtures(t, dir)
			clusterFixtures(t, dir)
			_, err := load(t, dir, minimal+tt.body)
			checkErrors(t, dir, err, tt.want)
		})
	}
}
