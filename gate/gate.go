package gate

import (
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"switchboard/internal/usertable"
	"switchboard/route"
)

// Defaults for Options fields left zero.
const (
	// DefaultFailureDelay is the first delay once an account has failed
	// FailuresBeforeDelay times from a source; exported so that the
	// configuration fills in and checks the same value.
	DefaultFailureDelay = 2 * time.Second
	// DefaultMaxFailureDelay caps all of a login's waiting in the gate
	// (the penalty and the wait for an in-flight slot). With the 2 s
	// failure answer on top, a client waits at most about 10 s: well
	// under the 20 s some clients give a login (mbsync) and the 60 s of
	// others.
	DefaultMaxFailureDelay = 8 * time.Second
	// DefaultInFlightPerAccount caps the logins of one account under way
	// at once on a node: a mail client opening a few folder connections
	// and a phone, not a guessing run of a hundred.
	DefaultInFlightPerAccount = 8
	// DefaultInFlightPerSource caps the logins from one source address
	// under way at once on a node (not for exempt networks).
	DefaultInFlightPerSource = 32
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
	// TextBusy is the answer to a login that waited too long for others
	// of its account or source to finish.
	TextBusy = "Too many logins at once; please try again."
)

// State is what the gate reads and writes: holds, live session counts
// and failed logins. *cluster.Cluster implements it over the whole
// cluster; *Local on one node. Accounts are route.AccountKey keys;
// sources are client addresses (IPv6 counted per /64 by the State).
type State interface {
	// Held reports whether key (a folded name or an account key) is on
	// hold.
	Held(key string) bool
	// Sessions returns account's live sessions over proto ("imap",
	// "pop3").
	Sessions(account, proto string) int
	// SessionDelta changes this node's count of account's sessions.
	SessionDelta(account, proto string, delta int)
	// LoginFailed records a failed login of account from src. With
	// countSource, src's score of failed accounts grows by one if this
	// is the first recent failure of account from src.
	LoginFailed(src netip.Addr, account string, countSource bool)
	// LoginSucceeded clears the failures of account from src.
	LoginSucceeded(src netip.Addr, account string)
	// FailureScore returns the recent failures of account from src
	// (zero if account is empty), and the recent distinct accounts that
	// failed from src.
	FailureScore(src netip.Addr, account string) (pairFails, sourceFails int)
}

// Options configure a Gate. New copies them.
type Options struct {
	// IMAPSessions and POP3Sessions cap an account's live sessions per
	// protocol; zero means unlimited.
	IMAPSessions int
	POP3Sessions int
	// FailuresBeforeDelay recent failures of an account from one source
	// make the next logins of that account from that source wait
	// FailureDelay, doubled for each failure beyond. Zero never delays.
	FailuresBeforeDelay int
	// FailuresBeforeRefuse recent failures of an account from one source
	// make its next logins from there be refused with [UNAVAILABLE].
	// Logins under way count as failures until they end, so parallel
	// attempts cannot pass the limit. Zero never refuses.
	FailuresBeforeRefuse int
	// SourceFailuresBeforeDelay and SourceFailuresBeforeRefuse do the
	// same per source address, counting the distinct accounts that
	// recently failed from it (password spraying). Zero turns each off.
	// Exempt networks are not counted.
	SourceFailuresBeforeDelay  int
	SourceFailuresBeforeRefuse int
	// FailureDelay is the first delay; zero means 2s.
	FailureDelay time.Duration
	// MaxFailureDelay caps a login's whole wait in the gate (delay and
	// waiting for an in-flight slot); zero means 8s.
	MaxFailureDelay time.Duration
	// InFlightPerAccount caps the logins of one account under way at once
	// on this node; the next wait for one to end. Zero means 8, negative
	// unlimited.
	InFlightPerAccount int
	// InFlightPerSource does the same per source address, except for
	// ExemptNetworks. Zero means 32, negative unlimited.
	InFlightPerSource int
	// ExemptNetworks are peers exempt from the per-source limits (a
	// webmail, a trusted proxy). The client address such a peer forwards
	// (route.Login.Forwarded) is the source that counts. Nil exempts
	// nobody.
	ExemptNetworks []netip.Prefix
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
	return DefaultMaxFailureDelay
}

func (o *Options) inFlightPerAccount() int {
	return orDefault(o.InFlightPerAccount, DefaultInFlightPerAccount)
}
func (o *Options) inFlightPerSource() int {
	return orDefault(o.InFlightPerSource, DefaultInFlightPerSource)
}

