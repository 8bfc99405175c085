package router

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net/netip"
	"switchboard/conncache"
	"switchboard/route"
	"time"
)

// Defaults for Options fields left zero. They are exported so that the
// configuration fills in, documents and checks the same values the
// server uses; each is read by one accessor below.
const (
	// DefaultPreauthTimeout bounds the wait for each command before login.
	DefaultPreauthTimeout = 60 * time.Second
	// DefaultIdleTimeout ends an idle logged-in session. RFC 9051 section
	// 5.4: an inactivity timer must be at least 30 minutes after login;
	// one more minute leaves slack for IDLE refreshes.
	DefaultIdleTimeout = 31 * time.Minute
	// DefaultDialTimeout bounds connecting to a backend, TLS included.
	DefaultDialTimeout = 3 * time.Second
	// DefaultLoginTimeout bounds the backend's greeting and login.
	DefaultLoginTimeout = 15 * time.Second
	// DefaultLookupTimeout bounds a map lookup.
	DefaultLookupTimeout = 5 * time.Second
	// DefaultAuthFailDelay is the time from a login command to a failed
	// answer: Dovecot's own auth_failure_delay default, which Switchboard
	// takes over (docs/dovecot.md asks backends to set theirs to 0).
	DefaultAuthFailDelay = 2 * time.Second
	// DefaultMaxPreauthErrors is how many bad commands before login earn
	// a BYE.
	DefaultMaxPreauthErrors = 3
)

const (
	// handshakeTimeout bounds a client's TLS handshake.
	handshakeTimeout = 15 * time.Second
	// byeWriteTimeout bounds writing a final BYE to a client.
	byeWriteTimeout = 2 * time.Second
)

// TLSMode says how a listener uses TLS.
type TLSMode int

const (
	// TLSStartTLS listens in plaintext and offers STARTTLS (IMAP) or STLS
	// (POP3).
	TLSStartTLS TLSMode = iota
	// TLSImplicit starts TLS at once (993, 995).
	TLSImplicit
	// TLSNone offers no TLS at all; only trusted networks may log in.
	TLSNone
)

func (m TLSMode) String() string {
	switch m {
	case TLSImplicit:
		return "implicit"
	case TLSNone:
		return "none"
	}
	return "starttls"
}

// ListenerConfig describes one listening socket.
type ListenerConfig struct {
	// Name is used in logs; empty means "<protocol>-<addr>".
	Name string
	// Protocol is route.IMAP or route.POP3.
	Protocol string
	// Addr is the "host:port" to listen on.
	Addr string
	TLS  TLSMode
	// ProxyProtocol makes the listener expect a PROXY protocol header
	// (v1 or v2) and take the client's address from it. Connections from
	// addresses outside ProxyFrom are closed.
	ProxyProtocol bool
	ProxyFrom     []netip.Prefix
	// Cache serves the listener's IMAP logins from Options.Pool and parks
	// the backend connection at LOGOUT (the webmail connection cache).
	// Its sessions are relayed through the command follower instead of
	// the zero-copy splice.
	Cache bool
}

// Pool parks logged-in backend connections for cached listeners; a
// *conncache.Cache.
type Pool interface {
	Key(account, backend, password string) conncache.Key
	Take(k conncache.Key) (c conncache.Conn, caps []byte, loggedIn time.Time, ok bool)
	Put(k conncache.Key, c conncache.Conn, caps []byte, loggedIn time.Time) bool
	RefusePark(reason string)
}

// Gate decides whether a login may go on, and is told how logins and
// sessions end: it is where holds, per-user session limits and
// brute-force protection plug in.
type Gate interface {
	// Admit is called once the user name is known, before the map is
	// asked; it may block to hold a login until ctx ends. A returned
	// *route.Refusal is answered to the client; any other error as
	// [UNAVAILABLE].
	Admit(ctx context.Context, l *route.Login) error
	// Done reports a login's outcome: route.OutcomeOK, route.OutcomeAuthFailed,
	// route.OutcomeUnavailable or route.OutcomeRefused.
	Done(l *route.Login, outcome route.Outcome)
	// Ended is called when a session that logged in (Done with
	// route.OutcomeOK) is over.
	Ended(l *route.Login)
}

