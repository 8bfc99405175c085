package gate

import (
	"net/netip"
	"testing"
	"time"
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
// n/e after one window, and is forgotten once it fades below one half.
func TestLocalFailuresDecay(t *testing.T) {
	l, c := newTestLocal(15 * time.Minute)
	ip := netip.MustParseAddr("::ffff:192.0.2.7") // mapped: counted as 192.0.2.7
	for range 10 {
		l.LoginFailed(ip, "alice@example.org")
	}
	l.LoginFailed(netip.Addr{}, "bob@example.org")
	if a, u := l.FailureScore(netip.MustParseAddr("192.0.2.7"), "alice@example.org"); a != 10 || u != 10 {
		t.Errorf("score = %d, %d; want 10, 10", a, u)
	}
	if a, u := l.FailureScore(netip.Addr{}, "bob@example.org"); a != 0 || u != 1 {
		t.Errorf("bob's score = %d, %d; want 0, 1", a, u)
	}
	c.advance(15 * time.Minute)
	if a, _ := l.FailureScore(ip, ""); a != 4 { // 10/e = 3.68
		t.Errorf("after one window: %d, want 4", a)
	}
	c.advance(time.Hour)
	l.LoginFailed(netip.MustParseAddr("192.0.2.8"), "") // sweeps
	if _, ips, users := l.table.Len(); ips != 1 || users != 0 {
		t.Errorf("faded counts not swept: %d addresses, %d users", ips, users)
	}
}