// orDefault returns v, def if v is zero, or no limit (0) if v < 0.
func orDefault(v, def int) int {
	switch {
	case v < 0:
		return 0
	case v == 0:
		return def
	}
	return v
}

// Gate implements router.Gate over a State. It is safe for concurrent
// use.
type Gate struct {
	state State
	opts  Options
	log   *slog.Logger
	fl    inFlight
	names failedNames

	held, limited, refused, delayed, busy atomic.Uint64
}

// Stats count the gate's decisions since New.
type Stats struct {
	Held    uint64 // refused: user on hold
	Limited uint64 // refused: too many sessions
	Refused uint64 // refused: too many failed logins
	Delayed uint64 // admitted after a delay for failed logins
	Busy    uint64 // refused: waited too long for an in-flight slot
}

// New returns a Gate over state.
func New(state State, opts *Options) *Gate {
	g := &Gate{state: state, opts: *opts, log: opts.Logger}
	if g.log == nil {
		g.log = slog.Default()
	}
	g.fl.init()
	g.names.m = make(map[string]string)
	return g
}

// maxFailedNames bounds failedNames.
const maxFailedNames = 10_000

// failedNames remembers, for names that recently failed on this node, the
// account each named: a name on hold is refused before the map is asked,
// and this gives its refusal the delay its account's failures would.
type failedNames struct {
	mu sync.Mutex
	m  map[string]string // nameKey → account
}

func (n *failedNames) note(name, account string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.m[name]; !ok && len(n.m) >= maxFailedNames {
		for k := range n.m { // any one: map order is random
			delete(n.m, k)
			break
		}
	}
	n.m[name] = account
}

func (n *failedNames) account(name string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.m[name]
}

// nameKey is the form of a typed name under which holds by name are
// looked up.
func nameKey(user string) string { return route.Fold(strings.TrimSpace(user)) }

