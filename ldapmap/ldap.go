package ldapmap

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-ldap/ldap/v3"

	"switchboard/internal/secret"
	"switchboard/route"
)

// Defaults for the zero values of Options, each read by one accessor
// below. They are exported so that the configuration fills in, documents
// and checks the values NewLDAP uses.
const (
	DefaultPoolSize       = 4               // go-ldap multiplexes on each connection
	DefaultDialTimeout    = 2 * time.Second // connect, TLS handshake, StartTLS and bind together
	DefaultTimeout        = 3 * time.Second // one search on one server
	DefaultRetryDownAfter = 5 * time.Second // how long a failed server is skipped
	DefaultAttribute      = "host"          // values are host names, primary first
)

const (
	searchSizeLimit    = 2 // one entry is an answer, two are ambiguous
	searchResultBuffer = 4 // SearchAsync channel: two entries, a done, slack
)

// Scope is the search scope (RFC 4511 section 4.5.1.2). The zero value is
// ScopeSubtree.
type Scope int

// Search scopes.
const (
	// ScopeSubtree searches the base entry and everything below it.
	ScopeSubtree Scope = iota
	// ScopeOneLevel searches the immediate children of the base entry.
	ScopeOneLevel
	// ScopeBase searches the base entry only.
	ScopeBase
)

// ldapScope maps s to go-ldap's constant.
func (s Scope) ldapScope() int {
	switch s {
	case ScopeOneLevel:
		return ldap.ScopeSingleLevel
	case ScopeBase:
		return ldap.ScopeBaseObject
	default:
		return ldap.ScopeWholeSubtree
	}
}

// Options configures an LDAP mapper. NewLDAP copies it, so later changes
// have no effect.
type Options struct {
	// URIs are the servers, as LDAP URLs with a scheme, a host and an
	// optional port only (RFC 4516): "ldap://host:389" or
	// "ldaps://host:636". With several, the first that works is used and
	// the others are failovers, in order; a lookup fails back to an
	// earlier server once it answers again. Required.
	URIs []string

	// StartTLS upgrades ldap:// connections with the StartTLS extended
	// operation (RFC 4513 section 3) before binding. It must not be set
	// with ldaps:// URIs. Default false.
	StartTLS bool

	// TLSConfig is used for ldaps:// and StartTLS. Nil means the system
	// roots and TLS 1.2 or later. ServerName, when empty, is set from each
	// URI's host. InsecureSkipVerify is refused.
	TLSConfig *tls.Config

	// BindDN is the service account to bind as. Empty means no bind: the
	// searches run anonymously.
	BindDN string

	// BindPassword is BindDN's password. It must be set when BindDN is: a
	// simple bind with an empty password is an unauthenticated bind
	// (RFC 4513 section 5.1.2), which servers accept as anonymous, so
	// go-ldap refuses it and so does NewLDAP. It never reaches a log or an
	// error.
	BindPassword Secret

	// BaseDN is where searches start, e.g. "ou=people,dc=example,dc=org".
	// Required.
	BaseDN string

	// Filter is the search filter template (RFC 4515) with the verbs %s
	// (whole login), %u (local part), %d (domain) and %% (a literal %).
	// Substitutions are escaped with ldap.EscapeFilter. Empty means
	// DefaultFilter, "(&(mail=%s)(status=active))".
	Filter string

	// Attribute holds the host names, primary first. Empty means "host".
	Attribute string

	// Scope is the search scope. The zero value is ScopeSubtree.
	Scope Scope

	// PoolSize is the number of connections kept open. go-ldap multiplexes
	// requests on one connection, so a few are plenty; lookups take them
	// round-robin. Zero means 4.
	PoolSize int

	// DialTimeout bounds connecting to one server, including the TLS
	// handshake, StartTLS and the bind. Zero means 2s.
	DialTimeout time.Duration

	// Timeout bounds one search on one server; it is also sent to the
	// server as the search time limit. Zero means 3s. The caller's context
	// bounds the whole lookup, failovers included.
	Timeout time.Duration

	// RetryDownAfter is how long a server that failed to connect or to
	// answer is skipped before one lookup tries it again; meanwhile
	// lookups go to the next server, or fail with route.ErrUnavailable at
	// once if there is none. The lookup that makes the retry pays for it:
	// up to DialTimeout for a server that does not answer at all. Zero
	// means 5s.
	RetryDownAfter time.Duration

	// Logger receives server state changes and directory errors. It never
	// sees the bind password. Nil means slog.Default().
	Logger *slog.Logger
}

