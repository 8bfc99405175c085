package config

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"net/url"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/go-ldap/ldap/v3"

	"switchboard/conncache"
	"switchboard/internal/secret"
	"switchboard/ldapmap"
	"switchboard/route"
)

// section is a table of the file that checks itself. Config.validate calls
// it for every field of Config whose type (or pointer to it) implements
// it, skipping absent optional tables; cfg gives access to the other
// tables for checks that span them.
type section interface {
	validate(c *checker, cfg *Config)
}

// validate checks everything and records each problem in c.
func (cfg *Config) validate(c *checker) {
	cfg.validateTop(c)
	checkDurations(c, reflect.ValueOf(cfg).Elem(), "")
	rv := reflect.ValueOf(cfg).Elem()
	for i := range rv.NumField() {
		if tomlName(rv.Type().Field(i)) == "" {
			continue
		}
		f := rv.Field(i)
		var v any
		switch {
		case f.Kind() == reflect.Pointer && f.IsNil():
			continue
		case f.Kind() == reflect.Pointer:
			v = f.Interface()
		default:
			v = f.Addr().Interface()
		}
		if s, ok := v.(section); ok {
			s.validate(c, cfg)
		}
	}
}

// validateTop checks the keys outside any table.
func (cfg *Config) validateTop(c *checker) {
	if err := checkHostname(cfg.Hostname); err != nil {
		c.errorf("hostname", "%v", err)
	}
	oneOf(c, "log_level", cfg.LogLevel, "debug", "info", "warn", "error")
	oneOf(c, "log_format", cfg.LogFormat, "text", "json")
	for i, s := range cfg.TrustedNetworks {
		if _, err := parseCIDR(s); err != nil {
			c.errorf(index("trusted_networks", i), "%v", err)
		}
	}
	if d := cfg.IdleTimeout; d.err == nil && d.Duration > 0 && d.Duration < minIdleTimeout {
		c.errorf("idle_timeout", "%v is too short: RFC 9051 section 5.4 requires at least 30m", d.Duration)
	}
	if cfg.MaxPreauthErrors < 1 {
		c.errorf("max_preauth_errors", "must be at least 1, not %d", cfg.MaxPreauthErrors)
	}
}

// checkDurations reports every Duration in v that did not parse or is not
// positive (or, for a field tagged zero:"off", negative). Absent optional
// tables (nil pointers) are skipped.
func checkDurations(c *checker, v reflect.Value, path string) {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			checkDurations(c, v.Elem(), path)
		}
	case reflect.Struct:
		if d, ok := v.Interface().(Duration); ok {
			switch {
			case d.err != nil:
				c.errorf(path, "%q is not a duration: write a number with a unit, like \"30s\" or \"5m\"", d.text)
			case d.Duration <= 0:
				c.errorf(path, "must be positive")
			}
			return
		}
		for i := range v.NumField() {
			f := v.Type().Field(i)
			if !f.IsExported() {
				continue
			}
			if d, ok := v.Field(i).Interface().(Duration); ok && f.Tag.Get("zero") == "off" && d.err == nil && d.Duration == 0 {
				continue // zero turns the feature off
			}
			if name := tomlName(f); name != "" {
				checkDurations(c, v.Field(i), join(path, name))
			}
		}
	case reflect.Slice:
		for i := range v.Len() {
			checkDurations(c, v.Index(i), index(path, i))
		}
	}
}

// validate checks [tls].
func (t *TLS) validate(c *checker, _ *Config) {
	for i, p := range t.Pairs() {
		prefix := "tls"
		if i > 0 {
			prefix = index("tls.extra", i-1)
		}
		checkPair(c, join(prefix, "cert"), join(prefix, "key"), p)
	}
}

// checkPair checks that a certificate and its key exist and go together.
// Errors name the key and the file, never the content.
func checkPair(c *checker, certKey, keyKey string, p CertPair) {
	if p.Cert == "" {
		c.errorf(certKey, "required")
	}
	if p.Key == "" {
		c.errorf(keyKey, "required")
	}
	if p.Cert == "" || p.Key == "" {
		return
	}
	certPEM, err := readFile(p.Cert)
	if err != nil {
		c.errorf(certKey, "%v", err)
	}
	keyPEM, kerr := readFile(p.Key)
	if kerr != nil {
		c.errorf(keyKey, "%v", kerr)
	}
	if err != nil || kerr != nil {
		return
	}
	if b, _ := pem.Decode(certPEM); b == nil {
		c.errorf(certKey, "%s: no PEM data", p.Cert)
		return
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		c.errorf(keyKey, "%s with %s: %v", p.Key, p.Cert, err)
	}
}