// exempt reports whether ip is in ExemptNetworks.
func (g *Gate) exempt(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range g.opts.ExemptNetworks {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// source returns the address a login counts against: the client's, or
// the one an exempt peer forwarded.
func (g *Gate) source(l *route.Login) netip.Addr {
	c := l.Client.Addr().Unmap()
	if l.Forwarded.IsValid() && g.exempt(c) {
		return l.Forwarded.Unmap()
	}
	return c
}

// Admit is the cheap check before the user map is asked, on what is
// known then: the typed name and the source. It refuses a name on hold
// and a source that failed for too many accounts, and reserves an
// in-flight slot of the source (waiting for one if all are taken). It
// sets l.Source.
func (g *Gate) Admit(ctx context.Context, l *route.Login) error {
	l.Source = g.source(l)
	l.Deadline = time.Now().Add(g.opts.maxFailureDelay())
	if name := nameKey(l.User); g.state.Held(name) {
		g.held.Add(1)
		g.log.Debug("gate: held", "user", l.User)
		var pf, sf int
		if acct := g.names.account(name); acct != "" {
			pf, sf = g.state.FailureScore(l.Source, acct)
		}
		if g.exempt(l.Source) {
			sf = 0
		}
		return &route.Refusal{Code: "UNAVAILABLE", Text: TextHeld, Delay: g.penalty(pf, sf)}
	}
	if g.exempt(l.Source) {
		return nil
	}
	_, sf := g.state.FailureScore(l.Source, "")
	if r := g.opts.SourceFailuresBeforeRefuse; r > 0 && sf >= r {
		g.refused.Add(1)
		g.log.Debug("gate: too many failed accounts from the source", "source", l.Source, "source_failures", sf)
		return &route.Refusal{Code: "UNAVAILABLE", Text: TextFailures, Delay: g.delay(sf, g.opts.SourceFailuresBeforeDelay)}
	}
	n := g.opts.inFlightPerSource()
	if n == 0 {
		return nil
	}
	return g.fl.reserveSource(ctx, l, n, l.Deadline, g)
}

// AdmitAccount judges a login again once the map has named its account
// (l.Account, set by the caller; a name the map does not know has one
// too, see route.AccountKey, and is judged alike). It refuses an account
// on hold, one that failed too often from this source and one at its
// session limit; it reserves an in-flight slot of the account, waiting
// while the account's logins under way, counted as failures, would reach
// FailuresBeforeRefuse; and it delays a login after a few failures. All
// its waiting, Admit's included, ends MaxFailureDelay after Admit was
// called, or with ctx.
//
// A refusal carries as its Delay the delay a failed login would have
// waited, so that it is not answered sooner than a wrong password.
func (g *Gate) AdmitAccount(ctx context.Context, l *route.Login) error {
	deadline := l.Deadline
	if deadline.IsZero() { // Admit was not called
		deadline = time.Now().Add(g.opts.maxFailureDelay())
	}
	if l.Account == "" {
		l.Account = route.AccountKey("", l.User)
	}
	exempt := g.exempt(l.Source)
	pf, sf, err := g.fl.reserveAccount(ctx, l, deadline, exempt, g)
	if err != nil {
		return err
	}
	d := g.penalty(pf, sf)
	if g.state.Held(l.Account) {
		g.held.Add(1)
		g.log.Debug("gate: held", "user", l.User, "account", l.Account)
		return &route.Refusal{Code: "UNAVAILABLE", Text: TextHeld, Delay: d}
	}
	if limit := g.limit(l.Protocol); limit > 0 {
		if n := g.state.Sessions(l.Account, l.Protocol); n >= limit {
			g.limited.Add(1)
			g.log.Debug("gate: session limit", "user", l.User, "account", l.Account, "proto", l.Protocol, "sessions", n, "limit", limit)
			return &route.Refusal{Code: "LIMIT", Text: TextLimit, Delay: d}
		}
	}
	if d = min(d, time.Until(deadline)); d > 0 {
		g.delayed.Add(1)
		g.log.Debug("gate: delaying", "user", l.User, "source", l.Source, "delay", d, "failures", pf, "source_failures", sf)
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// refuseFailures reports whether pf failures of an account from a source,
// or sf failed accounts from the source (unless exempt), refuse a login,
// and returns the refusal.
func (g *Gate) refuseFailures(l *route.Login, pf, sf int) *route.Refusal {
	r, sr := g.opts.FailuresBeforeRefuse, g.opts.SourceFailuresBeforeRefuse
	if (r > 0 && pf >= r) || (sr > 0 && sf >= sr) {
		g.refused.Add(1)
		g.log.Debug("gate: too many failures", "user", l.User, "account", l.Account, "source", l.Source, "failures", pf, "source_failures", sf)
		return &route.Refusal{Code: "UNAVAILABLE", Text: TextFailures, Delay: g.penalty(pf, sf)}
	}
	return nil
}

// penalty is how long a login waits after pf failures of its account
// from its source and sf failed accounts from the source.
func (g *Gate) penalty(pf, sf int) time.Duration {
	return max(g.delay(pf, g.opts.FailuresBeforeDelay), g.delay(sf, g.opts.SourceFailuresBeforeDelay))
}

// Recheck refuses a login the backend has accepted if its name or
// account was put on hold since it was admitted: a mailbox move's hold
// covers the logins already on their way, so none lands on the old
// backend after it.
func (g *Gate) Recheck(l *route.Login) error {
	if g.state.Held(nameKey(l.User)) || (l.Account != "" && g.state.Held(l.Account)) {
		g.held.Add(1)
		return &route.Refusal{Code: "UNAVAILABLE", Text: TextHeld}
	}
	return nil
}

// delay returns how long a login waits after n recent failures, at is
// the count from which it does.
func (g *Gate) delay(n, at int) time.Duration {
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

// Done ends what Admit and AdmitAccount reserved for l, and records its
// outcome: a failed login (wrong password or unknown user) against the
// account from its source, a successful one as a live session that also
// clears the account's failures from that source. Refusals and
// unavailable backends count as neither.
func (g *Gate) Done(l *route.Login, o route.Outcome) {
	// The failure is counted before the attempt's slot is given back,
	// both under the slots' lock: a reservation reads the score and the
	// slots under it too, so it never sees the attempt in neither.
	g.fl.mu.Lock()
	switch o {
	case route.OutcomeAuthFailed:
		g.state.LoginFailed(l.Source, account(l), !g.exempt(l.Source))
	case route.OutcomeOK:
		acct := account(l)
		g.state.LoginSucceeded(l.Source, acct)
		g.state.SessionDelta(acct, l.Protocol, 1)
	}
	g.fl.releaseLocked(l)
	g.fl.mu.Unlock()
	if o == route.OutcomeAuthFailed {
		g.names.note(nameKey(l.User), account(l))
	}
}

// account returns l's account key, or the key of its typed name if no
// account was set.
func account(l *route.Login) string {
	if l.Account != "" {
		return l.Account
	}
	return route.AccountKey("", l.User)
}

// Ended counts a logged-in session as over.
func (g *Gate) Ended(l *route.Login) {
	g.state.SessionDelta(account(l), l.Protocol, -1)
}

// Stats returns the counters.
func (g *Gate) Stats() Stats {
	return Stats{Held: g.held.Load(), Limited: g.limited.Load(), Refused: g.refused.Load(),
		Delayed: g.delayed.Load(), Busy: g.busy.Load()}
}

// What Login.Reserved records.
const (
	reservedSource  = 1 << iota // a slot of the source
	reservedAccount             // a slot of the account and of the (account, source) pair
)

// inFlight counts the logins under way on this node, per source, per
// account and per (account, source), from their admission until Done.
type inFlight struct {
	mu      sync.Mutex
	source  map[netip.Addr]int
	account map[string]int
	pair    map[usertable.PairKey]int
	// settled is closed, and replaced, when a login ends while others
	// wait for a slot (waiting says how many): they look again.
	settled chan struct{}
	waiting int
}

func (f *inFlight) init() {
	f.source = make(map[netip.Addr]int)
	f.account = make(map[string]int)
	f.pair = make(map[usertable.PairKey]int)
	f.settled = make(chan struct{})
}

// wait blocks until a login ends, ctx ends or deadline passes; it
// reports whether to look again. Caller holds mu, which wait releases.
func (f *inFlight) wait(ctx context.Context, deadline time.Time) (bool, error) {
	ch := f.settled
	f.waiting++
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.waiting--
		f.mu.Unlock()
	}()
	d := time.Until(deadline)
	if d <= 0 {
		return false, nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return true, nil
	case <-t.C:
		return false, nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// reserveSource takes one of max slots of l.Source, waiting until
// deadline for one.
func (f *inFlight) reserveSource(ctx context.Context, l *route.Login, limit int, deadline time.Time, g *Gate) error {
	src := usertable.SourceKey(l.Source)
	for {
		f.mu.Lock()
		if f.source[src] < limit {
			f.source[src]++
			l.Reserved |= reservedSource
			f.mu.Unlock()
			return nil
		}
		again, err := f.wait(ctx, deadline)
		if err != nil {
			return err
		}
		if !again {
			g.busy.Add(1)
			g.log.Debug("gate: too many logins under way from the source", "source", l.Source)
			return &route.Refusal{Code: "UNAVAILABLE", Text: TextBusy}
		}
	}
}

// reserveAccount takes a slot of l's account and of its (account,
// source) pair, waiting until deadline while the account has all its
// slots taken, or while its failures from the source and its logins
// under way from there, all counted as failures, would reach
// FailuresBeforeRefuse. It returns the failure scores it last read.
func (f *inFlight) reserveAccount(ctx context.Context, l *route.Login, deadline time.Time, exempt bool, g *Gate) (pf, sf int, err error) {
	k := usertable.PairKey{Account: l.Account, Source: usertable.SourceKey(l.Source)}
	limit, refuseAt := g.opts.inFlightPerAccount(), g.opts.FailuresBeforeRefuse
	for {
		pf, sf = g.state.FailureScore(l.Source, l.Account)
		if exempt {
			sf = 0
		}
		if r := g.refuseFailures(l, pf, sf); r != nil {
			return pf, sf, r
		}
		f.mu.Lock()
		// Read again under the lock, with the slots: Done counts a
		// failure and gives its slot back under it.
		pf, _ = g.state.FailureScore(l.Source, l.Account)
		if (limit == 0 || f.account[k.Account] < limit) && (refuseAt == 0 || pf+f.pair[k] < refuseAt) {
			f.account[k.Account]++
			f.pair[k]++
			l.Reserved |= reservedAccount
			f.mu.Unlock()
			return pf, sf, nil
		}
		again, err := f.wait(ctx, deadline)
		if err != nil {
			return pf, sf, err
		}
		if !again {
			g.busy.Add(1)
			g.log.Debug("gate: too many logins under way for the account", "user", l.User, "account", l.Account, "source", l.Source)
			return pf, sf, &route.Refusal{Code: "UNAVAILABLE", Text: TextBusy, Delay: g.penalty(pf, sf)}
		}
	}
}

// releaseLocked gives back l's slots and wakes those waiting for one;
// f.mu is held.
func (f *inFlight) releaseLocked(l *route.Login) {
	if l.Reserved == 0 {
		return
	}
	if l.Reserved&reservedSource != 0 {
		decr(f.source, usertable.SourceKey(l.Source))
	}
	if l.Reserved&reservedAccount != 0 {
		decr(f.account, l.Account)
		decr(f.pair, usertable.PairKey{Account: l.Account, Source: usertable.SourceKey(l.Source)})
	}
	l.Reserved = 0
	if f.waiting > 0 {
		close(f.settled)
		f.settled = make(chan struct{})
	}
}

func decr[K comparable](m map[K]int, k K) {
	if m[k] <= 1 {
		delete(m, k)
	} else {
		m[k]--
	}
}
