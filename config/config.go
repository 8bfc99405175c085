package config

import (
	"fmt"
	"os"
	"sort"
	"time"

	"switchboard/cluster"
	"switchboard/conncache"
	"switchboard/gate"
	"switchboard/internal/secret"
	"switchboard/ldapmap"
	"switchboard/route"
	"switchboard/router"
)

// Listener TLS modes, the values of listen[].tls.
const (
	TLSImplicit = "implicit" // TLS from the first byte (IMAPS 993, POP3S 995; RFC 8314)
	TLSStartTLS = "starttls" // plaintext, upgraded by STARTTLS/STLS (RFC 9051 6.2.1, RFC 2595)
	TLSNone     = "none"     // plaintext only; logins only from trusted_networks
)

// Map types, the values of map.type.
const (
	MapLDAP = "ldap"
	MapFile = "file"
)

// minIdleTimeout is the least idle_timeout allowed: RFC 9051 section 5.4
// says an inactivity autologout timer must be at least 30 minutes.
const minIdleTimeout = 30 * time.Minute

// Config is the whole configuration file. Each TOML table is one field
// whose type validates itself (see section); adding a table is a field
// here, its type with a validate method, its defaults in Default and its
// keys in docs/configuration.md.
type Config struct {
	// Hostname is the name used in greetings.
	Hostname string `toml:"hostname"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `toml:"log_level"`
	// LogFormat is text or json.
	LogFormat string `toml:"log_format"`
	// LogFlushInterval is how long info and debug lines may wait to be
	// written together; warnings and errors are written at once, with
	// the lines before them. Zero writes every line at once.
	LogFlushInterval Duration `toml:"log_flush_interval" zero:"off"`
	// TrustedNetworks are the client networks (CIDR) allowed to log in
	// with a plaintext password before TLS. See TrustedNets.
	TrustedNetworks []string `toml:"trusted_networks"`
	// PreauthTimeout is the idle limit before login.
	PreauthTimeout Duration `toml:"preauth_timeout"`
	// IdleTimeout is the idle limit after login; at least 30 minutes.
	IdleTimeout Duration `toml:"idle_timeout"`
	// AuthFailDelay is waited before any failed-login answer.
	AuthFailDelay Duration `toml:"auth_fail_delay"`
	// MaxPreauthErrors is the number of bad commands before login after
	// which the connection is closed with BYE.
	MaxPreauthErrors int `toml:"max_preauth_errors"`
	// DrainGrace is how long sessions may go on after SIGTERM before they
	// are closed with a BYE.
	DrainGrace Duration `toml:"drain_grace"`

	// TLS holds the listeners' certificates; nil without a [tls] table.
	TLS *TLS `toml:"tls"`
	// Listen are the listeners, one per [[listen]] table; at least one.
	Listen Listeners `toml:"listen"`
	// Backend says how to reach the backends.
	Backend Backend `toml:"backend"`
	// Hosts rewrites host attribute values to addresses. See HostMap.
	Hosts Hosts `toml:"hosts"`
	// Map chooses and tunes the user map.
	Map Map `toml:"map"`
	// LDAP configures the directory; nil without an [ldap] table.
	LDAP *LDAP `toml:"ldap"`
	// Limits are the per-user session limits and the brake on password
	// guessing.
	Limits Limits `toml:"limits"`
	// Cluster joins this node to the other front-ends; nil without a
	// [cluster] table (a node of its own).
	Cluster *Cluster `toml:"cluster"`
	// Admin is the HTTP listener for metrics, status and control; nil
	// without an [admin] table (no listener).
	Admin *Admin `toml:"admin"`
	// Cache bounds the webmail connection cache of listeners with
	// cache = true.
	Cache Cache `toml:"cache"`

	// File is the path the configuration was loaded from. Relative paths
	// in it were resolved against its directory. Not a key.
	File string `toml:"-"`

	// keys knows the line of each key in File.
	keys *keyLines
}

// ErrorAt returns err as an *Error at the line of key in the file, for a
// problem found after Load that concerns a key: a listener that cannot
// bind, a certificate that fails to reload.
func (cfg *Config) ErrorAt(key string, err error) *Error {
	line := 0
	if cfg.keys != nil {
		line = cfg.keys.line(key)
	}
	return &Error{File: cfg.File, Line: line, Key: key, Msg: err.Error()}
}

// TLS is the [tls] table: the listeners' certificates.
type TLS struct {
	// Cert is the default certificate chain (PEM), served when no other
	// certificate matches the client's SNI.
	Cert string `toml:"cert"`
	// Key is Cert's private key (PEM).
	Key string `toml:"key"`
	// Extra are more certificates, chosen by SNI.
	Extra []CertPair `toml:"extra"`
}

// CertPair is one [[tls.extra]] certificate.
type CertPair struct {
	Cert string `toml:"cert"`
	Key  string `toml:"key"`
}

// Pairs returns every certificate, the default first.
func (t *TLS) Pairs() []CertPair {
	return append([]CertPair{{Cert: t.Cert, Key: t.Key}}, t.Extra...)
}

// Listeners are the [[listen]] tables, in file order.
type Listeners []Listener

// Listener is one [[listen]] table.
type Listener struct {
	// Name labels the listener in logs and metrics; Load sets it to
	// "<protocol>-<port>" when the file does not.
	Name string `toml:"name"`
	// Protocol is imap or pop3 (route.IMAP, route.POP3).
	Protocol string `toml:"protocol"`
	// Address is host:port to listen on; the host may be empty.
	Address string `toml:"address"`
	// TLS is TLSImplicit, TLSStartTLS or TLSNone; Load sets the default,
	// TLSStartTLS.
	TLS string `toml:"tls"`
	// ProxyProtocol expects a PROXY protocol v1/v2 header first.
	ProxyProtocol bool `toml:"proxy_protocol"`
	// ProxyFrom are the networks (CIDR) allowed to send that header;
	// connections from elsewhere are refused. See ProxyNets.
	ProxyFrom []string `toml:"proxy_from"`
	// Cache puts the webmail connection cache ([cache]) on this IMAP
	// listener.
	Cache bool `toml:"cache"`
	// CacheAnyAddress allows Cache on an address that is not loopback.
	CacheAnyAddress bool `toml:"cache_any_address"`
}

// Cache is the [cache] table: the webmail connection cache's bounds
// (conncache.Options).
type Cache struct {
	// PerUser bounds the connections parked for one account.
	PerUser int `toml:"per_user"`
	// Total bounds the connections parked on this node.
	Total int `toml:"total"`
	// IdleTimeout closes a connection parked this long unused.
	IdleTimeout Duration `toml:"idle_timeout"`
	// MaxAge closes a connection this long after its backend login,
	// however often reused: a changed password stops working through the
	// cache by then at the latest.
	MaxAge Duration `toml:"max_age"`
}

// Backend is the [backend] table.
type Backend struct {
	// TLS dials backends with implicit TLS.
	TLS bool `toml:"tls"`
	// CAFile is the CA for backend certificates; empty means the system
	// roots. Only with TLS.
	CAFile string `toml:"ca_file"`
	// ServerName is the name backend certificates must carry; empty means
	// the host part of the address dialled. Only with TLS.
	ServerName string `toml:"server_name"`
	// DialTimeout bounds connecting to a backend (and its TLS handshake).
	DialTimeout Duration `toml:"dial_timeout"`
	// LoginTimeout bounds the greeting, ID and login round trips.
	LoginTimeout Duration `toml:"login_timeout"`
	// IMAPPort and POP3Port are used for addresses without a port.
	IMAPPort int `toml:"imap_port"`
	POP3Port int `toml:"pop3_port"`
}

// Map is the [map] table.
type Map struct {
	// Type is MapLDAP or MapFile.
	Type string `toml:"type"`
	// File is the plain map file, with type MapFile.
	File string `toml:"file"`
	// CacheTTL is how long an LDAP answer is cached.
	CacheTTL Duration `toml:"cache_ttl"`
	// NegativeTTL is how long an unknown-user answer is cached.
	NegativeTTL Duration `toml:"negative_ttl"`
	// ServeStale serves expired answers while LDAP is unreachable.
	ServeStale bool `toml:"serve_stale"`
}

// LDAP is the [ldap] table.
type LDAP struct {
	// URIs are ldap:// or ldaps:// URLs (scheme, host, port), tried in
	// order.
	URIs []string `toml:"uris"`
	// StartTLS upgrades ldap:// connections before binding.
	StartTLS bool `toml:"start_tls"`
	// CAFile is the CA for the servers' certificates; empty means the
	// system roots.
	CAFile string `toml:"ca_file"`
	// BindDN is the service account; empty means anonymous searches.
	BindDN string `toml:"bind_dn"`
	// BindPasswordFile holds BindDN's password.
	BindPasswordFile string `toml:"bind_password_file"`
	// BindPassword is the content of BindPasswordFile, its trailing
	// newline trimmed. Not a key.
	BindPassword secret.String `toml:"-"`
	// BaseDN is where searches start.
	BaseDN string `toml:"base_dn"`
	// Filter is the search filter template: %s the login, %u its local
	// part, %d its domain, %% a percent sign.
	Filter string `toml:"filter"`
	// Attribute holds the host values, primary first.
	Attribute string `toml:"attribute"`
	// PoolSize is the number of connections kept open.
	PoolSize int `toml:"pool_size"`
	// DialTimeout bounds connecting, TLS and the bind.
	DialTimeout Duration `toml:"dial_timeout"`
	// Timeout bounds one search.
	Timeout Duration `toml:"timeout"`
	// Watch follows the directory's changes (RFC 4533 content sync, or
	// a poll of modifyTimestamp where the directory offers none) and
	// drops or kicks what a change makes stale, on this node.
	Watch bool `toml:"watch"`
	// WatchPollInterval is the poll fallback's period.
	WatchPollInterval Duration `toml:"watch_poll_interval"`
	// WatchListInterval is how often the poll fallback lists every
	// entry's DN to see deletions.
	WatchListInterval Duration `toml:"watch_list_interval"`
}

// Hosts is the [hosts] table: host attribute value -> addresses.
type Hosts map[string]HostEntry

// HostEntry is one [hosts] value: a string (the Addr form) or a table with
// any of addr, imap and pop3.
type HostEntry struct {
	// Addr is a host (name or IP, no port), for protocols without an
	// address of their own.
	Addr string `toml:"addr"`
	// IMAP and POP3 are "host" or "host:port".
	IMAP string `toml:"imap"`
	POP3 string `toml:"pop3"`

	// table is set for the table form; problems are kept for the
	// validation pass, so that decoding goes on.
	table    bool
	problems []hostProblem
}

// hostProblem is a key of a host table that could not be decoded.
type hostProblem struct {
	key, msg string
}

// UnmarshalTOML decodes either form of a host entry. It never fails:
// unknown keys and values that are not strings are kept and reported by
// the validation pass.
func (h *HostEntry) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case string:
		h.Addr = v
	case map[string]any:
		h.table = true
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			var dst *string
			switch k {
			case "addr":
				dst = &h.Addr
			case "imap":
				dst = &h.IMAP
			case "pop3":
				dst = &h.POP3
			default:
				h.problems = append(h.problems, hostProblem{k, "unknown key (want addr, imap or pop3)"})
				continue
			}
			s, ok := v[k].(string)
			if !ok {
				h.problems = append(h.problems, hostProblem{k, fmt.Sprintf("must be a string, not %T", v[k])})
				continue
			}
			*dst = s
		}
	default:
		h.problems = append(h.problems, hostProblem{"", fmt.Sprintf("must be a string or a table, not %T", v)})
	}
	return nil
}

// Default returns the configuration with every default set. Load decodes
// the file over it. Tables that are absent from the file (tls, ldap,
// cluster, admin) are set to nil by Load; their defaults here apply when
// they are present.
//
// A value that a package also applies to a zero Options field is that
// package's exported Default… constant, never a copy, so that `switchboard
// check`, the server and the package agree (TestDefaultsArePackages). The
// values set here alone are this file's policy: names, logging, trusted
// networks, the drain, serving stale answers, the session limits and the
// admin address.
func Default() *Config {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return &Config{
		Hostname:         host,                               // the machine's name, for greetings
		LogLevel:         "info",                             // one line per session and problem
		LogFormat:        "text",                             // slog's key=value lines; json for collectors
		LogFlushInterval: D(100 * time.Millisecond),          // session lines written in batches; warnings at once
		TrustedNetworks:  []string{"127.0.0.0/8", "::1/128"}, // loopback may log in without TLS
		PreauthTimeout:   D(router.DefaultPreauthTimeout),    // idle limit before login
		IdleTimeout:      D(router.DefaultIdleTimeout),       // RFC 9051 5.4 asks >= 30m; 1m of slack for IDLE refreshes
		AuthFailDelay:    D(router.DefaultAuthFailDelay),     // Dovecot's own default, which the backends hand over to us
		MaxPreauthErrors: router.DefaultMaxPreauthErrors,     // bad commands before "* BYE"
		DrainGrace:       D(30 * time.Second),                // SIGTERM: sessions end by themselves or get a BYE after this
		TLS:              &TLS{},                             // no default certificate: cert and key are required
		Listen:           nil,                                // no default listener: at least one is required
		Backend: Backend{
			TLS:          false,                         // backends on a trusted network, plaintext
			CAFile:       "",                            // system roots, when tls = true
			ServerName:   "",                            // the host part of the address dialled
			DialTimeout:  D(router.DefaultDialTimeout),  // TCP connect and TLS handshake
			LoginTimeout: D(router.DefaultLoginTimeout), // greeting, ID and login round trips
			IMAPPort:     route.PortIMAP,                // 143; 993 with tls = true (see Backend.validate)
			POP3Port:     route.PortPOP3,                // 110; 995 with tls = true
		},
		Hosts: Hosts{}, // no rewriting: host values are dialled as names
		Map: Map{
			Type:        MapLDAP,                       // the directory is the source of truth
			File:        "",                            // only for type = "file"
			CacheTTL:    D(ldapmap.DefaultCacheTTL),    // a moved mailbox is seen within 5m (or at once after an invalidation)
			NegativeTTL: D(ldapmap.DefaultNegativeTTL), // bad logins do not reach LDAP more than twice a minute each
			ServeStale:  true,                          // logins keep working while LDAP is down
		},
		LDAP: &LDAP{
			URIs:              nil,                            // required
			StartTLS:          false,                          // use ldaps:// URIs instead
			CAFile:            "",                             // system roots
			BindDN:            "",                             // anonymous searches
			BindPasswordFile:  "",                             // required with bind_dn
			BaseDN:            "",                             // required
			Filter:            ldapmap.DefaultFilter,          // the login is the mail address of an active entry
			Attribute:         ldapmap.DefaultAttribute,       // values are host names, primary first
			PoolSize:          ldapmap.DefaultPoolSize,        // connections per proxy; go-ldap multiplexes on each
			DialTimeout:       D(ldapmap.DefaultDialTimeout),  // connect, TLS and bind
			Timeout:           D(ldapmap.DefaultTimeout),      // one search
			Watch:             true,                           // every node follows the directory's changes
			WatchPollInterval: D(ldapmap.DefaultPollInterval), // without a change feed, changes seen within 10s
			WatchListInterval: D(ldapmap.DefaultListInterval), // and deletions within a minute
		},
		Cache: Cache{
			PerUser:     conncache.DefaultPerUser,        // Roundcube's mail page opens two connections at once
			Total:       conncache.DefaultTotal,          // Dovecot processes held open on the backends
			IdleTimeout: D(conncache.DefaultIdleTimeout), // up-imapproxy's 300 s
			MaxAge:      D(conncache.DefaultMaxAge),      // a changed password is refused by then at the latest
		},
		Limits: Limits{
			IMAPSessionsPerUser:  50,                              // a few devices with a dozen folder connections each
			POP3SessionsPerUser:  10,                              // POP3 clients hold one connection while they fetch
			FailuresBeforeDelay:  5,                               // typos are free; then logins slow down
			FailuresBeforeRefuse: 20,                              // then refused until the count decays
			FailureWindow:        D(cluster.DefaultFailureWindow), // time constant of the failure counts
			FailureDelay:         D(gate.DefaultFailureDelay),     // the first delay, doubled per further failure
		},
		Cluster: &Cluster{
			NodeName:          host,                                // the machine's name; unique in the cluster
			BindAddr:          cluster.DefaultBindAddr,             // all addresses; set the VPN address
			BindPort:          cluster.DefaultBindPort,             // memberlist's customary port, TCP and UDP
			AdvertiseAddr:     "",                                  // bind_addr if specific, else the first private address
			AdvertisePort:     0,                                   // bind_port
			Peers:             nil,                                 // none: a cluster of one until others join
			KeyringFile:       "",                                  // required unless allow_insecure
			AllowInsecure:     false,                               // gossip is encrypted and authenticated
			Label:             cluster.DefaultLabel,                // keeps two clusters on one network apart
			GossipInterval:    D(cluster.DefaultGossipInterval),    // memberlist LAN: 200ms; halves the time per hop
			ProbeInterval:     D(cluster.DefaultProbeInterval),     // memberlist LAN
			ProbeTimeout:      D(cluster.DefaultProbeTimeout),      // memberlist LAN; VPN round trips are well below
			SuspicionMult:     cluster.DefaultSuspicionMult,        // memberlist LAN
			PushPullInterval:  D(cluster.DefaultPushPullInterval),  // memberlist LAN: 30s; full state converges faster
			TCPTimeout:        D(cluster.DefaultTCPTimeout),        // memberlist LAN: 10s; bounds joins, state exchanges, direct sends
			UDPBufferSize:     cluster.DefaultUDPBufferSize,        // fits WireGuard (MTU 1420) over IPv6 without fragments
			StateInterval:     D(cluster.DefaultStateInterval),     // health and count changes gossiped twice a second
			ReconnectInterval: D(cluster.DefaultReconnectInterval), // failed members and missing seeds retried
			MaxEntries:        cluster.DefaultMaxEntries,           // per shared table, per node
			HealthTTL:         D(cluster.DefaultHealthTTL),         // a backend report not renewed for this long is dropped
			CheckInterval:     D(cluster.DefaultCheckInterval),     // backend probes: a dead backend is noticed in about 2s
			CheckTimeout:      D(cluster.DefaultCheckTimeout),      // one probe: connect and greeting
		},
		Admin: &Admin{
			Address:   "127.0.0.1:8025", // loopback: no token needed
			TokenFile: "",               // required for a non-loopback address
		},
	}
}
