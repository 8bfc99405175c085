package move

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"time"

	"github.com/go-ldap/ldap/v3"

	"switchboard/internal/secret"
	"switchboard/ldapmap"
)

// defaultLDAPTimeout bounds connecting, binding and one modify.
const defaultLDAPTimeout = 5 * time.Second

// Change replaces every value of Attr with Values; no values deletes the
// attribute.
type Change struct {
	Attr   string
	Values []string
}

// Directory is what a move reads and writes in the directory.
type Directory interface {
	// Lookup returns the DN of the user's entry and its host values,
	// primary first.
	Lookup(ctx context.Context, user string) (dn string, hosts []string, err error)
	// Modify applies the changes to the entry dn in one operation, so
	// that they take effect together or not at all.
	Modify(ctx context.Context, dn string, changes ...Change) error
}

// LDAPOptions configures an LDAP directory for moves. The search is the
// one the proxy makes (the same filter and attribute); the bind is the
// move's own, which must be allowed to write the host attribute (and the
// hold attribute) of user entries.
type LDAPOptions struct {
	// URIs, StartTLS and TLSConfig are as in ldapmap.Options; a modify
	// goes to the first server that answers.
	URIs      []string
	StartTLS  bool
	TLSConfig *tls.Config
	// BindDN and BindPassword are the write-capable account. Required.
	BindDN       string
	BindPassword secret.String
	// BaseDN, Filter and Attribute are the proxy's [ldap] values.
	BaseDN    string
	Filter    string
	Attribute string
	// Timeout bounds connecting, binding and one operation. Zero means 5s.
	Timeout time.Duration
	// Logger receives the lookups' warnings. Nil means slog.Default().
	Logger *slog.Logger
}

func (o *LDAPOptions) timeout() time.Duration {
	if o.Timeout > 0 {
		return o.Timeout
	}
	return defaultLDAPTimeout
}

// LDAP is a Directory over go-ldap.
type LDAP struct {
	opts   LDAPOptions
	lookup *ldapmap.LDAP
}

// NewLDAP returns an LDAP directory. It does not connect.
func NewLDAP(opts *LDAPOptions) (*LDAP, error) {
	if opts.BindDN == "" || opts.BindPassword == "" {
		return nil, errors.New("move: LDAP needs a bind DN and password allowed to write the host attribute")
	}
	l := &LDAP{opts: *opts}
	lm, err := ldapmap.NewLDAP(&ldapmap.Options{
		URIs:         opts.URIs,
		StartTLS:     opts.StartTLS,
		TLSConfig:    opts.TLSConfig,
		BindDN:       opts.BindDN,
		BindPassword: opts.BindPassword,
		BaseDN:       opts.BaseDN,
		Filter:       opts.Filter,
		Attribute:    opts.Attribute,
		PoolSize:     1,
		DialTimeout:  l.opts.timeout(),
		Timeout:      l.opts.timeout(),
		Logger:       opts.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("move: %w", err)
	}
	l.lookup = lm
	return l, nil
}

// Close closes the lookup connections.
func (l *LDAP) Close() error { return l.lookup.Close() }

// Lookup finds the user's entry as the proxy does.
func (l *LDAP) Lookup(ctx context.Context, user string) (string, []string, error) {
	r, err := l.lookup.Lookup(ctx, user)
	if err != nil {
		return "", nil, err
	}
	return r.DN, r.Hosts, nil
}

// Modify replaces the attributes of dn in one LDAP modify operation
// (RFC 4511 section 4.6), trying the servers in order until one answers.
func (l *LDAP) Modify(ctx context.Context, dn string, changes ...Change) error {
	req := ldap.NewModifyRequest(dn, nil)
	for _, c := range changes {
		req.Replace(c.Attr, c.Values)
	}
	var errs []error
	for _, uri := range l.opts.URIs {
		conn, err := l.dial(ctx, uri)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		err = conn.Modify(req)
		conn.Close()
		if err != nil {
			return fmt.Errorf("modify %s on %s: %w", dn, uri, err)
		}
		return nil
	}
	return fmt.Errorf("modify %s: no LDAP server answered: %w", dn, errors.Join(errs...))
}

// dial connects to uri, upgrades with StartTLS if configured and binds.
func (l *LDAP) dial(ctx context.Context, uri string) (*ldap.Conn, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return nil, fmt.Errorf("ldap %s: %w", uri, err)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if l.opts.TLSConfig != nil {
		tc = l.opts.TLSConfig.Clone()
	}
	if tc.ServerName == "" {
		tc.ServerName = u.Hostname()
	}
	d := &net.Dialer{Timeout: l.opts.timeout()}
	if dl, ok := ctx.Deadline(); ok {
		d.Deadline = dl
	}
	conn, err := ldap.DialURL(uri, ldap.DialWithDialer(d), ldap.DialWithTLSConfig(tc))
	if err != nil {
		return nil, fmt.Errorf("ldap %s: %w", uri, err)
	}
	conn.SetTimeout(l.opts.timeout())
	if l.opts.StartTLS && u.Scheme == "ldap" {
		if err := conn.StartTLS(tc); err != nil {
			conn.Close()
			return nil, fmt.Errorf("ldap %s: starttls: %w", uri, err)
		}
	}
	if err := conn.Bind(l.opts.BindDN, string(l.opts.BindPassword)); err != nil {
		conn.Close()
		return nil, fmt.Errorf("ldap %s: bind as %s: %w", uri, l.opts.BindDN, err)
	}
	return conn, nil
}
