package usertable

import (
	"net/netip"
	"testing"
	"time"
)

func TestTableSessions(t *testing.T) {
	tb := New(&Options{MaxEntries: 2})
	alice := SessionKey{"alice@example.org", "imap"}
	steps := []struct {
		k        SessionKey
		delta    int
		recorded bool
		want     int
	}{
		{alice, 1, true, 1},
		{alice, 1, true, 2},
		{alice, 0, false, 2},
		{SessionKey{"", "imap"}, 1, false, 0},
		{SessionKey{"alice@example.org", "pop3"}, 1, true, 1},
		{SessionKey{"bob@example.org", "imap"}, 1, false, 0}, // full
		{SessionKey{"alice@example.org", "pop3"}, -3, true, 0},
		{SessionKey{"bob@example.org", "imap"}, 1, true, 1}, // room again
		{alice, MaxSessions + 5, true, MaxSessions},
	}
	for i, s := range steps {
		if got := tb.SessionDelta(s.k, s.delta); got != s.recorded {
			t.Errorf("step %d: SessionDelta(%v, %d) = %v", i, s.k, s.delta, got)
		}
		if n := tb.Sessions(s.k); n != s.want {
			t.Errorf("step %d: Sessions(%v) = %d, want %d", i, s.k, n, s.want)
		}
	}
	if tb.Dropped() != 1 {
		t.Errorf("Dropped = %d, want 1", tb.Dropped())
	}
	n := 0
	tb.EachSession(func(SessionKey, int) { n++ })
	if s, _, _ := tb.Len(); n != 2 || s != 2 {
		t.Errorf("EachSession saw %d, Len %d; want 2 (zero counts are removed)", n, s)
	}
}

// TestTableFailures checks the decay: a burst of n reads n, about n/e
// after one window, and is forgotten once it fades below ForgetBelow.
func TestTableFailures(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tb := New(&Options{FailureWindow: 15 * time.Minute, ForgetBelow: 0.5})
	ip := netip.MustParseAddr("::ffff:192.0.2.7") // mapped: counted as 192.0.2.7
	for range 10 {
		tb.LoginFailed(ip, "alice@example.org", now)
	}
	tb.LoginFailed(netip.Addr{}, "bob@example.org", now)
	if a, u := tb.IPScore(netip.MustParseAddr("192.0.2.7"), now), tb.UserScore("alice@example.org", now); a != 10 || u != 10 {
		t.Errorf("scores = %v, %v; want 10, 10", a, u)
	}
	if _, ips, users := tb.Len(); ips != 1 || users != 2 {
		t.Errorf("Len = %d addresses, %d users; want 1, 2", ips, users)
	}
	later := now.Add(15 * time.Minute)
	if a := tb.IPScore(ip, later); a < 3.6 || a > 3.7 { // 10/e = 3.68
		t.Errorf("after one window: %v, want 10/e", a)
	}
	var users []string
	tb.EachUserScore(later, func(u string, _ float64) { users = append(users, u) })
	if len(users) != 1 || users[0] != "alice@example.org" {
		t.Errorf("EachUserScore = %v, want alice only (bob's 1/e is below 0.5)", users)
	}
	tb.Sweep(now.Add(75 * time.Minute))
	if _, ips, users := tb.Len(); ips != 0 || users != 0 {
		t.Errorf("faded counts not swept: %d addresses, %d users", ips, users)
	}
}

func TestTableEvictsLowScore(t *testing.T) {
	now := time.Now()
	tb := New(&Options{MaxEntries: 2, FailureWindow: time.Minute})
	a, b, c := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3")
	for range 5 {
		tb.LoginFailed(a, "", now)
	}
	tb.LoginFailed(b, "", now)
	tb.LoginFailed(c, "", now)
	if tb.IPScore(a, now) != 5 || tb.IPScore(b, now) != 0 || tb.IPScore(c, now) != 1 || tb.Dropped() != 1 {
		t.Errorf("after eviction: a %v, b %v, c %v, dropped %d; want 5, 0, 1, 1",
			tb.IPScore(a, now), tb.IPScore(b, now), tb.IPScore(c, now), tb.Dropped())
	}
}