// validate checks the [[listen]] tables.
func (ls *Listeners) validate(c *checker, cfg *Config) {
	if len(*ls) == 0 {
		c.errorf("listen", "at least one [[listen]] table is required")
	}
	names := make(map[string]string)
	addrs := make(map[string]string)
	for i, l := range *ls {
		p := index("listen", i)
		key := func(k string) string { return join(p, k) }

		switch l.Protocol {
		case "":
			c.errorf(key("protocol"), "required (imap or pop3)")
		case route.IMAP, route.POP3:
		default:
			c.errorf(key("protocol"), "%q is not imap or pop3", l.Protocol)
		}

		if l.Address == "" {
			c.errorf(key("address"), "required (host:port)")
		} else if host, port, err := splitPort(l.Address); err != nil {
			c.errorf(key("address"), "%v", err)
		} else {
			if host != "" {
				if err := checkHost(host); err != nil {
					c.errorf(key("address"), "%v", err)
				}
			}
			norm := net.JoinHostPort(normHost(host), strconv.Itoa(port))
			if prev, dup := addrs[norm]; dup {
				c.errorf(key("address"), "%q is already used by %s", l.Address, prev)
			} else {
				addrs[norm] = p
			}
		}

		if l.Name != "" {
			if !validName(l.Name) {
				c.errorf(key("name"), "%q: use letters, digits, '.', '_' and '-' only", l.Name)
			}
			if prev, dup := names[l.Name]; dup {
				c.errorf(key("name"), "%q is already used by %s", l.Name, prev)
			} else {
				names[l.Name] = p
			}
		}

		switch l.TLS {
		case TLSImplicit, TLSStartTLS:
			if cfg.TLS == nil {
				c.errorf(key("tls"), "%q needs a [tls] table with cert and key", l.TLS)
			}
		case TLSNone:
		default:
			c.errorf(key("tls"), "%q is not implicit, starttls or none", l.TLS)
		}

		if l.ProxyProtocol && len(l.ProxyFrom) == 0 {
			c.errorf(key("proxy_from"), "required with proxy_protocol = true: the networks allowed to send PROXY headers")
		}
		if !l.ProxyProtocol && len(l.ProxyFrom) > 0 {
			c.errorf(key("proxy_from"), "set, but proxy_protocol is false")
		}
		for j, s := range l.ProxyFrom {
			if _, err := parseCIDR(s); err != nil {
				c.errorf(index(key("proxy_from"), j), "%v", err)
			}
		}
		l.validateCache(c, key)
	}
}

// validateCache checks a cached listener: IMAP only, and on loopback
// (the webmail on this node) unless cache_any_address says otherwise.
func (l *Listener) validateCache(c *checker, key func(string) string) {
	if !l.Cache {
		if l.CacheAnyAddress {
			c.errorf(key("cache_any_address"), "set, but cache is false")
		}
		return
	}
	if l.Protocol == route.POP3 {
		c.errorf(key("cache"), "only IMAP listeners can be cached")
	}
	if host, _, err := splitPort(l.Address); err == nil && !secret.Local(host) && !l.CacheAnyAddress {
		c.errorf(key("cache"), "%q is not a loopback address: parked logins are for the webmail on this node; set cache_any_address = true to offer them elsewhere", l.Address)
	}
}

// validate checks [cache] through the cache's own check.
func (ca *Cache) validate(c *checker, _ *Config) {
	o := ca.Options()
	for _, err := range o.Check() {
		c.errorf("cache", "%v", err)
	}
}

// Options returns the cache's options.
func (ca *Cache) Options() conncache.Options {
	return conncache.Options{PerUser: ca.PerUser, Total: ca.Total, IdleTimeout: ca.IdleTimeout.Duration, MaxAge: ca.MaxAge.Duration}
}

// validate checks [backend]. With tls = true, ports not written in the
// file become the implicit-TLS ones (993, 995): dialling TLS to 143 or 110
// would fail every login.
func (b *Backend) validate(c *checker, cfg *Config) {
	if b.TLS && cfg.keys != nil {
		if !cfg.keys.has("backend.imap_port") {
			b.IMAPPort = route.PortIMAPS
		}
		if !cfg.keys.has("backend.pop3_port") {
			b.POP3Port = route.PortPOP3S
		}
	}
	if !b.TLS {
		if b.CAFile != "" {
			c.errorf("backend.ca_file", "set, but backend.tls is false: backends are dialled in plaintext")
		}
		if b.ServerName != "" {
			c.errorf("backend.server_name", "set, but backend.tls is false: backends are dialled in plaintext")
		}
	}
	if b.CAFile != "" {
		checkCAFile(c, "backend.ca_file", b.CAFile)
	}
	if b.ServerName != "" {
		if err := checkHostname(b.ServerName); err != nil {
			c.errorf("backend.server_name", "%v", err)
		}
	}
	checkPort(c, "backend.imap_port", b.IMAPPort)
	checkPort(c, "backend.pop3_port", b.POP3Port)
}