// Rechecker is implemented by gates that judge a login once more after
// the backend has accepted it, just before the client is told: a hold set
// meanwhile (a mailbox move's) refuses it, and the backend connection is
// closed.
type Rechecker interface {
	Recheck(l *route.Login) error
}

// Options configure a Server. The zero value of each field is documented.
type Options struct {
	// Hostname appears in greetings. Empty means "Switchboard".
	Hostname string
	// Mapper finds a user's backends. Required.
	Mapper route.Mapper
	// Hosts resolves host values to addresses. Nil means an empty map
	// (values are dialled as names on the default ports).
	Hosts *route.HostMap
	// TLS is the server TLS configuration for implicit and STARTTLS
	// listeners. Required when such a listener is used.
	TLS *tls.Config
	// BackendTLS, when set, makes backend connections implicit TLS with
	// this client configuration. ServerName is filled from the backend
	// address when empty.
	BackendTLS *tls.Config
	// TrustedNets may log in with a plaintext password without TLS. Nil
	// means nobody.
	TrustedNets []netip.Prefix
	// PreauthTimeout bounds the wait for each command before login; zero
	// means 60s.
	PreauthTimeout time.Duration
	// IdleTimeout ends a logged-in session when neither side has sent
	// anything for this long; zero means 31m.
	IdleTimeout time.Duration
	// DialTimeout bounds connecting to a backend; zero means 3s.
	DialTimeout time.Duration
	// LoginTimeout bounds the backend's greeting and login; zero means 15s.
	LoginTimeout time.Duration
	// LookupTimeout bounds a map lookup; zero means 5s.
	LookupTimeout time.Duration
	// AuthFailDelay is the time from a login command to a failed answer,
	// the same for unknown users and wrong passwords; zero means 2s,
	// negative means none.
	AuthFailDelay time.Duration
	// MaxPreauthErrors is how many bad commands before login earn a BYE;
	// zero means 3.
	MaxPreauthErrors int
	// Gate, if set, admits or refuses logins (holds, limits).
	Gate Gate
	// Pool is the webmail connection cache of listeners with Cache set;
	// nil means such listeners log in and splice as the others do.
	Pool Pool
	// BackendDown, if set, reports backends known to be down; logins skip
	// them and fail at once when none is left.
	BackendDown func(host string) bool
	// PreDial is how many connections to each recently used backend are
	// kept dialled and greeted, ready for the next login; zero means 2,
	// negative disables pre-dialling.
	PreDial int
	// Logger receives one line per session; nil means slog.Default().
	Logger *slog.Logger
}

func (o *Options) preauthTimeout() time.Duration {
	return orDefault(o.PreauthTimeout, DefaultPreauthTimeout)
}
func (o *Options) hostname() string {
	if o.Hostname == "" {
		return "Switchboard"
	}
	return o.Hostname
}
func (o *Options) idleTimeout() time.Duration  { return orDefault(o.IdleTimeout, DefaultIdleTimeout) }
func (o *Options) dialTimeout() time.Duration  { return orDefault(o.DialTimeout, DefaultDialTimeout) }
func (o *Options) loginTimeout() time.Duration { return orDefault(o.LoginTimeout, DefaultLoginTimeout) }
func (o *Options) lookupTimeout() time.Duration {
	return orDefault(o.LookupTimeout, DefaultLookupTimeout)
}
func (o *Options) authFailDelay() time.Duration {
	if o.AuthFailDelay < 0 {
		return 0
	}
	return orDefault(o.AuthFailDelay, DefaultAuthFailDelay)
}
func (o *Options) maxErrors() int {
	if o.MaxPreauthErrors <= 0 {
		return DefaultMaxPreauthErrors
	}
	return o.MaxPreauthErrors
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}
