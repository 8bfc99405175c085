package config

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"net/netip"
	"strings"
	"time"

	"switchboard/cluster"
	"switchboard/internal/secret"
)

// DefaultClusterPort is the default cluster.bind_port and the port of
// peers written without one: cluster.DefaultBindPort.
const DefaultClusterPort = cluster.DefaultBindPort

// Limits the admin token and the cluster settings are held to.
const (
	minTokenLen     = 16      // admin token, in characters
	maxNodeNameLen  = 128     // the cluster package's limit for names
	maxLabelLen     = 255     // memberlist's limit for a cluster label
	minUDPBuffer    = 512     // below this, gossip hardly fits a message
	maxUDPBuffer    = 65507   // largest UDP payload over IPv4
	maxKeyringBytes = 1 << 20 // a keyring file is a few lines
)

// Limits is the [limits] table: per-account session limits and the brake
// on password guessing, counted over the whole cluster when there is one.
type Limits struct {
	// IMAPSessionsPerUser and POP3SessionsPerUser cap an account's live
	// sessions per protocol; 0 means unlimited.
	IMAPSessionsPerUser int `toml:"imap_sessions_per_user"`
	POP3SessionsPerUser int `toml:"pop3_sessions_per_user"`
	// FailuresBeforeDelay recent failed logins of an account from one
	// source make its further logins from there wait; 0 never delays.
	FailuresBeforeDelay int `toml:"failures_before_delay"`
	// FailuresBeforeRefuse recent failed logins of an account from one
	// source make its further logins from there be refused; 0 never
	// refuses.
	FailuresBeforeRefuse int `toml:"failures_before_refuse"`
	// SourceFailuresBeforeDelay and SourceFailuresBeforeRefuse do the
	// same per source, counting the distinct accounts that failed from
	// it (password spraying); 0 turns each off.
	SourceFailuresBeforeDelay  int `toml:"source_failures_before_delay"`
	SourceFailuresBeforeRefuse int `toml:"source_failures_before_refuse"`
	// FailureWindow is the time constant with which failure counts decay.
	FailureWindow Duration `toml:"failure_window"`
	// FailureDelay is the first delay; it doubles with each failure
	// beyond FailuresBeforeDelay.
	FailureDelay Duration `toml:"failure_delay"`
	// MaxFailureDelay caps a login's whole wait in the gate.
	MaxFailureDelay Duration `toml:"max_failure_delay"`
	// LoginsInFlightPerAccount and LoginsInFlightPerSource cap the logins
	// under way at once per account and per source on a node; 0 means
	// unlimited.
	LoginsInFlightPerAccount int `toml:"logins_in_flight_per_account"`
	LoginsInFlightPerSource  int `toml:"logins_in_flight_per_source"`
	// ExemptNetworks (CIDR) are exempt from the per-source limits; the
	// client address they forward (IMAP ID x-originating-ip) counts as
	// the source instead.
	ExemptNetworks []string `toml:"exempt_networks"`
}

// maxFailureDelayCap: a client waits for its login's answer about 20 s at
// the least (mbsync); the gate's wait plus auth_fail_delay stays below.
const maxFailureDelayCap = 15 * time.Second

// ExemptNets returns exempt_networks parsed. Entries that do not parse
// (Load refuses them) are left out.
func (l *Limits) ExemptNets() []netip.Prefix { return prefixes(l.ExemptNetworks) }

