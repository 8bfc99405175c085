package usertable

import (
	"fmt"
	"testing"
	"time"
)

func TestHoldsMerge(t *testing.T) {
	now := time.Now()
	ht := NewHolds(3)
	rec := func(user string, held bool, ttl time.Duration, lamport uint64, writer string) *HoldRecord {
		return &HoldRecord{User: user, Held: held, TTL: ttl, Lamport: lamport, Writer: writer}
	}
	type want struct{ applied, changed, held bool }
	steps := []struct {
		name string
		r    *HoldRecord
		at   time.Duration
		want want
	}{
		{"hold", rec("u", true, time.Minute, 5, "a"), 0, want{true, true, true}},
		{"same again", rec("u", true, time.Minute, 5, "a"), 0, want{false, false, true}},
		{"older release loses", rec("u", false, time.Minute, 4, "z"), 0, want{false, false, true}},
		{"tie: higher writer wins", rec("u", false, time.Minute, 5, "b"), 0, want{true, true, false}},
		{"stale hold after release loses", rec("u", true, time.Minute, 5, "a"), time.Second, want{false, false, false}},
		{"newer hold wins", rec("u", true, 2*time.Second, 9, "a"), 2 * time.Second, want{true, true, true}},
		{"expired hold: any record applies, the release is reported", rec("u", false, time.Minute, 1, "a"), 5 * time.Second, want{true, true, false}},
		{"fill", rec("v", true, time.Minute, 20, "a"), 5 * time.Second, want{true, true, true}},
		{"fill", rec("w", true, time.Minute, 21, "a"), 5 * time.Second, want{true, true, true}},
		{"full", rec("x", true, time.Minute, 22, "a"), 5 * time.Second, want{false, false, false}},
		{"room after the tombstone expires", rec("y", true, time.Minute, 23, "a"), 2 * time.Minute, want{true, true, true}},
	}
	for _, s := range steps {
		a, c, h := ht.Merge(s.r, now.Add(s.at))
		if got := (want{a, c, h}); got != s.want {
			t.Errorf("%s: got %+v, want %+v", s.name, got, s.want)
		}
	}
	if ht.Lamport() != 23 {
		t.Errorf("lamport = %d, want 23 (it follows every time seen)", ht.Lamport())
	}
	// A release outlives the hold it replaces.
	ht = NewHolds(10)
	ht.Merge(rec("t", true, time.Hour, 1, "a"), now)
	ht.Merge(rec("t", false, time.Minute, 2, "a"), now)
	if exp, _ := ht.Expires("t"); exp.Before(now.Add(59 * time.Minute)) {
		t.Errorf("tombstone expires %v, before the hold would have", exp.Sub(now))
	}
	var released []string
	ht.Merge(rec("s", true, time.Second, 3, "a"), now)
	ht.Sweep(now.Add(2*time.Second), func(u string) { released = append(released, u) })
	if fmt.Sprint(released) != "[s]" || ht.Held("s", now) {
		t.Errorf("sweep released %v", released)
	}
}

// TestHoldsSet checks a local write: the ttl defaults and cap, the Lamport
// tick, and the release's tombstone ttl.
func TestHoldsSet(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name    string
		held    bool
		ttl     time.Duration
		wantTTL time.Duration
	}{
		{"default ttl", true, 0, DefaultHoldTTL},
		{"negative ttl", true, -time.Second, DefaultHoldTTL},
		{"capped", true, 100 * time.Hour, MaxHoldTTL},
		{"as asked", true, 30 * time.Minute, 30 * time.Minute},
		{"release keeps the hold's time left", false, time.Hour, 30 * time.Minute},
	}
	h := NewHolds(0)
	if h.Max() != DefaultMaxEntries {
		t.Errorf("Max = %d", h.Max())
	}
	for i, tt := range tests {
		rec, applied, _, held := h.Set("alice", tt.held, tt.ttl, "n1", now)
		if !applied || held != tt.held || rec.TTL != tt.wantTTL || rec.Lamport != uint64(i+1) || rec.Writer != "n1" {
			t.Errorf("%s: %+v applied %v held %v; want ttl %v, lamport %d", tt.name, rec, applied, held, tt.wantTTL, i+1)
		}
	}
	rec, _, changed, _ := h.Set("bob", false, 0, "n1", now)
	if rec.TTL != ReleaseMinTTL || changed {
		t.Errorf("release of a user never held: ttl %v, changed %v", rec.TTL, changed)
	}
	if got := h.HeldUsers(now); len(got) != 0 {
		t.Errorf("HeldUsers after releases = %v", got)
	}
	h.Set("carol", true, time.Minute, "n1", now)
	if got := h.HeldUsers(now); len(got) != 1 || !got["carol"].Equal(now.Add(time.Minute)) {
		t.Errorf("HeldUsers = %v", got)
	}
	if n := len(h.Records(now)); n != 3 || h.Len() != 3 {
		t.Errorf("%d records, Len %d; want 3 (two tombstones, one hold)", n, h.Len())
	}
}