// validate checks [hosts].
func (h *Hosts) validate(c *checker, _ *Config) {
	names := make([]string, 0, len(*h))
	for name := range *h {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		e := (*h)[name]
		p := join("hosts", name)
		if name == "" {
			c.errorf(p, "empty host name")
		}
		for _, pr := range e.problems {
			k := p
			if pr.key != "" {
				k = join(p, pr.key)
			}
			c.errorf(k, "%s", pr.msg)
		}
		if !e.table {
			if len(e.problems) > 0 {
				continue
			}
			if e.Addr == "" {
				c.errorf(p, "empty address")
			} else if _, _, err := net.SplitHostPort(e.Addr); err == nil {
				c.errorf(p, "%q has a port: the string form is a host only; write { imap = %q, pop3 = \"…\" } for ports", e.Addr, e.Addr)
			} else if err := checkHost(e.Addr); err != nil {
				c.errorf(p, "%v", err)
			}
			continue
		}
		if e.Addr == "" && e.IMAP == "" && e.POP3 == "" && len(e.problems) == 0 {
			c.errorf(p, "needs addr, imap or pop3")
		}
		if e.Addr != "" {
			if _, _, err := net.SplitHostPort(e.Addr); err == nil {
				c.errorf(join(p, "addr"), "%q has a port: addr is a host only; give ports in imap and pop3", e.Addr)
			} else if err := checkHost(e.Addr); err != nil {
				c.errorf(join(p, "addr"), "%v", err)
			}
		}
		for _, kv := range [...]struct{ k, v string }{{"imap", e.IMAP}, {"pop3", e.POP3}} {
			if kv.v == "" {
				continue
			}
			if err := checkHostMaybePort(kv.v); err != nil {
				c.errorf(join(p, kv.k), "%v", err)
			}
		}
	}
}

// validate checks [map].
func (m *Map) validate(c *checker, cfg *Config) {
	switch m.Type {
	case MapFile:
		if m.File == "" {
			c.errorAt("map.type", "map.file", "required when map.type = %q", MapFile)
		} else if _, err := readFile(m.File); err != nil {
			c.errorf("map.file", "%v", err)
		}
	case MapLDAP:
		if m.File != "" {
			c.errorf("map.file", "set, but map.type is %q", m.Type)
		}
		if cfg.LDAP == nil {
			c.errorAt("map.type", "ldap", "an [ldap] table is required when map.type = %q", MapLDAP)
		}
	default:
		c.errorf("map.type", "%q is not ldap or file", m.Type)
	}
}