func (o *Options) poolSize() int {
	if o.PoolSize == 0 {
		return DefaultPoolSize
	}
	return o.PoolSize
}

func (o *Options) dialTimeout() time.Duration {
	if o.DialTimeout == 0 {
		return DefaultDialTimeout
	}
	return o.DialTimeout
}

func (o *Options) timeout() time.Duration {
	if o.Timeout == 0 {
		return DefaultTimeout
	}
	return o.Timeout
}

func (o *Options) retryDownAfter() time.Duration {
	if o.RetryDownAfter == 0 {
		return DefaultRetryDownAfter
	}
	return o.RetryDownAfter
}

func (o *Options) attribute() string {
	if o.Attribute == "" {
		return DefaultAttribute
	}
	return o.Attribute
}

func (o *Options) filter() string {
	if o.Filter == "" {
		return DefaultFilter
	}
	return o.Filter
}

func (o *Options) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.Default()
	}
	return o.Logger
}

// errClosed is returned by Lookup after Close.
var errClosed = errors.New("ldapmap: closed")

// errConnClosed is a search on a connection that was closing.
var errConnClosed = errors.New("connection closed")

// errAllDown is returned when every server is marked down.
var errAllDown = errors.New("all servers marked down")

// LDAP is a route.Mapper that searches a directory. It is safe for
// concurrent use.
type LDAP struct {
	opts        Options // copied; BindPassword lives here only
	filter      *filterTemplate
	attrs       []string // {Attribute}, shared by every request
	servers     []*server
	slots       []*slot
	next        atomic.Uint32 // round-robin slot index
	closed      atomic.Bool
	log         *slog.Logger
	dialTimeout time.Duration
	timeout     time.Duration
	retryDown   time.Duration
	timeLimit   int // search time limit sent to the server, in seconds
}

// A server is one URI and its health.
type server struct {
	uri  string // as configured, for logs
	host string // the URI's host, without brackets
	addr string // host:port
	tls  *tls.Config
	// ldaps is set for ldaps:// URIs: TLS from the first byte.
	ldaps bool
	// downUntil is zero while the server is up, otherwise the UnixNano
	// time before which lookups skip it. The lookup that first finds it
	// expired claims the retry by moving it forward (see mayTry).
	downUntil atomic.Int64
}

// A slot holds one pooled connection. sem (capacity 1) guards conn and idx
// while it is checked or replaced; searches run without it.
type slot struct {
	sem  chan struct{}
	conn *ldap.Conn
	idx  int // index into LDAP.servers of conn
}

