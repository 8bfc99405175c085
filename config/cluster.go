package config

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"net/netip"
	"strings"

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

// Limits is the [limits] table: per-user session limits and the brake on
// password guessing, counted over the whole cluster when there is one.
type Limits struct {
	// IMAPSessionsPerUser and POP3SessionsPerUser cap a user's live
	// sessions per protocol; 0 means unlimited.
	IMAPSessionsPerUser int `toml:"imap_sessions_per_user"`
	POP3SessionsPerUser int `toml:"pop3_sessions_per_user"`
	// FailuresBeforeDelay recent failed logins (from the client's address
	// or for the user) make further logins wait; 0 never delays.
	FailuresBeforeDelay int `toml:"failures_before_delay"`
	// FailuresBeforeRefuse recent failed logins make further logins be
	// refused; 0 never refuses.
	FailuresBeforeRefuse int `toml:"failures_before_refuse"`
	// FailureWindow is the time constant with which failure counts decay.
	FailureWindow Duration `toml:"failure_window"`
	// FailureDelay is the first delay; it doubles with each failure
	// beyond FailuresBeforeDelay.
	FailureDelay Duration `toml:"failure_delay"`
}

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
// /healthz and the control endpoints.
type Admin struct {
	// Address is host:port to listen on.
	Address string `toml:"address"`
	// TokenFile holds the bearer token requests must carry; required when
	// Address is not a loopback address.
	TokenFile string `toml:"token_file"`
	// Token is the content of TokenFile, trailing newline trimmed. Not a
	// key.
	Token secret.String `toml:"-"`
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
	} {
		if kv.v < 0 {
			c.errorf(kv.k, "must be 0 (off) or more, not %d", kv.v)
		}
	}
	if l.FailuresBeforeDelay > 0 && l.FailuresBeforeRefuse > 0 && l.FailuresBeforeRefuse <= l.FailuresBeforeDelay {
		c.errorf("limits.failures_before_refuse", "%d must be more than failures_before_delay (%d), or 0 to never refuse",
			l.FailuresBeforeRefuse, l.FailuresBeforeDelay)
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

// validate checks [admin] and reads the token.
func (a *Admin) validate(c *checker, _ *Config) {
	loopback := false
	if a.Address == "" {
		c.errorf("admin.address", "required (host:port)")
	} else if host, _, err := splitPort(a.Address); err != nil {
		c.errorf("admin.address", "%v", err)
	} else if host != "" && checkHost(host) != nil {
		c.errorf("admin.address", "%v", checkHost(host))
	} else {
		loopback = secret.Local(host)
		if !loopback && a.TokenFile == "" {
			c.errorAt("admin.address", "admin.token_file", "required: %q is not a loopback address, so the control endpoints need a token", a.Address)
		}
	}
	if a.TokenFile == "" {
		return
	}
	data, err := readFile(a.TokenFile)
	if err != nil {
		c.errorf("admin.token_file", "%v", err)
		return
	}
	tok := strings.TrimRight(string(data), "\r\n")
	switch {
	case tok == "":
		c.errorf("admin.token_file", "%s is empty", a.TokenFile)
	case len(tok) < minTokenLen:
		c.errorf("admin.token_file", "the token in %s is shorter than %d characters", a.TokenFile, minTokenLen)
	case !validToken(tok):
		c.errorf("admin.token_file", "the token in %s has characters a bearer token cannot carry (use letters, digits, - . _ ~ + / and trailing =)", a.TokenFile)
	default:
		a.Token = secret.String(tok)
	}
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