// Cluster is the [cluster] table: gossip between the front-ends (package
// cluster, over hashicorp/memberlist) and the backend health checks.
type Cluster struct {
	// NodeName must be unique in the cluster; default the host name.
	NodeName string `toml:"node_name"`
	// BindAddr and BindPort are where gossip listens, TCP and UDP.
	BindAddr string `toml:"bind_addr"`
	BindPort int    `toml:"bind_port"`
	// AdvertiseAddr and AdvertisePort are what the others are told to
	// use; empty and 0 mean BindAddr (if specific) and BindPort.
	AdvertiseAddr string `toml:"advertise_addr"`
	AdvertisePort int    `toml:"advertise_port"`
	// Peers are seed addresses, "host" or "host:port".
	Peers []string `toml:"peers"`
	// KeyringFile holds the gossip keys, base64, one per line, the first
	// one used to encrypt. Required unless AllowInsecure.
	KeyringFile string `toml:"keyring_file"`
	// Keys are the decoded keys of KeyringFile. Not a key.
	Keys []secret.String `toml:"-"`
	// AllowInsecure permits plaintext gossip without a keyring.
	AllowInsecure bool `toml:"allow_insecure"`
	// Label is the memberlist cluster label.
	Label string `toml:"label"`
	// Gossip tuning, passed to the cluster package.
	GossipInterval   Duration `toml:"gossip_interval"`
	ProbeInterval    Duration `toml:"probe_interval"`
	ProbeTimeout     Duration `toml:"probe_timeout"`
	SuspicionMult    int      `toml:"suspicion_mult"`
	PushPullInterval Duration `toml:"push_pull_interval"`
	TCPTimeout       Duration `toml:"tcp_timeout"`
	UDPBufferSize    int      `toml:"udp_buffer_size"`
	// StateInterval is how often changes of health and counts are
	// gossiped; ReconnectInterval how often failed members are retried.
	StateInterval     Duration `toml:"state_interval"`
	ReconnectInterval Duration `toml:"reconnect_interval"`
	// MaxEntries caps each shared table per node.
	MaxEntries int `toml:"max_entries"`
	// HealthTTL is how long a backend health report stays valid.
	HealthTTL Duration `toml:"health_ttl"`
	// CheckInterval and CheckTimeout drive this node's backend probes.
	CheckInterval Duration `toml:"check_interval"`
	CheckTimeout  Duration `toml:"check_timeout"`
}

// Admin is the [admin] table: the HTTP listener for /metrics, /status,
// /healthz, the control endpoints and, when asked for, the profiler.
type Admin struct {
	// Address is host:port to listen on.
	Address string `toml:"address"`
	// TokenFile holds the control token: the bearer token of every
	// request that changes state (hold, release, invalidate, kick), on
	// loopback too. Without it the control endpoints are off.
	TokenFile string `toml:"token_file"`
	// Token is the content of TokenFile, trailing newline trimmed. Not a
	// key.
	Token secret.String `toml:"-"`
	// ReadTokenFile holds the read-only token of /metrics, /status and
	// the profiler. Without it loopback peers read without a token and
	// others need the control token.
	ReadTokenFile string `toml:"read_token_file"`
	// ReadToken is the content of ReadTokenFile. Not a key.
	ReadToken secret.String `toml:"-"`
	// HostNames are the names besides the listener's address that a
	// request's Host header may carry.
	HostNames []string `toml:"host_names"`
	// Pprof serves Go's profiler on the listener, to loopback peers only.
	Pprof bool `toml:"pprof"`
}

// validate checks [limits].
func (l *Limits) validate(c *checker, _ *Config) {
	for _, kv := range [...]struct {
		k string
		v int
	}{
		{"limits.imap_sessions_per_user", l.IMAPSessionsPerUser},
		{"limits.pop3_sessions_per_user", l.POP3SessionsPerUser},
		{"limits.failures_before_delay", l.FailuresBeforeDelay},
		{"limits.failures_before_refuse", l.FailuresBeforeRefuse},
		{"limits.source_failures_before_delay", l.SourceFailuresBeforeDelay},
		{"limits.source_failures_before_refuse", l.SourceFailuresBeforeRefuse},
		{"limits.logins_in_flight_per_account", l.LoginsInFlightPerAccount},
		{"limits.logins_in_flight_per_source", l.LoginsInFlightPerSource},
	} {
		if kv.v < 0 {
			c.errorf(kv.k, "must be 0 (off) or more, not %d", kv.v)
		}
	}
	if l.FailuresBeforeDelay > 0 && l.FailuresBeforeRefuse > 0 && l.FailuresBeforeRefuse <= l.FailuresBeforeDelay {
		c.errorf("limits.failures_before_refuse", "%d must be more than failures_before_delay (%d), or 0 to never refuse",
			l.FailuresBeforeRefuse, l.FailuresBeforeDelay)
	}
	if l.SourceFailuresBeforeDelay > 0 && l.SourceFailuresBeforeRefuse > 0 && l.SourceFailuresBeforeRefuse <= l.SourceFailuresBeforeDelay {
		c.errorf("limits.source_failures_before_refuse", "%d must be more than source_failures_before_delay (%d), or 0 to never refuse",
			l.SourceFailuresBeforeRefuse, l.SourceFailuresBeforeDelay)
	}
	if d := l.MaxFailureDelay.Duration; d > maxFailureDelayCap {
		c.errorf("limits.max_failure_delay", "%v is longer than clients wait for a login; at most %v", d, maxFailureDelayCap)
	}
	for i, s := range l.ExemptNetworks {
		if _, err := parseCIDR(s); err != nil {
			c.errorf(index("limits.exempt_networks", i), "%v", err)
		}
	}
}