// NewLDAP checks opts and returns an LDAP mapper. It does not connect:
// connections are made by the first lookups, so a directory that is down
// at startup delays nothing. All problems with opts are reported together.
func NewLDAP(opts *Options) (*LDAP, error) {
	if opts == nil {
		return nil, errors.New("ldapmap: nil options")
	}
	l := &LDAP{opts: *opts}
	l.opts.URIs = append([]string(nil), opts.URIs...)
	o := &l.opts
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if len(o.URIs) == 0 {
		bad("no URIs")
	}
	if o.TLSConfig != nil && o.TLSConfig.InsecureSkipVerify {
		bad("TLSConfig.InsecureSkipVerify is not allowed")
	}
	for _, raw := range o.URIs {
		s, err := newServer(raw, o.TLSConfig)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if s.ldaps && o.StartTLS {
			bad("uri %q: StartTLS with ldaps:// (already TLS)", raw)
		}
		l.servers = append(l.servers, s)
	}
	switch {
	case o.BindDN != "" && o.BindPassword == "":
		bad("BindDN set with an empty BindPassword (that would be an unauthenticated bind)")
	case o.BindDN == "" && o.BindPassword != "":
		bad("BindPassword set without BindDN")
	}
	if o.BindDN != "" {
		if _, err := ldap.ParseDN(o.BindDN); err != nil {
			bad("BindDN %q: %w", o.BindDN, err)
		}
	}
	if o.BaseDN == "" {
		bad("no BaseDN")
	} else if _, err := ldap.ParseDN(o.BaseDN); err != nil {
		bad("BaseDN %q: %w", o.BaseDN, err)
	}
	if f, err := parseFilterTemplate(o.filter()); err != nil {
		errs = append(errs, err)
	} else {
		l.filter = f
	}
	if !ValidAttribute(o.attribute()) {
		bad("Attribute %q is not an attribute description", o.attribute())
	}
	if o.Scope < ScopeSubtree || o.Scope > ScopeBase {
		bad("unknown Scope %d", o.Scope)
	}
	if o.PoolSize < 0 {
		bad("negative PoolSize")
	}
	if o.DialTimeout < 0 || o.Timeout < 0 || o.RetryDownAfter < 0 {
		bad("negative DialTimeout, Timeout or RetryDownAfter")
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("ldapmap: options: %w", errors.Join(errs...))
	}

	l.log = o.logger().With("component", "ldapmap")
	l.attrs = []string{o.attribute()}
	l.dialTimeout = o.dialTimeout()
	l.timeout = o.timeout()
	l.retryDown = o.retryDownAfter()
	l.timeLimit = int((l.timeout + time.Second - 1) / time.Second)
	l.slots = make([]*slot, o.poolSize())
	for i := range l.slots {
		l.slots[i] = &slot{sem: make(chan struct{}, 1), idx: -1}
	}
	for _, s := range l.servers {
		if o.BindDN != "" && !s.ldaps && !o.StartTLS && !secret.Local(s.host) {
			l.log.Warn("bind password is sent in clear: use ldaps:// or StartTLS", "uri", s.uri)
		}
	}
	return l, nil
}

// CheckURI checks an LDAP URL as Options.URIs takes it (RFC 4516): the
// scheme ldap or ldaps, a host and an optional port from 1 to 65535, and
// nothing else: the base DN, scope, filter and attribute are options of
// their own. The error quotes raw; NewLDAP reports the same errors,
// prefixed with "uri".
func CheckURI(raw string) error {
	_, err := parseURI(raw)
	return err
}

// parseURI is CheckURI returning the parsed URL.
func parseURI(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		if inner := errors.Unwrap(err); inner != nil {
			err = inner // url.Error repeats raw
		}
		return nil, fmt.Errorf("%q: %w", raw, err)
	}
	switch {
	case u.Scheme != "ldap" && u.Scheme != "ldaps":
		return nil, fmt.Errorf("%q: scheme must be ldap or ldaps", raw)
	case u.Hostname() == "":
		return nil, fmt.Errorf("%q: no host", raw)
	case (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		return nil, fmt.Errorf("%q: only scheme, host and port are allowed; the base DN, filter and attribute are set on their own", raw)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("%q: port must be 1-65535", raw)
		}
	}
	return u, nil
}

// newServer parses one URI (see CheckURI).
func newServer(raw string, base *tls.Config) (*server, error) {
	u, err := parseURI(raw)
	if err != nil {
		return nil, fmt.Errorf("uri %w", err)
	}
	s := &server{uri: raw, host: u.Hostname()}
	port := "389"
	if u.Scheme == "ldaps" {
		port = "636"
		s.ldaps = true
	}
	if u.Port() != "" {
		port = u.Port()
	}
	s.addr = net.JoinHostPort(s.host, port)
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if base != nil {
		tc = base.Clone()
	}
	if tc.ServerName == "" {
		tc.ServerName = s.host
	}
	s.tls = tc
	return s, nil
}

