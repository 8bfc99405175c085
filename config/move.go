package config

import (
	"net"
	"strconv"
	"strings"

	"github.com/go-ldap/ldap/v3"

	"switchboard/internal/secret"
	"switchboard/ldapmap"
	"switchboard/move"
)

// Doveadm ports used for backends without a [move.backends] entry.
const (
	DefaultDoveadmHTTPPort = 8080 // doveadm's HTTP API (inet_listener http)
	DefaultDoveadmTCPPort  = 2425 // doveadm's TCP protocol (doveadm_port), for dsync
)

// Move is the [move] table: what `switchboard move` needs beyond [ldap]
// and [admin].
type Move struct {
	// BindDN is the account that may write the host (and hold)
	// attribute of user entries.
	BindDN string `toml:"bind_dn"`
	// BindPasswordFile holds BindDN's password.
	BindPasswordFile string `toml:"bind_password_file"`
	// BindPassword is its content, trailing newline trimmed. Not a key.
	BindPassword secret.String `toml:"-"`
	// HoldAttribute is set to HoldValue during the final pass; empty
	// means ldap.attribute.
	HoldAttribute string `toml:"hold_attribute"`
	// HoldValue is what the MTA's transport lookup maps to a deferral.
	HoldValue string `toml:"hold_value"`
	// HoldTTL is the lifetime of the login hold.
	HoldTTL Duration `toml:"hold_ttl"`
	// Settle is the wait between the two kicks.
	Settle Duration `toml:"settle"`
	// SessionWait bounds the wait for the source's last session.
	SessionWait Duration `toml:"session_wait"`
	// Timeout bounds each doveadm request (a pre-copy pass included).
	Timeout Duration `toml:"timeout"`
	// DoveadmPasswordFile holds the backends' doveadm_password.
	DoveadmPasswordFile string `toml:"doveadm_password_file"`
	// DoveadmPassword is its content. Not a key.
	DoveadmPassword secret.String `toml:"-"`
	// DoveadmCAFile, when set, makes the HTTP API calls use https with
	// this CA.
	DoveadmCAFile string `toml:"doveadm_ca_file"`
	// DoveadmHTTPPort and DoveadmTCPPort are the ports of backends
	// without an entry in Backends.
	DoveadmHTTPPort int `toml:"doveadm_http_port"`
	DoveadmTCPPort  int `toml:"doveadm_tcp_port"`
	// Backends overrides the doveadm addresses per host value.
	Backends map[string]MoveBackend `toml:"backends"`
}

// MoveBackend is one [move.backends.NAME] table.
type MoveBackend struct {
	// HTTP is "host:port" of the doveadm HTTP API.
	HTTP string `toml:"http"`
	// TCP is "host:port" of the doveadm TCP protocol, as the other
	// backends reach it.
	TCP string `toml:"tcp"`
}

// defaultMove returns [move]'s defaults.
func defaultMove() *Move {
	return &Move{
		HoldValue:       move.DefaultHoldValue,         // the MTA maps host "hold" to a 4xx
		HoldTTL:         D(move.DefaultHoldTTL),        // a killed move locks the user out at most this long
		Settle:          D(move.DefaultSettle),         // covers the MTA's route-cache lag and in-flight logins
		SessionWait:     D(move.DefaultSessionWait),    // a session that will not end fails the move
		Timeout:         D(move.DefaultDoveadmTimeout), // one doveadm request, a pre-copy pass included
		DoveadmHTTPPort: DefaultDoveadmHTTPPort,
		DoveadmTCPPort:  DefaultDoveadmTCPPort,
		Backends:        map[string]MoveBackend{}, // addresses from [hosts] and the ports above
	}
}