// validate checks [cluster] and reads the keyring.
func (cl *Cluster) validate(c *checker, _ *Config) {
	switch n := cl.NodeName; {
	case n == "":
		c.errorf("cluster.node_name", "empty")
	case len(n) > maxNodeNameLen:
		c.errorf("cluster.node_name", "longer than %d bytes", maxNodeNameLen)
	case strings.ContainsFunc(n, func(r rune) bool { return r <= ' ' || r == '/' || r == 0x7f }):
		c.errorf("cluster.node_name", "%q: no spaces, control characters or '/'", n)
	}
	if a, err := netip.ParseAddr(cl.BindAddr); err != nil || a.Zone() != "" {
		c.errorf("cluster.bind_addr", "%q is not an IP address", cl.BindAddr)
	}
	checkPort(c, "cluster.bind_port", cl.BindPort)
	if cl.AdvertiseAddr != "" {
		if a, err := netip.ParseAddr(cl.AdvertiseAddr); err != nil || a.Zone() != "" {
			c.errorf("cluster.advertise_addr", "%q is not an IP address", cl.AdvertiseAddr)
		} else if a.IsUnspecified() {
			c.errorf("cluster.advertise_addr", "%q cannot be dialled: give this node's address on the cluster network", cl.AdvertiseAddr)
		}
	}
	if cl.AdvertisePort != 0 {
		checkPort(c, "cluster.advertise_port", cl.AdvertisePort)
	}
	for i, p := range cl.Peers {
		if err := checkHostMaybePort(p); err != nil {
			c.errorf(index("cluster.peers", i), "%v", err)
		}
	}
	switch {
	case cl.KeyringFile != "":
		cl.Keys = readKeyring(c, "cluster.keyring_file", cl.KeyringFile)
	case !cl.AllowInsecure:
		c.errorAt("cluster", "cluster.keyring_file", "required: gossip must be encrypted (or set allow_insecure = true for plaintext gossip that anyone who reaches the port can join)")
	}
	if cl.Label == "" || len(cl.Label) > maxLabelLen {
		c.errorf("cluster.label", "must be 1 to %d bytes", maxLabelLen)
	}
	if cl.SuspicionMult < 1 {
		c.errorf("cluster.suspicion_mult", "must be at least 1, not %d", cl.SuspicionMult)
	}
	if cl.MaxEntries < 1 {
		c.errorf("cluster.max_entries", "must be at least 1, not %d", cl.MaxEntries)
	}
	if cl.UDPBufferSize < minUDPBuffer || cl.UDPBufferSize > maxUDPBuffer {
		c.errorf("cluster.udp_buffer_size", "must be %d to %d, not %d", minUDPBuffer, maxUDPBuffer, cl.UDPBufferSize)
	}
	if cl.ProbeTimeout.Duration > 0 && cl.ProbeTimeout.Duration >= cl.ProbeInterval.Duration {
		c.errorf("cluster.probe_timeout", "%v must be shorter than probe_interval (%v)", cl.ProbeTimeout.Duration, cl.ProbeInterval.Duration)
	}
	if cl.CheckInterval.Duration > 0 && cl.CheckTimeout.Duration > 0 &&
		cl.CheckInterval.Duration+cl.CheckTimeout.Duration >= cl.HealthTTL.Duration {
		c.errorf("cluster.health_ttl", "%v must be longer than check_interval plus check_timeout (%v), or reports expire between probes",
			cl.HealthTTL.Duration, cl.CheckInterval.Duration+cl.CheckTimeout.Duration)
	}
}