// ValidAttribute reports whether a is an attribute description (RFC 4512
// section 2.5): a descriptor, which starts with a letter, or a numeric
// OID, which starts with a digit, then letters, digits, '-' and '.', with
// options after ';'.
func ValidAttribute(a string) bool {
	if a == "" || !isAlnum(a[0]) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if c := a[i]; !isAlnum(c) && c != '-' && c != '.' && c != ';' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// Lookup returns the hosts for user. It fails with route.ErrUnknownUser
// (invalid login, no entry, or a filter that needs a domain the login
// lacks), route.ErrAmbiguous (two entries or more), route.ErrNoHost (the
// entry has no value) or route.ErrUnavailable (no server answered, or ctx
// ended). Servers that fail are skipped for RetryDownAfter, so while the
// directory is down Lookup fails at once.
func (l *LDAP) Lookup(ctx context.Context, user string) (route.Result, error) {
	if err := validateLogin(user); err != nil {
		return route.Result{}, invalidLogin(err)
	}
	filter, ok := l.filter.expand(user)
	if !ok {
		return route.Result{}, fmt.Errorf("ldapmap: lookup %q: login has no domain for %%d: %w", user, route.ErrUnknownUser)
	}
	if l.closed.Load() {
		return route.Result{}, fmt.Errorf("ldapmap: lookup %q: %w: %w", user, errClosed, route.ErrUnavailable)
	}
	req := &ldap.SearchRequest{
		BaseDN:       l.opts.BaseDN,
		Scope:        l.opts.Scope.ldapScope(),
		DerefAliases: ldap.NeverDerefAliases,
		SizeLimit:    searchSizeLimit,
		TimeLimit:    l.timeLimit,
		Filter:       filter,
		Attributes:   l.attrs,
	}
	s := l.slots[int(l.next.Add(1)-1)%len(l.slots)]

	// skip marks servers this lookup is done with; retried marks servers
	// whose pooled connection failed and was replaced once already.
	skip := make([]bool, len(l.servers))
	retried := make([]bool, len(l.servers))
	var lastErr error
	for {
		c, idx, fresh, err := l.conn(ctx, s, skip)
		if err != nil {
			if ctx.Err() != nil {
				return route.Result{}, fmt.Errorf("ldapmap: lookup %q: %w: %w", user, ctx.Err(), route.ErrUnavailable)
			}
			switch {
			case lastErr == nil:
				lastErr = err
			case !errors.Is(err, errAllDown):
				lastErr = fmt.Errorf("%w; %w", lastErr, err)
			}
			return route.Result{}, fmt.Errorf("ldapmap: lookup %q: %w: %w", user, lastErr, route.ErrUnavailable)
		}
		srv := l.servers[idx]
		res, err := l.search(ctx, c, req)
		if err == nil {
			return res, nil
		}
		var se *searchError
		if !errors.As(err, &se) {
			// An answer: unknown, ambiguous or no host.
			return route.Result{}, fmt.Errorf("ldapmap: lookup %q: %w", user, err)
		}
		if ctx.Err() != nil {
			return route.Result{}, fmt.Errorf("ldapmap: lookup %q: %w: %w", user, ctx.Err(), route.ErrUnavailable)
		}
		lastErr = fmt.Errorf("%s: %w", srv.uri, se.err)
		switch se.kind {
		case failConn:
			l.drop(s, c)
			if fresh || retried[idx] {
				l.markDown(srv, se.err)
				skip[idx] = true
			} else {
				// A pooled connection may have been closed by the server
				// while idle: reconnect once before blaming the server.
				retried[idx] = true
			}
		case failServer:
			// The server answered but is unwilling (busy, unavailable,
			// timed out): let the others try, and skip it for a while.
			l.drop(s, c)
			l.markDown(srv, se.err)
			skip[idx] = true
		case failResult:
			// A result code that another replica may not give (no such
			// base, access denied): try the next without marking down.
			l.log.Error("ldap search failed", "uri", srv.uri, "user", user, "err", se.err)
			skip[idx] = true
		}
	}
}

// failure kinds of a search, see searchError.
const (
	failConn   = iota // the connection broke: reconnect, then mark down
	failServer        // the server failed or timed out: mark down
	failResult        // the server answered with an error: try the next
)

// searchError is a search that gave no answer; Lookup tries elsewhere.
type searchError struct {
	kind int
	err  error
}

func (e *searchError) Error() string { return e.err.Error() }
func (e *searchError) Unwrap() error { return e.err }

// search runs req on c and turns its entries into an answer. Errors that
// are answers wrap route sentinels; the others are *searchError.
func (l *LDAP) search(ctx context.Context, c *ldap.Conn, req *ldap.SearchRequest) (route.Result, error) {
	if c.IsClosing() {
		return route.Result{}, &searchError{failConn, errConnClosed}
	}
	sctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	resp := c.SearchAsync(sctx, req, searchResultBuffer)
	var entries []*ldap.Entry
	for resp.Next() {
		if e := resp.Entry(); e != nil {
			entries = append(entries, e)
			if len(entries) > searchSizeLimit {
				// A server that ignores the size limit: enough to know.
				cancel()
				break
			}
		}
	}
	err := resp.Err()
	switch {
	case len(entries) >= 2 || ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded):
		dns := make([]string, len(entries))
		for i, e := range entries {
			dns[i] = e.DN
		}
		l.log.Error("directory has more than one entry for a login; refusing it",
			"filter", req.Filter, "base", req.BaseDN, "dns", dns)
		return route.Result{}, fmt.Errorf("entries %s: %w", strings.Join(dns, "; "), route.ErrAmbiguous)
	case sctx.Err() != nil:
		// SearchAsync reports cancellation as a clean end, so whatever
		// arrived may be incomplete.
		if ctx.Err() != nil {
			return route.Result{}, &searchError{failServer, ctx.Err()}
		}
		return route.Result{}, &searchError{failServer, fmt.Errorf("search timed out after %v", l.timeout)}
	case err != nil:
		return route.Result{}, classify(c, err)
	case c.IsClosing():
		// SearchAsync ends without an error when it finds the connection
		// closing before it sends the request: no entries then does not
		// mean no user. (Closed after a complete answer, this costs a
		// retry, never a wrong answer.)
		return route.Result{}, &searchError{failConn, errConnClosed}
	case len(entries) == 0:
		return route.Result{}, route.ErrUnknownUser
	}
	e := entries[0]
	var hosts []string
	for _, v := range e.GetEqualFoldAttributeValues(req.Attributes[0]) {
		if v = strings.TrimSpace(v); v != "" {
			hosts = append(hosts, v)
		}
	}
	if len(hosts) == 0 {
		return route.Result{}, fmt.Errorf("entry %s: %w", e.DN, route.ErrNoHost)
	}
	return route.Result{Hosts: hosts, DN: e.DN, Source: "ldap", Fetched: time.Now()}, nil
}

