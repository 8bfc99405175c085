package gate

import (
	"context"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"switchboard/route"
)

// Defaults for Options fields left zero.
const (
	// DefaultFailureDelay is the first delay once a login has failed
	// FailuresBeforeDelay times; exported so that the configuration fills
	// in and checks the same value.
	DefaultFailureDelay = 2 * time.Second
	// defaultMaxFailureDelay caps the growing delay: well below the
	// 60-second pre-login timeouts of clients and of the router.
	defaultMaxFailureDelay = 30 * time.Second
)

// Answers to the client. They must not say more than a login failure
// would: nothing about whether the user exists.
const (
	// TextHeld is the answer to a login of a user on hold.
	TextHeld = "Your mailbox is being moved; please try again in a minute."
	// TextLimit is the answer to a login over the session limit.
	TextLimit = "Too many sessions for this account; please close some and try again."
	// TextFailures is the answer once too many logins failed.
	TextFailures = "Too many failed logins; please try again later."
)

// State is what the gate reads and writes: holds, live session counts
// and failed logins. *cluster.Cluster implements it over the whole
// cluster; *Local on one node.
type State interface {
	// Held reports whether user is on hold.
	Held(user string) bool
	// Sessions returns user's live sessions over proto ("imap", "pop3").
	Sessions(user, proto string) int
	// SessionDelta changes this node's count of user's sessions.
	SessionDelta(user, proto string, delta int)
	// LoginFailed records a failed login from ip for user.
	LoginFailed(ip netip.Addr, user string)
	// FailureScore returns the recent failures from ip and for user.
	FailureScore(ip netip.Addr, user string) (ipFails, userFails int)
}

// Options configure a Gate. New copies them.
type Options struct {
	// IMAPSessions and POP3Sessions cap a user's live sessions per
	// protocol; zero means unlimited.
	IMAPSessions int
	POP3Sessions int
	// FailuresBeforeDelay recent failures (from the client's address or
	// for the user, whichever is more) make a login wait FailureDelay,
	// doubled for each failure beyond, before it goes on. Zero never
	// delays.
	FailuresBeforeDelay int
	// FailuresBeforeRefuse recent failures make a login be refused with
	// [UNAVAILABLE]. Zero never refuses.
	FailuresBeforeRefuse int
	// FailureDelay is the first delay; zero means 2s.
	FailureDelay time.Duration
	// MaxFailureDelay caps the delay; zero means 30s.
	MaxFailureDelay time.Duration
	// Logger receives a debug line per refusal or delay; nil means
	// slog.Default().
	Logger *slog.Logger
}

func (o *Options) failureDelay() time.Duration {
	if o.FailureDelay > 0 {
		return o.FailureDelay
	}
	return DefaultFailureDelay
}

func (o *Options) maxFailureDelay() time.Duration {
	if o.MaxFailureDelay > 0 {
		return o.MaxFailureDelay
	}
	return defaultMaxFailureDelay
}

// Gate implements router.Gate over a State. It is safe for concurrent
// use.
type Gate struct {
	state State
	opts  Options
	log   *slog.Logger

	held, limited, refused, delayed atomic.Uint64
}

// Stats count the gate's decisions since New.
type Stats struct {
	Held    uint64 // refused: user on hold
	Limited uint64 // refused: too many sessions
	Refused uint64 // refused: too many failed logins
	Delayed uint64 // admitted after a delay for failed logins
}

// New returns a Gate over state.
func New(state State, opts *Options) *Gate {
	g := &Gate{state: state, opts: *opts, log: opts.Logger}
	if g.log == nil {
		g.log = slog.Default()
	}
	return g
}

// Admit refuses a held user, a client or user with too many recent
// failures and a user at the session limit; it delays, then admits, one
// with a few failures. A delay ends early with ctx.
func (g *Gate) Admit(ctx context.Context, l *route.Login) error {
	user := route.Fold(l.User)
	if g.state.Held(user) {
		g.held.Add(1)
		g.log.Debug("gate: held", "user", user)
		return &route.Refusal{Code: "UNAVAILABLE", Text: TextHeld}
	}
	ipFails, userFails := g.state.FailureScore(l.Client.Addr(), user)
	n := max(ipFails, userFails)
	if r := g.opts.FailuresBeforeRefuse; r > 0 && n >= r {
		g.refused.Add(1)
		g.log.Debug("gate: too many failures", "user", user, "client", l.Client.Addr(), "ip_failures", ipFails, "user_failures", userFails)
		return &route.Refusal{Code: "UNAVAILABLE", Text: TextFailures, Delay: g.opts.failureDelay()}
	}
	if d := g.delay(n); d > 0 {
		g.delayed.Add(1)
		g.log.Debug("gate: delaying", "user", user, "client", l.Client.Addr(), "delay", d, "ip_failures", ipFails, "user_failures", userFails)
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
	if limit := g.limit(l.Protocol); limit > 0 {
		if n := g.state.Sessions(user, l.Protocol); n >= limit {
			g.limited.Add(1)
			g.log.Debug("gate: session limit", "user", user, "proto", l.Protocol, "sessions", n, "limit", limit)
			return &route.Refusal{Code: "LIMIT", Text: TextLimit}
		}
	}
	return nil
}

// Recheck refuses a login the backend has accepted if its user was put
// on hold since Admit: a mailbox move's hold covers the logins already
// on their way, so none lands on the old backend after it.
func (g *Gate) Recheck(l *route.Login) error {
	if g.state.Held(route.Fold(l.User)) {
		g.held.Add(1)
		return &route.Refusal{Code: "UNAVAILABLE", Text: TextHeld}
	}
	return nil
}

// delay returns how long a login waits after n recent failures.
func (g *Gate) delay(n int) time.Duration {
	at := g.opts.FailuresBeforeDelay
	if at <= 0 || n < at {
		return 0
	}
	d, maxD := g.opts.failureDelay(), g.opts.maxFailureDelay()
	for i := at; i < n && d < maxD; i++ {
		d *= 2
	}
	return min(d, maxD)
}

func (g *Gate) limit(proto string) int {
	switch proto {
	case route.IMAP:
		return g.opts.IMAPSessions
	case route.POP3:
		return g.opts.POP3Sessions
	}
	return 0
}

// Done records a failed login (wrong password or unknown user) against the
// client's address and the user, and counts a successful one as a live
// session. Refusals and unavailable backends count as neither.
func (g *Gate) Done(l *route.Login, o route.Outcome) {
	switch o {
	case route.OutcomeAuthFailed:
		g.state.LoginFailed(l.Client.Addr(), route.Fold(l.User))
	case route.OutcomeOK:
		g.state.SessionDelta(route.Fold(l.User), l.Protocol, 1)
	}
}

// Ended counts a logged-in session as over.
func (g *Gate) Ended(l *route.Login) {
	g.state.SessionDelta(route.Fold(l.User), l.Protocol, -1)
}

// Stats returns the counters.
func (g *Gate) Stats() Stats {
	return Stats{Held: g.held.Load(), Limited: g.limited.Load(), Refused: g.refused.Load(), Delayed: g.delayed.Load()}
}
