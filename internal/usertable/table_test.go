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
// after one window, and is forgotten once it fades below ForgetBelow;
// and the keys: IPv4-mapped as IPv4, IPv6 per /64.
func TestTableFailures(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tb := New(&Options{FailureWindow: 15 * time.Minute, ForgetBelow: 0.5})
	ip := netip.MustParseAddr("::ffff:192.0.2.7") // mapped: counted as 192.0.2.7
	alice := PairKey{Account: "alice", Source: ip}
	for range 10 {
		tb.PairFailed(alice, now)
		tb.SourceFailed(ip, now)
	}
	tb.PairFailed(PairKey{Account: "bob"}, now) // no source: skipped
	tb.PairFailed(PairKey{Account: "bob", Source: netip.MustParseAddr("2001:db8:1:2:3::4")}, now)
	v4 := netip.MustParseAddr("192.0.2.7")
	if a, u := tb.SourceScore(v4, now), tb.PairScore(PairKey{Account: "alice", Source: v4}, now); a != 10 || u != 10 {
		t.Errorf("scores = %v, %v; want 10, 10", a, u)
	}
	if u := tb.PairScore(PairKey{Account: "bob", Source: netip.MustParseAddr("2001:db8:1:2:ffff::1")}, now); u != 1 {
		t.Errorf("same /64: %v, want 1", u)
	}
	if u := tb.PairScore(PairKey{Account: "bob", Source: netip.MustParseAddr("2001:db8:1:3::4")}, now); u != 0 {
		t.Errorf("other /64: %v, want 0", u)
	}
	if _, srcs, pairs := tb.Len(); srcs != 1 || pairs != 2 {
		t.Errorf("Len = %d sources, %d pairs; want 1, 2", srcs, pairs)
	}
	later := now.Add(15 * time.Minute)
	if a := tb.SourceScore(ip, later); a < 3.6 || a > 3.7 { // 10/e = 3.68
		t.Errorf("after one window: %v, want 10/e", a)
	}
	var keys []PairKey
	tb.EachPairScore(later, func(k PairKey, _ float64) { keys = append(keys, k) })
	if len(keys) != 1 || keys[0].Account != "alice" {
		t.Errorf("EachPairScore = %v, want alice only (bob's 1/e is below 0.5)", keys)
	}
	tb.ClearPair(alice, 4, later)
	if v := tb.PairScore(alice, later); v != -4 {
		t.Errorf("cleared with offset 4: %v, want -4", v)
	}
	tb.Sweep(now.Add(75 * time.Minute))
	if _, srcs, pairs := tb.Len(); srcs != 0 || pairs != 0 {
		t.Errorf("faded counts not swept: %d sources, %d pairs", srcs, pairs)
	}
}

func TestTableEvictsLowScore(t *testing.T) {
	now := time.Now()
	tb := New(&Options{MaxEntries: 2, FailureWindow: time.Minute})
	a, b, c := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3")
	for range 5 {
		tb.SourceFailed(a, now)
	}
	tb.SourceFailed(b, now)
	tb.SourceFailed(c, now)
	if tb.SourceScore(a, now) != 5 || tb.SourceScore(b, now) != 0 || tb.SourceScore(c, now) != 1 || tb.Dropped() != 1 {
		t.Errorf("after eviction: a %v, b %v, c %v, dropped %d; want 5, 0, 1, 1",
			tb.SourceScore(a, now), tb.SourceScore(b, now), tb.SourceScore(c, now), tb.Dropped())
	}
}