// classify sorts a failed search by what Lookup should do next.
func classify(c *ldap.Conn, err error) error {
	switch {
	case c.IsClosing() || ldap.IsErrorWithCode(err, ldap.ErrorNetwork):
		return &searchError{failConn, err}
	case ldap.IsErrorAnyOf(err, ldap.LDAPResultBusy, ldap.LDAPResultUnavailable,
		ldap.LDAPResultUnwillingToPerform, ldap.LDAPResultTimeLimitExceeded,
		ldap.LDAPResultAdminLimitExceeded, ldap.LDAPResultOther):
		return &searchError{failServer, err}
	default:
		var le *ldap.Error
		if errors.As(err, &le) {
			return &searchError{failResult, err}
		}
		// Not a result from the server (a decoding error): the
		// connection's state is unknown.
		return &searchError{failConn, err}
	}
}

// conn returns a live connection for s, preferring servers in order. It
// keeps s's pooled connection unless an earlier server may be tried (fail
// back), dials when the pooled one is dead, and reports whether the
// connection is fresh. Servers in skip are not used.
func (l *LDAP) conn(ctx context.Context, s *slot, skip []bool) (c *ldap.Conn, idx int, fresh bool, err error) {
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, -1, false, ctx.Err()
	}
	defer func() { <-s.sem }()

	var lastErr error
	for i, srv := range l.servers {
		if skip[i] {
			continue
		}
		if i == s.idx && s.conn != nil && !s.conn.IsClosing() {
			return s.conn, i, false, nil
		}
		if !l.mayTry(srv) {
			continue
		}
		nc, err := l.dial(ctx, srv)
		if err != nil {
			if ctx.Err() != nil {
				// The caller gave up; that says nothing about the server.
				return nil, -1, false, ctx.Err()
			}
			l.markDown(srv, err)
			lastErr = fmt.Errorf("%s: %w", srv.uri, err)
			skip[i] = true
			continue
		}
		l.markUp(srv)
		if s.conn != nil {
			// Fail back, or replace a dead connection. Searches still
			// running on the old one fail and retry on the new one.
			s.conn.Close()
		}
		if l.closed.Load() {
			nc.Close()
			return nil, -1, false, errClosed
		}
		s.conn, s.idx = nc, i
		return nc, i, true, nil
	}
	if lastErr == nil {
		lastErr = errAllDown
	}
	return nil, -1, false, lastErr
}