// readKeyring reads a keyring file: one base64 key of 16, 24 or 32 bytes
// per line, blank lines and '#' comments ignored. Errors name the line,
// never its content.
func readKeyring(c *checker, key, path string) []secret.String {
	data, err := readFile(path)
	if err != nil {
		c.errorf(key, "%v", err)
		return nil
	}
	if len(data) > maxKeyringBytes {
		c.errorf(key, "%s is larger than %d bytes", path, maxKeyringBytes)
		return nil
	}
	var keys []secret.String
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		k, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			c.errorf(key, "%s line %d: not base64 (standard encoding, with padding)", path, n)
			return nil
		}
		switch len(k) {
		case 16, 24, 32:
		default:
			c.errorf(key, "%s line %d: the key is %d bytes; it must be 16, 24 or 32 (AES-128, -192 or -256)", path, n, len(k))
			return nil
		}
		for _, prev := range keys {
			if string(prev) == string(k) {
				c.errorf(key, "%s line %d: the same key as an earlier line", path, n)
				return nil
			}
		}
		keys = append(keys, secret.String(k))
	}
	if err := sc.Err(); err != nil {
		c.errorf(key, "%s: %v", path, err)
		return nil
	}
	if len(keys) == 0 {
		c.errorf(key, "%s holds no key", path)
	}
	return keys
}

// validate checks [admin] and reads the tokens.
func (a *Admin) validate(c *checker, _ *Config) {
	if a.Address == "" {
		c.errorf("admin.address", "required (host:port)")
	} else if host, _, err := splitPort(a.Address); err != nil {
		c.errorf("admin.address", "%v", err)
	} else if host != "" && checkHost(host) != nil {
		c.errorf("admin.address", "%v", checkHost(host))
	} else if !secret.Local(host) && a.TokenFile == "" && a.ReadTokenFile == "" {
		c.errorAt("admin.address", "admin.read_token_file", "required (or token_file): %q is not a loopback address, so reads need a token", a.Address)
	}
	if a.TokenFile != "" {
		a.Token = readToken(c, "admin.token_file", a.TokenFile)
	}
	if a.ReadTokenFile != "" {
		a.ReadToken = readToken(c, "admin.read_token_file", a.ReadTokenFile)
	}
	if a.Token != "" && a.Token == a.ReadToken {
		c.errorf("admin.read_token_file", "holds the control token of token_file: the read-only token must be another")
	}
	for i, n := range a.HostNames {
		if err := checkHostname(n); err != nil {
			c.errorf(index("admin.host_names", i), "%v", err)
		}
	}
}

// readToken reads a bearer token from path for key; empty if it is not
// one.
func readToken(c *checker, key, path string) secret.String {
	data, err := readFile(path)
	if err != nil {
		c.errorf(key, "%v", err)
		return ""
	}
	tok := strings.TrimRight(string(data), "\r\n")
	switch {
	case tok == "":
		c.errorf(key, "%s is empty", path)
	case len(tok) < minTokenLen:
		c.errorf(key, "the token in %s is shorter than %d characters", path, minTokenLen)
	case !validToken(tok):
		c.errorf(key, "the token in %s has characters a bearer token cannot carry (use letters, digits, - . _ ~ + / and trailing =)", path)
	default:
		return secret.String(tok)
	}
	return ""
}

// validToken reports whether s is an RFC 6750 section 2.1 b64token.
func validToken(s string) bool {
	t := strings.TrimRight(s, "=")
	if t == "" {
		return false
	}
	for i := 0; i < len(t); i++ {
		if ch := t[i]; !isAlnum(ch) && !strings.ContainsRune("-._~+/", rune(ch)) {
			return false
		}
	}
	return true
}
