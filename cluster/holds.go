package cluster

import (
	"cmp"
	"time"
)

// Holds are replicated state, one entry per user, merged last-writer-wins
// on (Lamport time, writer name). Every node keeps a Lamport clock that
// jumps past any time it sees, so a hold or release issued after a node has
// seen an earlier one always wins over it, whichever node issues it. Two
// truly concurrent writes (say, on both sides of a partition) are ordered
// by Lamport time, then by writer name: arbitrary but the same on every
// node, so the cluster converges.
//
// A release is kept as a tombstone for as long as the hold it replaces had
// left to live (at least releaseMinTTL), so a stale copy of the hold
// arriving later by gossip or push/pull loses against it. Every entry
// expires after its TTL; an expiring hold is released locally without any
// message, which is the safety net for a router that dies mid-migration.

type holdEntry struct {
	held    bool
	expires time.Time
	lamport uint64
	writer  string
}

// olderThan reports whether (lamport, writer) orders after e.
func (e *holdEntry) olderThan(lamport uint64, writer string) bool {
	if c := cmp.Compare(e.lamport, lamport); c != 0 {
		return c < 0
	}
	return e.writer < writer
}

// holdTable is guarded by the Cluster's mutex.
type holdTable struct {
	m       map[string]*holdEntry
	lamport uint64
	max     int
}

// tick advances the Lamport clock for a local write.
func (t *holdTable) tick() uint64 {
	t.lamport++
	return t.lamport
}

// merge applies r, received at now. It reports whether r was applied, and
// whether the user's held state as last reported to the Handler changed
// (then held is the new state).
func (t *holdTable) merge(r *holdRecord, now time.Time) (applied, changed, held bool) {
	if r.Lamport > t.lamport {
		t.lamport = r.Lamport
	}
	if t.m == nil {
		t.m = make(map[string]*holdEntry)
	}
	cur := t.m[r.User]
	reported := cur != nil && cur.held
	if cur != nil && now.After(cur.expires) {
		delete(t.m, r.User) // expired, not swept yet
		cur = nil
	}
	switch {
	case r.TTL <= 0:
		// Nothing to apply.
	case cur != nil && !cur.olderThan(r.Lamport, r.Writer):
		// Stale.
	case cur == nil && len(t.m) >= t.max && !t.makeRoom(now):
		// Full.
	default:
		expires := now.Add(min(r.TTL, maxHoldTTL))
		if cur == nil {
			cur = &holdEntry{}
			t.m[r.User] = cur
		} else if !r.Held && cur.held && cur.expires.After(expires) {
			expires = cur.expires // the tombstone outlives the hold it replaces
		}
		*cur = holdEntry{held: r.Held, expires: expires, lamport: r.Lamport, writer: r.Writer}
		applied = true
	}
	held = cur != nil && cur.held
	return applied, held != reported, held
}

// makeRoom removes expired tombstones to make room for a new entry; expired
// holds stay for sweep to report.
func (t *holdTable) makeRoom(now time.Time) bool {
	for user, e := range t.m {
		if !e.held && now.After(e.expires) {
			delete(t.m, user)
		}
	}
	return len(t.m) < t.max
}

func (t *holdTable) held(user string, now time.Time) bool {
	e := t.m[user]
	return e != nil && e.held && now.Before(e.expires)
}

// sweep removes expired entries and calls released for each expired hold.
func (t *holdTable) sweep(now time.Time, released func(user string)) {
	for user, e := range t.m {
		if now.After(e.expires) {
			delete(t.m, user)
			if e.held && released != nil {
				released(user)
			}
		}
	}
}

// records returns all live entries, holds and tombstones, for a sync.
func (t *holdTable) records(now time.Time) []holdRecord {
	out := make([]holdRecord, 0, len(t.m))
	for user, e := range t.m {
		ttl := e.expires.Sub(now)
		if ttl <= 0 {
			continue
		}
		out = append(out, holdRecord{User: user, Held: e.held, TTL: ttl, Lamport: e.lamport, Writer: e.writer})
	}
	return out
}