// drop forgets c if it is still s's connection, and closes it.
func (l *LDAP) drop(s *slot, c *ldap.Conn) {
	s.sem <- struct{}{}
	if s.conn == c {
		s.conn, s.idx = nil, -1
	}
	<-s.sem
	c.Close()
}

// mayTry reports whether a lookup may use srv now. A server marked down is
// skipped until its time is up; then the first lookup to ask claims one
// retry by pushing the time forward, so a dead server costs one dial per
// RetryDownAfter, not one per lookup.
func (l *LDAP) mayTry(srv *server) bool {
	until := srv.downUntil.Load()
	if until == 0 {
		return true
	}
	now := time.Now().UnixNano()
	if now < until {
		return false
	}
	return srv.downUntil.CompareAndSwap(until, now+int64(l.retryDown))
}

// markDown skips srv for RetryDownAfter, logging the transition.
func (l *LDAP) markDown(srv *server, err error) {
	prev := srv.downUntil.Swap(time.Now().Add(l.retryDown).UnixNano())
	if prev == 0 {
		l.log.Warn("ldap server down", "uri", srv.uri, "retry_after", l.retryDown, "err", err)
	}
}

// markUp clears srv's down mark, logging the transition.
func (l *LDAP) markUp(srv *server) {
	if srv.downUntil.Swap(0) != 0 {
		l.log.Info("ldap server up", "uri", srv.uri)
	}
}

// aLongTimeAgo is a deadline in the past, to abort blocked I/O.
var aLongTimeAgo = time.Unix(1, 0)

// connAborter expires a connection's deadline when a context ends; its
// method runs in the goroutine context.AfterFunc starts.
type connAborter struct{ c net.Conn }

func (a connAborter) abort() { _ = a.c.SetDeadline(aLongTimeAgo) }

// dial connects to srv, runs TLS or StartTLS and binds, all within
// DialTimeout and ctx. go-ldap's own dialers would use DefaultTimeout and
// leave StartTLS without a deadline, so the socket is dialed here and the
// whole setup runs under a deadline on it.
func (l *LDAP) dial(ctx context.Context, srv *server) (*ldap.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, l.dialTimeout)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", srv.addr)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	deadline, _ := ctx.Deadline()
	if err := raw.SetDeadline(deadline); err != nil {
		raw.Close()
		return nil, fmt.Errorf("set deadline: %w", err)
	}
	stop := context.AfterFunc(ctx, connAborter{raw}.abort)
	defer stop()

	nc := raw
	if srv.ldaps {
		tc := tls.Client(raw, srv.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, fmt.Errorf("tls handshake: %w", err)
		}
		nc = tc
	}
	c := ldap.NewConn(nc, srv.ldaps)
	c.Start()
	// go-ldap's per-request timeout is a backstop only: searches end by
	// their context first (search), the setup below by the deadline.
	c.SetTimeout(l.timeout + l.dialTimeout)
	if l.opts.StartTLS {
		if err := c.StartTLS(srv.tls); err != nil {
			c.Close()
			return nil, fmt.Errorf("starttls: %w", err)
		}
	}
	if l.opts.BindDN != "" {
		// go-ldap's bind error carries the result code and diagnostic
		// message, never the password.
		if err := c.Bind(l.opts.BindDN, string(l.opts.BindPassword)); err != nil {
			c.Close()
			return nil, fmt.Errorf("bind as %s: %w", l.opts.BindDN, err)
		}
	}
	if !stop() {
		// ctx ended during setup and the deadline fired, or is about to.
		c.Close()
		return nil, fmt.Errorf("connect: %w", context.Cause(ctx))
	}
	if err := raw.SetDeadline(time.Time{}); err != nil {
		c.Close()
		return nil, fmt.Errorf("clear deadline: %w", err)
	}
	return c, nil
}

// Close closes the pooled connections. Lookups after Close fail with
// route.ErrUnavailable.
func (l *LDAP) Close() error {
	l.closed.Store(true)
	var errs []error
	for _, s := range l.slots {
		s.sem <- struct{}{}
		if s.conn != nil {
			if err := s.conn.Close(); err != nil {
				errs = append(errs, err)
			}
			s.conn, s.idx = nil, -1
		}
		<-s.sem
	}
	return errors.Join(errs...)
}