// DoveadmAddrs returns the doveadm HTTP and TCP addresses of the backend
// with host value name: its [move.backends] entry, else the host of its
// [hosts] entry (or the name itself) with the default ports.
func (cfg *Config) DoveadmAddrs(name string) (httpAddr, tcpAddr string) {
	m := cfg.Move
	if b, ok := m.Backends[name]; ok && b.HTTP != "" && b.TCP != "" {
		return b.HTTP, b.TCP
	}
	host := name
	if h, ok := cfg.Hosts[name]; ok {
		switch {
		case h.Addr != "":
			host = h.Addr
		case h.IMAP != "":
			if hh, _, err := net.SplitHostPort(h.IMAP); err == nil {
				host = hh
			} else {
				host = h.IMAP
			}
		}
	}
	httpAddr = net.JoinHostPort(host, strconv.Itoa(m.DoveadmHTTPPort))
	tcpAddr = net.JoinHostPort(host, strconv.Itoa(m.DoveadmTCPPort))
	if b, ok := m.Backends[name]; ok {
		if b.HTTP != "" {
			httpAddr = b.HTTP
		}
		if b.TCP != "" {
			tcpAddr = b.TCP
		}
	}
	return httpAddr, tcpAddr
}

// validate checks [move] and reads its secrets.
func (m *Move) validate(c *checker, cfg *Config) {
	if cfg.LDAP == nil {
		c.errorf("move", "needs an [ldap] table: a move changes the user's entry")
	}
	if m.BindDN == "" {
		c.errorf("move.bind_dn", "required: the account that may write the host attribute")
	} else if _, err := ldap.ParseDN(m.BindDN); err != nil {
		c.errorf("move.bind_dn", "%q is not a DN: %v", m.BindDN, err)
	}
	if m.BindPasswordFile == "" {
		c.errorAt("move", "move.bind_password_file", "required (an empty password would be an unauthenticated bind)")
	} else if pw, ok := readSecret(c, "move.bind_password_file", m.BindPasswordFile); ok {
		m.BindPassword = pw
	}
	if m.DoveadmPasswordFile == "" {
		c.errorAt("move", "move.doveadm_password_file", "required: the backends' doveadm_password")
	} else if pw, ok := readSecret(c, "move.doveadm_password_file", m.DoveadmPasswordFile); ok {
		m.DoveadmPassword = pw
	}
	if m.HoldAttribute != "" && !ldapmap.ValidAttribute(m.HoldAttribute) {
		c.errorf("move.hold_attribute", "%q is not an attribute name", m.HoldAttribute)
	}
	if m.HoldValue == "" || strings.ContainsAny(m.HoldValue, " \t\r\n") {
		c.errorf("move.hold_value", "must be a non-empty value without spaces")
	} else if _, ok := cfg.Hosts[m.HoldValue]; ok {
		c.errorf("move.hold_value", "%q is a backend in [hosts]", m.HoldValue)
	}
	if m.DoveadmCAFile != "" {
		checkCAFile(c, "move.doveadm_ca_file", m.DoveadmCAFile)
	}
	checkPort(c, "move.doveadm_http_port", m.DoveadmHTTPPort)
	checkPort(c, "move.doveadm_tcp_port", m.DoveadmTCPPort)
	for name, b := range m.Backends {
		key := join("move.backends", name)
		for _, kv := range []struct{ k, v string }{{"http", b.HTTP}, {"tcp", b.TCP}} {
			if kv.v == "" {
				continue
			}
			if _, _, err := splitPort(kv.v); err != nil {
				c.errorf(join(key, kv.k), "%v", err)
			}
		}
	}
	// Names of backends whose HTTP API would get the password in clear.
	if m.DoveadmCAFile == "" {
		names := make([]string, 0, len(cfg.Hosts))
		for name := range cfg.Hosts {
			names = append(names, name)
		}
		for name := range m.Backends {
			names = append(names, name)
		}
		for _, name := range names {
			httpAddr, _ := cfg.DoveadmAddrs(name)
			if host, _, err := net.SplitHostPort(httpAddr); err == nil && !secret.Local(host) {
				c.errorAt("move", "move.doveadm_ca_file", "required: the doveadm API of %s (%s) is not on this machine, and plain HTTP would send doveadm_password in clear", name, httpAddr)
				break
			}
		}
	}
}

// readSecret reads a one-line secret file.
func readSecret(c *checker, key, path string) (secret.String, bool) {
	data, err := readFile(path)
	if err != nil {
		c.errorf(key, "%v", err)
		return "", false
	}
	pw := strings.TrimRight(string(data), "\r\n")
	if pw == "" {
		c.errorf(key, "%s is empty", path)
		return "", false
	}
	return secret.String(pw), true
}