// validate checks [ldap] and reads the bind password.
func (l *LDAP) validate(c *checker, _ *Config) {
	if len(l.URIs) == 0 {
		c.errorf("ldap.uris", "at least one ldap:// or ldaps:// URI is required")
	}
	for i, raw := range l.URIs {
		k := index("ldap.uris", i)
		if err := ldapmap.CheckURI(raw); err != nil {
			c.errorf(k, "%v", err)
			continue
		}
		u, _ := url.Parse(raw) // CheckURI parsed it
		if u.Scheme == "ldaps" && l.StartTLS {
			c.errorf(k, "%q: start_tls with ldaps:// (already TLS)", raw)
		}
		if u.Scheme == "ldap" && !l.StartTLS && !secret.Local(u.Hostname()) {
			c.errorf(k, "%q: plaintext LDAP to a remote host would send the bind password and the logins in clear; use ldaps:// or start_tls = true", raw)
		}
	}
	if l.CAFile != "" {
		checkCAFile(c, "ldap.ca_file", l.CAFile)
	}

	switch {
	case l.BindDN == "" && l.BindPasswordFile != "":
		c.errorf("ldap.bind_password_file", "set without bind_dn")
	case l.BindDN != "":
		if _, err := ldap.ParseDN(l.BindDN); err != nil {
			c.errorf("ldap.bind_dn", "%q is not a DN: %v", l.BindDN, err)
		}
		if l.BindPasswordFile == "" {
			c.errorAt("ldap.bind_dn", "ldap.bind_password_file", "required with bind_dn (an empty password would be an unauthenticated bind)")
			break
		}
		data, err := readFile(l.BindPasswordFile)
		if err != nil {
			c.errorf("ldap.bind_password_file", "%v", err)
			break
		}
		pw := strings.TrimRight(string(data), "\r\n")
		if pw == "" {
			c.errorf("ldap.bind_password_file", "%s is empty", l.BindPasswordFile)
			break
		}
		l.BindPassword = secret.String(pw)
	}

	if l.BaseDN == "" {
		c.errorf("ldap.base_dn", "required")
	} else if _, err := ldap.ParseDN(l.BaseDN); err != nil {
		c.errorf("ldap.base_dn", "%q is not a DN: %v", l.BaseDN, err)
	}
	if l.Filter == "" {
		c.errorf("ldap.filter", "required")
	} else if err := ldapmap.CheckFilter(l.Filter); err != nil {
		c.errorf("ldap.filter", "%v", err)
	}
	if !ldapmap.ValidAttribute(l.Attribute) {
		c.errorf("ldap.attribute", "%q is not an attribute name", l.Attribute)
	}
	if l.PoolSize < 1 || l.PoolSize > 64 {
		c.errorf("ldap.pool_size", "must be 1-64, not %d", l.PoolSize)
	}
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// oneOf reports v unless it is one of allowed.
func oneOf(c *checker, key, v string, allowed ...string) {
	for _, a := range allowed {
		if v == a {
			return
		}
	}
	c.errorf(key, "%q is not %s", v, orList(allowed))
}

func orList(s []string) string {
	if len(s) == 1 {
		return s[0]
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

// splitPort splits host:port and checks the port: a number, 1-65535.
func splitPort(addr string) (host string, port int, err error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			return "", 0, fmt.Errorf("%s %q", ae.Err, addr)
		}
		return "", 0, err
	}
	port, err = strconv.Atoi(p)
	if err != nil || port < 1 || port > 65535 {
		return "", 0, fmt.Errorf("port %q in address %q is not a number from 1 to 65535", p, addr)
	}
	return host, port, nil
}

func checkPort(c *checker, key string, port int) {
	if port < 1 || port > 65535 {
		c.errorf(key, "%d is not a port (1-65535)", port)
	}
}

// checkHost checks an IP address or a host name, without port.
func checkHost(h string) error {
	if _, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")); err == nil {
		return nil
	}
	return checkHostname(h)
}

// checkHostMaybePort checks "host" or "host:port".
func checkHostMaybePort(s string) error {
	if _, _, err := net.SplitHostPort(s); err == nil {
		host, _, err := splitPort(s)
		if err != nil {
			return err
		}
		return checkHost(host)
	}
	return checkHost(s)
}

// checkHostname checks a DNS host name (RFC 1123 section 2.1; "_" is
// tolerated, as resolvers do).
func checkHostname(h string) error {
	if h == "" {
		return errors.New("empty host name")
	}
	name := strings.TrimSuffix(h, ".")
	if len(name) > 253 {
		return fmt.Errorf("%q is not a host name: longer than 253 bytes", h)
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("%q is not a host name", h)
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !isAlnum(c) && c != '-' && c != '_' {
				return fmt.Errorf("%q is not a host name", h)
			}
		}
	}
	return nil
}

// normHost returns host in a canonical form, to compare addresses.
func normHost(host string) string {
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap().String()
	}
	return strings.ToLower(host)
}

// validName reports whether a listener name is fit for logs and metric
// labels.
func validName(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return s != ""
}

// parseCIDR parses a network in CIDR form and refuses host bits, which
// usually mean a typo ("10.0.0.1/8").
func parseCIDR(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		if _, aerr := netip.ParseAddr(s); aerr == nil {
			return netip.Prefix{}, fmt.Errorf("%q is an address, not a network: add /32 or /128", s)
		}
		return netip.Prefix{}, fmt.Errorf("%q is not a network in CIDR form (like 10.0.0.0/8)", s)
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set; did you mean %s?", s, m)
	}
	return p, nil
}

// readFile reads a file named in the configuration. Its error names the
// file, and never quotes the content.
func readFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err == nil && fi.IsDir() {
		return nil, fmt.Errorf("%s is a directory", path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("cannot read %s: %v", path, pe.Err)
		}
		return nil, fmt.Errorf("cannot read %s: %v", path, err)
	}
	return data, nil
}

// checkCAFile checks that path holds at least one PEM certificate.
func checkCAFile(c *checker, key, path string) {
	data, err := readFile(path)
	if err != nil {
		c.errorf(key, "%v", err)
		return
	}
	if !x509.NewCertPool().AppendCertsFromPEM(data) {
		c.errorf(key, "%s holds no PEM certificate", path)
	}
}
