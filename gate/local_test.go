package gate

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"switchboard/route"
)

// clock is a settable time for Local.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newTestLocal(window time.Duration) (*Local, *clock) {
	c := &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	l := NewLocal(window)
	l.now = c.now
	return l, c
}

func TestLocalHolds(t *testing.T) {
	l, c := newTestLocal(0)
	if l.Held("alice@example.org") {
		t.Fatal("held from the start")
	}
	l.Hold("alice@example.org", true, time.Minute)
	if !l.Held("alice@example.org") || l.Held("bob@example.org") {
		t.Fatal("hold not applied to alice alone")
	}
	if h := l.Holds(); len(h) != 1 || !h["alice@example.org"].Equal(c.t.Add(time.Minute)) {
		t.Errorf("Holds = %v", h)
	}
	c.advance(time.Minute)
	if l.Held("alice@example.org") {
		t.Error("hold outlived its ttl")
	}

	l.Hold("alice@example.org", true, 0) // default 10 min
	c.advance(9 * time.Minute)
	if !l.Held("alice@example.org") {
		t.Error("default ttl shorter than 10 min")
	}
	l.Hold("alice@example.org", false, 0)
	if l.Held("alice@example.org") {
		t.Error("release did not release")
	}

	l.Hold("bob@example.org", true, 100*time.Hour) // capped at 24 h
	c.advance(24*time.Hour + time.Second)
	if l.Held("bob@example.org") {
		t.Error("ttl not capped at 24h")
	}
	l.Hold("carol@example.org", true, time.Hour) // sweeps bob's
	if _, ok := l.holds.Expires("bob@example.org"); ok {
		t.Error("expired hold not swept")
	}
}

func TestLocalSessions(t *testing.T) {
	l, _ := newTestLocal(0)
	l.SessionDelta("alice@example.org", "imap", 1)
	l.SessionDelta("alice@example.org", "imap", 1)
	l.SessionDelta("alice@example.org", "pop3", 1)
	if n := l.Sessions("alice@example.org", "imap"); n != 2 {
		t.Errorf("imap = %d", n)
	}
	l.SessionDelta("alice@example.org", "pop3", -3)
	if n := l.Sessions("alice@example.org", "pop3"); n != 0 {
		t.Errorf("pop3 = %d, want 0 (clamped)", n)
	}
	if n, _, _ := l.table.Len(); n != 1 { // alice/imap alone
		t.Error("zero count kept")
	}
}

// TestLocalFailuresDecay checks the decay: a burst of n reads n, about
// n/e after one window, and is forgotten once it fades below one half;
// and the source's count of distinct accounts.
func TestLocalFailuresDecay(t *testing.T) {
	l, c := newTestLocal(15 * time.Minute)
	ip := netip.MustParseAddr("::ffff:192.0.2.7") // mapped: counted as 192.0.2.7
	for range 10 {
		l.LoginFailed(ip, "alice", true)
	}
	l.LoginFailed(ip, "bob", true)
	l.LoginFailed(ip, "carol", false)
	if p, s := l.FailureScore(netip.MustParseAddr("192.0.2.7"), "alice"); p != 10 || s != 2 {
		t.Errorf("score = %d, %d; want 10, 2 (alice and bob)", p, s)
	}
	if p, s := l.FailureScore(netip.Addr{}, "bob"); p != 0 || s != 0 {
		t.Errorf("no source = %d, %d; want 0, 0", p, s)
	}
	c.advance(15 * time.Minute)
	if p, _ := l.FailureScore(ip, "alice"); p != 4 { // 10/e = 3.68
		t.Errorf("after one window: %d, want 4", p)
	}
	l.LoginSucceeded(ip, "alice")
	if p, _ := l.FailureScore(ip, "alice"); p != 0 {
		t.Errorf("after a success: %d, want 0", p)
	}
	c.advance(time.Hour)
	l.LoginFailed(netip.MustParseAddr("192.0.2.8"), "dave", true) // sweeps
	if _, srcs, pairs := l.table.Len(); srcs != 1 || pairs != 1 {
		t.Errorf("faded counts not swept: %d sources, %d pairs", srcs, pairs)
	}
}

// TestAccountHolds checks that a hold by one name holds the account, so
// that a login under an alias is refused, and that a release lifts both.
func TestAccountHolds(t *testing.T) {
	l := NewLocal(time.Hour)
	mapper := route.MapperFunc(func(_ context.Context, user string) (route.Result, error) {
		switch user {
		case "alice@example.org", "a.smith@example.org":
			return route.Result{DN: "uid=Alice,dc=example,dc=org", Hosts: []string{"mx1"}}, nil
		}
		return route.Result{}, route.ErrUnknownUser
	})
	h := AccountHolds(l, mapper)
	if err := h.Hold("alice@example.org", true, time.Minute); err != nil {
		t.Fatal(err)
	}
	g := New(l, &Options{})
	alias := &route.Login{User: "a.smith@example.org", Protocol: route.IMAP, Client: netip.MustParseAddrPort("192.0.2.1:1")}
	if err := g.Admit(context.Background(), alias); err != nil {
		t.Fatalf("alias before the lookup: %v (not held by name)", err)
	}
	alias.Account = route.AccountKey("uid=Alice,dc=example,dc=org", alias.User)
	if err := g.AdmitAccount(context.Background(), alias); err == nil {
		t.Error("alias of a held account admitted")
	}
	g.Done(alias, route.OutcomeRefused)
	if err := h.Hold("nobody@example.org", true, time.Minute); err != nil || !l.Held("nobody@example.org") {
		t.Errorf("hold of an unknown name: %v", err)
	}
	h.Hold("alice@example.org", false, 0)
	if len(l.Holds()) != 1 {
		t.Errorf("after the release: %v, want only nobody's hold", l.Holds())
	}
}
